"""DIMSE messages (PS3.7 9.3, 10.3): construction, round trips, and byte compatibility with pynetdicom.

pynetdicom is a test-only peer here: it encodes with pydicom, so agreeing with it byte for byte is
agreeing with an independent implementation of PS3.7 6.3.1.
"""

from __future__ import annotations

import dataclasses
import struct
from io import BytesIO
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynetdicom import dimse_messages as pdm
from pynetdicom import dimse_primitives as pdp
from pynetdicom.pdu_primitives import P_DATA

from agent.dimse import (
    COMMAND_ELEMENTS,
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
    DIMSEError,
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
    Priority,
    Status,
    Tag,
    decode_message,
    encode_command_set,
    encode_message,
)

ALL = [
    CEchoRQ, CEchoRSP, CStoreRQ, CStoreRSP, CFindRQ, CFindRSP, CGetRQ, CGetRSP, CMoveRQ, CMoveRSP,
    CCancelRQ, NEventReportRQ, NEventReportRSP, NGetRQ, NGetRSP, NSetRQ, NSetRSP, NActionRQ,
    NActionRSP, NCreateRQ, NCreateRSP, NDeleteRQ, NDeleteRSP,
]
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies --------------------------------------------------------------------------------

_component = st.integers(0, 10**9).map(str)
uids = st.lists(_component, min_size=2, max_size=12).map(".".join).filter(lambda u: len(u) <= 64)
ae_titles = st.from_regex(r"[A-Z][A-Z0-9_ ]{0,14}[A-Z0-9]|[A-Z]", fullmatch=True)
comments = st.from_regex(r"[A-Za-z0-9:.,()-]([A-Za-z0-9:.,() -]{0,62}[A-Za-z0-9:.,()-])?", fullmatch=True)
us = st.integers(0, 0xFFFF)
tag_lists = st.lists(st.integers(0, 0xFFFF_FFFF), min_size=1, max_size=6).map(tuple)

_FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "priority": st.sampled_from(Priority),
    "move_destination": ae_titles,
    "move_originator_ae_title": ae_titles,
    "error_comment": comments,
    "offending_element": tag_lists,
    "attribute_identifier_list": tag_lists,
    "has_dataset": st.booleans(),
}


def _strategy(name: str) -> st.SearchStrategy[Any]:
    if name.endswith("_uid"):
        return uids
    return _FIELD_STRATEGIES.get(name, us)


@st.composite
def messages(draw: st.DrawFn, cls: type, only_keywords: frozenset[str] | None = None) -> Any:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if only_keywords is not None and f.name != "has_dataset" and _keyword(f.name) not in only_keywords:
            continue
        required = f.default is dataclasses.MISSING
        if required or draw(st.booleans()):
            kwargs[f.name] = draw(_strategy(f.name))
    return cls(**kwargs)


def _tag_of(field: str) -> int:
    from agent.dimse.messages import _FIELD_TAGS

    return _FIELD_TAGS[field]


def _keyword(field: str) -> str:
    return COMMAND_ELEMENTS[_tag_of(field)][1]


def _pynetdicom_name(cls: type) -> str:
    return cls.COMMAND_FIELD.name  # e.g. "C_STORE_RQ", the name of pynetdicom's message class


# --- construction --------------------------------------------------------------------------------


def test_has_dataset_defaults() -> None:
    uid, ids = "1.2.3", {"message_id": 1}
    assert CStoreRQ(**ids, affected_sop_class_uid=uid, affected_sop_instance_uid=uid).has_dataset
    assert CFindRQ(**ids, affected_sop_class_uid=uid).has_dataset
    assert CGetRQ(**ids, affected_sop_class_uid=uid).has_dataset
    assert CMoveRQ(**ids, affected_sop_class_uid=uid, move_destination="X").has_dataset
    assert NSetRQ(**ids, requested_sop_class_uid=uid, requested_sop_instance_uid=uid).has_dataset
    assert NActionRQ(**ids, requested_sop_class_uid=uid, requested_sop_instance_uid=uid,
                     action_type_id=1).has_dataset
    assert NCreateRQ(**ids, affected_sop_class_uid=uid).has_dataset
    assert not NCreateRQ(**ids, affected_sop_class_uid=uid, has_dataset=False).has_dataset
    assert NEventReportRQ(**ids, affected_sop_class_uid=uid, affected_sop_instance_uid=uid,
                          event_type_id=1).has_dataset
    assert not CEchoRQ(**ids, affected_sop_class_uid=uid).has_dataset
    assert not NGetRQ(**ids, requested_sop_class_uid=uid, requested_sop_instance_uid=uid).has_dataset
    assert not NDeleteRQ(**ids, requested_sop_class_uid=uid, requested_sop_instance_uid=uid).has_dataset
    assert not CCancelRQ(message_id_being_responded_to=1).has_dataset
    for rsp in (CEchoRSP, CStoreRSP, CFindRSP, CGetRSP, CMoveRSP, NEventReportRSP, NGetRSP,
                NSetRSP, NActionRSP, NCreateRSP, NDeleteRSP):
        assert not rsp(message_id_being_responded_to=1, status=0).has_dataset


def test_priority_is_coerced_to_the_enum() -> None:
    msg = CFindRQ(message_id=1, affected_sop_class_uid="1.2", priority=2)  # type: ignore[arg-type]
    assert msg.priority is Priority.LOW


@pytest.mark.parametrize(
    "kwargs",
    [
        {"message_id": 0x10000},
        {"message_id": -1},
        {"message_id": True},
        {"message_id": None},
        {"message_id": "1"},
        {"affected_sop_class_uid": ""},
        {"affected_sop_class_uid": "1." * 32 + "1"},  # 65 characters
        {"affected_sop_class_uid": "1.2 "},
        {"affected_sop_class_uid": None},
        {"affected_sop_instance_uid": "1.2\0"},
        {"priority": 3},
        {"move_originator_ae_title": "A" * 17},
        {"move_originator_ae_title": ""},
        {"move_originator_ae_title": "A\\B"},
        {"move_originator_message_id": 70000},
        {"has_dataset": 1},
    ],
)
def test_invalid_construction_is_refused(kwargs: dict[str, Any]) -> None:
    base = {"message_id": 1, "affected_sop_class_uid": "1.2", "affected_sop_instance_uid": "1.2.3"}
    with pytest.raises(ValueError):
        CStoreRQ(**{**base, **kwargs})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status": 0x10000},
        {"error_comment": "x" * 65},
        {"error_comment": " padded"},
        {"error_comment": "line\nbreak"},
        {"offending_element": ()},
        {"offending_element": (0x1_0000_0000,)},
        {"offending_element": [0x00100010]},
    ],
)
def test_invalid_response_fields_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CStoreRSP(**{"message_id_being_responded_to": 1, "status": 0, **kwargs})


def test_required_fields_have_no_default() -> None:
    with pytest.raises(TypeError):
        CMoveRQ(message_id=1, affected_sop_class_uid="1.2")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        NActionRQ(message_id=1, requested_sop_class_uid="1.2", requested_sop_instance_uid="1.3")  # type: ignore[call-arg]


def test_messages_are_frozen_and_slotted() -> None:
    msg = CEchoRQ(message_id=1, affected_sop_class_uid="1.2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.message_id = 2  # type: ignore[misc]
    assert not hasattr(msg, "__dict__")


# --- responses -------------------------------------------------------------------------------------


def test_store_response_copies_ids_and_uids() -> None:
    rq = CStoreRQ(message_id=9, affected_sop_class_uid="1.2", affected_sop_instance_uid="1.2.3")
    rsp = rq.response(Status.OUT_OF_RESOURCES, error_comment="disk full")
    assert rsp == CStoreRSP(message_id_being_responded_to=9, status=0xA700,
                            affected_sop_class_uid="1.2", affected_sop_instance_uid="1.2.3",
                            error_comment="disk full")


def test_n_responses_answer_with_affected_uids_from_requested() -> None:
    rq = NActionRQ(message_id=4, requested_sop_class_uid="1.2", requested_sop_instance_uid="1.2.9",
                   action_type_id=1)
    rsp = rq.response(0)
    assert (rsp.message_id_being_responded_to, rsp.affected_sop_class_uid,
            rsp.affected_sop_instance_uid, rsp.action_type_id) == (4, "1.2", "1.2.9", 1)
    for cls in (NGetRQ, NSetRQ, NDeleteRQ):
        r = cls(message_id=5, requested_sop_class_uid="1.3", requested_sop_instance_uid="1.3.1")
        out = r.response(Status.NO_SUCH_SOP_INSTANCE)
        assert (out.message_id_being_responded_to, out.status, out.affected_sop_class_uid,
                out.affected_sop_instance_uid) == (5, 0x0112, "1.3", "1.3.1")


def test_other_responses() -> None:
    echo = CEchoRQ(message_id=2, affected_sop_class_uid="1.2.840.10008.1.1").response()
    assert echo == CEchoRSP(message_id_being_responded_to=2, status=0,
                            affected_sop_class_uid="1.2.840.10008.1.1")
    find = CFindRQ(message_id=3, affected_sop_class_uid="1.2").response(Status.PENDING, has_dataset=True)
    assert (find.status, find.has_dataset, find.affected_sop_class_uid) == (0xFF00, True, "1.2")
    move = CMoveRQ(message_id=3, affected_sop_class_uid="1.2", move_destination="D").response(
        0xB000, number_of_failed_suboperations=2, number_of_completed_suboperations=5)
    assert isinstance(move, CMoveRSP) and move.number_of_failed_suboperations == 2
    get = CGetRQ(message_id=8, affected_sop_class_uid="1.2").response(0)
    assert isinstance(get, CGetRSP) and get.message_id_being_responded_to == 8
    created = NCreateRQ(message_id=6, affected_sop_class_uid="1.2").response(
        0, affected_sop_instance_uid="1.2.77")
    assert created.affected_sop_instance_uid == "1.2.77"
    report = NEventReportRQ(message_id=1, affected_sop_class_uid="1.2", affected_sop_instance_uid="1.2.1",
                            event_type_id=2).response(0)
    assert (report.event_type_id, report.affected_sop_instance_uid) == (2, "1.2.1")


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_round_trip(cls: type, data: st.DataObject) -> None:
    msg = data.draw(messages(cls))
    encoded = encode_message(msg)
    assert len(encoded) % 2 == 0
    assert struct.unpack_from("<I", encoded, 8)[0] == len(encoded) - 12
    assert decode_message(encoded) == msg
    assert decode_message(memoryview(bytearray(encoded))) == msg


# --- strict decoding ---------------------------------------------------------------------------


def test_decoding_names_a_missing_mandatory_element() -> None:
    data = encode_command_set({Tag.CommandField: 0x0001, Tag.MessageID: 1, Tag.CommandDataSetType: 1,
                               Tag.AffectedSOPClassUID: "1.2", Tag.Priority: 0})
    with pytest.raises(DIMSEError, match="CStoreRQ is missing .*affected_sop_instance_uid"):
        decode_message(data)
    data = encode_command_set({Tag.CommandField: 0x8001, Tag.CommandDataSetType: 0x0101, Tag.Status: 0})
    with pytest.raises(DIMSEError, match="message_id_being_responded_to"):
        decode_message(data)


@pytest.mark.parametrize(
    ("elements", "match"),
    [
        ({Tag.MessageID: 1, Tag.CommandDataSetType: 0x0101}, "no .* Command Field"),
        ({Tag.CommandField: 0x0031, Tag.MessageID: 1, Tag.CommandDataSetType: 0x0101}, "unknown Command Field 0x0031"),
        ({Tag.CommandField: 0x0030, Tag.MessageID: 1, Tag.AffectedSOPClassUID: "1.2"}, "Command Data Set Type"),
        ({Tag.CommandField: 0x0020, Tag.MessageID: 1, Tag.AffectedSOPClassUID: "1.2",
          Tag.CommandDataSetType: 1, Tag.Priority: 7}, "priority"),
        ({Tag.CommandField: 0x0021, Tag.MessageID: 1, Tag.AffectedSOPClassUID: "1.2",
          Tag.CommandDataSetType: 1, Tag.Priority: 0, Tag.MoveDestination: "A" * 17}, "move_destination"),
        ({Tag.CommandField: 0x0030, Tag.MessageID: 1, Tag.AffectedSOPClassUID: "1." * 40,
          Tag.CommandDataSetType: 0x0101}, "affected_sop_class_uid"),
    ],
)
def test_decoding_errors(elements: dict[int, Any], match: str) -> None:
    with pytest.raises(DIMSEError, match=match):
        decode_message(encode_command_set(elements))


@pytest.mark.parametrize(("value", "present"), [(0x0101, False), (0x0001, True), (0x0000, True),
                                                 (0x0102, True), (0xFEFE, True)])
def test_any_data_set_type_but_0101_means_a_data_set(value: int, present: bool) -> None:
    data = encode_command_set({Tag.CommandField: 0x8020, Tag.MessageIDBeingRespondedTo: 1,
                               Tag.Status: 0xFF00, Tag.CommandDataSetType: value})
    assert decode_message(data).has_dataset is present


def test_elements_a_command_does_not_use_are_ignored() -> None:
    data = encode_command_set({Tag.CommandField: 0x0030, Tag.MessageID: 5, Tag.AffectedSOPClassUID: "1.2",
                               Tag.CommandDataSetType: 0x0101, Tag.Priority: 0, Tag.Status: 0})
    assert decode_message(data) == CEchoRQ(message_id=5, affected_sop_class_uid="1.2")


# --- pynetdicom interoperability -----------------------------------------------------------------


def _pynetdicom_decode(command_set: bytes) -> pdm.DIMSEMessage:
    p_data = P_DATA()
    p_data.presentation_data_value_list = [[1, b"\x03" + command_set]]  # last command fragment
    msg = pdm.DIMSEMessage()
    msg.decode_msg(p_data)
    return msg


def _pynetdicom_encode(msg: Any) -> bytes:
    name = _pynetdicom_name(type(msg))
    primitive = getattr(pdp, name.rsplit("_", 1)[0])()
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if f.name == "has_dataset" or value is None:
            continue
        setattr(primitive, _keyword(f.name), list(value) if isinstance(value, tuple) else value)
    if msg.has_dataset:
        setattr(primitive, pdm._DATASET_KEYWORDS[name], BytesIO(b"\x08\x00\x05\x00\x00\x00\x00\x00"))
    message = getattr(pdm, name)()
    message.primitive_to_message(primitive)
    p_data = next(message.encode_msg(1, 0))
    (context_id, pdv), = p_data.presentation_data_value_list
    assert context_id == 1 and pdv[0] == 0x03  # one PDV: the whole command set, last fragment
    return bytes(pdv[1:])


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_pynetdicom_decodes_ours(cls: type, data: st.DataObject) -> None:
    msg = data.draw(messages(cls))
    decoded = _pynetdicom_decode(encode_message(msg))
    assert type(decoded).__name__ == _pynetdicom_name(cls)
    cs = decoded.command_set
    assert cs.CommandField == cls.COMMAND_FIELD
    assert (cs.CommandDataSetType != 0x0101) is msg.has_dataset
    for f in dataclasses.fields(msg):
        if f.name == "has_dataset":
            continue
        value, tag = getattr(msg, f.name), _tag_of(f.name)
        if value is None:
            assert tag not in cs
            continue
        theirs = cs[tag].value
        if isinstance(value, tuple):
            theirs = [theirs] if cs[tag].VM == 1 else list(theirs)
            assert [int(t) for t in theirs] == list(value)
        elif isinstance(value, str):
            assert str(theirs).strip() == value
        else:
            assert theirs == value
    # and pynetdicom's own view of it, as its service layer sees it
    primitive = decoded.message_to_primitive()
    if hasattr(msg, "message_id"):
        assert primitive.MessageID == msg.message_id
    else:
        assert primitive.MessageIDBeingRespondedTo == msg.message_id_being_responded_to


def _byte_compatible(cls: type) -> st.SearchStrategy[Any]:
    """Messages using only the elements pynetdicom puts in that command, and a data set only where
    pynetdicom can send one."""
    name = _pynetdicom_name(cls)
    keywords = frozenset(pdm._COMMAND_SET_KEYWORDS[name.replace("_", "-")])
    strategy = messages(cls, only_keywords=keywords)
    if name not in pdm._DATASET_KEYWORDS:
        strategy = strategy.map(lambda m: dataclasses.replace(m, has_dataset=False))
    return strategy


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_pynetdicom_bytes_equal_ours(cls: type, data: st.DataObject) -> None:
    msg = data.draw(_byte_compatible(cls))
    theirs = _pynetdicom_encode(msg)
    assert decode_message(theirs) == msg
    assert encode_message(msg) == theirs


def test_pynetdicom_c_store_rq_golden() -> None:
    primitive = pdp.C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    primitive.AffectedSOPInstanceUID = "1.2.3.4.5"
    primitive.Priority = 0
    primitive.MoveOriginatorApplicationEntityTitle = "ORIG"
    primitive.MoveOriginatorMessageID = 3
    primitive.DataSet = BytesIO(b"\x08\x00\x05\x00\x00\x00\x00\x00")
    message = pdm.C_STORE_RQ()
    message.primitive_to_message(primitive)
    pdv = next(message.encode_msg(1, 0)).presentation_data_value_list[0][1]
    from tests.unit.test_dimse_commands import C_STORE_RQ

    assert pdv[1:] == C_STORE_RQ
