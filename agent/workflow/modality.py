"""The modality workflow: device events -> worklist-driven, MPPS-reported, stored, committed exams.

A durable state machine per procedure (agent/store/procedures.py has the states):
  selected -> mpps-created -> acquiring -> acquired -> stored -> committed -> completed
  (or discontinued when the device aborts, failed when no item may be used).

Invariants:
- Consumer of the device stream: `async for event in driver.events(): await record(event)`. `record`
  returns only once the event's effect is committed to SQLite (through `Blocking.run`), and only then is
  the next event pulled, which is the driver's acknowledgement to the device (drivers/base.py). An event
  that cannot be recorded now (disk full, database locked) is retried, never skipped: the device keeps it.
- Every transition is ONE transaction that also queues its outgoing jobs: the MPPS N-CREATE (and the
  fetching of priors, `[device] priors_from`) with `mpps-created`; each image's index row with its `store` jobs (the instance store's on_commit hook) and
  the image's `stored` mark; the MPPS N-SET COMPLETED and the film with `stored`; the N-SET
  DISCONTINUED (with the reason code) with `discontinued`.
- Every UID is generated once and committed before use: Study (unscheduled), Series and MPPS SOP
  Instance UIDs when the procedure is selected, each SOP Instance UID (keyed by procedure and image key)
  before its instance is built. A replayed event finds them and makes nothing new; a restarted agent
  resumes each procedure from its recorded state (`resume`).
- The RIS hears COMPLETED when the device ends the procedure (IHE Scheduled Workflow: the MPPS reports
  the acquisition, not the archive); commitment is followed afterwards: `stored -> committed` once every
  stored instance has been committed by `[device] commit_with` (straight to completed without it).
- Unscheduled (PS3.4 F.7.2.1, IHE SWF "unscheduled"): no worklist item matches the device's key: a new
  Study Instance UID, the device's patient data, empty request attributes; or, with
  `[device] unscheduled = "refuse"`, the procedure is recorded as failed with the reason and nothing is
  sent.
"""

from __future__ import annotations

import datetime
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from pydicom import Dataset
from pydicom.uid import generate_uid

from agent.errors import AgentError
from agent.profile import DeviceSettings, Peer
from agent.services.blocking import Blocking
from agent.services.dataset import EXPLICIT_VR_LE, DataSetError, decode, encode
from agent.services.forward import enqueue_forwards
from agent.store.db import transaction
from agent.store.instances import InstanceStore
from agent.store.procedures import (
    OPEN, TERMINAL, ImageState, ProcedureRow, ProcedureState, ProcedureStore,
)
from agent.store.queue import JobQueue
from agent.store.worklist import WorklistStore
from agent.workflow.mapping import (
    DeviceImage, ImageError, ProcedureContext, encode_for_store, identity_attributes, image_dataset,
    read_device_file, series_modality, storage_syntax,
)
from agent.workflow.priors import queue_priors
from agent.workflow.reasons import discontinuation_reason
from agent.workflow.selection import select_item
from drivers.base import (
    AcquisitionDriver, DeviceEvent, DeviceStatus, ImageAcquired, Measurement, ProcedureEnded, ProcedureStarted,
)

log = logging.getLogger("agent.workflow")

#: Longest wait between two attempts to record an event that failed (the device keeps it meanwhile).
MAX_RETRY_DELAY = 30.0
#: How long a procedure start may wait for the RIS when no cached item matches. A device waits only so
#: long for its acknowledgement (a serial link 15 s, ASTM E1381) and re-sends: waiting longer for a RIS
#: that does not answer would make every re-sent start wait again, and the procedure would never begin.
REFRESH_WAIT = 5.0
_PATIENT_FIELDS = (("patient_id", "PatientID"), ("patient_name", "PatientName"),
                   ("birth_date", "PatientBirthDate"), ("sex", "PatientSex"))


@dataclass
class ModalityWorkflow:
    settings: DeviceSettings
    driver: AcquisitionDriver | None
    db: Any  # sqlite3.Connection
    blocking: Blocking
    queue: JobQueue
    store: InstanceStore
    procedures: ProcedureStore
    worklist_store: WorklistStore
    data_dir: Path
    ae_title: str  # ours: the images' source AE, the station for "first"
    peers: Any = None  # Mapping[str, Peer]
    mpps_scu: Any = None  # agent.services.mpps.MppsSCU | None ([mpps] send_to)
    worklist_service: Any = None  # agent.services.worklist.WorklistService | None
    worklist_folder: Path | None = None
    worklist_modality: str | None = None
    station_ae: str = ""
    wake: Callable[[str], None] | None = None
    poll: float = 1.0  # how often stored procedures are checked for commitment
    retry_delay: float = 1.0
    device_status: DeviceStatus | None = None
    recorded: int = 0  # events recorded since start (observability)

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Resume unfinished procedures, then consume the device's events and follow commitment."""
        await self.blocking.run(self.resume)
        self._wake_all()
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_commitment)
            if self.driver is not None:
                try:
                    await self._consume(self.driver)
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(10):
                        await self.driver.aclose()

    async def _consume(self, driver: AcquisitionDriver) -> None:
        while True:
            try:
                async for event in driver.events():
                    await self._record_until_done(event)
            except Exception as exc:  # the driver failed; reopened, it delivers the unacknowledged event again
                log.error("device: event stream failed (reopening in %g s): %s", self.retry_delay, exc)
                await trio.sleep(self.retry_delay)
                continue
            log.info("device: the driver's event stream ended")
            return

    async def _record_until_done(self, event: DeviceEvent) -> None:
        delay = self.retry_delay
        while True:
            try:
                await self.record(event)
                return
            except Exception as exc:  # logged and retried, never skipped
                log.error("device: could not record %s (retrying in %g s; the device keeps it): %s",
                          type(event).__name__, delay, exc)
            await trio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    async def _follow_commitment(self) -> None:
        while True:
            await trio.sleep(self.poll)
            if await self.blocking.run(self._has_settling):
                await self.blocking.run(self.resume)

    def _has_settling(self) -> bool:
        return self.procedures.has_state(ProcedureState.STORED) or self.procedures.has_state(ProcedureState.COMMITTED)

    # ------------------------------------------------------------------ events

    async def record(self, event: DeviceEvent) -> None:
        """Record one device event durably (module invariants); returns once it is committed."""
        if isinstance(event, ProcedureStarted):
            await self._started(event)
        elif isinstance(event, ImageAcquired):
            await self.blocking.run(self._image, event)
        elif isinstance(event, ProcedureEnded):
            await self.blocking.run(self._ended, event)
        elif isinstance(event, Measurement):
            await self.blocking.run(self._measurement, event)
        elif isinstance(event, DeviceStatus):
            if self.device_status is None or self.device_status.connected != event.connected:
                log.info("device: %s%s", "connected" if event.connected else "disconnected",
                         f" ({event.info})" if event.info else "")
            self.device_status = event
        else:
            log.warning("device: unknown event %r ignored", event)
        self.recorded += 1
        self._wake_all()

    async def _started(self, event: ProcedureStarted) -> None:
        known = await self.blocking.run(self.procedures.get, event.procedure_key)
        if known is not None:
            log.info("procedure %s: start received again (a replay): state %s", event.procedure_key, known.state)
            await self.blocking.run(self.advance, event.procedure_key)
            return
        item = await self.blocking.run(self._select, event)
        if item is None and self.worklist_service is not None and self.worklist_service.source is not None:
            try:  # the item may have been scheduled since the last refresh: ask the RIS once more
                with trio.move_on_after(REFRESH_WAIT) as waited:
                    await self.worklist_service.refresh()
                if waited.cancelled_caught:
                    log.warning("procedure %s: the RIS did not answer within %g s; deciding on the cached worklist",
                                event.procedure_key, REFRESH_WAIT)
            except AgentError as exc:
                log.warning("procedure %s: worklist refresh failed: %s", event.procedure_key, exc)
            item = await self.blocking.run(self._select, event)
        await self.blocking.run(self._create, event, item)

    def _select(self, event: ProcedureStarted) -> Dataset | None:
        from agent.services.worklist import served_items

        items = served_items(self.worklist_store, self.worklist_folder)
        patient_id = event.patient.patient_id if event.patient is not None else ""
        return select_item(items, mode=self.settings.select, key=event.worklist_key, patient_id=patient_id,
                           station_ae=self.station_ae or self.ae_title,
                           modality=self.settings.modality or self.worklist_modality,
                           taken=self.procedures.taken_steps())

    def _create(self, event: ProcedureStarted, item: Dataset | None) -> None:
        """Record the selection with every procedure-level UID, then queue the MPPS N-CREATE."""
        key = event.procedure_key
        started = event.timestamp if event.timestamp is not None else time.time()
        # Performed Procedure Step ID (SH, 16): start time and 4 hex digits of the key, stored with the row.
        pps_id = datetime.datetime.fromtimestamp(started).strftime("%y%m%d%H%M%S") + f"{zlib.crc32(key.encode()):08X}"[:4]
        common = dict(procedure_key=key, pps_id=pps_id, started_at=started,
                      description=event.description, operator=event.operator)
        patient = {kw: getattr(event.patient, f) for f, kw in _PATIENT_FIELDS
                   if event.patient is not None and getattr(event.patient, f)}
        if item is None:
            why = (f"no worklist item matches {self.settings.select} {event.worklist_key!r}" if event.worklist_key
                   or self.settings.select == "first" else "the device named no worklist item")
            error = ""
            if self.settings.unscheduled == "refuse":
                error = f"{why}; unscheduled procedures are refused ([device] unscheduled = \"refuse\")"
            if error:
                self.procedures.insert(state=ProcedureState.FAILED, scheduled=False, item=None, patient=patient,
                                       study_instance_uid=None, series_instance_uid=None, mpps_uid=None,
                                       error=error, **common)  # type: ignore[arg-type]
                log.error("procedure %s failed: %s", key, error)
                return
            log.warning("procedure %s: %s: performing it unscheduled (new study, %s)", key, why,
                        "the device's patient data" if patient else
                        "NO patient data: the images' Patient ID and Name are empty until reconciled")
            study = generate_uid()
        else:
            study = str(item.get("StudyInstanceUID", "") or "") or generate_uid()
            patient = {kw: str(item.get(kw) or "") for kw in ("PatientID", "PatientName", "PatientBirthDate",
                                                               "PatientSex")}
        self.procedures.insert(
            state=ProcedureState.SELECTED, scheduled=item is not None,
            item=None if item is None else encode(item, EXPLICIT_VR_LE), patient=patient,
            accession_number=str(item.get("AccessionNumber", "") or "") if item is not None else "",
            study_instance_uid=study, series_instance_uid=generate_uid(),
            mpps_uid=generate_uid() if self.mpps_scu is not None else None, **common,  # type: ignore[arg-type]
        )
        log.info("procedure %s selected: %s, study %s", key,
                 f"accession {item.get('AccessionNumber', '')}" if item is not None else "unscheduled", study)
        self.advance(key)

    def _image(self, event: ImageAcquired) -> None:
        key = event.procedure_key
        row = self.procedures.get(key, details=False)
        if row is None:
            log.warning("image %s/%s for a procedure never started: ignored", key, event.image_key)
            return
        if row.state is ProcedureState.SELECTED:
            self.advance(key)
            row = self.procedures.get(key, details=False)
            assert row is not None
        if row.state not in OPEN:
            found = self.procedures.image(key, event.image_key)
            if found is None:
                log.warning("image %s/%s arrived for a procedure no longer acquiring (%s): ignored", key,
                            event.image_key, row.state)
            return
        with transaction(self.db):
            image = self.procedures.reserve_image(key, event.image_key, generate_uid(), self.settings.sop_class)
            if row.state is ProcedureState.MPPS_CREATED:
                self.procedures.set_state(key, ProcedureState.ACQUIRING)
        if image.state is not ImageState.PENDING:
            log.info("image %s/%s received again (a replay): already %s", key, event.image_key, image.state)
            return
        try:
            device_file = read_device_file(event.dicom_file) if event.dicom_file else None
            ds = image_dataset(self.context(row), DeviceImage(
                pixels=event.pixels, bits_stored=event.bits_stored, photometric=event.photometric,
                dicom_file=event.dicom_file, pixel_spacing_mm=event.pixel_spacing_mm, attributes=event.attributes,
            ), sop_instance_uid=image.sop_instance_uid, instance_number=image.instance_number,
                device_file=device_file)
            ts = storage_syntax(device_file)
            body = encode_for_store(ds, ts)
        except (ImageError, DataSetError) as exc:
            self.procedures.set_image(key, event.image_key, ImageState.FAILED, str(exc))
            log.error("image %s/%s not stored: %s", key, event.image_key, exc)
            return
        sop_class = str(ds.SOPClassUID)
        forwards = enqueue_forwards(self.queue, self.settings.send_to)

        def on_commit(conn: Any, stored: Any) -> None:
            self.procedures.set_image(key, event.image_key, ImageState.STORED, sop_class_uid=sop_class)
            forwards(conn, stored)

        incoming = self.store.begin(sop_class, image.sop_instance_uid, ts, calling_ae=self.ae_title,
                                    called_ae=self.ae_title)
        try:
            incoming.write(body)
            incoming.commit(on_commit=on_commit)
        except DataSetError as exc:  # the store's own check refused what we built: a fault, not retryable
            incoming.abort()
            self.procedures.set_image(key, event.image_key, ImageState.FAILED, str(exc))
            log.error("image %s/%s not stored: %s", key, event.image_key, exc)
            return
        except BaseException:
            incoming.abort()
            raise
        log.info("image %s/%s stored as %s (instance %d)", key, event.image_key, image.sop_instance_uid,
                 image.instance_number)

    def _ended(self, event: ProcedureEnded) -> None:
        key = event.procedure_key
        row = self.procedures.get(key)
        if row is None:
            log.warning("end of procedure %s, which never started: ignored", key)
            return
        if row.state is ProcedureState.SELECTED:
            self.advance(key)
            row = self.procedures.get(key)
            assert row is not None
        if row.state not in OPEN:
            log.info("procedure %s: end received again (a replay): state %s", key, row.state)
            return
        now = time.time()
        if event.aborted:
            with transaction(self.db):
                self._fail_pending(row, "the procedure was aborted before this image was stored")
                row = self.procedures.get(key)
                assert row is not None
                if self.mpps_scu is not None and row.mpps_uid:
                    reason = Dataset()
                    reason.PerformedProcedureStepDiscontinuationReasonCodeSequence = [
                        discontinuation_reason(event.reason)]
                    self._mpps_end(row, "DISCONTINUED", reason)
                self.procedures.set_state(key, ProcedureState.DISCONTINUED, ended_at=now, reason=event.reason)
            log.warning("procedure %s discontinued by the device: %s", key, event.reason or "no reason given")
            return
        self.procedures.set_state(key, ProcedureState.ACQUIRED, ended_at=now)
        self.advance(key)

    def _measurement(self, event: Measurement) -> None:
        if self.procedures.get(event.procedure_key) is None:
            log.warning("measurement %s for procedure %s, which never started: ignored", event.name,
                        event.procedure_key)
            return
        self.procedures.record_measurement(event.procedure_key, event.name, event.value, event.unit)

    # ------------------------------------------------------------------ transitions

    def resume(self) -> None:
        """Advance every unfinished procedure as far as its recorded state allows (blocking)."""
        for row in self.procedures.list([s for s in ProcedureState if s not in TERMINAL]):
            self.advance(row.procedure_key)

    def advance(self, key: str) -> None:
        """Take the transitions that need no device event, each in its own transaction (blocking)."""
        while True:
            row = self.procedures.get(key)
            if row is None:
                return
            if row.state is ProcedureState.SELECTED:
                with transaction(self.db):
                    if self.mpps_scu is not None and row.mpps_uid:
                        self._mpps_start(row)
                    # The patient's earlier studies, fetched through the queue (agent/workflow/priors.py).
                    queue_priors(self.queue, self.settings, procedure_key=key,
                                 patient_id=str(row.patient.get("PatientID") or ""), study_uid=row.study_instance_uid)
                    self.procedures.set_state(key, ProcedureState.MPPS_CREATED)
            elif row.state is ProcedureState.ACQUIRED:
                self._finish(row)
            elif row.state is ProcedureState.STORED:
                if self.settings.commit_with is not None and not self._all_committed(row):
                    return
                self.procedures.set_state(key, ProcedureState.COMMITTED if self.settings.commit_with
                                          else ProcedureState.COMPLETED)
            elif row.state is ProcedureState.COMMITTED:
                self.procedures.set_state(key, ProcedureState.COMPLETED)
                log.info("procedure %s completed: %d instance(s) stored and committed", key, len(row.stored_images))
            else:
                return

    def _finish(self, row: ProcedureRow) -> None:
        """acquired -> stored: the N-SET COMPLETED and the film go out with the state, in one transaction."""
        print_job: int | None = None
        error = row.error
        with transaction(self.db):
            self._fail_pending(row, "the procedure ended before this image was stored")
            row = self.procedures.get(row.procedure_key) or row
            if self.mpps_scu is not None and row.mpps_uid:
                self._mpps_end(row, "COMPLETED", None)
            if self.settings.print_to is not None and row.stored_images:
                print_job, problem = self._queue_film(row)
                if problem:
                    error = problem
            self.procedures.set_state(row.procedure_key, ProcedureState.STORED, print_job=print_job, error=error)
        log.info("procedure %s acquired: %d image(s) stored%s", row.procedure_key, len(row.stored_images),
                 f", film queued to {self.settings.print_to}" if print_job is not None else "")

    def _fail_pending(self, row: ProcedureRow, why: str) -> None:
        for image in row.images:
            if image.state is ImageState.PENDING:
                self.procedures.set_image(row.procedure_key, image.image_key, ImageState.FAILED, why)

    def _queue_film(self, row: ProcedureRow) -> tuple[int | None, str]:
        from agent.services.print.scu import queue_print
        from agent.services.print.scu_images import ImageError as PrintImageError
        from agent.services.print.scu_options import FilmOptions, PrintOptionError

        paths = []
        for image in row.stored_images:
            stored = self.store.get(image.sop_instance_uid)
            if stored is not None:
                paths.append(stored.path)
        assert self.settings.print_to is not None
        try:
            return queue_print(self.queue, self.data_dir, self.settings.print_to, paths,
                               FilmOptions(display_format=self.settings.print_format)), ""
        except (PrintImageError, PrintOptionError, OSError) as exc:
            log.error("procedure %s: film not queued: %s", row.procedure_key, exc)
            return None, f"film not queued: {exc}"

    def _all_committed(self, row: ProcedureRow) -> bool:
        uids = [i.sop_instance_uid for i in row.stored_images]
        if not uids:
            return True
        marks = ", ".join("?" * len(uids))
        pending = self.db.execute(
            f"SELECT COUNT(*) FROM instances WHERE sop_instance_uid IN ({marks}) AND committed_at IS NULL", uids,
        ).fetchone()[0]
        return int(pending) == 0

    # ------------------------------------------------------------------ MPPS

    def _mpps_start(self, row: ProcedureRow) -> None:
        item = self.item_of(row)
        if item is None:  # unscheduled: the step names the generated study only (PS3.4 F.7.2.1)
            item = Dataset()
            item.StudyInstanceUID = row.study_instance_uid
            for kw, value in row.patient.items():
                setattr(item, kw, value or None)
        ctx = self.context(row)
        self.mpps_scu.mpps_started(
            item, uid=row.mpps_uid, modality=ctx.modality, pps_id=row.pps_id,
            description=ctx.series_description, start=ctx.started, station_name=ctx.station_name,
        )

    def _mpps_end(self, row: ProcedureRow, status: str, extra: Dataset | None) -> None:
        from agent.services.mpps import MppsError

        ctx = self.context(row)
        ident = identity_attributes(ctx)
        series = []
        if row.stored_images:
            series.append({
                "series_uid": row.series_instance_uid, "description": ctx.series_description,
                "operator": row.operator, "protocol_name": str(ident.get("ProtocolName", "") or ""),
                "performing_physician": str(ident.get("PerformingPhysicianName", "") or ""),
                "retrieve_ae": self._retrieve_ae(),
                "images": [(i.sop_class_uid, i.sop_instance_uid) for i in row.stored_images],
            })
        try:
            self.mpps_scu.mpps_ended(row.mpps_uid, status, series, extra=extra)
        except MppsError as exc:  # e.g. the instance expired from the database long ago
            log.error("procedure %s: MPPS %s not ended: %s", row.procedure_key, row.mpps_uid, exc)

    def _retrieve_ae(self) -> str:
        peers = self.peers or {}
        for name in self.settings.send_to:
            peer: Peer | None = peers.get(name)
            if peer is not None:
                return peer.ae_title
        return self.ae_title

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def item_of(row: ProcedureRow) -> Dataset | None:
        return None if row.item is None else decode(row.item, EXPLICIT_VR_LE, eager=True)

    def context(self, row: ProcedureRow) -> ProcedureContext:
        item = self.item_of(row)
        sps = (item.get("ScheduledProcedureStepSequence") or [Dataset()])[0] if item is not None else Dataset()
        assert row.study_instance_uid is not None and row.series_instance_uid is not None
        return ProcedureContext(
            item=item, patient=row.patient, study_instance_uid=row.study_instance_uid,
            series_instance_uid=row.series_instance_uid, mpps_uid=row.mpps_uid, pps_id=row.pps_id,
            started=datetime.datetime.fromtimestamp(row.started_at), sop_class_uid=self.settings.sop_class,
            modality=series_modality(item, self.settings.modality, self.worklist_modality),
            station_name=self.settings.station_name,
            series_description=self.settings.series_description or row.description
            or str(sps.get("ScheduledProcedureStepDescription", "") or ""),
            operator=row.operator,
        )

    def destinations(self) -> Sequence[str]:
        out = list(self.settings.send_to)
        if self.mpps_scu is not None:
            out += list(self.mpps_scu.destinations)
        if self.settings.print_to is not None:
            out.append(self.settings.print_to)
        if self.settings.commit_with is not None:
            out.append(self.settings.commit_with)
        if self.settings.priors_from is not None:
            out.append(self.settings.priors_from)
        return list(dict.fromkeys(out))

    def _wake_all(self) -> None:
        if self.wake is not None:
            for dest in self.destinations():
                self.wake(dest)


__all__ = ["ModalityWorkflow"]
