"""The DIMSE layer's error (PS3.7): a malformed command set or a message received out of order.

Invariant: a `DIMSEError` is always a local detection (`local=True`); the association that carried
the offending bytes must be aborted (PS3.7 6.3.1 leaves no way to resynchronise a message stream).
"""

from __future__ import annotations

from agent.errors import ProtocolError

__all__ = ["DIMSEError"]


class DIMSEError(ProtocolError):
    """A command set or DIMSE message that violates PS3.7 (6.3, 9.3, 10.3, Annex E)."""
