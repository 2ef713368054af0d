"""Fragmentation of DIMSE messages into PDVs and their reassembly (PS3.7 6.3.1, PS3.8 Annex E).

Invariants:
- `fragment` never copies: it yields memoryview slices of at most `max_pdv_data` bytes, and always
  at least one piece (an empty message is one empty last fragment).
- `MessageAssembler` follows one association's inbound PDVs (PS3.8 E.2 message control header):
  a message is command fragments (the last one flagged), then, only if the command's Command Data
  Set Type says so, data set fragments (the last one flagged). Fragments of different messages never
  interleave (PS3.7 6.3.1), so a whole message stays on one presentation context.
- Command fragments are buffered (a command set is small and bounded by `max_command_length`);
  data set fragments are handed on one by one and never accumulated, so memory stays bounded by the
  PDU size whatever the size of the data set. Work is O(bytes received).
- Data set fragments are handed on as given, not copied: the PDU reader gives each PDU memory of its
  own that no later input overwrites (agent.ul.pdu.PDUReader), so a view stays valid.
- Any violation raises `DIMSEError`; the association must then be aborted. The assembler resets to
  its idle state, so it never emits events for the broken message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, TypeAlias

from agent.dimse.errors import DIMSEError
from agent.dimse.messages import Message, UnusableRequest, decode_command
from agent.ul.values import value

__all__ = [
    "CommandReceived",
    "DataSetFragment",
    "Event",
    "MessageAssembler",
    "MessageComplete",
    "fragment",
]

DEFAULT_MAX_COMMAND_LENGTH: Final = 1 << 20


def fragment(data: bytes | bytearray | memoryview, max_pdv_data: int) -> Iterator[tuple[memoryview, bool]]:
    """Split `data` into ``(chunk, is_last)`` pieces of at most `max_pdv_data` bytes.

    `max_pdv_data` is the room for the value in one PDV (the negotiated maximum PDU length less the
    PDU and PDV headers); 0 or less means unlimited, giving one piece.
    """
    view = memoryview(data).cast("B")
    size = len(view)
    if max_pdv_data <= 0 or size <= max_pdv_data:
        yield view, True
        return
    last_start = size - ((size - 1) % max_pdv_data + 1)
    for start in range(0, last_start, max_pdv_data):
        yield view[start:start + max_pdv_data], False
    yield view[last_start:], True


@value
class CommandReceived:
    """A whole command set arrived and decoded (its last command fragment was received).

    `message` is an `UnusableRequest` for a request that must be answered with a failure status
    rather than handled (see `agent.dimse.messages.decode_command`)."""

    context_id: int
    message: Message | UnusableRequest


@value
class DataSetFragment:
    """One data set PDV's value, in order; `is_last` marks the end of the data set."""

    context_id: int
    data: bytes | memoryview  # read-only; valid for as long as it is referenced
    is_last: bool


@value
class MessageComplete:
    """The message (command and data set, if any) is over; the next PDV starts a new message."""

    context_id: int


Event: TypeAlias = CommandReceived | DataSetFragment | MessageComplete

# states
_IDLE: Final = 0
_COMMAND: Final = 1
_DATA: Final = 2


class MessageAssembler:
    """Reassembles inbound PDVs into DIMSE message events; one per association."""

    __slots__ = ("_state", "_context_id", "_command", "_max_command_length", "_after_no_data_set")

    def __init__(self, *, max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH) -> None:
        self._state = _IDLE
        self._context_id = 0
        self._command = bytearray()
        self._max_command_length = max_command_length
        # The last message ended with a command that said "no data set": names that case in errors.
        self._after_no_data_set = False

    @property
    def idle(self) -> bool:
        """True between messages (no command or data set partly received)."""
        return self._state == _IDLE

    def _fail(self, reason: str) -> DIMSEError:
        self._state = _IDLE
        self._command = bytearray()
        self._after_no_data_set = False
        return DIMSEError(reason)

    def receive_pdv(
        self, context_id: int, is_command: bool, is_last: bool, data: bytes | bytearray | memoryview
    ) -> list[Event]:
        """Feed one PDV (its control header already split into `is_command` and `is_last`)."""
        state = self._state
        if state == _DATA:
            if is_command:
                raise self._fail("command PDV received while a data set was expected")
            if context_id != self._context_id:
                raise self._fail(
                    f"data set PDV on presentation context {context_id}, message is on {self._context_id}"
                )
            if is_last:
                self._state = _IDLE
                return [DataSetFragment(context_id, data, True), MessageComplete(context_id)]
            return [DataSetFragment(context_id, data, False)]

        if state == _IDLE:
            if not is_command:
                if self._after_no_data_set:
                    raise self._fail("data set PDV after a command that said no data set follows")
                raise self._fail("data set PDV received with no command before it")
            self._state = _COMMAND
            self._context_id = context_id
            self._after_no_data_set = False
        elif not is_command:
            raise self._fail("data set PDV received before the command's last fragment")
        elif context_id != self._context_id:
            raise self._fail(
                f"command PDV on presentation context {context_id}, message is on {self._context_id}"
            )

        self._command += data
        if len(self._command) > self._max_command_length:
            raise self._fail(f"command set longer than {self._max_command_length} bytes")
        if not is_last:
            return []
        command = self._command
        self._command = bytearray()
        try:
            message = decode_command(command)
        except DIMSEError as exc:
            raise self._fail(str(exc)) from None
        if message.has_dataset:
            self._state = _DATA
            return [CommandReceived(context_id, message)]
        self._state = _IDLE
        self._after_no_data_set = True
        return [CommandReceived(context_id, message), MessageComplete(context_id)]
