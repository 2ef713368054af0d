"""The `acquisition.serial` driver: ASTM E1381-style link layer, record format, transport, simulator.

See drivers/acquisition/PROTOCOL.md for the wire format a device must speak.
"""

from .driver import SerialDriver, open_driver
from .link import Link, LinkError
from .message import MessageError, encode_message, parse_message

__all__ = ["Link", "LinkError", "MessageError", "SerialDriver", "encode_message", "open_driver", "parse_message"]
