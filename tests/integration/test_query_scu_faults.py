"""The Q/R SCU against a misbehaving fake peer (the agent's own listener with handlers written to fail):
what the caller sees is one clear error, never a hang or an exception group.

- The peer aborts after one match: AssociationAborted, with and without a cancel watcher running.
- The peer answers nothing: TimeoutExpired after the DIMSE timeout, and the association is aborted.
- The peer refuses the SCP role for every storage class: C-GET is refused before anything is sent
  (QueryError), as the CLI reports it (exit 1).
- A C-STORE arriving on a C-MOVE association (where we store nothing) is refused, and the move goes on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from pydicom import Dataset

from agent.dimse import CFindRQ, CGetRQ, CMoveRQ, CStoreRQ
from agent.errors import AssociationAborted, TimeoutExpired
from agent.net.client import associate
from agent.net.connection import DicomConnection, Timeouts
from agent.net.server import AcceptorPolicy, Listener, ServiceRegistry
from agent.services.dataset import encode
from agent.services.query import scu
from agent.services.query.models import STUDY_ROOT
from agent.ul.negotiation import PresentationContext, SyntaxSupport

pytestmark = pytest.mark.trio
CT = "1.2.840.10008.5.1.4.1.1.2"


async def serve(nursery: trio.Nursery, handlers: dict[type, Callable[..., Awaitable[None]]], *,
                storage_scp_role: bool = True) -> int:
    registry = ServiceRegistry()
    registry.add([STUDY_ROOT.find, STUDY_ROOT.move, STUDY_ROOT.get], SyntaxSupport(), handlers)  # type: ignore[arg-type]
    registry.add([CT], SyntaxSupport(requestor_may_be_scu=True, requestor_may_be_scp=storage_scp_role), {})
    listener = Listener(AcceptorPolicy(ae_title="FAKE", timeouts=Timeouts(artim=5, dimse=5, idle=30)), registry)
    sockets = await nursery.start(listener.serve_tcp, "127.0.0.1", 0)
    return int(sockets[0].socket.getsockname()[1])


def identifier() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    return ds


async def one_match_then_abort(conn: DicomConnection, ctx: PresentationContext, rq: CFindRQ) -> None:
    await conn.read_dataset(ctx.id)
    match = Dataset()
    match.QueryRetrieveLevel, match.StudyInstanceUID = "STUDY", "1.2.3"
    await conn.send_message(ctx.id, rq.response(0xFF00, has_dataset=True), encode(match, ctx.transfer_syntax))
    await conn.abort(why="test: aborting mid-query")


async def silent(conn: DicomConnection, ctx: PresentationContext, rq: CFindRQ) -> None:
    await conn.read_dataset(ctx.id)
    await trio.sleep_forever()


async def test_abort_and_silence_are_clear_errors(nursery: trio.Nursery) -> None:
    port = await serve(nursery, {CFindRQ: one_match_then_abort})
    for cancel in (None, trio.Event()):
        with pytest.raises(AssociationAborted):
            async with associate("127.0.0.1", port, calling_ae="SCU", called_ae="FAKE",
                                 proposals=scu.proposals("study", ["find"]), timeouts=Timeouts(dimse=30)) as conn:
                await scu.find(conn, STUDY_ROOT.find, identifier(), cancel=cancel)

    port = await serve(nursery, {CFindRQ: silent})
    with trio.fail_after(30):
        with pytest.raises(TimeoutExpired, match="sent nothing within 1 s"):
            async with associate("127.0.0.1", port, calling_ae="SCU", called_ae="FAKE",
                                 proposals=scu.proposals("study", ["find"]), timeouts=Timeouts(dimse=1)) as conn:
                await scu.find(conn, STUDY_ROOT.find, identifier(), cancel=trio.Event())
    assert not conn.is_open


async def test_get_without_the_storage_scp_role(nursery: trio.Nursery, tmp_path: Path) -> None:
    async def never(conn: DicomConnection, ctx: PresentationContext, rq: CGetRQ) -> None:
        raise AssertionError("no C-GET may be sent when no storage context can carry its sub-operations")

    port = await serve(nursery, {CGetRQ: never}, storage_scp_role=False)
    async with associate("127.0.0.1", port, calling_ae="SCU", called_ae="FAKE",
                         proposals=scu.proposals("study", ["get"], storage_classes=[CT])) as conn:
        assert not any(c.requestor_is_scp for c in conn.contexts.values())
        with pytest.raises(scu.QueryError, match="accepted no storage SOP Class with us as SCP"):
            await scu.get(conn, STUDY_ROOT.get, identifier(), store=never)  # type: ignore[arg-type]

    from agent.cli import main
    from tests.conftest import write_profile

    profile = write_profile(tmp_path, "")
    code = await trio.to_thread.run_sync(lambda: main(
        ["get", "127.0.0.1", str(port), "--aec", "FAKE", "--profile", profile.source, "-k", "StudyInstanceUID=1.2"]))
    assert code == 1


async def test_a_store_on_a_move_association_is_refused(nursery: trio.Nursery) -> None:
    replies: list[int] = []

    async def move_with_a_stray_store(conn: DicomConnection, ctx: PresentationContext, rq: CMoveRQ) -> None:
        await conn.read_dataset(ctx.id)
        store_ctx = conn.context_for(CT)
        assert store_ctx is not None
        stray = CStoreRQ(message_id=99, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2.3.4")
        await conn.send_message(store_ctx.id, stray, b"")
        while True:  # the SCU answers the stray request before we go on
            event = await conn.next_event()
            message = getattr(event, "message", None)
            if message is not None and getattr(message, "message_id_being_responded_to", None) == 99:
                replies.append(int(message.status))
                break
        await conn.send_message(ctx.id, rq.response(0x0000, number_of_remaining_suboperations=0,
                                                    number_of_completed_suboperations=1,
                                                    number_of_failed_suboperations=0,
                                                    number_of_warning_suboperations=0))

    port = await serve(nursery, {CMoveRQ: move_with_a_stray_store})
    proposals = scu.proposals("study", ["move"]) + scu.proposals("study", ["get"], storage_classes=[CT])[1:]
    async with associate("127.0.0.1", port, calling_ae="SCU", called_ae="FAKE", proposals=proposals) as conn:
        outcome = await scu.move(conn, STUDY_ROOT.move, identifier(), "SOMEWHERE")
    assert outcome.ok and outcome.completed == 1 and outcome.stored == 0
    assert replies == [0x0211]  # unrecognized operation: nothing stores on a C-MOVE association
