"""The outbound worker against a destination that stays down, on trio's autojump clock.

A refused TCP connection fails at once, so hours of retrying run in virtual time: the test observes
the backoff the worker actually applied (attempt after attempt, read from the queue) and the end of
the job at `max_age`, without sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import trio

from agent.net.connection import DicomConnection, Timeouts
from agent.profile import Peer
from agent.services.blocking import Blocking
from agent.services.outbound import Outbound
from agent.store.db import open_database
from agent.store.queue import Job, JobQueue, JobState
from agent.ul.negotiation import ProposedContext
from tests.conftest import free_port

EPOCH = 1_800_000_000.0


class InlineBlocking(Blocking):
    """The blocking-call bridge without threads. Under the autojump clock, virtual time would race
    ahead while a worker thread runs in real time; run inline, every queue call finishes within the
    same virtual instant and the test observes the worker's real schedule. (A refused TCP connection
    to a numeric address involves no thread in trio either.)"""

    async def run(self, fn, *args):  # type: ignore[no-untyped-def, override]
        return fn(*args)


class EchoPerformer:
    """A job kind whose work is one C-ECHO: enough to need an association to the peer."""

    def contexts(self, job: Job) -> Sequence[ProposedContext]:
        return [ProposedContext("1.2.840.10008.1.1")]

    async def perform(self, conn: DicomConnection, job: Job) -> None:  # pragma: no cover - peer is down
        raise AssertionError("the destination is down: no association can be made")


def make_outbound(
    tmp_path: Path, clock: trio.abc.Clock, *, retry_base: float, retry_cap: float, max_age: float
) -> tuple[Outbound, JobQueue]:
    db = open_database(tmp_path / "agent.db")
    # The queue's clock is read from worker threads too: use the mock clock object, not trio.current_time.
    queue = JobQueue(db, clock=lambda: EPOCH + clock.current_time(), rng=random.Random(7))
    peer = Peer(name="pacs", ae_title="PACS", host="127.0.0.1", port=free_port(),
                retry_base=retry_base, retry_cap=retry_cap, max_age=max_age, linger=1.0)
    outbound = Outbound("AGENT", {"pacs": peer}, queue, InlineBlocking(), Timeouts(connect=5, artim=5, dimse=5, idle=30),
                        performers={"echo": EchoPerformer()})
    return outbound, queue


async def test_backoff_grows_to_its_cap_and_the_job_dies_at_max_age(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    outbound, queue = make_outbound(tmp_path, autojump_clock, retry_base=2.0, retry_cap=60.0, max_age=3600.0)
    job_id = queue.enqueue("echo", "pacs", {})
    due_gaps: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(outbound.run)
        last_attempts = 0
        while True:
            job = queue.get(job_id)
            assert job is not None
            if job.attempts != last_attempts:
                last_attempts = job.attempts
                if job.state is JobState.PENDING:
                    due_gaps.append(job.next_attempt_at - job.updated_at)
            if job.state is JobState.DEAD:
                break
            assert trio.current_time() < 7200, "the job should be dead after max_age (3600 s)"
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    job = queue.get(job_id)
    assert job is not None and job.state is JobState.DEAD
    assert "cannot connect" in (job.last_error or "")
    # Ended at max_age, not before and not long after: one capped delay plus the worker's idle poll.
    died_at = job.updated_at - job.created_at
    assert 3600 <= died_at <= 3600 + 60 + outbound.idle_poll + 1
    # Exponential at first (jitter keeps each delay within [d/2, d]) and never above the cap.
    assert 1.0 <= due_gaps[0] <= 2.0
    assert 2.0 <= due_gaps[1] <= 4.0
    assert max(due_gaps) <= 60.0
    assert sum(1 for gap in due_gaps if gap >= 30.0) >= 30, "most of the hour is spent at the cap"
    # One attempt per delay, not a burst: about an hour at ~45 s each (jitter in [30, 60]).
    assert 55 <= job.attempts <= 130


async def test_a_down_destination_makes_one_attempt_per_delay_not_one_per_job(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    outbound, queue = make_outbound(tmp_path, autojump_clock, retry_base=10.0, retry_cap=10.0, max_age=86400.0)
    ids = [queue.enqueue("echo", "pacs", {"n": i}) for i in range(50)]
    async with trio.open_nursery() as nursery:
        await nursery.start(outbound.run)
        # Small steps: the autojump clock jumps to the next deadline whenever every task waits, even
        # on a worker thread, so one long sleep would end before the worker had claimed anything.
        while trio.current_time() < 100:  # about ten 5-10 s delays of virtual time
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    attempts = sum(job.attempts for job in (queue.get(i) for i in ids) if job is not None)
    # The destination pauses after each refused connection: ~10-20 attempts in 100 s, not 50 x that.
    assert 8 <= attempts <= 25
    assert all(queue.get(i).state is JobState.PENDING for i in ids)  # nothing lost, nothing dead


class RacingQueue(JobQueue):
    """A producer that queues a job and wakes the worker exactly while the idle worker is asking the
    queue when its next job is due: the moment a wake-up swapped after an await would be lost."""

    outbound: Outbound | None = None
    raced_at: float | None = None

    def next_due(self, destination: str, **kw):  # type: ignore[no-untyped-def, override]
        due = super().next_due(destination, **kw)
        if self.raced_at is None and self.outbound is not None:
            self.raced_at = self.clock()
            self.enqueue("echo", destination, {"raced": True})
            self.outbound.wake(destination)
        return due


async def test_a_wake_up_during_the_idle_check_is_not_lost(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    db = open_database(tmp_path / "agent.db")
    queue = RacingQueue(db, clock=lambda: EPOCH + autojump_clock.current_time(), rng=random.Random(7))
    peer = Peer(name="pacs", ae_title="PACS", host="127.0.0.1", port=free_port(), retry_base=60.0, retry_cap=60.0)
    outbound = Outbound("AGENT", {"pacs": peer}, queue, InlineBlocking(), Timeouts(connect=5, artim=5, dimse=5, idle=30),
                        performers={"echo": EchoPerformer()}, idle_poll=5.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(outbound.run)
        queue.outbound = outbound  # from now on the first idle check races with the producer
        with trio.fail_after(60):
            while not queue.list(states=[JobState.PENDING, JobState.DEAD]) or queue.list()[0].attempts == 0:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    job = queue.list()[0]
    assert queue.raced_at is not None
    # The one attempt (refused: the peer is down) came right after the wake-up, not at the 5 s poll.
    assert job.updated_at - queue.raced_at < 1.0, job.updated_at - queue.raced_at


async def test_a_job_held_by_a_dead_predecessor_does_not_make_the_worker_spin(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    outbound, queue = make_outbound(tmp_path, autojump_clock, retry_base=1.0, retry_cap=1.0, max_age=86400.0)
    first = queue.enqueue("echo", "pacs", {}, group_key="mpps@pacs")
    queue.enqueue("echo", "pacs", {}, group_key="mpps@pacs")  # an N-SET after its N-CREATE
    queue.fail(queue.claim("pacs").id, "refused", permanent=True, policy=outbound._policy(outbound.peers["pacs"]))  # type: ignore[union-attr]
    assert queue.get(first).state is JobState.DEAD  # type: ignore[union-attr]
    looks = [0]
    claim_batch = queue.claim_batch

    def counting(*args, **kw):  # type: ignore[no-untyped-def]
        looks[0] += 1
        if looks[0] > 1000:
            raise AssertionError("the worker spins on a job it cannot claim")
        return claim_batch(*args, **kw)

    queue.claim_batch = counting  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(outbound.run)
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    # It looks again when woken, or at the idle poll (an operator may retry the dead job from the CLI).
    assert looks[0] <= 60 / outbound.idle_poll + 2, looks[0]
