"""The audit trail at run time: hooks where events happen, the durable queue, the local file, the sender.

Invariants:
- A hook never blocks and never raises into its caller: it builds the message and appends it to an
  in-memory list (the event loop does no I/O for auditing). A task moves that list, in one
  transaction, into the durable queue (job kind "audit", destination `DESTINATION`) and appends the
  same messages to the local file (flushed and fsynced) when one is configured. A crash can lose only
  messages not yet moved (milliseconds' worth); everything queued is sent after a restart.
- The sender claims queued messages in batches, sends them, and only then marks them done; a failed
  send puts the whole batch back with capped exponential backoff (`RETRY`), so messages wait in the
  queue while the repository is down and arrive, oldest first, when it is back.
- Per association, the instances received are added up (per study: SOP classes and counts) and one
  "DICOM Instances Transferred" message is sent when the association ends (PS3.15 A.5.3.4 describes
  the transfer, not each instance); an association with no other audited operation gets one
  "Association" message. What we send on associations we requested (forwarding, C-MOVE
  sub-operations) is added up the same way and reported as Begin Transferring + Instances Transferred
  once that association is released or has been idle `SENT_IDLE` seconds (a kill in that window loses
  that report; a normal stop reports it first).
- Patient names never enter a message; passcodes are never part of the events this module receives.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from agent.security import audit
from agent.security.audit import AuditEvent, AuditSettings, Participant, StudyTransfer
from agent.security.events import SecurityEvent
from agent.security.syslog import Repository, SyslogError, format_message, send
from agent.store.queue import Job, JobQueue, NewJob, RetryPolicy

if TYPE_CHECKING:
    from pydicom import Dataset

    from agent.net.connection import DicomConnection
    from agent.services.blocking import Blocking
    from agent.store.instances import InstanceStore, StoredInstance

log = logging.getLogger("agent.audit")

_F = TypeVar("_F", bound=Callable[..., None])


def _hook(method: _F) -> _F:
    """A hook runs inside the operation it audits: a bug in it is logged, never raised into that operation."""

    @functools.wraps(method)
    def guarded(*args: object, **kwargs: object) -> None:
        try:
            method(*args, **kwargs)
        except Exception:
            log.exception("audit: %s failed; the operation goes on", method.__name__)

    return guarded  # type: ignore[return-value]

AUDIT_JOB = "audit"
DESTINATION = "@audit"  # not a valid peer name: never confused with a DICOM destination
RETRY = RetryPolicy(base=2.0, cap=60.0, max_age=30 * 86400)
BATCH = 100
SENT_IDLE = 2.0  # seconds without a further instance on an association we requested: report what was sent


@dataclass
class _Transfers:
    """What one association stored, per study."""

    patient: dict[str, str] = field(default_factory=dict)
    classes: dict[str, Counter[str]] = field(default_factory=dict)
    accessions: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class _Sent:
    """What we sent on one association we requested (forwarding, C-MOVE sub-operations)."""

    conn: DicomConnection
    first_at: datetime
    last: float  # trio.current_time() of the latest instance
    uids: list[str] = field(default_factory=list)


@dataclass
class AuditTrail:
    settings: AuditSettings
    ae_title: str
    queue: JobQueue
    blocking: Blocking
    store: InstanceStore | None = None  # to name the studies and patients of what we send
    hostname: str = field(default_factory=socket.gethostname)
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    _pending: list[dict[str, Any]] = field(default_factory=list)
    _moved: trio.Event = field(default_factory=trio.Event)
    _have_pending: trio.Event = field(default_factory=trio.Event)
    _wake_sender: trio.Event = field(default_factory=trio.Event)
    _transfers: dict[int, _Transfers] = field(default_factory=dict)  # id(conn) -> what it stored
    _audited: set[int] = field(default_factory=set)  # id(conn) of associations with a message already
    _orders: dict[int, dict[str, list[str]]] = field(default_factory=dict)  # id(conn) -> patient -> accessions
    # MPPS SOP Instance UID -> (patient ID, study UIDs, accession numbers) from its N-CREATE, for its N-SETs
    _procedures: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    _sent: dict[int, _Sent] = field(default_factory=dict)  # id(conn) -> instances sent on it
    sent: int = 0

    # ------------------------------------------------------------ participants

    @property
    def source_id(self) -> str:
        return self.settings.source_id or self.ae_title

    def _us(self, requestor: bool = False, address: str = "") -> Participant:
        return Participant(self.ae_title, requestor, address=address or self.hostname, ae_title=self.ae_title)

    @staticmethod
    def _peer_of(conn: DicomConnection) -> Participant:
        ae = conn.calling_ae
        return Participant(ae or "?", True, address=_host(conn.address), ae_title=ae)

    # ------------------------------------------------------------ emitting

    def emit(self, event: AuditEvent) -> None:
        """Queue one message (non-blocking); ignored when its event is not selected in the profile."""
        if event.name not in self.settings.events:
            return
        try:
            xml = event.to_xml(self.source_id, self.settings.enterprise_site)
        except Exception:  # a bug in a builder must not break the operation being audited
            log.exception("audit: cannot build a %s message", event.name)
            return
        self._pending.append({"xml": xml, "at": event.at.isoformat()})
        self._have_pending.set()

    # ------------------------------------------------------------ hooks (each a one-line call site)

    @_hook
    def instance_stored(self, conn: DicomConnection, stored: StoredInstance) -> None:
        """StorageSCP.on_stored: add one received instance to its association's transfer."""
        t = self._transfers.setdefault(id(conn), _Transfers())
        study = stored.study_instance_uid or "unknown"
        t.patient.setdefault(study, stored.patient_id or "")
        t.classes.setdefault(study, Counter())[stored.sop_class_uid] += 1
        if stored.accession_number:
            t.accessions.setdefault(study, set()).add(stored.accession_number)

    @_hook
    def query_received(self, conn: DicomConnection, sop_class: str, identifier: bytes, transfer_syntax: str) -> None:
        """A C-FIND identifier as received (Q/R SCP, MWL SCP)."""
        self._audited.add(id(conn))
        self.emit(audit.query(self._peer_of(conn), self._us(), sop_class, bytes(identifier), transfer_syntax))

    @_hook
    def procedure_recorded(self, conn: DicomConnection, action: str, mpps_uid: str, ds: Dataset) -> None:
        """MppsSCP.on_record: an MPPS was created ("C") or updated ("U")."""
        self._audited.add(id(conn))
        patient, studies, accessions = self._procedures.get(mpps_uid, ("", (), ()))
        patient = str(ds.get("PatientID", "") or patient)
        steps = ds.get("ScheduledStepAttributesSequence") or []
        studies = tuple(dict.fromkeys(str(s.get("StudyInstanceUID", "")) for s in steps if s.get("StudyInstanceUID"))) or studies
        accessions = tuple(dict.fromkeys(str(s.get("AccessionNumber", "")) for s in steps if s.get("AccessionNumber"))) or accessions
        self._procedures[mpps_uid] = (patient, studies, accessions)
        while len(self._procedures) > 1000:  # N-SETs usually follow soon; older ones fall out
            self._procedures.pop(next(iter(self._procedures)))
        self.emit(audit.procedure_record(self._peer_of(conn), self._us(), action="C" if action == "C" else "U",
                                         mpps_uid=mpps_uid, patient_id=patient, study_uids=studies,
                                         accessions=accessions))

    @_hook
    def instance_sent(self, conn: DicomConnection, uid: str) -> None:
        """StorePerformer.on_sent: one instance the peer accepted; reported per association once it
        is released or idle (`SENT_IDLE`), as Begin Transferring + DICOM Instances Transferred."""
        entry = self._sent.get(id(conn))
        if entry is None:
            entry = self._sent[id(conn)] = _Sent(conn, self.clock(), trio.current_time())
        entry.last = trio.current_time()
        entry.uids.append(uid)

    async def _report_sent(self, *, everything: bool = False) -> None:
        now = trio.current_time()
        done = [k for k, e in self._sent.items()
                if everything or not e.conn.is_open or now - e.last >= SENT_IDLE]
        for key in done:
            entry = self._sent.pop(key)
            studies = await self.blocking.run(self._studies_of, entry.uids)
            conn = entry.conn
            peer = Participant(conn.called_ae or "?", False, address=_host(conn.address), ae_title=conn.called_ae)
            us = self._us(requestor=True)
            begin = audit.begin_transferring(us, peer, studies)
            self.emit(replace(begin, at=entry.first_at))
            self.emit(audit.instances_transferred(us, peer, studies, received=False))

    def _studies_of(self, uids: list[str]) -> list[StudyTransfer]:
        """(worker thread) The index rows of sent instances, per study."""
        t = _Transfers()
        for uid in uids:
            row = self.store.get(uid) if self.store is not None else None
            study = (row.study_instance_uid if row else None) or "unknown"
            t.patient.setdefault(study, (row.patient_id if row else None) or "")
            t.classes.setdefault(study, Counter())[row.sop_class_uid if row else "unknown"] += 1
            if row is not None and row.accession_number:
                t.accessions.setdefault(study, set()).add(row.accession_number)
        return [StudyTransfer(uid, t.patient[uid], tuple(sorted(t.classes[uid].items())),
                              tuple(sorted(t.accessions.get(uid, ())))) for uid in t.classes]

    async def _sent_reporter(self) -> None:
        while True:
            await trio.sleep(SENT_IDLE / 2)
            if self._sent:
                await self._report_sent()

    @_hook
    def order_read(self, conn: DicomConnection, item: Dataset) -> None:
        """WorklistService.on_order_read: one worklist item sent; reported per patient at association end."""
        orders = self._orders.setdefault(id(conn), {})
        accessions = orders.setdefault(str(item.get("PatientID", "") or ""), [])
        accession = str(item.get("AccessionNumber", "") or "")
        if accession and accession not in accessions:
            accessions.append(accession)

    @_hook
    def association_ended(self, conn: DicomConnection) -> None:
        """Listener.on_association_end: the transfer summary, or the association itself."""
        for patient, accessions in self._orders.pop(id(conn), {}).items():
            self.emit(audit.order_record(self._peer_of(conn), self._us(), action="R", patient_id=patient,
                                         accessions=accessions))
        t = self._transfers.pop(id(conn), None)
        audited = id(conn) in self._audited
        self._audited.discard(id(conn))
        peer = self._peer_of(conn)
        if t is not None:
            studies = [StudyTransfer(uid, t.patient[uid], tuple(sorted(t.classes[uid].items())),
                                     tuple(sorted(t.accessions.get(uid, ()))))
                       for uid in t.classes]
            self.emit(audit.instances_transferred(peer, self._us(), studies, received=True))
            return
        if audited:
            return
        requests: Counter[str] = Counter()
        for (_command, sop_class), n in conn.requests.items():
            requests[sop_class] += n
        self.emit(audit.association(self._us(), peer, sorted(requests.items())))

    @_hook
    def security_event(self, ev: SecurityEvent) -> None:
        """Listener.on_security_event: authentication outcomes and refused access."""
        caller = Participant(ev.user or ev.calling_ae or "?", True, address=_host(ev.address), ae_title=ev.calling_ae)
        if ev.kind in ("authentication-succeeded", "authentication-failed"):
            ok = ev.kind == "authentication-succeeded"
            self.emit(audit.user_authentication(self._us(), caller, succeeded=ok, description=ev.detail))
            if ok:
                return
        what = ev.detail or ev.kind
        if ev.services:
            what += f" (services: {', '.join(ev.services)})"
        self.emit(audit.security_alert(self._us(), audit.RESTRICTED_FUNCTION, subject=ev.calling_ae or _host(ev.address),
                                       description=f"{ev.kind}: {what}", performer=caller))

    @_hook
    def tls_failed(self, remote: str, reason: str, subject: str | None) -> None:
        """TlsEvents.failed: a handshake failed or a certificate was rejected."""
        node = Participant(subject or _host(remote), True, address=_host(remote))
        self.emit(audit.security_alert(self._us(), audit.NODE_AUTHENTICATION, subject=subject or _host(remote),
                                       description=f"TLS handshake with {remote} failed: {reason}", performer=node))

    # ------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Mover and sender; Application Start when started, Application Stop (queued) when cancelled."""
        self.emit(audit.application_activity(self._us(), start=True))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._mover)
                nursery.start_soon(self._sent_reporter)
                if self.settings.host is not None:
                    nursery.start_soon(self._sender)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                if self._sent:
                    await self._report_sent(everything=True)
            self.emit(audit.application_activity(self._us(), start=False))
            with trio.CancelScope(shield=True):
                await self.blocking.run(self._move)  # the stop and whatever is left: queued before we go

    async def flushed(self) -> None:
        """Wait until every message emitted so far is queued (for tests and orderly hand-offs)."""
        while self._pending:
            await self._moved.wait()

    async def _mover(self) -> None:
        while True:
            await self._have_pending.wait()
            self._have_pending = trio.Event()
            try:
                await self.blocking.run(self._move)
            except Exception:
                log.exception("audit: cannot queue audit messages (kept in memory, retried)")
                await trio.sleep(1)
                self._have_pending.set()
                continue
            self._moved.set()
            self._moved = trio.Event()
            self._wake_sender.set()

    def _move(self) -> None:
        """(worker thread) The pending messages into the queue and the local file, all or none."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            if self.settings.local_file is not None:
                self._append_local(batch)
            if self.settings.host is not None:
                self.queue.enqueue_many([NewJob(AUDIT_JOB, DESTINATION, m) for m in batch])
        except BaseException:
            self._pending[:0] = batch
            raise

    def _append_local(self, batch: list[dict[str, Any]]) -> None:
        path = self.settings.local_file
        assert path is not None
        lines = b"".join(self._format(m) + b"\n" for m in batch)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, lines)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _format(self, m: dict[str, Any]) -> bytes:
        return format_message(str(m["xml"]), at=datetime.fromisoformat(str(m["at"])), hostname=self.hostname)

    def _repository(self) -> Repository:
        s = self.settings
        assert s.host is not None
        return Repository(s.host, s.port, s.transport, s.ca, s.certificate, s.key, s.server_name)

    async def _sender(self) -> None:
        repo = self._repository()
        while True:
            self._wake_sender = trio.Event()
            jobs = await self.blocking.run(
                lambda: self.queue.claim_batch(DESTINATION, kinds=frozenset({AUDIT_JOB}), limit=BATCH, lease=120))
            if not jobs:
                due = await self.blocking.run(lambda: self.queue.next_due(DESTINATION))
                wait = 5.0 if due is None else max(0.05, min(5.0, due - self.queue.clock()))
                with trio.move_on_after(wait):
                    await self._wake_sender.wait()
                continue
            try:
                messages = [self._format(j.payload) for j in jobs]
            except (KeyError, TypeError, ValueError) as exc:  # a payload we did not write: dead, not retried
                reason = f"unusable audit job: {exc}"  # bound here: the lambda runs in a worker thread
                await self.blocking.run(lambda: [self.queue.fail(j.id, reason, permanent=True, policy=RETRY)
                                                 for j in jobs])
                continue
            try:
                await send(repo, messages)
            except SyslogError as exc:
                log.warning("audit: %d message(s) kept in the queue: %s", len(jobs), exc)
                due = await self.blocking.run(self._failed, jobs, str(exc))
                # The whole destination pauses until the last of them is due again, so that after the
                # pause the queue is sent in id order (oldest first), whatever each job's backoff was.
                await trio.sleep(max(0.0, due - self.queue.clock()))
                continue
            await self.blocking.run(lambda: self.queue.complete_many([j.id for j in jobs]))
            self.sent += len(jobs)

    def _failed(self, jobs: list[Job], error: str) -> float:
        """(worker thread) Record a failed attempt of each job; the time the last of them is due again."""
        due = 0.0
        for j in jobs:
            self.queue.fail(j.id, error, permanent=False, policy=RETRY)
            again = self.queue.get(j.id)
            if again is not None:
                due = max(due, again.next_attempt_at)
        return due


def _host(remote: str) -> str:
    """"AE@host:port", "host:port" or "[v6]:port" -> host."""
    remote = remote.rsplit("@", 1)[-1]
    host = remote.rsplit(":", 1)[0] if ":" in remote else remote
    return host.strip("[]")


__all__ = ["AUDIT_JOB", "AuditTrail", "DESTINATION"]
