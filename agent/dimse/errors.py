"""The DIMSE layer's error (PS3.7): a malformed command set or a message received out of order.

A `DIMSEError` is always a local detection (we will abort the association); the abort source is
the service provider (2) with reason "unrecognized PDU parameter" left to the runner to choose.
"""

from __future__ import annotations

from agent.errors import ProtocolError

__all__ = ["DIMSEError"]


class DIMSEError(ProtocolError):
    """A command set or DIMSE message that violates PS3.7 (6.3, 9.3, 10.3, Annex E)."""
