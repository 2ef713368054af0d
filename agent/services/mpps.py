"""Modality Performed Procedure Step (PS3.4 F): SCU through the durable queue, SCP with forwarding.

Invariants (seed Tables 7, 70-72; S-17, S-25, S-33, S-34; docs/architecture.md "Durable queue"):
- SCU: `mpps_started` stores the instance (origin 'local') and queues one `mpps-create` job per
  `[mpps] send_to` peer in one transaction; `mpps_ended` updates it and queues `mpps-set` jobs. Jobs of
  one instance and destination share the group key `<MPPS UID>@<destination>`, so the queue runs the
  N-SET strictly after its N-CREATE succeeded (a dead N-CREATE blocks it); one destination being down
  does not hold the others. A retried N-CREATE answered 0111 (duplicate SOP instance) counts as created;
  an N-SET answered 0110 "may no longer be updated" (the instance is final there, e.g. our own N-SET
  repeated after a crash) ends its job with a warning instead of being retried for ever.
- SCP: N-CREATE only with Performed Procedure Step Status IN PROGRESS (0106 otherwise); 0120 / 0121 for
  a missing / empty type 1 attribute (Table F.7.2-1); 0111 for an existing instance. N-SET: 0112 for an
  unknown instance; 0110 "Performed Procedure Step Object may no longer be updated" (F.7.2.2.4.2) once
  COMPLETED or DISCONTINUED; 0106 for another status value. A data set that cannot be decoded is
  answered A900 (seed S-25). Instances persist in SQLite for `[mpps] instance_lifetime`.
- Coercion (`coerce_from_worklist`, seed S-34): when the Scheduled Step Attributes Sequence names a
  worklist item the agent serves, the patient identification and scheduling attributes are taken from
  that item. The coerced set is what is stored and forwarded; the N-CREATE-RSP carries no attribute
  list (coercion is not echoed back).
- Every accepted N-CREATE and N-SET is queued, in the same transaction as the instance row, to each
  `[mpps] forward_to` peer (same group key scheme, so the forwarded N-SET follows its N-CREATE).
- COMPLETED or DISCONTINUED (local or received) removes the scheduled steps it names from the served
  worklist.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.datadict import tag_for_keyword
from pydicom.uid import generate_uid

from agent.dimse import NCreateRQ, NSetRQ, Status
from agent.errors import AgentError
from agent.net.connection import DicomConnection, Timeouts
from agent.net.requests import request
from agent.net.server import ServiceRegistry
from agent.services.blocking import Blocking
from agent.services.dataset import EXPLICIT_VR_LE, IMPLICIT_VR_LE, DataSetError, decode, encode
from agent.services.outbound import BadPayload, JobFailed, check_status, payload_str
from agent.store.db import transaction
from agent.store.mpps import (
    DuplicateInstance,
    MppsStore,
    NoLongerUpdatable,
    NoSuchInstance,
    PpsStatus,
)
from agent.store.queue import Job, JobQueue, NewJob
from agent.store.worklist import StepRef, WorklistStore
from agent.ul.negotiation import PresentationContext, ProposedContext, SyntaxSupport

log = logging.getLogger("agent.mpps")

MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
MPPS_CREATE_JOB = "mpps-create"
MPPS_SET_JOB = "mpps-set"
NO_LONGER_UPDATABLE = "Performed Procedure Step Object may no longer be updated"
#: How many recent operations `MppsSCP.received` keeps (the instances themselves are in the database).
RECEIVED_KEPT = 1000
#: Every status the MPPS SCP answers to N-CREATE and N-SET (PS3.4 F.7.2.1.2, F.7.2.2.2); the conformance
#: statement lists these, and a test checks that the handlers answer no status missing here.
SCP_STATUSES: tuple[int, ...] = (
    Status.SUCCESS, Status.MISSING_ATTRIBUTE, Status.MISSING_ATTRIBUTE_VALUE, Status.INVALID_ATTRIBUTE_VALUE,
    Status.DUPLICATE_SOP_INSTANCE, Status.NO_SUCH_SOP_INSTANCE, Status.PROCESSING_FAILURE,
    0xA900,  # an undecodable data set (seed S-25)
)

#: Type 1 attributes of the N-CREATE (PS3.4 Table F.7.2-1), by keyword.
CREATE_TYPE1 = (
    "ScheduledStepAttributesSequence", "PerformedProcedureStepID", "PerformedStationAETitle",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "PerformedProcedureStepStatus",
    "Modality",
)
PATIENT_KEYWORDS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
#: Scheduled Step Attributes Sequence item keywords copied from a worklist item (Table F.7.2-1).
STEP_KEYWORDS = ("StudyInstanceUID", "AccessionNumber", "RequestedProcedureID", "RequestedProcedureDescription")
SPS_KEYWORDS = ("ScheduledProcedureStepID", "ScheduledProcedureStepDescription")


class MppsError(AgentError):
    pass


# ------------------------------------------------------------------ data sets


def _now() -> datetime.datetime:
    return datetime.datetime.now()


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value)


def step_refs(mpps: Dataset) -> list[StepRef]:
    """The scheduled steps an MPPS names (Scheduled Step Attributes Sequence)."""
    refs = []
    for item in mpps.get("ScheduledStepAttributesSequence") or []:
        refs.append(StepRef(_text(item, "StudyInstanceUID"), _text(item, "AccessionNumber"),
                            _text(item, "RequestedProcedureID"), _text(item, "ScheduledProcedureStepID")))
    return refs


def scheduled_step_item(item: Dataset | None, study_uid: str | None = None) -> Dataset:
    """One Scheduled Step Attributes Sequence item: from a worklist item, or the unscheduled form (a new
    Study Instance UID and empty type 2 attributes, PS3.4 F.7.2.1)."""
    step = Dataset()
    if item is None:
        step.StudyInstanceUID = study_uid or generate_uid()
        for kw in ("AccessionNumber", "RequestedProcedureID", "RequestedProcedureDescription",
                   "ScheduledProcedureStepID", "ScheduledProcedureStepDescription"):
            setattr(step, kw, None)
        step.ReferencedStudySequence = DicomSequence()
        step.ScheduledProtocolCodeSequence = DicomSequence()
        return step
    step.StudyInstanceUID = _text(item, "StudyInstanceUID") or study_uid or generate_uid()
    step.ReferencedStudySequence = DicomSequence(list(item.get("ReferencedStudySequence") or []))
    for kw in ("AccessionNumber", "RequestedProcedureID", "RequestedProcedureDescription"):
        setattr(step, kw, item.get(kw) or None)
    sps_items = item.get("ScheduledProcedureStepSequence") or [Dataset()]
    sps = sps_items[0]
    for kw in SPS_KEYWORDS:
        setattr(step, kw, sps.get(kw) or None)
    step.ScheduledProtocolCodeSequence = DicomSequence(list(sps.get("ScheduledProtocolCodeSequence") or []))
    return step


def create_attributes(
    item: Dataset | None,
    *,
    station_ae: str,
    modality: str | None = None,
    patient: Mapping[str, str] | None = None,
    pps_id: str | None = None,
    description: str = "",
    study_id: str = "",
    station_name: str = "",
    start: datetime.datetime | None = None,
) -> Dataset:
    """The N-CREATE attribute list (PS3.4 Table F.7.2-1, type 1 and 2) for a worklist item, or for an
    unscheduled procedure with `patient` (keywords such as PatientName, PatientID)."""
    start = start or _now()
    ds = Dataset()
    if item is not None and "SpecificCharacterSet" in item:
        ds.SpecificCharacterSet = item.SpecificCharacterSet
    ds.ScheduledStepAttributesSequence = DicomSequence([scheduled_step_item(item)])
    source = item if item is not None else Dataset()
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(ds, kw, source.get(kw) or None)
    for kw, value in (patient or {}).items():
        setattr(ds, kw, value)
    if "SpecificCharacterSet" not in ds and not all(str(ds.get(k) or "").isascii() for k in PATIENT_KEYWORDS):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ReferencedPatientSequence = DicomSequence()
    sps = (source.get("ScheduledProcedureStepSequence") or [Dataset()])[0]
    ds.PerformedProcedureStepID = pps_id or start.strftime("%y%m%d%H%M%S")
    ds.PerformedStationAETitle = station_ae
    ds.PerformedStationName = station_name or None
    ds.PerformedLocation = None
    ds.PerformedProcedureStepStartDate = start.strftime("%Y%m%d")
    ds.PerformedProcedureStepStartTime = start.strftime("%H%M%S")
    ds.PerformedProcedureStepStatus = str(PpsStatus.IN_PROGRESS)
    ds.PerformedProcedureStepDescription = description or sps.get("ScheduledProcedureStepDescription") or None
    ds.PerformedProcedureTypeDescription = None
    ds.ProcedureCodeSequence = DicomSequence()
    ds.PerformedProcedureStepEndDate = None
    ds.PerformedProcedureStepEndTime = None
    ds.Modality = modality or sps.get("Modality") or "OT"
    ds.StudyID = study_id or None
    ds.PerformedProtocolCodeSequence = DicomSequence()
    ds.PerformedSeriesSequence = DicomSequence()
    return ds


def series_item(series: Mapping[str, Any] | Dataset) -> Dataset:
    """A Performed Series Sequence item from a Dataset, or a mapping with series_uid, protocol_name,
    description, retrieve_ae, operator, performing_physician and images [(sop_class, sop_instance), ...]."""
    if isinstance(series, Dataset):
        return series
    item = Dataset()
    item.PerformingPhysicianName = series.get("performing_physician") or None
    item.ProtocolName = series.get("protocol_name") or "UNKNOWN"
    item.OperatorsName = series.get("operator") or None
    item.SeriesInstanceUID = series["series_uid"]
    item.SeriesDescription = series.get("description") or None
    item.RetrieveAETitle = series.get("retrieve_ae") or None
    images = []
    for sop_class, sop_uid in series.get("images", ()):
        ref = Dataset()
        ref.ReferencedSOPClassUID = sop_class
        ref.ReferencedSOPInstanceUID = sop_uid
        images.append(ref)
    item.ReferencedImageSequence = DicomSequence(images)
    item.ReferencedNonImageCompositeSOPInstanceSequence = DicomSequence()
    return item


def set_attributes(status: PpsStatus, performed_series: Iterable[Mapping[str, Any] | Dataset],
                   end: datetime.datetime | None = None) -> Dataset:
    """The N-SET modification list that ends a step (PS3.4 Table F.7.2-1, N-SET column)."""
    end = end or _now()
    ds = Dataset()
    ds.PerformedProcedureStepStatus = str(status)
    ds.PerformedProcedureStepEndDate = end.strftime("%Y%m%d")
    ds.PerformedProcedureStepEndTime = end.strftime("%H%M%S")
    ds.PerformedSeriesSequence = DicomSequence([series_item(s) for s in performed_series])
    return ds


def merge(base: Dataset, modifications: Dataset) -> Dataset:
    """`base` with each top-level attribute of `modifications` replacing its own (N-SET semantics)."""
    out = Dataset()
    out.update(base)
    for elem in modifications:
        out[elem.tag] = elem
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _payload(uid: str, ds: Dataset) -> dict[str, str]:
    return {"uid": uid, "data": _b64(encode(ds, EXPLICIT_VR_LE))}


def group_key(uid: str, destination: str) -> str:
    return f"{uid}@{destination}"


# ------------------------------------------------------------------ SCU API


@dataclass
class MppsSCU:
    """Starts and ends local procedure steps; every DIMSE message goes through the queue (blocking API:
    call from a thread, or through `Blocking.run`, or from the CLI)."""

    db: sqlite3.Connection
    store: MppsStore
    queue: JobQueue
    worklist: WorklistStore | None
    destinations: Sequence[str]
    station_ae: str
    modality: str | None = None
    blocking: Blocking | None = None
    wake: Callable[[str], None] | None = None  # Outbound.wake, so queued jobs go out at once

    async def started(self, item: Dataset | None = None, **kw: Any) -> str:
        """`mpps_started` from trio (through `Blocking`), then wake the destinations' workers."""
        assert self.blocking is not None
        uid = await self.blocking.run(lambda: self.mpps_started(item, **kw))
        self._wake_all()
        return uid

    async def ended(self, uid: str, status: PpsStatus | str = PpsStatus.COMPLETED,
                    performed_series: Iterable[Mapping[str, Any] | Dataset] = ()) -> None:
        assert self.blocking is not None
        series = list(performed_series)
        await self.blocking.run(lambda: self.mpps_ended(uid, status, series))
        self._wake_all()

    def _wake_all(self) -> None:
        if self.wake is not None:
            for d in self.destinations:
                self.wake(d)

    def mpps_started(self, item: Dataset | None = None, *, patient: Mapping[str, str] | None = None,
                     modality: str | None = None, uid: str | None = None, **kw: Any) -> str:
        """Record a new IN PROGRESS step for `item` (a worklist item) or an unscheduled `patient`, queue
        its N-CREATE to each destination, and return the MPPS SOP Instance UID."""
        if item is None and not patient:
            raise MppsError("a procedure step needs a worklist item or the patient's data")
        uid = uid or generate_uid()
        ds = create_attributes(item, station_ae=self.station_ae, modality=modality or self.modality,
                               patient=patient, **kw)
        with transaction(self.db):
            self.store.create(uid, "local", PpsStatus.IN_PROGRESS, encode(ds, EXPLICIT_VR_LE))
            self.queue.enqueue_many(
                NewJob(MPPS_CREATE_JOB, d, _payload(uid, ds), group_key=group_key(uid, d)) for d in self.destinations
            )
        log.info("MPPS %s started (%s)", uid, "scheduled" if item is not None else "unscheduled")
        return uid

    def mpps_ended(self, uid: str, status: PpsStatus | str = PpsStatus.COMPLETED,
                   performed_series: Iterable[Mapping[str, Any] | Dataset] = (),
                   extra: Dataset | None = None) -> None:
        """Mark the step COMPLETED or DISCONTINUED and queue its N-SET after the N-CREATE. `extra`:
        further N-SET attributes, e.g. the Discontinuation Reason Code Sequence (PS3.3 C.4.14)."""
        status = PpsStatus(status)
        if not status.final:
            raise MppsError("a step ends COMPLETED or DISCONTINUED")
        mods = set_attributes(status, performed_series)
        if extra is not None:
            mods = merge(mods, extra)
        with transaction(self.db):
            current = self.store.get(uid, "local")
            if current is None:
                raise MppsError(f"no local MPPS instance {uid}")
            try:
                merged = merge(decode(current.data, eager=True), mods)
                self.store.update(uid, "local", status, encode(merged, EXPLICIT_VR_LE))
            except NoLongerUpdatable as exc:
                raise MppsError(str(exc)) from exc
            self.queue.enqueue_many(
                NewJob(MPPS_SET_JOB, d, _payload(uid, mods), group_key=group_key(uid, d)) for d in self.destinations
            )
            if self.worklist is not None:
                self.worklist.mark_performed(step_refs(merged), uid, str(status))
        log.info("MPPS %s %s", uid, status)


# ------------------------------------------------------------------ performers


@dataclass
class MppsPerformer:
    """`mpps-create` / `mpps-set` jobs: one N-CREATE or N-SET of the payload's attribute list."""

    kind: str

    def contexts(self, job: Job) -> Sequence[ProposedContext]:
        return [ProposedContext(MPPS_SOP_CLASS, (EXPLICIT_VR_LE, IMPLICIT_VR_LE))]

    async def perform(self, conn: DicomConnection, job: Job) -> None:
        uid = payload_str(job, "uid")
        try:
            data = base64.b64decode(payload_str(job, "data"), validate=True)
        except binascii.Error as exc:
            raise BadPayload(job, f"payload field 'data' is not base64: {exc}") from exc
        ctx = conn.context_for(MPPS_SOP_CLASS)
        if ctx is None:
            raise JobFailed(f"{conn.called_ae} did not accept the MPPS SOP Class", permanent=True)
        if ctx.transfer_syntax != EXPLICIT_VR_LE:
            try:
                data = encode(decode(data, EXPLICIT_VR_LE, eager=True), ctx.transfer_syntax)
            except DataSetError as exc:
                raise BadPayload(job, f"payload field 'data' is not a data set: {exc}") from exc
        if self.kind == MPPS_CREATE_JOB:
            rq: NCreateRQ | NSetRQ = NCreateRQ(message_id=conn.next_message_id(),
                                               affected_sop_class_uid=MPPS_SOP_CLASS,
                                               affected_sop_instance_uid=uid)
        else:
            rq = NSetRQ(message_id=conn.next_message_id(), requested_sop_class_uid=MPPS_SOP_CLASS,
                        requested_sop_instance_uid=uid)
        reply = await request(conn, ctx.id, rq, data)
        if self.kind == MPPS_CREATE_JOB and reply.status == Status.DUPLICATE_SOP_INSTANCE:
            log.info("MPPS %s: %s already has it (a repeated N-CREATE): counted as created", uid, conn.called_ae)
            return
        comment = getattr(reply.message, "error_comment", None)
        if self.kind == MPPS_SET_JOB and _no_longer_updatable(reply.status, comment):
            # The instance is final at the peer (PS3.4 F.7.2.2.4.2), typically because this very N-SET
            # reached it before a crash lost its response: sending it again can never succeed.
            log.warning("MPPS %s: %s says it may no longer be updated (already COMPLETED or DISCONTINUED there, "
                        "e.g. this N-SET repeated after a restart): not sent again", uid, conn.called_ae)
            return
        check_status(reply.status, f"MPPS {'N-CREATE' if self.kind == MPPS_CREATE_JOB else 'N-SET'} of {uid}")


def _no_longer_updatable(status: int, comment: str | None) -> bool:
    """0110 with the Error Comment PS3.4 F.7.2.2.4.2 gives for a final instance; a bare 0110 stays a
    processing failure that is retried (it may be the peer's transient trouble)."""
    return status == Status.PROCESSING_FAILURE and NO_LONGER_UPDATABLE.lower() in (comment or "").lower()


# ------------------------------------------------------------------ SCP


ItemsProvider = Callable[[], Awaitable[list[Dataset]]]


@dataclass
class MppsSCP:
    db: sqlite3.Connection
    store: MppsStore
    queue: JobQueue
    blocking: Blocking
    worklist: WorklistStore | None = None
    forward_to: Sequence[str] = ()
    coerce: bool = True
    items: ItemsProvider | None = None
    after_commit: Callable[[], None] | None = None
    #: Audit trail: (conn, "C" for N-CREATE or "U" for N-SET, MPPS SOP Instance UID, data set received), after success.
    on_record: Callable[[DicomConnection, str, str, Dataset], None] | None = None
    #: The latest accepted (operation, uid) pairs, for observability; bounded, the oldest fall out.
    received: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=RECEIVED_KEPT))

    def register(self, registry: ServiceRegistry) -> None:
        registry.add([MPPS_SOP_CLASS], SyntaxSupport(),
                     {NCreateRQ: self.handle_create, NSetRQ: self.handle_set})  # type: ignore[dict-item]

    async def _respond(self, conn: DicomConnection, ctx: PresentationContext, rq: NCreateRQ | NSetRQ,
                       status: int, comment: str | None = None, tags: tuple[int, ...] | None = None,
                       **kw: Any) -> None:
        if status != Status.SUCCESS:
            log.warning("%s: MPPS %s refused (0x%04X): %s", conn.remote, type(rq).__name__, status, comment)
        await conn.send_message(ctx.id, rq.response(int(status), error_comment=comment[:64] if comment else None,
                                                    attribute_identifier_list=tags, **kw))

    async def handle_create(self, conn: DicomConnection, ctx: PresentationContext, rq: NCreateRQ) -> None:
        data = await conn.read_dataset(ctx.id)
        uid = rq.affected_sop_instance_uid or generate_uid()
        try:
            ds = decode(data, ctx.transfer_syntax, eager=True)
        except DataSetError as exc:
            await self._respond(conn, ctx, rq, 0xA900, str(exc))
            return
        for kw in CREATE_TYPE1:
            if kw not in ds:
                await self._respond(conn, ctx, rq, Status.MISSING_ATTRIBUTE, f"{kw} is missing",
                                    (int(tag_for_keyword(kw) or 0),))
                return
            value = ds[kw].value
            if value is None or value == "" or (kw.endswith("Sequence") and len(value) == 0):
                await self._respond(conn, ctx, rq, Status.MISSING_ATTRIBUTE_VALUE, f"{kw} is empty",
                                    (int(tag_for_keyword(kw) or 0),))
                return
        if str(ds.PerformedProcedureStepStatus).strip() != PpsStatus.IN_PROGRESS:
            await self._respond(conn, ctx, rq, Status.INVALID_ATTRIBUTE_VALUE,
                                f"N-CREATE with status {ds.PerformedProcedureStepStatus}, not IN PROGRESS",
                                (0x00400252,))
            return
        if self.coerce and self.items is not None:
            ds = coerce_from_worklist(ds, await self.items())
        body = encode(ds, EXPLICIT_VR_LE)

        def commit() -> None:
            with transaction(self.db):
                self.store.create(uid, "remote", PpsStatus.IN_PROGRESS, body)
                self._forward(MPPS_CREATE_JOB, uid, body)

        try:
            await self.blocking.run(commit)
        except DuplicateInstance as exc:
            await self._respond(conn, ctx, rq, Status.DUPLICATE_SOP_INSTANCE, str(exc))
            return
        self.received.append(("N-CREATE", uid))
        await self._respond(conn, ctx, rq, Status.SUCCESS, affected_sop_instance_uid=uid)
        if self.on_record is not None:
            self.on_record(conn, "C", uid, ds)
        if self.after_commit is not None:
            self.after_commit()

    async def handle_set(self, conn: DicomConnection, ctx: PresentationContext, rq: NSetRQ) -> None:
        data = await conn.read_dataset(ctx.id)
        uid = rq.requested_sop_instance_uid
        try:
            mods = decode(data, ctx.transfer_syntax, eager=True)
        except DataSetError as exc:
            await self._respond(conn, ctx, rq, 0xA900, str(exc))
            return
        new_status: PpsStatus | None = None
        if "PerformedProcedureStepStatus" in mods:
            try:
                new_status = PpsStatus(str(mods.PerformedProcedureStepStatus).strip())
            except ValueError:
                await self._respond(conn, ctx, rq, Status.INVALID_ATTRIBUTE_VALUE,
                                    f"unknown status {mods.PerformedProcedureStepStatus}", (0x00400252,))
                return

        def commit() -> tuple[int, str | None]:
            with transaction(self.db):
                current = self.store.get(uid, "remote")
                if current is None:
                    return Status.NO_SUCH_SOP_INSTANCE, f"no MPPS instance {uid}"
                if current.status.final:
                    return Status.PROCESSING_FAILURE, NO_LONGER_UPDATABLE
                merged = merge(decode(current.data, eager=True), mods)
                status = new_status or current.status
                self.store.update(uid, "remote", status, encode(merged, EXPLICIT_VR_LE))
                self._forward(MPPS_SET_JOB, uid, encode(mods, EXPLICIT_VR_LE))
                if status.final and self.worklist is not None:
                    self.worklist.mark_performed(step_refs(merged), uid, str(status))
            return Status.SUCCESS, None

        try:
            status, comment = await self.blocking.run(commit)
        except (NoSuchInstance, NoLongerUpdatable) as exc:  # raced with expiry
            status, comment = Status.PROCESSING_FAILURE, str(exc)
        if status == Status.SUCCESS:
            self.received.append(("N-SET", uid))
        await self._respond(conn, ctx, rq, status, comment)
        if status == Status.SUCCESS and self.on_record is not None:
            self.on_record(conn, "U", uid, mods)
        if status == Status.SUCCESS and self.after_commit is not None:
            self.after_commit()

    def _forward(self, kind: str, uid: str, body: bytes) -> None:
        payload = {"uid": uid, "data": _b64(body)}
        self.queue.enqueue_many(NewJob(kind, d, payload, group_key=group_key(uid, d)) for d in self.forward_to)


def coerce_from_worklist(ds: Dataset, items: Sequence[Dataset]) -> Dataset:
    """Patient identification and scheduling attributes from the worklist item the MPPS names (S-34)."""
    from agent.services.worklist import step_ref

    refs = step_refs(ds)
    if not refs:
        return ds
    for item in items:
        if any(ref.refers_to(step_ref(item)) for ref in refs):
            out = merge(ds, Dataset())
            if "SpecificCharacterSet" in item:
                out.SpecificCharacterSet = item.SpecificCharacterSet
            for kw in PATIENT_KEYWORDS:
                if kw in item:
                    setattr(out, kw, item.get(kw))
            steps = []
            for step in ds.ScheduledStepAttributesSequence:
                fixed = merge(step, Dataset())
                source = scheduled_step_item(item)
                for kw in STEP_KEYWORDS + SPS_KEYWORDS:
                    if source.get(kw):
                        setattr(fixed, kw, source.get(kw))
                steps.append(fixed)
            out.ScheduledStepAttributesSequence = DicomSequence(steps)
            return out
    return ds


# ------------------------------------------------------------------ wiring


@dataclass
class WorkflowServices:
    worklist: Any = None  # WorklistService | None
    mpps_scu: MppsSCU | None = None
    mpps_scp: MppsSCP | None = None


def build_workflow_services(profile: Any, registry: ServiceRegistry, outbound: Any, queue: JobQueue,
                            blocking: Blocking, db: sqlite3.Connection, worklist_store: WorklistStore,
                            mpps_store: MppsStore, timeouts: Timeouts) -> WorkflowServices:
    """Register the MWL and MPPS SCPs and the MPPS performers the profile asks for."""
    from agent.services.worklist import WorklistService

    out = WorkflowServices()
    outbound.performers[MPPS_CREATE_JOB] = MppsPerformer(MPPS_CREATE_JOB)
    outbound.performers[MPPS_SET_JOB] = MppsPerformer(MPPS_SET_JOB)
    w, m = profile.worklist, profile.mpps
    if w is not None:
        out.worklist = WorklistService(w, worklist_store, blocking, profile.peers, profile.agent.ae_title, timeouts)
        if w.serve:
            out.worklist.register(registry)
    if m is not None:
        station = w.station_ae if w is not None else profile.agent.ae_title
        out.mpps_scu = MppsSCU(db, mpps_store, queue, worklist_store, m.send_to, station,
                               w.modality if w is not None else None, blocking, outbound.wake)
        if m.serve:
            items = out.worklist.candidates if out.worklist is not None else _stored_items(blocking, worklist_store)
            destinations = tuple(m.forward_to)
            out.mpps_scp = MppsSCP(db, mpps_store, queue, blocking, worklist_store, destinations,
                                   m.coerce_from_worklist, items,
                                   after_commit=lambda: [outbound.wake(d) for d in destinations] and None)
            out.mpps_scp.register(registry)
    return out


def _stored_items(blocking: Blocking, store: WorklistStore) -> ItemsProvider:
    from agent.services.worklist import load_stored

    async def items() -> list[Dataset]:
        return await blocking.run(lambda: load_stored(store))

    return items


__all__ = ["MPPS_CREATE_JOB", "MPPS_SET_JOB", "MPPS_SOP_CLASS", "MppsError", "MppsPerformer", "MppsSCP",
           "MppsSCU", "WorkflowServices", "build_workflow_services", "coerce_from_worklist",
           "create_attributes", "set_attributes", "step_refs"]
