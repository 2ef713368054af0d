"""Command set encoding and decoding (PS3.7 6.3 and Annex E), without pydicom.

Invariants:
- A command set is group 0000 only, always Implicit VR Little Endian (PS3.7 6.3.1): each element
  is tag group (2) + element (2) + value length (4) + value, all little endian.
- Encoding writes elements in ascending tag order, (0000,0000) Command Group Length first, its value
  the byte count of every element after it; every value has even length (UI padded with NUL, AE and
  LO with a space, PS3.5 6.2).
- Decoding is strict and transactional: it either returns every element or raises `DIMSEError`
  (truncated element, element outside group 0000, value overrunning the buffer, tags not ascending,
  missing or wrong group length, a value of the wrong size for its VR). Unknown group-0000 elements
  (retired ones such as (0000,0001) or (0000,4000)) are skipped. Zero-length values decode as absent.
- Elements are keyed by their 32-bit tag (0x0000gggg_eeee, i.e. group << 16 | element).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from enum import IntEnum
from typing import Final, TypeAlias

from agent.dimse.errors import DIMSEError

__all__ = [
    "COMMAND_ELEMENTS",
    "DATA_SET_PRESENT",
    "NO_DATA_SET",
    "CommandField",
    "CommandValue",
    "Priority",
    "Tag",
    "decode_command_set",
    "encode_command_set",
]


class Tag:
    """Tags of the command elements (PS3.7 Annex E, Table E.1-1)."""

    CommandGroupLength: Final = 0x0000_0000
    AffectedSOPClassUID: Final = 0x0000_0002
    RequestedSOPClassUID: Final = 0x0000_0003
    CommandField: Final = 0x0000_0100
    MessageID: Final = 0x0000_0110
    MessageIDBeingRespondedTo: Final = 0x0000_0120
    MoveDestination: Final = 0x0000_0600
    Priority: Final = 0x0000_0700
    CommandDataSetType: Final = 0x0000_0800
    Status: Final = 0x0000_0900
    OffendingElement: Final = 0x0000_0901
    ErrorComment: Final = 0x0000_0902
    ErrorID: Final = 0x0000_0903
    AffectedSOPInstanceUID: Final = 0x0000_1000
    RequestedSOPInstanceUID: Final = 0x0000_1001
    EventTypeID: Final = 0x0000_1002
    AttributeIdentifierList: Final = 0x0000_1005
    ActionTypeID: Final = 0x0000_1008
    NumberOfRemainingSuboperations: Final = 0x0000_1020
    NumberOfCompletedSuboperations: Final = 0x0000_1021
    NumberOfFailedSuboperations: Final = 0x0000_1022
    NumberOfWarningSuboperations: Final = 0x0000_1023
    MoveOriginatorApplicationEntityTitle: Final = 0x0000_1030
    MoveOriginatorMessageID: Final = 0x0000_1031


# tag -> (VR, keyword), PS3.7 Table E.1-1 (retired elements of Table E.2-1 are not listed: skipped).
COMMAND_ELEMENTS: Final[Mapping[int, tuple[str, str]]] = {
    Tag.CommandGroupLength: ("UL", "CommandGroupLength"),
    Tag.AffectedSOPClassUID: ("UI", "AffectedSOPClassUID"),
    Tag.RequestedSOPClassUID: ("UI", "RequestedSOPClassUID"),
    Tag.CommandField: ("US", "CommandField"),
    Tag.MessageID: ("US", "MessageID"),
    Tag.MessageIDBeingRespondedTo: ("US", "MessageIDBeingRespondedTo"),
    Tag.MoveDestination: ("AE", "MoveDestination"),
    Tag.Priority: ("US", "Priority"),
    Tag.CommandDataSetType: ("US", "CommandDataSetType"),
    Tag.Status: ("US", "Status"),
    Tag.OffendingElement: ("AT", "OffendingElement"),
    Tag.ErrorComment: ("LO", "ErrorComment"),
    Tag.ErrorID: ("US", "ErrorID"),
    Tag.AffectedSOPInstanceUID: ("UI", "AffectedSOPInstanceUID"),
    Tag.RequestedSOPInstanceUID: ("UI", "RequestedSOPInstanceUID"),
    Tag.EventTypeID: ("US", "EventTypeID"),
    Tag.AttributeIdentifierList: ("AT", "AttributeIdentifierList"),
    Tag.ActionTypeID: ("US", "ActionTypeID"),
    Tag.NumberOfRemainingSuboperations: ("US", "NumberOfRemainingSuboperations"),
    Tag.NumberOfCompletedSuboperations: ("US", "NumberOfCompletedSuboperations"),
    Tag.NumberOfFailedSuboperations: ("US", "NumberOfFailedSuboperations"),
    Tag.NumberOfWarningSuboperations: ("US", "NumberOfWarningSuboperations"),
    Tag.MoveOriginatorApplicationEntityTitle: ("AE", "MoveOriginatorApplicationEntityTitle"),
    Tag.MoveOriginatorMessageID: ("US", "MoveOriginatorMessageID"),
}


class CommandField(IntEnum):
    """(0000,0100) Command Field values (PS3.7 Annex E)."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_MOVE_RQ = 0x0021
    C_MOVE_RSP = 0x8021
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    N_EVENT_REPORT_RQ = 0x0100
    N_EVENT_REPORT_RSP = 0x8100
    N_GET_RQ = 0x0110
    N_GET_RSP = 0x8110
    N_SET_RQ = 0x0120
    N_SET_RSP = 0x8120
    N_ACTION_RQ = 0x0130
    N_ACTION_RSP = 0x8130
    N_CREATE_RQ = 0x0140
    N_CREATE_RSP = 0x8140
    N_DELETE_RQ = 0x0150
    N_DELETE_RSP = 0x8150
    C_CANCEL_RQ = 0x0FFF


class Priority(IntEnum):
    """(0000,0700) Priority (PS3.7 Annex E)."""

    MEDIUM = 0x0000
    HIGH = 0x0001
    LOW = 0x0002


# (0000,0800) Command Data Set Type: 0x0101 means no data set; any other value means one follows.
# We send 0x0001 on output, as pynetdicom does.
NO_DATA_SET: Final = 0x0101
DATA_SET_PRESENT: Final = 0x0001

CommandValue: TypeAlias = int | str | tuple[int, ...]

_HEADER = struct.Struct("<HHI")
_UL = struct.Struct("<I")
_US = struct.Struct("<H")
_AT = struct.Struct("<HH")
_GROUP_LENGTH_ELEMENT = 12  # header (8) + UL value (4)


def _encode_value(tag: int, vr: str, value: CommandValue) -> bytes:
    if vr == "US":
        if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) US value out of range: {value!r}")
        return _US.pack(value)
    if vr == "UL":
        if not isinstance(value, int) or not 0 <= value <= 0xFFFF_FFFF:
            raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) UL value out of range: {value!r}")
        return _UL.pack(value)
    if vr == "AT":
        if isinstance(value, int):
            value = (value,)
        if not isinstance(value, tuple):
            raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) AT value must be tags: {value!r}")
        out = bytearray()
        for t in value:
            if not isinstance(t, int) or not 0 <= t <= 0xFFFF_FFFF:
                raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) not a tag: {t!r}")
            out += _AT.pack(t >> 16, t & 0xFFFF)
        return bytes(out)
    if not isinstance(value, str):
        raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr} value must be str: {value!r}")
    raw = value.encode("ascii")
    if len(raw) & 1:
        raw += b"\0" if vr == "UI" else b" "
    return raw


def encode_command_set(elements: Mapping[int, CommandValue]) -> bytes:
    """Encode ``{tag: value}`` as an Implicit VR Little Endian command set (PS3.7 6.3.1).

    Command Group Length is computed (any value given for it is ignored); values that are None are
    left out. Raises ValueError for an unknown tag or a value that does not fit its VR.
    """
    body = bytearray()
    for tag in sorted(elements):
        if tag == Tag.CommandGroupLength:
            continue
        value = elements[tag]
        if value is None:
            continue
        try:
            vr = COMMAND_ELEMENTS[tag][0]
        except KeyError:
            raise ValueError(f"not a command element: ({tag >> 16:04X},{tag & 0xFFFF:04X})") from None
        raw = _encode_value(tag, vr, value)
        body += _HEADER.pack(0x0000, tag & 0xFFFF, len(raw))
        body += raw
    return _HEADER.pack(0, 0, 4) + _UL.pack(len(body)) + bytes(body)


def decode_command_set(data: bytes | bytearray | memoryview) -> dict[int, CommandValue]:
    """Decode a complete command set strictly; see the module invariants. Raises `DIMSEError`."""
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    size = len(buf)
    if size < _GROUP_LENGTH_ELEMENT:
        raise DIMSEError(f"command set too short ({size} bytes) to hold Command Group Length")
    group, elem, length = _HEADER.unpack_from(buf, 0)
    if (group, elem, length) != (0, 0, 4):
        raise DIMSEError("command set does not start with (0000,0000) Command Group Length UL")
    (group_length,) = _UL.unpack_from(buf, 8)
    if group_length != size - _GROUP_LENGTH_ELEMENT:
        raise DIMSEError(
            f"Command Group Length is {group_length} but {size - _GROUP_LENGTH_ELEMENT} bytes follow it"
        )
    out: dict[int, CommandValue] = {}
    offset = _GROUP_LENGTH_ELEMENT
    previous = 0
    while offset < size:
        if size - offset < 8:
            raise DIMSEError(f"truncated element header at offset {offset}")
        group, elem, length = _HEADER.unpack_from(buf, offset)
        tag = group << 16 | elem
        if group != 0x0000:
            raise DIMSEError(f"element ({group:04X},{elem:04X}) outside group 0000 in a command set")
        if tag <= previous:
            raise DIMSEError(f"element (0000,{elem:04X}) out of order or repeated")
        previous = tag
        offset += 8
        end = offset + length
        if end > size:
            raise DIMSEError(f"element (0000,{elem:04X}) length {length} overruns the command set")
        spec = COMMAND_ELEMENTS.get(tag)
        if spec is not None and length:
            value = _decode_value(tag, spec[0], buf[offset:end])
            if value != "":  # all-padding string: treated as absent, like a zero-length value
                out[tag] = value
        offset = end
    return out


def _decode_value(tag: int, vr: str, raw: bytes | memoryview) -> CommandValue:
    n = len(raw)
    if vr == "US":
        if n != 2:
            raise DIMSEError(f"(0000,{tag & 0xFFFF:04X}) US value has length {n}, expected 2")
        return int(_US.unpack_from(raw)[0])
    if vr == "UL":
        if n != 4:
            raise DIMSEError(f"(0000,{tag & 0xFFFF:04X}) UL value has length {n}, expected 4")
        return int(_UL.unpack_from(raw)[0])
    if vr == "AT":
        if n % 4:
            raise DIMSEError(f"(0000,{tag & 0xFFFF:04X}) AT value length {n} is not a multiple of 4")
        words = struct.unpack_from(f"<{n // 2}H", raw)
        return tuple(words[i] << 16 | words[i + 1] for i in range(0, len(words), 2))
    if vr == "UI":
        # Carried even when it is not ASCII: whether it is a UID is the message layer's question,
        # answered with a status rather than an abort (PS3.7 C.5).
        return bytes(raw).decode("latin-1").rstrip("\0 ")
    try:
        text = bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        raise DIMSEError(f"(0000,{tag & 0xFFFF:04X}) {vr} value is not ASCII") from None
    if vr == "AE":
        return text.strip(" \0")
    return text.strip(" \0")  # LO: leading and trailing spaces are insignificant (PS3.5 6.2)
