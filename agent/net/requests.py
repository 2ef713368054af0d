"""The SCU side of one DIMSE operation: send a request, collect its responses.

Invariants:
- Responses are matched on Message ID Being Responded To; a response for another message ID is a
  protocol error that aborts the association.
- While waiting, a *request* from the peer on the same association (for example a Storage Commitment
  N-EVENT-REPORT that an archive sends before answering, or between our operations) is handed to
  `incoming`, or refused with 'unrecognized operation' when there is none.
- The DIMSE deadline applies to each response, not to the whole operation (a C-FIND with thousands of
  pending responses does not time out while responses keep coming).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from agent.dimse import CommandReceived, DataSetFragment, MessageComplete, UnusableRequest
from agent.dimse.messages import Message
from agent.dimse.status import StatusCategory, category
from agent.errors import AssociationAborted, TimeoutExpired
from agent.net.connection import DicomConnection, unexpected_event

if TYPE_CHECKING:
    from agent.net.server import Handler


@dataclass(frozen=True, slots=True)
class Reply:
    message: Message
    dataset: bytes | None

    @property
    def status(self) -> int:
        return int(getattr(self.message, "status", 0))


async def responses(
    conn: DicomConnection,
    context_id: int,
    message: Message,
    dataset: bytes | None = None,
    *,
    incoming: Handler | None = None,
    sent: bool = False,
) -> AsyncIterator[Reply]:
    """Send `message` (unless `sent`) and yield each response until a non-pending one."""
    if not sent:
        await conn.send_message(context_id, message, dataset)
    message_id = message.message_id  # type: ignore[union-attr]
    while True:
        reply = await _next_response(conn, message_id, incoming)
        yield reply
        if category(reply.status) is not StatusCategory.PENDING:
            return


async def request(
    conn: DicomConnection,
    context_id: int,
    message: Message,
    dataset: bytes | None = None,
    *,
    incoming: Handler | None = None,
) -> Reply:
    """Send a request that has exactly one response and return it."""
    final: Reply | None = None
    async for reply in responses(conn, context_id, message, dataset, incoming=incoming):
        final = reply
    assert final is not None
    return final


async def await_response(
    conn: DicomConnection, message_id: int, *, incoming: Handler | None = None
) -> Reply:
    """Wait for the response to a request already sent (e.g. with send_message_from_file)."""
    return await _next_response(conn, message_id, incoming)


async def _next_response(conn: DicomConnection, message_id: int, incoming: Handler | None) -> Reply:
    with trio.move_on_after(conn.timeouts.dimse) as scope:
        while True:
            event = await conn.next_event()
            if not isinstance(event, CommandReceived):
                if isinstance(event, (DataSetFragment, MessageComplete)):
                    continue
                raise unexpected_event(event, "a DIMSE response")
            msg = event.message
            responding_to = getattr(msg, "message_id_being_responded_to", None)
            if responding_to is None:  # a request from the peer
                ctx = conn.contexts[event.context_id]
                if incoming is None or isinstance(msg, UnusableRequest):  # the latter: answered as is
                    # Imported here: the listener's module is not needed by a plain SCU (start-up of `store`).
                    from agent.net.server import refuse_request

                    await refuse_request(conn, ctx, msg)
                else:
                    await incoming(conn, ctx, msg)
                continue
            if responding_to != message_id:
                await conn.abort(why=f"response to message {responding_to}, expected {message_id}")
                raise AssociationAborted(
                    f"response to message {responding_to}, expected {message_id}", local=True
                )
            data = await conn.read_dataset(event.context_id) if msg.has_dataset else None
            return Reply(msg, data)
    assert scope.cancelled_caught
    with trio.CancelScope(shield=True):
        # Giving up on a silent peer: no ARTIM wait for it to close.
        await conn.abort(linger=0, why=f"no DIMSE response within {conn.timeouts.dimse:g} s")
    raise TimeoutExpired(f"{conn.remote} sent no DIMSE response within {conn.timeouts.dimse:g} s")
