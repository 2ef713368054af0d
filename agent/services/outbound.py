"""Outbound delivery: one worker per destination peer, draining the durable queue.

Invariants (docs/architecture.md "Durable queue"):
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
- A job that cannot be run at all (its payload lacks a field or holds garbage, or its performer fails
  in a way nobody foresaw) goes to dead with its error; the worker and the agent keep running. Such a
  job would fail the same way on every retry and after every restart.
- Progress is durable per job: each job is completed in its own transaction as soon as its response
  arrived, so after a crash at most the job in flight is performed again (one SQLite commit per job;
  the batch claim still costs one transaction per batch). For the batch kinds (C-STORE, idempotent by
  SOP Instance UID) that commit runs while the next job is sent rather than before it, so a crash may
  repeat two; for the others it is recorded before the next job starts.
- A performer whose peer answered with a warning returns its description: the job is completed with
  it (the queue row keeps it; a C-MOVE counts such sub-operations as warnings, not completed).
- A worker with nothing to do waits on a level-triggered "work available" signal (`wake`), cleared
  before it looks at the queue, so a wake-up given while it is looking is never lost; it also wakes
  when the next job falls due and, as a safety net for jobs queued by a separate CLI process, after
  `idle_poll` seconds.
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
    QueueError,
    TimeoutExpired,
)
from agent.net.client import open_association
from agent.net.connection import DicomConnection, Timeouts
from agent.net.tls import TlsEvents
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


class BadPayload(JobFailed):
    """The job's payload lacks a field or holds a value its performer cannot use: it can never run."""

    def __init__(self, job: Job, message: str) -> None:
        super().__init__(f"malformed {job.kind} job {job.id}: {message}", permanent=True)


def payload_str(job: Job, key: str) -> str:
    """A required, non-empty text field of `job.payload`; BadPayload (permanent) otherwise."""
    value = job.payload.get(key) if isinstance(job.payload, Mapping) else None
    if not isinstance(value, str) or not value:
        got = "missing" if value is None else f"got {value!r:.40}"
        raise BadPayload(job, f"payload field {key!r} must be non-empty text ({got})")
    return value


class WorkAvailable:
    """A level-triggered "there may be work" flag for one waiting task.

    `notify` may come at any moment; the waiter calls `clear` *before* it looks for work and waits
    afterwards, so a notification given while it was looking is still set when it waits (no window to
    lose it, unlike replacing an Event after an await). Trio-thread only.
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = trio.Event()

    async def wait(self, timeout: float) -> bool:
        """Wait until notified (True) or `timeout` seconds passed (False)."""
        with trio.move_on_after(max(0.0, timeout)):
            await self._event.wait()
            return True
        return False


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

    async def perform(self, conn: DicomConnection, job: Job) -> str | None:
        """Do the job; None, or the peer's warning (a description) to record with its completion."""
        ...


@dataclass
class DestinationState:
    conn: DicomConnection | None = None
    proposed: set[tuple[str, tuple[str, ...], bool | None, bool | None]] = field(default_factory=set)
    wake: WorkAvailable = field(default_factory=WorkAvailable)
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
    #: Job kinds that may be claimed in batches (claimed together; still completed one by one).
    batch_kinds: frozenset[str] = frozenset({"store"})
    batch_size: int = 32
    max_pdu_receive: int = 262144
    idle_poll: float = 5.0
    states: dict[str, DestinationState] = field(default_factory=dict)
    tls_events: TlsEvents | None = None  # where TLS handshake failures with peers are reported (audit trail)

    def wake(self, destination: str) -> None:
        state = self.states.get(destination)
        if state is not None:
            state.wake.notify()

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
                state.wake.clear()  # before looking: a wake-up from now on is kept for `_idle`
                looked_at = self.queue_clock()
                jobs = await self.blocking.run(
                    lambda: self.queue.claim_batch(
                        name, kinds=self.batch_kinds, limit=self.batch_size, lease=self.lease
                    )
                )
                if not jobs:
                    await self._idle(name, state, peer, looked_at)
                    continue
                await self._run_batch(name, peer, state, jobs)
        finally:
            if state.conn is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await state.conn.release()

    async def _idle(self, name: str, state: DestinationState, peer: Peer, looked_at: float) -> None:
        """Wait for a wake-up, the next job falling due, or `idle_poll` (jobs queued by another
        process); release the association after `linger` with nothing to do."""
        # Jobs already due when we looked and still not claimed wait for a predecessor: a completion
        # or an operator's retry wakes us for them, not the clock (waiting for them would spin).
        due = await self.blocking.run(lambda: self.queue.next_due(name, after=looked_at))
        now = self.queue_clock()
        wait = self.idle_poll if due is None else max(0.0, min(self.idle_poll, due - now))
        if state.conn is not None:
            wait = min(wait, peer.linger)
        woken = await state.wake.wait(wait)
        if not woken and state.conn is not None:
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
        for p in performer.contexts(job):
            proposals.setdefault(_key(p), p)
        for j in upcoming:
            try:
                wanted = performer.contexts(j)
            except Exception:  # a malformed job fails on its own turn, not this one's
                continue
            for p in wanted:
                if len(proposals) < 128 or _key(p) in proposals:
                    proposals.setdefault(_key(p), p)
        timeouts = Timeouts(artim=self.timeouts.artim, dimse=peer.dimse_timeout, idle=self.timeouts.idle,
                            connect=self.timeouts.connect)
        state.conn = await open_association(
            peer.host, peer.port, calling_ae=self.ae_title, called_ae=peer.ae_title,
            proposals=list(proposals.values()), timeouts=timeouts, max_pdu_receive=self.max_pdu_receive,
            tls=peer.tls, user_identity=peer.identity, tls_events=self.tls_events,
        )
        state.proposed = set(proposals)
        return state.conn

    async def _run_batch(self, name: str, peer: Peer, state: DestinationState, jobs: list[Job]) -> None:
        """Perform claimed jobs in order, completing each one durably before the next is sent (module
        invariants: after a crash only the job in flight is repeated). After a failure of the peer
        itself the jobs not yet tried go back unchanged, and only then does the destination pause for
        the backoff delay. On cancellation (stopping) every job not yet completed is given back."""
        untried = list(jobs)
        pause = 0.0
        completing = _Completion()
        try:
            async with trio.open_nursery() as nursery:
                while untried:
                    job = untried[0]
                    if job.lease_until is not None and self.queue_clock() > job.lease_until - self.lease / 2:
                        break  # a slow batch: give the rest back before lease recovery could hand them out
                    expect = getattr(self.performers.get(job.kind), "expect", None)
                    if expect is not None:  # a pipelining performer reads the next job's data meanwhile
                        expect(name, untried[1] if len(untried) > 1 else None)
                    outcome = await self._run_job(name, peer, state, job)
                    untried.pop(0)
                    if isinstance(outcome, _Delivered):
                        warning = outcome.warning
                        state.delivered += 1
                        await completing.wait()  # the previous job's completion is recorded first
                        if job.kind in self.batch_kinds:
                            # Recorded while the next job is sent: its commit overlaps the network
                            # instead of adding to each job (module invariants: a repeat is harmless).
                            nursery.start_soon(self._complete_soon, name, job, warning, completing.started())
                        else:
                            with trio.CancelScope(shield=True):  # delivered: record it even while stopping
                                await self.blocking.run(lambda: self._complete(name, job, warning))
                        continue
                    await completing.wait()
                    pause = await self._record_failure(name, peer, state, job, outcome)
                    if pause:
                        break
        finally:
            if untried:
                rest = [j.id for j in untried]
                with trio.CancelScope(shield=True):
                    await self.blocking.run(lambda: self._give_back(rest))
        if pause:
            # The peer itself is unreachable: hold the whole destination, not just this job.
            await trio.sleep(pause)

    async def _complete_soon(self, name: str, job: Job, warning: str | None, done: trio.Event) -> None:
        try:
            with trio.CancelScope(shield=True):  # delivered: record it even while stopping
                await self.blocking.run(lambda: self._complete(name, job, warning))
        finally:
            done.set()

    def _complete(self, name: str, job: Job, warning: str | None = None) -> None:
        try:
            # A repeated C-STORE is harmless (same SOP Instance UID), so its completion need not
            # survive a power cut, only a crash: one fsync less per forwarded instance.
            self.queue.complete(job.id, power_safe=job.kind not in self.batch_kinds, warning=warning)
        except QueueError as exc:
            # Its lease was recovered (it ran longer than `lease`): it will be performed again, which
            # the performers make harmless; nothing is lost.
            log.warning("%s: job %d (%s) delivered, but %s", name, job.id, job.kind, exc)

    def _give_back(self, job_ids: list[int]) -> None:
        for job_id in job_ids:
            try:
                self.queue.release(job_id)
            except QueueError:
                pass  # its lease was recovered meanwhile: it is pending already

    async def _run_job(self, name: str, peer: Peer, state: DestinationState, job: Job) -> _Outcome:
        """_Delivered (with the peer's warning, if any) on success, otherwise what went wrong (recorded
        by the caller)."""
        performer = self.performers.get(job.kind)
        if performer is None:
            return _Failure(f"no performer for job kind {job.kind!r}", permanent=True)
        try:
            try:
                conn = await self._connection(name, peer, state, job)
                warning = await performer.perform(conn, job)
            except ExceptionGroup as group:
                # From a nursery inside a performer: one failure is judged as if raised alone.
                leaves = _leaves(group)
                if len(leaves) == 1:
                    raise leaves[0] from group
                raise
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
        except Exception as exc:
            # Nobody foresaw this (a performer's bug, a payload of the wrong shape): the job would fail
            # the same way forever, so it goes to dead with its error, and the association, whose
            # state is now unknown, is dropped. Cancellation is not an Exception and passes through.
            log.exception("%s: job %d (%s) cannot be run", name, job.id, job.kind)
            await self._drop_conn(state)
            return _Failure(f"{job.kind} job {job.id} cannot be run: {type(exc).__name__}: {exc}", permanent=True)
        log.debug("%s: job %d (%s) delivered", name, job.id, job.kind)
        return _Delivered(warning if isinstance(warning, str) else None)

    async def _record_failure(
        self, name: str, peer: Peer, state: DestinationState, job: Job, outcome: _Failure | _Postponed
    ) -> float:
        """Write the failure; return how long the destination should pause (0: go on)."""
        if isinstance(outcome, _Postponed):
            try:
                await self.blocking.run(lambda: self.queue.release(job.id, delay=outcome.retry_in))
            except QueueError:
                pass  # its lease was recovered meanwhile: it is pending already
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
        try:
            new_state = await self.blocking.run(
                lambda: self.queue.fail(job.id, error, permanent=permanent, policy=self._policy(peer))
            )
        except QueueError as exc:  # its lease was recovered meanwhile: it is pending again already
            log.warning("%s: job %d (%s) failed (%s), but %s", name, job.id, job.kind, error, exc)
            return 0.0
        if new_state is JobState.DEAD:
            log.error("%s: job %d (%s) is dead: %s", name, job.id, job.kind, error)
            return 0.0
        after = await self.blocking.run(lambda: self.queue.get(job.id))
        delay = max(0.0, (after.next_attempt_at if after else time.time()) - self.queue_clock())
        log.warning("%s: job %d (%s) failed, retry in %.0f s: %s", name, job.id, job.kind, delay, error)
        return delay


class _Completion:
    """The one completion that may be in flight beside the next job's send."""

    def __init__(self) -> None:
        self._done: trio.Event | None = None

    def started(self) -> trio.Event:
        self._done = trio.Event()
        return self._done

    async def wait(self) -> None:
        if self._done is not None:
            with trio.CancelScope(shield=True):
                await self._done.wait()
            self._done = None


@dataclass(frozen=True, slots=True)
class _Failure:
    error: str
    permanent: bool
    peer_down: bool = False


@dataclass(frozen=True, slots=True)
class _Postponed:
    error: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class _Delivered:
    """Delivered; `warning`: the peer's warning status described, when it answered with one."""

    warning: str | None = None


_Outcome = _Delivered | _Failure | _Postponed


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:  # type: ignore[type-arg]
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _key(p: ProposedContext) -> tuple[str, tuple[str, ...], bool | None, bool | None]:
    return (p.abstract_syntax, tuple(p.transfer_syntaxes), p.scu_role, p.scp_role)
