"""Fragmentation and reassembly of DIMSE messages (PS3.7 6.3.1, PS3.8 Annex E)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.dimse import (
    CEchoRQ,
    CommandReceived,
    CStoreRQ,
    DataSetFragment,
    DIMSEError,
    Event,
    MessageAssembler,
    MessageComplete,
    NCreateRQ,
    encode_message,
    fragment,
)

ECHO = CEchoRQ(message_id=1, affected_sop_class_uid="1.2.840.10008.1.1")
STORE = CStoreRQ(message_id=2, affected_sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
                 affected_sop_instance_uid="1.2.3.4")
DATA = bytes(range(256)) * 5


# --- fragment ------------------------------------------------------------------------------------


@settings(deadline=None)
@given(st.binary(max_size=300), st.integers(-2, 64))
def test_fragment_reassembles_in_bounded_pieces(data: bytes, size: int) -> None:
    pieces = list(fragment(data, size))
    assert b"".join(bytes(p) for p, _ in pieces) == data
    assert [last for _, last in pieces] == [False] * (len(pieces) - 1) + [True]
    if size <= 0:
        assert len(pieces) == 1
    else:
        assert all(len(p) <= size for p, _ in pieces)
        assert all(len(p) == size for p, _ in pieces[:-1])
        assert len(pieces) == max(1, -(-len(data) // size))


def test_fragment_edge_cases() -> None:
    assert [(bytes(p), last) for p, last in fragment(b"", 10)] == [(b"", True)]
    assert [(bytes(p), last) for p, last in fragment(b"", 0)] == [(b"", True)]
    assert [(bytes(p), last) for p, last in fragment(b"abcdef", 3)] == [(b"abc", False), (b"def", True)]
    assert [(bytes(p), last) for p, last in fragment(b"abcdef", 0)] == [(b"abcdef", True)]


def test_fragment_does_not_copy() -> None:
    source = bytearray(b"abcdef")
    first, _ = next(fragment(source, 4))
    source[0] = ord("z")
    assert bytes(first) == b"zbcd"


# --- reassembly --------------------------------------------------------------------------------


def _feed(assembler: MessageAssembler, ctx: int, command: bytes, data: bytes | None, size: int) -> list[Event]:
    events: list[Event] = []
    for piece, last in fragment(command, size):
        events += assembler.receive_pdv(ctx, True, last, piece)
    if data is not None:
        for piece, last in fragment(data, size):
            events += assembler.receive_pdv(ctx, False, last, piece)
    return events


def test_one_byte_fragments_of_a_message_with_data_set() -> None:
    assembler = MessageAssembler()
    command = encode_message(STORE)
    events: list[Event] = []
    for i in range(len(command)):
        out = assembler.receive_pdv(3, True, i == len(command) - 1, command[i:i + 1])
        if i < len(command) - 1:
            assert out == []  # nothing until the command's last fragment
        events += out
    assert events == [CommandReceived(3, STORE)]
    assert not assembler.idle
    for i in range(len(DATA)):
        last = i == len(DATA) - 1
        out = assembler.receive_pdv(3, False, last, memoryview(DATA)[i:i + 1])
        expected: list[Event] = [DataSetFragment(3, DATA[i:i + 1], last)]
        if last:
            expected.append(MessageComplete(3))
        assert out == expected  # streamed: each data PDV becomes one event at once
    assert assembler.idle


def test_message_without_data_set_completes_with_its_command() -> None:
    assembler = MessageAssembler()
    assert _feed(assembler, 1, encode_message(ECHO), None, 0) == [CommandReceived(1, ECHO), MessageComplete(1)]
    assert assembler.idle


@settings(deadline=None, max_examples=50)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=40), st.integers(1, 128),
                          st.integers(1, 255)), min_size=1, max_size=4))
def test_consecutive_messages_any_fragmentation(spec: list[tuple[bool, bytes, int, int]]) -> None:
    assembler = MessageAssembler()
    for with_data, data, size, ctx in spec:
        msg = STORE if with_data else ECHO
        events = _feed(assembler, ctx, encode_message(msg), data if with_data else None, size)
        assert events[0] == CommandReceived(ctx, msg)
        assert events[-1] == MessageComplete(ctx)
        fragments = events[1:-1]
        # Handed on as given, not copied: the PDU reader's views stay valid (agent.ul.pdu.PDUReader).
        assert all(isinstance(e, DataSetFragment) and isinstance(e.data, memoryview) for e in fragments)
        if with_data:
            assert b"".join(e.data for e in fragments) == data  # type: ignore[union-attr]
            assert [e.is_last for e in fragments] == [False] * (len(fragments) - 1) + [True]  # type: ignore[union-attr]
        else:
            assert fragments == []
        assert assembler.idle


def test_empty_data_set_fragment_is_allowed() -> None:
    assembler = MessageAssembler()
    events = _feed(assembler, 1, encode_message(STORE), b"", 0)
    assert events == [CommandReceived(1, STORE), DataSetFragment(1, b"", True), MessageComplete(1)]


def test_n_create_without_data_set_flag_is_honoured() -> None:
    msg = NCreateRQ(message_id=1, affected_sop_class_uid="1.2", has_dataset=False)
    assert _feed(MessageAssembler(), 1, encode_message(msg), None, 7) == [
        CommandReceived(1, msg), MessageComplete(1)]


# --- protocol errors ---------------------------------------------------------------------------


def test_data_with_no_command() -> None:
    with pytest.raises(DIMSEError, match="no command"):
        MessageAssembler().receive_pdv(1, False, True, b"\0\0")


def test_data_after_a_command_that_said_no_data_set() -> None:
    assembler = MessageAssembler()
    _feed(assembler, 1, encode_message(ECHO), None, 0)
    with pytest.raises(DIMSEError, match="said no data set"):
        assembler.receive_pdv(1, False, True, b"\0\0")


def test_command_while_data_set_expected() -> None:
    assembler = MessageAssembler()
    _feed(assembler, 1, encode_message(STORE), None, 0)
    assembler.receive_pdv(1, False, False, b"\0\0")
    with pytest.raises(DIMSEError, match="while a data set was expected"):
        assembler.receive_pdv(1, True, True, encode_message(ECHO))


def test_data_before_last_command_fragment() -> None:
    assembler = MessageAssembler()
    command = encode_message(STORE)
    assembler.receive_pdv(1, True, False, command[:10])
    with pytest.raises(DIMSEError, match="before the command's last fragment"):
        assembler.receive_pdv(1, False, True, b"\0\0")


def test_context_change_within_command() -> None:
    assembler = MessageAssembler()
    command = encode_message(STORE)
    assembler.receive_pdv(1, True, False, command[:10])
    with pytest.raises(DIMSEError, match="presentation context 3, message is on 1"):
        assembler.receive_pdv(3, True, True, command[10:])


def test_context_change_within_data_set() -> None:
    assembler = MessageAssembler()
    _feed(assembler, 5, encode_message(STORE), None, 0)
    assembler.receive_pdv(5, False, False, b"ab")
    with pytest.raises(DIMSEError, match="presentation context 7, message is on 5"):
        assembler.receive_pdv(7, False, True, b"cd")


def test_malformed_command_set() -> None:
    command = encode_message(ECHO)
    with pytest.raises(DIMSEError, match="Group Length"):
        MessageAssembler().receive_pdv(1, True, True, command[:-2])


def test_oversized_command_set() -> None:
    assembler = MessageAssembler(max_command_length=64)
    assembler.receive_pdv(1, True, False, b"\0" * 64)
    with pytest.raises(DIMSEError, match="longer than 64"):
        assembler.receive_pdv(1, True, False, b"\0")


def test_after_an_error_no_event_of_the_broken_message_is_emitted() -> None:
    assembler = MessageAssembler()
    command = encode_message(ECHO)
    assembler.receive_pdv(1, True, False, command[:10])
    with pytest.raises(DIMSEError):
        assembler.receive_pdv(1, False, True, b"")
    assert assembler.idle
    # the half command was dropped: a fresh message decodes on its own
    assert _feed(assembler, 1, command, None, 0) == [CommandReceived(1, ECHO), MessageComplete(1)]
