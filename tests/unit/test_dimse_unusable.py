"""A request whose command set is well formed but carries a UID that cannot be one (over 64
characters, a NUL or a space inside, non-ASCII) is answered with a failure status, not treated as a
protocol error that aborts the association: C000 for a C-STORE (PS3.4 B.2.3), otherwise PS3.7 C.5
0122 SOP Class Not Supported or 0117 Invalid SOP Instance."""

from __future__ import annotations

from typing import Any

import pytest

from agent.dimse import (
    CEchoRSP,
    CommandReceived,
    CStoreRSP,
    DataSetFragment,
    DIMSEError,
    MessageAssembler,
    MessageComplete,
    NSetRSP,
    Tag,
    UnusableRequest,
    decode_command,
    encode_command_set,
)

GOOD_CLASS = "1.2.840.10008.5.1.4.1.1.2"
GOOD_INSTANCE = "1.2.3.4"
LONG = "1." * 32 + "1"  # 65 characters


def store_rq(uids: dict[int, Any] | None = None) -> bytes:
    elements = {
        Tag.CommandField: 0x0001, Tag.MessageID: 9, Tag.Priority: 0, Tag.CommandDataSetType: 1,
        Tag.AffectedSOPClassUID: GOOD_CLASS, Tag.AffectedSOPInstanceUID: GOOD_INSTANCE,
    }
    elements.update(uids or {})
    return encode_command_set(elements)


@pytest.mark.parametrize("bad", [LONG, "1.2\0.3", "1.2.3 4"])
def test_c_store_with_a_bad_instance_uid_gets_c000(bad: str) -> None:
    result = decode_command(store_rq({Tag.AffectedSOPInstanceUID: bad}))
    assert isinstance(result, UnusableRequest)
    assert result.has_dataset
    rsp = result.response
    assert isinstance(rsp, CStoreRSP)
    assert (rsp.status, rsp.message_id_being_responded_to) == (0xC000, 9)
    assert rsp.affected_sop_class_uid == GOOD_CLASS
    assert rsp.affected_sop_instance_uid is None  # never echo a UID that is not one
    assert rsp.error_comment and "Affected SOP Instance UID" in rsp.error_comment


def test_c_store_with_a_bad_class_uid_gets_c000() -> None:
    result = decode_command(store_rq({Tag.AffectedSOPClassUID: LONG}))
    assert isinstance(result, UnusableRequest)
    assert result.response.status == 0xC000
    assert result.response.affected_sop_instance_uid == GOOD_INSTANCE


def test_non_ascii_uid_is_carried_and_answered() -> None:
    data = bytearray(store_rq({Tag.AffectedSOPInstanceUID: "1.2.3.44"}))
    data[data.index(b"1.2.3.44") + 6] = 0xE9
    result = decode_command(bytes(data))
    assert isinstance(result, UnusableRequest) and result.response.status == 0xC000


def test_a_printable_odd_uid_is_carried_for_the_service_to_judge() -> None:
    result = decode_command(store_rq({Tag.AffectedSOPInstanceUID: "1.2.abc"}))
    assert not isinstance(result, UnusableRequest)
    assert result.affected_sop_instance_uid == "1.2.abc"


def test_echo_and_n_set_are_answered_too() -> None:
    echo = decode_command(encode_command_set({
        Tag.CommandField: 0x0030, Tag.MessageID: 3, Tag.CommandDataSetType: 0x0101, Tag.AffectedSOPClassUID: LONG,
    }))
    assert isinstance(echo, UnusableRequest) and not echo.has_dataset
    assert isinstance(echo.response, CEchoRSP) and echo.response.status == 0x0122
    nset = decode_command(encode_command_set({
        Tag.CommandField: 0x0120, Tag.MessageID: 4, Tag.CommandDataSetType: 1,
        Tag.RequestedSOPClassUID: "1.2.840.10008.3.1.2.3.3", Tag.RequestedSOPInstanceUID: "9\0",
    }))
    # A trailing NUL is padding (PS3.5 6.2): that UID is fine.
    assert not isinstance(nset, UnusableRequest)
    nset = decode_command(encode_command_set({
        Tag.CommandField: 0x0120, Tag.MessageID: 4, Tag.CommandDataSetType: 1,
        Tag.RequestedSOPClassUID: "1.2.840.10008.3.1.2.3.3", Tag.RequestedSOPInstanceUID: "9\0" + "1" * 70,
    }))
    assert isinstance(nset, UnusableRequest) and isinstance(nset.response, NSetRSP)
    assert nset.response.status == 0x0117


def test_what_cannot_be_answered_is_still_a_protocol_error() -> None:
    # No Message ID: there is nothing to answer to.
    with pytest.raises(DIMSEError):
        decode_command(encode_command_set({
            Tag.CommandField: 0x0001, Tag.Priority: 0, Tag.CommandDataSetType: 1,
            Tag.AffectedSOPClassUID: GOOD_CLASS, Tag.AffectedSOPInstanceUID: LONG,
        }))
    # A bad UID in a *response*: nothing to answer either.
    with pytest.raises(DIMSEError):
        decode_command(encode_command_set({
            Tag.CommandField: 0x8001, Tag.MessageIDBeingRespondedTo: 1, Tag.Status: 0,
            Tag.CommandDataSetType: 0x0101, Tag.AffectedSOPInstanceUID: LONG,
        }))


def test_assembler_passes_the_data_set_of_an_unusable_request_on() -> None:
    assembler = MessageAssembler()
    events = assembler.receive_pdv(1, True, True, store_rq({Tag.AffectedSOPInstanceUID: LONG}))
    assert len(events) == 1 and isinstance(events[0], CommandReceived)
    assert isinstance(events[0].message, UnusableRequest)
    events = assembler.receive_pdv(1, False, True, b"\x08\x00\x16\x00")
    assert [type(e) for e in events] == [DataSetFragment, MessageComplete]
    # The association goes on: the next message decodes normally.
    events = assembler.receive_pdv(1, True, True, store_rq())
    assert isinstance(events[0], CommandReceived) and not isinstance(events[0].message, UnusableRequest)
