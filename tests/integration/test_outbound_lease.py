"""The outbound worker's edge cases against a peer built on the agent's own listener (C-ECHO), in real
time: a batch that runs longer than its lease gives the rest back before the maintenance pass's lease
recovery could hand them out again (no job performed twice); a transient failure raised inside a
performer's own nursery is judged as transient (retried), not as a job that cannot be run."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import trio

from agent.dimse import CEchoRQ, Status
from agent.net.connection import DicomConnection, Timeouts
from agent.net.requests import request
from agent.net.server import AcceptorPolicy, Listener, ServiceRegistry
from agent.profile import Peer
from agent.services import verification
from agent.services.blocking import Blocking
from agent.services.outbound import Outbound
from agent.store.db import open_database
from agent.store.queue import Job, JobQueue, JobState
from agent.ul.negotiation import ProposedContext

T = Timeouts(connect=5, artim=5, dimse=10, idle=30)


class SlowEcho:
    """A job kind whose work is one C-ECHO and 0.4 s of thought; records each job it performs."""

    def __init__(self) -> None:
        self.performed: Counter[int] = Counter()

    def contexts(self, job: Job) -> Sequence[ProposedContext]:
        return [ProposedContext(verification.VERIFICATION_SOP_CLASS)]

    async def perform(self, conn: DicomConnection, job: Job) -> None:
        ctx = conn.context_for(verification.VERIFICATION_SOP_CLASS)
        assert ctx is not None
        await trio.sleep(0.4)
        reply = await request(conn, ctx.id, CEchoRQ(message_id=conn.next_message_id(),
                                                    affected_sop_class_uid=verification.VERIFICATION_SOP_CLASS))
        assert reply.status == Status.SUCCESS
        self.performed[job.id] += 1


async def test_a_batch_longer_than_its_lease_performs_each_job_once(tmp_path: Path, nursery: trio.Nursery) -> None:
    registry = ServiceRegistry()
    verification.register(registry)
    listener = Listener(AcceptorPolicy(ae_title="PEER", timeouts=T), registry)
    port = (await nursery.start(listener.serve_tcp, "127.0.0.1", 0))[0].socket.getsockname()[1]
    queue = JobQueue(open_database(tmp_path / "agent.db"), rng=random.Random(1))
    performer = SlowEcho()
    peer = Peer(name="peer", ae_title="PEER", host="127.0.0.1", port=port, retry_base=0.1, retry_cap=0.5)
    outbound = Outbound("AGENT", {"peer": peer}, queue, Blocking(), T, performers={"echo": performer},
                        batch_kinds=frozenset({"echo"}), lease=4.0)
    ids = [queue.enqueue("echo", "peer", {"n": i}) for i in range(16)]
    async with trio.open_nursery() as inner:
        await inner.start(outbound.run)

        async def recover_leases() -> None:  # what the maintenance pass does, often
            while True:
                await trio.to_thread.run_sync(queue.recover_expired)
                await trio.sleep(0.1)

        inner.start_soon(recover_leases)
        with trio.fail_after(60):
            while not all(queue.get(i).state is JobState.DONE for i in ids):  # type: ignore[union-attr]
                await trio.sleep(0.05)
        inner.cancel_scope.cancel()
    assert sorted(performer.performed) == ids
    assert max(performer.performed.values()) == 1, performer.performed


class Grouped:
    """A performer whose nursery fails with one transient error: an ExceptionGroup of one."""

    def __init__(self) -> None:
        self.attempts = 0

    def contexts(self, job: Job) -> Sequence[ProposedContext]:
        return [ProposedContext(verification.VERIFICATION_SOP_CLASS)]

    async def perform(self, conn: DicomConnection, job: Job) -> None:
        from agent.errors import TimeoutExpired

        self.attempts += 1
        if self.attempts == 1:
            async def stalls() -> None:
                raise TimeoutExpired("no DIMSE response within 1 s")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stalls)


async def test_a_transient_failure_inside_a_performers_nursery_is_retried(tmp_path: Path, nursery: trio.Nursery) -> None:
    registry = ServiceRegistry()
    verification.register(registry)
    listener = Listener(AcceptorPolicy(ae_title="PEER", timeouts=T), registry)
    port = (await nursery.start(listener.serve_tcp, "127.0.0.1", 0))[0].socket.getsockname()[1]
    queue = JobQueue(open_database(tmp_path / "agent.db"), rng=random.Random(1))
    peer = Peer(name="peer", ae_title="PEER", host="127.0.0.1", port=port, retry_base=0.1, retry_cap=0.2)
    outbound = Outbound("AGENT", {"peer": peer}, queue, Blocking(), T, performers={"grouped": Grouped()})
    job_id = queue.enqueue("grouped", "peer", {})
    async with trio.open_nursery() as inner:
        await inner.start(outbound.run)
        with trio.fail_after(30):
            while queue.get(job_id).state not in (JobState.DONE, JobState.DEAD):  # type: ignore[union-attr]
                await trio.sleep(0.05)
        inner.cancel_scope.cancel()
    job = queue.get(job_id)
    assert job is not None and job.state is JobState.DONE and job.attempts == 1
    assert "DIMSE response" in (job.last_error or "")
