"""DIMSE message layer (PS3.7): statuses, command sets, messages, fragment assembly. Sans-IO.

Invariants: nothing here does I/O or imports trio, socket or sqlite3; command sets are always
Implicit VR Little Endian (PS3.7 6.3.1); every protocol violation raises `DIMSEError`.
"""

from agent.dimse.assembler import (
    CommandReceived,
    DataSetFragment,
    Event,
    MessageAssembler,
    MessageComplete,
    fragment,
)
from agent.dimse.commands import (
    COMMAND_ELEMENTS,
    DATA_SET_PRESENT,
    NO_DATA_SET,
    CommandField,
    CommandValue,
    Priority,
    Tag,
    decode_command_set,
    encode_command_set,
)
from agent.dimse.errors import DIMSEError
from agent.dimse.messages import (
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CStoreRQ,
    CStoreRSP,
    Message,
    NActionRQ,
    NActionRSP,
    NCreateRQ,
    NCreateRSP,
    NDeleteRQ,
    NDeleteRSP,
    NEventReportRQ,
    NEventReportRSP,
    NGetRQ,
    NGetRSP,
    NSetRQ,
    NSetRSP,
    Request,
    Response,
    UnusableRequest,
    command_name,
    decode_command,
    decode_message,
    describe_command,
    encode_message,
    is_request,
)
from agent.dimse.status import Status, StatusCategory, category, describe

__all__ = [
    "COMMAND_ELEMENTS", "DATA_SET_PRESENT", "NO_DATA_SET", "CCancelRQ", "CEchoRQ", "CEchoRSP",
    "CFindRQ", "CFindRSP", "CGetRQ", "CGetRSP", "CMoveRQ", "CMoveRSP", "CStoreRQ", "CStoreRSP",
    "CommandField", "CommandReceived", "CommandValue", "DIMSEError", "DataSetFragment", "Event",
    "Message", "MessageAssembler", "MessageComplete", "NActionRQ", "NActionRSP", "NCreateRQ",
    "NCreateRSP", "NDeleteRQ", "NDeleteRSP", "NEventReportRQ", "NEventReportRSP", "NGetRQ",
    "NGetRSP", "NSetRQ", "NSetRSP", "Priority", "Request", "Response", "Status", "StatusCategory",
    "Tag", "UnusableRequest", "category", "command_name", "decode_command", "decode_command_set",
    "decode_message", "describe", "describe_command", "encode_command_set", "encode_message", "fragment",
    "is_request",
]
