"""Command set codec (PS3.7 6.3.1, Annex E): golden bytes and strict decoding."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.dimse import (
    COMMAND_ELEMENTS,
    CEchoRQ,
    CommandField,
    CStoreRQ,
    DIMSEError,
    Priority,
    Tag,
    decode_command_set,
    decode_message,
    encode_command_set,
    encode_message,
)

# C-ECHO-RQ, Message ID 1, Verification SOP Class; Implicit VR Little Endian, by hand.
C_ECHO_RQ = bytes.fromhex(
    "0000 0000 04000000 38000000"  # (0000,0000) UL len 4: group length 56
    "0000 0200 12000000"  # (0000,0002) UI len 18: Affected SOP Class UID
    + b"1.2.840.10008.1.1\0".hex()  # 17 characters + NUL pad to even length
    + "0000 0001 02000000 3000"  # (0000,0100) US: Command Field 0x0030 C-ECHO-RQ
    "0000 1001 02000000 0100"  # (0000,0110) US: Message ID 1
    "0000 0008 02000000 0101"  # (0000,0800) US: Command Data Set Type 0x0101, no data set
)

# C-STORE-RQ for a Secondary Capture image, Message ID 7, sub-operation of C-MOVE 3 from "ORIG".
C_STORE_RQ = bytes.fromhex(
    "0000 0000 04000000 72000000"  # (0000,0000) UL: group length 114
    "0000 0200 1a000000"  # (0000,0002) UI len 26: Affected SOP Class UID
    + b"1.2.840.10008.5.1.4.1.1.7\0".hex()  # 25 characters + NUL pad
    + "0000 0001 02000000 0100"  # (0000,0100) US: Command Field 0x0001 C-STORE-RQ
    "0000 1001 02000000 0700"  # (0000,0110) US: Message ID 7
    "0000 0007 02000000 0000"  # (0000,0700) US: Priority MEDIUM
    "0000 0008 02000000 0100"  # (0000,0800) US: Command Data Set Type 0x0001, data set follows
    "0000 0010 0a000000"  # (0000,1000) UI len 10: Affected SOP Instance UID
    + b"1.2.3.4.5\0".hex()  # 9 characters + NUL pad
    + "0000 3010 04000000"  # (0000,1030) AE len 4: Move Originator AE Title
    + b"ORIG".hex()  # already even: no pad
    + "0000 3110 02000000 0300"  # (0000,1031) US: Move Originator Message ID 3
)


def _element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _command_set(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return _element(0, struct.pack("<I", len(body))) + body


def test_golden_c_echo_rq() -> None:
    msg = CEchoRQ(message_id=1, affected_sop_class_uid="1.2.840.10008.1.1")
    assert encode_message(msg) == C_ECHO_RQ
    assert decode_message(C_ECHO_RQ) == msg


def test_golden_c_store_rq() -> None:
    msg = CStoreRQ(
        message_id=7,
        affected_sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        affected_sop_instance_uid="1.2.3.4.5",
        priority=Priority.MEDIUM,
        move_originator_ae_title="ORIG",
        move_originator_message_id=3,
    )
    assert encode_message(msg) == C_STORE_RQ
    assert decode_message(memoryview(C_STORE_RQ)) == msg


def test_golden_c_echo_rq_decodes_to_raw_elements() -> None:
    assert decode_command_set(C_ECHO_RQ) == {
        Tag.AffectedSOPClassUID: "1.2.840.10008.1.1",
        Tag.CommandField: CommandField.C_ECHO_RQ,
        Tag.MessageID: 1,
        Tag.CommandDataSetType: 0x0101,
    }


def test_padding_per_vr() -> None:
    data = encode_command_set({
        Tag.AffectedSOPClassUID: "1.2.3",
        Tag.MoveDestination: "ABC",
        Tag.ErrorComment: "bad",
    })
    assert _element(Tag.AffectedSOPClassUID, b"1.2.3\0") in data
    assert _element(Tag.MoveDestination, b"ABC ") in data
    assert _element(Tag.ErrorComment, b"bad ") in data


def test_elements_are_written_in_tag_order_with_group_length_first() -> None:
    data = encode_command_set({Tag.Status: 0, Tag.CommandField: 0x8030, Tag.CommandGroupLength: 999})
    assert data == _command_set(
        _element(Tag.CommandField, b"\x30\x80"), _element(Tag.Status, b"\x00\x00")
    )


def test_at_values_are_group_then_element_little_endian() -> None:
    data = encode_command_set({Tag.OffendingElement: (0x0010_0020, 0x7FE0_0010)})
    assert data.endswith(_element(Tag.OffendingElement, bytes.fromhex("1000 2000 e07f 1000")))
    assert decode_command_set(data)[Tag.OffendingElement] == (0x0010_0020, 0x7FE0_0010)


def test_encode_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        encode_command_set({Tag.MessageID: 0x10000})
    with pytest.raises(ValueError):
        encode_command_set({0x0000_4000: 1})  # retired, we never send it
    with pytest.raises(ValueError):
        encode_command_set({Tag.AffectedSOPClassUID: 12})


_values = {
    "US": st.integers(0, 0xFFFF),
    "UL": st.integers(0, 0xFFFF_FFFF),
    "AT": st.lists(st.integers(0, 0xFFFF_FFFF), min_size=1, max_size=4).map(tuple),
    "UI": st.from_regex(r"[1-9][0-9]{0,3}(\.[0-9]{1,4}){0,6}", fullmatch=True),
    "AE": st.from_regex(r"[A-Z][A-Z0-9]{0,15}", fullmatch=True),
    "LO": st.from_regex(r"[a-z][a-z ]{0,30}[a-z]", fullmatch=True),
}


@st.composite
def _element_maps(draw: st.DrawFn) -> dict[int, object]:
    tags = draw(st.sets(st.sampled_from([t for t in COMMAND_ELEMENTS if t != 0])))
    return {t: draw(_values[COMMAND_ELEMENTS[t][0]]) for t in tags}


@settings(deadline=None)
@given(_element_maps())
def test_command_set_round_trip(elements: dict[int, object]) -> None:
    data = encode_command_set(elements)  # type: ignore[arg-type]
    assert len(data) % 2 == 0
    assert struct.unpack_from("<I", data, 8)[0] == len(data) - 12
    assert decode_command_set(data) == elements


def test_unknown_group_0000_elements_are_skipped() -> None:
    data = _command_set(
        _element(0x0000_0001, b"\x10\x00\x00\x00"),  # retired Length to End
        _element(Tag.CommandField, b"\x30\x00"),
        _element(0x0000_4000, b"retired "),  # retired (0000,4000)
        _element(0x0000_5110, b"\x00\x00"),  # retired Display Format
    )
    assert decode_command_set(data) == {Tag.CommandField: 0x0030}


def test_zero_length_values_are_absent() -> None:
    data = _command_set(_element(Tag.AffectedSOPClassUID, b""), _element(Tag.ErrorComment, b"  "))
    assert decode_command_set(data) == {}


def test_trailing_padding_variants_are_stripped() -> None:
    data = _command_set(
        _element(Tag.AffectedSOPClassUID, b"1.2 "),  # some peers pad UIs with a space
        _element(Tag.MoveDestination, b" DEST           "),
    )
    assert decode_command_set(data) == {Tag.AffectedSOPClassUID: "1.2", Tag.MoveDestination: "DEST"}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "too short"),
        (C_ECHO_RQ[:11], "too short"),
        (C_ECHO_RQ[:-1], "Group Length"),  # truncated last value
        (C_ECHO_RQ + b"\0\0", "Group Length"),  # trailing bytes
        (_element(0x0000_0002, b"1.2\0") + C_ECHO_RQ[12:], "does not start"),  # no group length
        (_element(0, b"\x0a\x00") + _element(Tag.CommandField, b"\x30\x00"), "does not start"),  # US-sized
        (_command_set(_element(Tag.CommandField, b"\x30\x00"))[:-2] + b"\x00\x00\x00\x00", "Group Length"),
        (_command_set(b"\x00\x00\x00\x01\x02\x00"), "truncated element header"),
        (_command_set(b"\x00\x00\x00\x01\x04\x00\x00\x00\x30\x00"), "overruns"),
        (_command_set(_element(0x0008_0016, b"1.2\0")), "outside group 0000"),
        (_command_set(_element(Tag.CommandField, b"\x30\x00"), _element(Tag.CommandField, b"\x30\x00")),
         "out of order or repeated"),
        (_command_set(_element(Tag.MessageID, b"\x01\x00"), _element(Tag.CommandField, b"\x30\x00")),
         "out of order"),
        (_command_set(_element(Tag.CommandField, b"\x30\x00\x30\x00")), "US value has length 4"),
        (_command_set(_element(Tag.OffendingElement, b"\x10\x00\x10\x00\x01\x00")), "multiple of 4"),
        (_command_set(_element(Tag.MoveDestination, b"D\xffST")), "not ASCII"),
    ],
)
def test_strict_decoding_errors(data: bytes, match: str) -> None:
    with pytest.raises(DIMSEError, match=match):
        decode_command_set(data)


def test_a_non_ascii_uid_is_carried_not_a_decoding_error() -> None:
    """Whether a UID is valid is answered with a status by the message layer (PS3.7 C.5), so the
    command set decoder carries the value instead of failing the whole command."""
    decoded = decode_command_set(_command_set(_element(Tag.AffectedSOPClassUID, b"1.\xff\0")))
    assert decoded[Tag.AffectedSOPClassUID] == "1.\xff"


def test_dimse_error_is_a_local_protocol_error() -> None:
    from agent.errors import AgentError, ProtocolError

    with pytest.raises(ProtocolError) as info:
        decode_command_set(b"\x00")
    assert isinstance(info.value, AgentError)
    assert info.value.local
