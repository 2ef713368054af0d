"""Outbound delivery: one worker per destination peer, draining the durable queue.

Invariants (DESIGN.md "Durable queue"):
- Every outgoing operation is a queue job first; a worker claims it, performs it over an association
  and only then completes it. A crash between claim and complete leaves a lease that start-up
  recovery returns to pending: the operation is repeated, never lost (C-STORE is idempotent by SOP
  Instance UID; the other performers make their own repeats harmless).
- One association per destination at a time, reused for consecutive jobs whose presentation contexts
  it has, released after the peer's `linger` with nothing to do.
- Failures are classified: transient ones (refused, reset, timeouts, rejected-transient, A7xx, ...)
  back off with the peer's capped exponential policy, and a connection-level failure pauses the whole
  destination for that delay (200 queued images to a dead PACS make one attempt, not 200);
  permanent ones (rejected-permanent, 0122, A9xx, Cxxx, no usable context) go to dead at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from agent.dimse.status import StatusCategory, category, describe
from agent.errors import (
    AgentError,
    AssociationAborted,
    AssociationRejected,
    ConnectionFailed,
    TimeoutExpired,
)
from agent.net.client import open_association
from agent.net.connection import DicomConnection, Timeouts
from agent.profile import Peer
from agent.services.blocking import Blocking
from agent.store.queue import Job, JobQueue, JobState, RetryPolicy
from agent.ul.negotiation import ProposedContext

log = logging.getLogger("agent.outbound")

#: Failure statuses after which repeating the same request cannot succeed.
_PERMANENT_STATUSES = {0x0105, 0x0106, 0x0116, 0x0117, 0x0118, 0x0120, 0x0121, 0x0122, 0x0124, 0x0210, 0x0211, 0x0212}


class JobFailed(AgentError):
    """A performer's verdict on a job that did not succeed."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class NotReady(AgentError):
    """The job cannot run yet (e.g. a commitment request whose stores are still queued)."""

    def __init__(self, message: str, retry_in: float = 5.0) -> None:
        super().__init__(message)
        self.retry_in = retry_in


def check_status(status: int, what: str) -> None:
    """Raise JobFailed unless `status` is success or warning."""
    cat = category(status)
    if cat in (StatusCategory.SUCCESS, StatusCategory.WARNING):
        return
    permanent = status in _PERMANENT_STATUSES or (status & 0xF000) == 0xC000 or (status & 0xFF00) == 0xA900
    raise JobFailed(f"{what}: {describe(status)}", permanent=permanent)


class Performer(Protocol):
    """Carries out one kind of job over an association."""

    def contexts(self, job: Job) -> Sequence[ProposedContext]: ...

    async def perform(self, conn: DicomConnection, job: Job) -> None: ...


@dataclass
class DestinationState:
    conn: DicomConnection | None = None
    proposed: set[tuple[str, tuple[str, ...], bool | None, bool | None]] = field(default_factory=set)
    wake: trio.Event = field(default_factory=trio.Event)
    delivered: int = 0
    failures: int = 0
    last_error: str = ""


@dataclass
class Outbound:
    """Runs the per-destination workers. `performers` maps job kind to its performer."""

    ae_title: str
    peers: Mapping[str, Peer]
    queue: JobQueue
    blocking: Blocking
    timeouts: Timeouts
    performers: dict[str, Performer] = field(default_factory=dict)
    lease: float = 600.0
    #: Job kinds whose repetition after a crash is harmless, claimed and completed in batches.
    batch_kinds: frozenset[str] = frozenset({"store"})
    batch_size: int = 32
    max_pdu_receive: int = 262144
    idle_poll: float = 5.0
    states: dict[str, DestinationState] = field(default_factory=dict)

    def wake(self, destination: str) -> None:
        state = self.states.get(destination)
        if state is not None:
            state.wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for name in self.peers:
                self.states[name] = DestinationState()
                nursery.start_soon(self._worker, name)
            task_status.started()

    # ------------------------------------------------------------ the worker

    def _policy(self, peer: Peer) -> RetryPolicy:
        return RetryPolicy(base=peer.retry_base, cap=peer.retry_cap, max_age=peer.max_age,
                           max_attempts=peer.max_attempts)

    async def _worker(self, name: str) -> None:
        peer = self.peers[name]
        state = self.states[name]
        try:
            while True:
                jobs = await self.blocking.run(
                    lambda: self.queue.claim_batch(
                        name, kinds=self.batch_kinds, limit=self.batch_size, lease=self.lease
                    )
                )
                if not jobs:
                    await self._idle(name, state, peer)
                    continue
                await self._run_batch(name, peer, state, jobs)
        finally:
            if state.conn is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await state.conn.release()

    async def _idle(self, name: str, state: DestinationState, peer: Peer) -> None:
        due = await self.blocking.run(lambda: self.queue.next_due(name))
        now = self.queue_clock()
        wait = self.idle_poll if due is None else max(0.0, min(self.idle_poll, due - now))
        if state.conn is not None:
            wait = min(wait, peer.linger)
        state.wake = trio.Event()
        with trio.move_on_after(wait) as scope:
            await state.wake.wait()
        if scope.cancelled_caught and state.conn is not None:
            # Nothing to do for `linger` seconds: let the association go.
            conn, state.conn = state.conn, None
            state.proposed.clear()
            await conn.release()

    def queue_clock(self) -> float:
        return self.queue.clock()

    async def _connection(self, name: str, peer: Peer, state: DestinationState, job: Job) -> DicomConnection:
        performer = self.performers[job.kind]
        needed = {_key(p) for p in performer.contexts(job)}
        if state.conn is not None and state.conn.is_open and needed <= state.proposed:
            return state.conn
        if state.conn is not None:
            old, state.conn = state.conn, None
            await old.release()
        # Propose what the next jobs of this kind will need too, so the association is reused.
        upcoming = await self.blocking.run(
            lambda: self.queue.list(states=[JobState.PENDING], destination=name, kind=job.kind, limit=64)
        )
        proposals: dict[tuple, ProposedContext] = {}
        for j in [job, *upcoming]:
            for p in performer.contexts(j):
                if len(proposals) < 128 or _key(p) in proposals:
                    proposals.setdefault(_key(p), p)
        timeouts = Timeouts(artim=self.timeouts.artim, dimse=peer.dimse_timeout, idle=self.timeouts.idle,
                            connect=self.timeouts.connect)
        state.conn = await open_association(
            peer.host, peer.port, calling_ae=self.ae_title, called_ae=peer.ae_title,
            proposals=list(proposals.values()), timeouts=timeouts, max_pdu_receive=self.max_pdu_receive,
        )
        state.proposed = set(proposals)
        return state.conn

    async def _run_batch(self, name: str, peer: Peer, state: DestinationState, jobs: list[Job]) -> None:
        """Perform claimed jobs in order. Successes are completed together, in one transaction, before
        anything else is written; after a failure of the peer itself the jobs not yet tried go back
        unchanged, and only then does the destination pause for the backoff delay. On cancellation
        (stopping) every job not yet completed is given back."""
        done: list[int] = []
        untried = list(jobs)
        pause = 0.0
        try:
            while untried:
                job = untried[0]
                outcome = await self._run_job(name, peer, state, job)
                untried.pop(0)
                if outcome is True:
                    done.append(job.id)
                    continue
                await self._settle_now(state, done)  # keep completions ahead of the failure's own write
                pause = await self._record_failure(name, peer, state, job, outcome)
                if pause:
                    break
        finally:
            with trio.CancelScope(shield=True):
                ids, rest = list(done), [j.id for j in untried]
                if ids or rest:
                    await self.blocking.run(lambda: self._settle(ids, rest))
                state.delivered += len(ids)
                done.clear()
        if pause:
            # The peer itself is unreachable: hold the whole destination, not just this job.
            await trio.sleep(pause)

    async def _settle_now(self, state: DestinationState, done: list[int]) -> None:
        if done:
            ids = list(done)
            await self.blocking.run(lambda: self.queue.complete_many(ids))
            state.delivered += len(ids)
            done.clear()

    def _settle(self, done: list[int], rest: list[int]) -> None:
        self.queue.complete_many(done)
        for job_id in rest:
            self.queue.release(job_id)

    async def _run_job(self, name: str, peer: Peer, state: DestinationState, job: Job) -> _Outcome:
        """True on success, otherwise what went wrong (recorded by the caller)."""
        performer = self.performers.get(job.kind)
        if performer is None:
            return _Failure(f"no performer for job kind {job.kind!r}", permanent=True)
        try:
            conn = await self._connection(name, peer, state, job)
            await performer.perform(conn, job)
        except NotReady as exc:
            return _Postponed(str(exc), exc.retry_in)
        except JobFailed as exc:
            return _Failure(str(exc), permanent=exc.permanent)
        except AssociationRejected as exc:
            await self._drop_conn(state)
            return _Failure(str(exc), permanent=not exc.transient, peer_down=True)
        except (ConnectionFailed, TimeoutExpired, AssociationAborted) as exc:
            await self._drop_conn(state)
            return _Failure(str(exc), permanent=False, peer_down=True)
        log.debug("%s: job %d (%s) delivered", name, job.id, job.kind)
        return True

    async def _record_failure(
        self, name: str, peer: Peer, state: DestinationState, job: Job, outcome: _Failure | _Postponed
    ) -> float:
        """Write the failure; return how long the destination should pause (0: go on)."""
        if isinstance(outcome, _Postponed):
            await self.blocking.run(lambda: self.queue.release(job.id, delay=outcome.retry_in))
            return 0.0
        delay = await self._fail(name, peer, state, job, outcome.error, permanent=outcome.permanent)
        return delay if outcome.peer_down else 0.0

    async def _drop_conn(self, state: DestinationState) -> None:
        if state.conn is not None:
            conn, state.conn = state.conn, None
            state.proposed.clear()
            await conn.abort()

    async def _fail(
        self, name: str, peer: Peer, state: DestinationState, job: Job, error: str, *, permanent: bool
    ) -> float:
        """Record a failed attempt; returns the delay until the job is due again (0 if it is dead)."""
        state.failures += 1
        state.last_error = error
        new_state = await self.blocking.run(
            lambda: self.queue.fail(job.id, error, permanent=permanent, policy=self._policy(peer))
        )
        if new_state is JobState.DEAD:
            log.error("%s: job %d (%s) is dead: %s", name, job.id, job.kind, error)
            return 0.0
        after = await self.blocking.run(lambda: self.queue.get(job.id))
        delay = max(0.0, (after.next_attempt_at if after else time.time()) - self.queue_clock())
        log.warning("%s: job %d (%s) failed, retry in %.0f s: %s", name, job.id, job.kind, delay, error)
        return delay


@dataclass(frozen=True, slots=True)
class _Failure:
    error: str
    permanent: bool
    peer_down: bool = False


@dataclass(frozen=True, slots=True)
class _Postponed:
    error: str
    retry_in: float


_Outcome = bool | _Failure | _Postponed


def _key(p: ProposedContext) -> tuple[str, tuple[str, ...], bool | None, bool | None]:
    return (p.abstract_syntax, tuple(p.transfer_syntaxes), p.scu_role, p.scp_role)
