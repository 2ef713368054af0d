"""Storage Commitment Push Model (PS3.4 Annex J), both roles, over the durable queue.

Requester (`[storage] commit_with`), `CommitmentRequester`:
- A batcher task forms requests from instances whose C-STOREs are done (agent.store.commitment):
  `commit_batch = "study"` sends a study once it has been idle `commit_idle` seconds with none of its
  instances still in flight; `commit_batch = N` sends every full batch of N at once and the remainder
  after `commit_idle` of quiet. Each request (Transaction UID 2.25.<uuid>) and its instance list are
  persisted with a `commit-request` job before anything goes on the wire. The batcher does not poll:
  it is woken when a C-STORE to a gating destination completes and otherwise sleeps until the next
  time-based event (a study becoming quiet, a report deadline, a retention pass), at most `poll` (5 s,
  for changes made by a separate CLI process).
- The `commit-request` performer sends the N-ACTION (Action Type 1). A report arriving before the
  N-ACTION-RSP is handled through `request(..., incoming=)`. After the response the worker keeps reading
  the same association for up to `commit_report_wait` seconds (or until the report came in on another
  association); if no report came on *this* association it releases it, so a report that arrives later
  is never refused by an unrelated operation on a reused association.
- Reports on a new association come to the listener (either role negotiation: none, or the archive as
  SCP). Event Type 1 marks the instances committed; 2 also records the failures and re-queues their
  C-STOREs, after which the batcher re-requests them (at most `commit_max_rerequests` times). A request
  without a report by `commit_timeout` expires and its instances are re-requested under a new
  Transaction UID; a late report for an expired Transaction UID is still honoured.
- Retention (seed S-32): committed instances older than `[storage] retention` are deleted.

Performer (`[commitment]`), `CommitmentSCP`:
- N-ACTION: 0000 when understood; A900 (seed Table 69) with an Error Comment when the data set is
  missing or malformed (no Transaction UID, no Referenced SOP Sequence); 0123 for another Action Type.
  Each referenced instance is checked in the local store: present with the same SOP class -> committed;
  absent -> Failure Reason 0112; other class -> 0119. The outcome is persisted before the response.
- The report goes on the same association right after the N-ACTION-RSP when `report_on =
  "same-association"` and the requester is still there; otherwise (or when that fails) as a
  `commit-report` job to the peer whose AE title is the requester's calling AE, proposing the SOP class
  with role selection SCU=0/SCP=1 (seed Table 31). A requester AE that matches no peer still gets 0000
  (the seed's behaviour) and an error in the log; its report stays pending and is routed at start-up
  once a peer with that AE title is configured.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import trio
from pydicom import Dataset
from pydicom.uid import generate_uid

from agent.dimse import CommandReceived, NActionRQ, NEventReportRQ, Status
from agent.dimse.status import StatusCategory, category, describe
from agent.errors import AgentError, AssociationAborted, TimeoutExpired
from agent.net.connection import DicomConnection
from agent.net.requests import await_response, request
from agent.net.server import ServiceRegistry, refuse_request
from agent.profile import CommitmentSettings, Peer, StorageSettings
from agent.services.blocking import Blocking
from agent.services.dataset import DataSetError, decode, encode
from agent.services.forward import STORE_JOB, store_payload
from agent.services.outbound import JobFailed, WorkAvailable, check_status, payload_str
from agent.store.commitment import Candidate, CommitmentStore, RequestState
from agent.store.instances import InstanceStore
from agent.store.queue import Job, JobQueue
from agent.ul.association import Aborted, ReleaseConfirmed, ReleaseRequested
from agent.ul.negotiation import UNCOMPRESSED, PresentationContext, ProposedContext, SyntaxSupport

log = logging.getLogger("agent.commitment")

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
COMMIT_REQUEST_JOB = "commit-request"
COMMIT_REPORT_JOB = "commit-report"
#: N-ACTION refused for an unusable request: "operation failed" (A900), the one failure status the
#: seed agent returns.
ACTION_FAILED = 0xA900
#: Every status the SCP answers to N-ACTION, and the requester to N-EVENT-REPORT (PS3.4 J.3.2, J.3.3);
#: the conformance statement lists these, and a test checks the handlers answer no other.
ACTION_STATUSES: tuple[int, ...] = (Status.SUCCESS, Status.NO_SUCH_ACTION, ACTION_FAILED)
REPORT_STATUSES: tuple[int, ...] = (Status.SUCCESS, Status.NO_SUCH_EVENT_TYPE, Status.INVALID_ARGUMENT)
EVENT_ALL_COMMITTED = 1
EVENT_FAILURES = 2
FAILURE_NO_SUCH_INSTANCE = 0x0112
FAILURE_CLASS_INSTANCE_CONFLICT = 0x0119
FAILURE_PROCESSING = 0x0110
#: The batcher's shortest wait, so a time that has just come cannot make it spin.
_MIN_WAIT = 0.01


# ---------------------------------------------------------------------- data sets (PS3.4 J.3)


def _refs(pairs: Sequence[tuple[str, str]]) -> list[Dataset]:
    items = []
    for cls, uid in pairs:
        item = Dataset()
        item.ReferencedSOPClassUID = cls
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    return items


def action_dataset(transaction_uid: str, pairs: Sequence[tuple[str, str]]) -> Dataset:
    """N-ACTION-RQ Information (PS3.4 Table J.3-1); no Storage Media File-Set (seed S-31)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.ReferencedSOPSequence = _refs(pairs)
    return ds


def report_dataset(transaction_uid: str, committed: Sequence[tuple[str, str]],
                   failed: Sequence[tuple[str, str, int]]) -> tuple[int, Dataset]:
    """(Event Type ID, N-EVENT-REPORT Information) (PS3.4 Tables J.3-2, J.3-3); no Retrieve AE Title."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if committed:
        ds.ReferencedSOPSequence = _refs(committed)
    if failed:
        items = []
        for cls, uid, reason in failed:
            item = Dataset()
            item.ReferencedSOPClassUID = cls
            item.ReferencedSOPInstanceUID = uid
            item.FailureReason = reason
            items.append(item)
        ds.FailedSOPSequence = items
    return (EVENT_FAILURES if failed else EVENT_ALL_COMMITTED), ds


class BadCommitmentData(AgentError):
    """An N-ACTION or N-EVENT-REPORT data set we cannot use."""


def _parse(data: bytes | None, ts: str) -> Dataset:
    if not data:
        raise BadCommitmentData("no data set")
    try:
        ds = decode(data, ts)
        tuid = str(ds.get("TransactionUID", "") or "")
    except DataSetError as exc:
        raise BadCommitmentData(str(exc)) from exc
    if not tuid:
        raise BadCommitmentData("no Transaction UID (0008,1195)")
    return ds


def _pairs(ds: Dataset, keyword: str) -> list[tuple[str, str]]:
    out = []
    for item in ds.get(keyword) or []:
        cls = str(item.get("ReferencedSOPClassUID", "") or "")
        uid = str(item.get("ReferencedSOPInstanceUID", "") or "")
        if not cls or not uid:
            raise BadCommitmentData(f"an item of {keyword} lacks its SOP Class or Instance UID")
        out.append((cls, uid))
    return out


def _failed(ds: Dataset) -> list[tuple[str, int]]:
    out = []
    for item in ds.get("FailedSOPSequence") or []:
        uid = str(item.get("ReferencedSOPInstanceUID", "") or "")
        if uid:
            out.append((uid, int(item.get("FailureReason", FAILURE_PROCESSING) or FAILURE_PROCESSING)))
    return out


def support() -> SyntaxSupport:
    # Both roles: a requester sends N-ACTION (SCU); an archive reporting on a new association proposes
    # itself as SCP (role selection) or proposes nothing (default roles); both are accepted.
    return SyntaxSupport(transfer_syntaxes=UNCOMPRESSED, requestor_may_be_scu=True, requestor_may_be_scp=True)


def register(registry: ServiceRegistry, requester: CommitmentRequester | None, scp: CommitmentSCP | None) -> None:
    handlers: dict[type, object] = {}
    if requester is not None:
        handlers[NEventReportRQ] = requester.on_event_report
    if scp is not None:
        handlers[NActionRQ] = scp.on_action
    if handlers:
        registry.add([STORAGE_COMMITMENT], support(), handlers)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- requester (SCU)


@dataclass
class CommitmentRequester:
    """Batcher task, `commit-request` performer and N-EVENT-REPORT handler."""

    destination: str
    settings: StorageSettings
    instances: InstanceStore
    commitments: CommitmentStore
    queue: JobQueue
    blocking: Blocking
    wake: object = None  # callable(destination) -> None: the Outbound's wake
    report_wait: float = 2.0
    #: Safety net only: how often the batcher looks without being told (changes made by another
    #: process, e.g. `dicom-agent queue retry`). It is woken when a gating C-STORE completes and
    #: sleeps until the next quiet period ends, report deadline passes or retention pass is due.
    poll: float = 5.0
    _work: WorkAvailable = field(default_factory=WorkAvailable)
    _reported: dict[str, trio.Event] = field(default_factory=dict)
    _last_retention: float = float("-inf")

    @property
    def gating(self) -> tuple[str, ...]:
        """The destinations whose C-STOREs must be done before commitment is asked for."""
        s = self.settings
        return (self.destination,) if self.destination in s.forward_to else tuple(s.forward_to) or (self.destination,)

    # -- batching ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        token = trio.lowlevel.current_trio_token()
        gating = set(self.gating)

        def on_done(kind: str, destination: str) -> None:  # any thread: hop into trio to notify
            if kind == STORE_JOB and destination in gating:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(self._work.notify)

        remove = self.queue.add_listener(on_done)
        task_status.started()
        try:
            while True:
                self._work.clear()  # before looking: a completion from now on wakes the wait below
                created, due = await self.blocking.run(self.tick)
                if created and callable(self.wake):
                    self.wake(self.destination)
                wait = self.poll if due is None else min(self.poll, due - self.commitments.clock())
                await self._work.wait(max(wait, _MIN_WAIT))
        finally:
            remove()

    def tick(self) -> tuple[int, float | None]:
        """Blocking: expire overdue requests, form new ones, apply retention. Returns the number of
        requests created and when something next falls due by the clock alone (None: nothing does)."""
        for tuid in self.commitments.expire_overdue():
            log.warning("commitment %s to %s: no report within %g s, re-requesting", tuid, self.destination,
                        self.settings.commit_timeout)
        candidates = self.commitments.candidates(self.destination, self.gating, self.settings.commit_max_rerequests)
        created = 0
        batched: set[str] = set()
        for batch in self.batches(candidates):
            self.create(batch)
            batched.update(c.sop_instance_uid for c in batch)
            created += 1
        self._retention()
        now = self.commitments.clock()
        deadline = self.commitments.next_deadline()
        times = [t for t in (self._quiet_at([c for c in candidates if c.sop_instance_uid not in batched]),
                             None if deadline is None else deadline + _MIN_WAIT,
                             self._retention_due()) if t is not None and t > now]
        return created, min(times, default=None)

    def _quiet_at(self, waiting: list[Candidate]) -> float | None:
        """When the earliest group of not-yet-batched candidates has been quiet for `commit_idle`. A
        group already quiet but held back (its study still in flight) waits for a completion instead."""
        if not waiting:
            return None
        idle = self.settings.commit_idle
        if self.settings.commit_batch == "study":
            groups: dict[str, float] = {}
            for c in waiting:
                groups[c.study_instance_uid] = max(groups.get(c.study_instance_uid, c.last_activity), c.last_activity)
            return min(groups.values()) + idle
        return max(c.last_activity for c in waiting) + idle

    def batches(self, candidates: list[Candidate]) -> list[list[Candidate]]:
        s = self.settings
        now = self.commitments.clock()
        if not candidates:
            return []
        in_flight = self._studies_in_flight()
        quiet = lambda group: now - max(c.last_activity for c in group) >= s.commit_idle  # noqa: E731
        if s.commit_batch == "study":
            studies: dict[str, list[Candidate]] = {}
            for c in candidates:
                studies.setdefault(c.study_instance_uid, []).append(c)
            return [g for study, g in studies.items() if study not in in_flight and quiet(g)]
        n = int(s.commit_batch)
        full = [candidates[i:i + n] for i in range(0, len(candidates) - len(candidates) % n, n)]
        rest = candidates[len(full) * n:]
        if rest and not in_flight and quiet(rest):
            full.append(rest)
        return full

    def _studies_in_flight(self) -> set[str]:
        """Studies with an uncommitted instance whose C-STORE to a gating destination is unfinished."""
        return self.queue.unfinished_payload_values(STORE_JOB, self.gating, "study")

    def create(self, batch: list[Candidate]) -> str:
        tuid = generate_uid(prefix=None)
        rerequest = max(c.rerequest for c in batch)
        self.commitments.create_request(
            tuid, self.destination, [(c.sop_class_uid, c.sop_instance_uid) for c in batch], rerequest=rerequest,
            enqueue=lambda conn: self.queue.enqueue(COMMIT_REQUEST_JOB, self.destination, {"transaction_uid": tuid}),
        )
        log.info("commitment %s to %s: %d instance(s) queued (re-request %d)", tuid, self.destination,
                 len(batch), rerequest)
        return tuid

    def _retention_due(self) -> float | None:
        retention = self.settings.retention
        return None if retention is None else self._last_retention + min(60.0, retention / 10)

    def _retention(self) -> None:
        retention = self.settings.retention
        now = self.commitments.clock()
        if retention is None or now - self._last_retention < min(60.0, retention / 10):
            return
        self._last_retention = now
        for stored in self.instances.eligible_for_deletion(retention, now):
            if self.instances.delete(stored.sop_instance_uid):
                log.info("retention: deleted committed instance %s", stored.sop_instance_uid)

    # -- the commit-request job ----------------------------------------------------------------

    def contexts(self, job: Job) -> Sequence[ProposedContext]:
        return [ProposedContext(STORAGE_COMMITMENT, UNCOMPRESSED)]

    async def perform(self, conn: DicomConnection, job: Job) -> None:
        tuid = payload_str(job, "transaction_uid")
        row = await self.blocking.run(lambda: self.commitments.request(tuid))
        if row is None or row.state in (RequestState.DONE, RequestState.EXPIRED):
            return  # answered (or superseded) while the job waited: nothing left to ask
        ctx = conn.context_for(STORAGE_COMMITMENT)
        if ctx is None:
            raise JobFailed(f"{self.destination} did not accept the Storage Commitment SOP class", permanent=True)
        data = encode(action_dataset(tuid, [(cls, uid) for uid, cls, _, _ in row.items]), ctx.transfer_syntax)
        msg = NActionRQ(message_id=conn.next_message_id(), requested_sop_class_uid=STORAGE_COMMITMENT,
                        requested_sop_instance_uid=WELL_KNOWN_INSTANCE, action_type_id=1)
        reported = self._reported.setdefault(tuid, trio.Event())
        try:
            reply = await request(conn, ctx.id, msg, data, incoming=self.on_event_report)
            check_status(reply.status, f"Storage Commitment N-ACTION {tuid}")
            await self.blocking.run(lambda: self.commitments.mark_sent(tuid, self.settings.commit_timeout))
            log.info("commitment %s: N-ACTION accepted by %s (%d instances)", tuid, self.destination, len(row.items))
            if not reported.is_set():
                await self._linger_for_report(conn, reported)
        finally:
            self._reported.pop(tuid, None)

    async def _linger_for_report(self, conn: DicomConnection, reported: trio.Event) -> None:
        """Read the same association until the report came (here or elsewhere) or `report_wait`."""
        here = False

        async def read() -> None:
            nonlocal here
            try:
                while True:
                    event = await conn.next_event()
                    if isinstance(event, CommandReceived):
                        ctx = conn.contexts[event.context_id]
                        if isinstance(event.message, NEventReportRQ) and ctx.abstract_syntax == STORAGE_COMMITMENT:
                            await self.on_event_report(conn, ctx, event.message)
                            if reported.is_set():
                                here = True
                                return
                        else:
                            await refuse_request(conn, ctx, event.message)
                    elif isinstance(event, ReleaseRequested):
                        await conn.answer_release()
                        return
                    elif isinstance(event, (Aborted, ReleaseConfirmed)):
                        return
            except AssociationAborted:
                return

        async with trio.open_nursery() as nursery:
            async def elsewhere() -> None:
                await reported.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(elsewhere)
            with trio.move_on_after(self.report_wait):
                await read()
            nursery.cancel_scope.cancel()
        if not here and conn.is_open:
            # Don't leave a report in flight on an association that later jobs would reuse.
            await conn.release()

    # -- N-EVENT-REPORT (same or new association) ------------------------------------------------

    async def on_event_report(self, conn: DicomConnection, ctx: PresentationContext, msg: NEventReportRQ) -> None:  # type: ignore[override]
        data = await conn.read_dataset(ctx.id) if msg.has_dataset else None
        if msg.event_type_id not in (EVENT_ALL_COMMITTED, EVENT_FAILURES):
            await conn.send_message(ctx.id, msg.response(Status.NO_SUCH_EVENT_TYPE))
            return
        try:
            ds = _parse(data, ctx.transfer_syntax)
            tuid = str(ds.TransactionUID)
            committed = [uid for _, uid in _pairs(ds, "ReferencedSOPSequence")]
            failed = _failed(ds)
        except BadCommitmentData as exc:
            log.error("%s: unusable commitment report: %s", conn.remote, exc)
            await conn.send_message(ctx.id, msg.response(Status.INVALID_ARGUMENT, error_comment="unusable data set"))
            return
        result = await self.blocking.run(
            lambda: self.commitments.apply_report(tuid, committed, failed, on_failed=self._restore))
        if result is None:
            # Not ours (or purged): acknowledge, so the archive does not keep retrying, and say so.
            log.warning("%s: commitment report for unknown Transaction UID %s ignored", conn.remote, tuid)
        else:
            level = logging.INFO if not failed else logging.WARNING
            log.log(level, "commitment %s: %d committed, %d failed (report from %s)", tuid, result[0],
                    result[1], conn.remote)
        await conn.send_message(ctx.id, msg.response(Status.SUCCESS))
        event = self._reported.get(tuid)
        if event is not None:
            event.set()

    def _restore(self, conn: sqlite3.Connection, uids: list[str]) -> None:
        """In the report's transaction: C-STORE the failed instances again (then they are re-requested)."""
        for uid in uids:
            stored = self.instances.get(uid)
            if stored is None:
                log.error("commitment failure for %s, which is no longer stored locally", uid)
                continue
            self.queue.enqueue(STORE_JOB, self.destination, store_payload(stored))


# ---------------------------------------------------------------------- performer (SCP)


@dataclass
class CommitmentSCP:
    """N-ACTION handler and `commit-report` performer."""

    settings: CommitmentSettings
    instances: InstanceStore
    commitments: CommitmentStore
    queue: JobQueue
    blocking: Blocking
    peers: Mapping[str, Peer]
    wake: object = None

    def route_for(self, calling_ae: str) -> str | None:
        return next((name for name, p in self.peers.items() if p.ae_title == calling_ae), None)

    def _check(self, refs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str, int]]]:
        committed, failed = [], []
        for cls, uid in refs:
            stored = self.instances.get(uid)
            if stored is None:
                failed.append((cls, uid, FAILURE_NO_SUCH_INSTANCE))
            elif stored.sop_class_uid != cls:
                failed.append((cls, uid, FAILURE_CLASS_INSTANCE_CONFLICT))
            else:
                committed.append((cls, uid))
        return committed, failed

    def _enqueue(self, route: str, tuid: str, calling_ae: str):  # type: ignore[no-untyped-def]
        not_before = self.queue.clock() + self.settings.report_delay
        return lambda conn: self.queue.enqueue(
            COMMIT_REPORT_JOB, route, {"transaction_uid": tuid, "calling_ae": calling_ae}, not_before=not_before)

    async def on_action(self, conn: DicomConnection, ctx: PresentationContext, msg: NActionRQ) -> None:  # type: ignore[override]
        data = await conn.read_dataset(ctx.id) if msg.has_dataset else None
        if msg.action_type_id != 1:
            await conn.send_message(ctx.id, msg.response(Status.NO_SUCH_ACTION))
            return
        try:
            if msg.requested_sop_instance_uid != WELL_KNOWN_INSTANCE:
                raise BadCommitmentData(f"requested SOP instance {msg.requested_sop_instance_uid} is not the "
                                        "well-known Storage Commitment instance")
            ds = _parse(data, ctx.transfer_syntax)
            tuid = str(ds.TransactionUID)
            refs = _pairs(ds, "ReferencedSOPSequence")
            if not refs:
                raise BadCommitmentData("empty or missing Referenced SOP Sequence (0008,1199)")
        except BadCommitmentData as exc:
            # Seed Table 69: A900 "Operation failed" is the one failure status the seed returns.
            log.error("%s: Storage Commitment N-ACTION refused: %s", conn.remote, exc)
            await conn.send_message(ctx.id, msg.response(ACTION_FAILED, error_comment=str(exc)[:64].strip()))
            return
        calling_ae = conn.calling_ae
        route = self.route_for(calling_ae)
        same = self.settings.report_on == "same-association"
        if route is None:
            log.error("commitment %s from %s: no peer has AE title %r; the report is kept until one is "
                      "configured%s", tuid, conn.remote, calling_ae, " (trying this association first)" if same else "")

        def persist() -> tuple[list[tuple[str, str]], list[tuple[str, str, int]]]:
            committed, failed = self._check(refs)
            self.commitments.add_report(
                tuid, calling_ae, route, committed, failed,
                enqueue=None if (same or route is None) else self._enqueue(route, tuid, calling_ae))
            return committed, failed

        committed, failed = await self.blocking.run(persist)
        await conn.send_message(ctx.id, msg.response(Status.SUCCESS))
        log.info("commitment %s from %s: %d committed, %d failed", tuid, calling_ae, len(committed), len(failed))
        if not same:
            if route is not None and callable(self.wake):
                self.wake(route)
            return
        if self.settings.report_delay:
            await trio.sleep(self.settings.report_delay)
        try:
            await self.send_report(conn, tuid, committed, failed)
        except (AssociationAborted, TimeoutExpired, JobFailed) as exc:
            log.warning("commitment %s: report on the same association failed (%s); sending it on a new one",
                        tuid, exc)
            if route is not None:
                await self.blocking.run(
                    lambda: self.commitments.route_report(tuid, calling_ae, route, self._enqueue(route, tuid, calling_ae)))
                if callable(self.wake):
                    self.wake(route)
            if isinstance(exc, AssociationAborted):
                raise
            return
        await self.blocking.run(lambda: self._sent(tuid, calling_ae))

    def _sent(self, tuid: str, calling_ae: str) -> None:
        job_id = self.commitments.report_sent(tuid, calling_ae)
        if job_id is not None:
            try:
                self.queue.drop(job_id)
            except AgentError:
                pass  # claimed right now: its performer sees the report SENT and does nothing

    async def send_report(self, conn: DicomConnection, tuid: str, committed: Sequence[tuple[str, str]],
                          failed: Sequence[tuple[str, str, int]]) -> None:
        ctx = conn.context_for(STORAGE_COMMITMENT)
        if ctx is None or not conn.is_open:
            raise AssociationAborted("no Storage Commitment context to report on", local=True)
        event_type, ds = report_dataset(tuid, committed, failed)
        msg = NEventReportRQ(message_id=conn.next_message_id(), affected_sop_class_uid=STORAGE_COMMITMENT,
                             affected_sop_instance_uid=WELL_KNOWN_INSTANCE, event_type_id=event_type)
        await conn.send_message(ctx.id, msg, encode(ds, ctx.transfer_syntax))
        reply = await await_response(conn, msg.message_id)
        if category(reply.status) not in (StatusCategory.SUCCESS, StatusCategory.WARNING):
            raise JobFailed(f"N-EVENT-REPORT {tuid}: {describe(reply.status)}", permanent=False)

    # -- the commit-report job -----------------------------------------------------------------

    def contexts(self, job: Job) -> Sequence[ProposedContext]:
        # Seed Table 31: we propose the class with ourselves as SCP (PS3.7 D.3.3.4 role selection).
        return [ProposedContext(STORAGE_COMMITMENT, UNCOMPRESSED, scu_role=False, scp_role=True)]

    async def perform(self, conn: DicomConnection, job: Job) -> None:
        tuid, ae = payload_str(job, "transaction_uid"), payload_str(job, "calling_ae")
        row = await self.blocking.run(lambda: self.commitments.report(tuid, ae))
        if row is None or row.state == "sent":
            return
        if conn.context_for(STORAGE_COMMITMENT) is None:
            raise JobFailed(f"{conn.remote} did not accept Storage Commitment with us as SCP", permanent=True)
        try:
            await self.send_report(conn, tuid, row.committed, row.failed)
        except JobFailed:
            raise
        await self.blocking.run(lambda: self.commitments.report_sent(tuid, ae))
        log.info("commitment %s: report sent to %s", tuid, conn.remote)


def route_pending_reports(commitments: CommitmentStore, queue: JobQueue, peers: Mapping[str, Peer],
                          settings: CommitmentSettings) -> int:
    """Start-up (blocking): pending reports without a job (crash before the same-association report, or
    a requester AE that had no peer) get one now if a peer has the requester's AE title."""
    scp = CommitmentSCP(settings, None, commitments, queue, Blocking(), peers)  # type: ignore[arg-type]
    routed = 0
    for row in commitments.unrouted_reports():
        route = scp.route_for(row.calling_ae)
        if route is None:
            log.error("commitment report %s for %s: still no peer with that AE title", row.transaction_uid,
                      row.calling_ae)
            continue
        commitments.route_report(row.transaction_uid, row.calling_ae, route,
                                 scp._enqueue(route, row.transaction_uid, row.calling_ae))
        routed += 1
    return routed
