"""Priors for the modality workflow: a patient's earlier studies, fetched from the PACS when a procedure
starts, so the operator has them locally (`[device] priors_from`, `priors_retrieve`, `priors_max`).

Invariants:
- Fetching is a durable queue job (kind `priors`, destination `priors_from`), queued in the same
  transaction that records the procedure's start (agent/workflow/modality.py), so it is neither lost
  nor repeated by a crash, and a PACS that is down delays the priors (the queue's backoff) but never
  blocks the procedure: the device's events are acknowledged without waiting for it.
- The job asks the PACS (Study Root C-FIND, STUDY level, PS3.4 C.6.2) for the patient's studies by
  Patient ID, leaves out the procedure's own study, keeps the `priors_max` most recent by Study Date and
  Time, and retrieves each study the local store does not already hold completely (Number of Study
  Related Instances against the local index; retrieved anyway when the PACS does not say): by C-MOVE
  to our own AE title (received by our Storage SCP) or by C-GET on the same association (received
  through the Storage SCP's handler, the same durable path). Retrieving twice is harmless: a stored
  instance is identified by its SOP Instance UID.
- A procedure without a Patient ID (unscheduled, no patient data) queues no job: the query would match
  every patient. A failed sub-operation makes the whole job fail transiently (retried later; the
  studies already complete are skipped then); a refusal of the query itself (A9xx, Cxxx) is permanent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset

from agent.dimse.status import StatusCategory, category, describe
from agent.net.connection import DicomConnection
from agent.profile import DeviceSettings
from agent.services.blocking import Blocking
from agent.services.outbound import JobFailed, check_status, payload_str
from agent.services.query import scu
from agent.services.query.models import STUDY_ROOT
from agent.store.instances import InstanceStore
from agent.store.queue import Job, JobQueue
from agent.ul.negotiation import ProposedContext

log = logging.getLogger("agent.workflow")

PRIORS_JOB = "priors"


def queue_priors(queue: JobQueue, settings: DeviceSettings, *, procedure_key: str, patient_id: str,
                 study_uid: str | None) -> int | None:
    """Queue the priors job of a starting procedure (joins the caller's transaction); None when the
    profile asks for no priors or the procedure has no Patient ID."""
    if settings.priors_from is None:
        return None
    if not patient_id:
        log.info("procedure %s: no Patient ID, so no priors are fetched", procedure_key)
        return None
    return queue.enqueue(PRIORS_JOB, settings.priors_from, {
        "procedure": procedure_key, "patient_id": patient_id, "study": study_uid or "",
        "retrieve": settings.priors_retrieve, "max": settings.priors_max,
    })


def study_query(patient_id: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = ""
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.NumberOfStudyRelatedInstances = ""
    return ds


def choose_priors(matches: Sequence[Dataset], current: str, limit: int) -> list[tuple[str, int | None]]:
    """(Study Instance UID, number of instances or None) of the `limit` most recent other studies."""
    seen: dict[str, tuple[str, str, int | None]] = {}
    for m in matches:
        uid = str(m.get("StudyInstanceUID", "") or "").strip()
        if not uid or uid == current or uid in seen:
            continue
        try:  # a peer's malformed IS value: retrieve the study anyway
            count = m.get("NumberOfStudyRelatedInstances")
            number = int(count) if count not in (None, "") else None
        except (TypeError, ValueError):
            number = None
        seen[uid] = (str(m.get("StudyDate", "") or ""), str(m.get("StudyTime", "") or ""), number)
    newest = sorted(seen.items(), key=lambda kv: (kv[1][0], kv[1][1], kv[0]), reverse=True)
    return [(uid, info[2]) for uid, info in newest[:limit]]


@dataclass
class PriorsPerformer:
    """The `priors` job: query the PACS, then move or get each missing prior study (module invariants)."""

    ae_title: str  # ours: the C-MOVE destination
    store: InstanceStore
    blocking: Blocking
    storage_handler: Any = None  # the Storage SCP's C-STORE handler, for C-GET
    fetched: int = 0  # studies retrieved since start (observability)
    _contexts: dict[str, tuple[ProposedContext, ...]] = field(default_factory=dict)

    def contexts(self, job: Job) -> Sequence[ProposedContext]:
        how = self._retrieve(job)
        found = self._contexts.get(how)
        if found is None:
            found = self._contexts[how] = tuple(scu.proposals("study", ["find", how]))
        return found

    @staticmethod
    def _retrieve(job: Job) -> str:
        how = payload_str(job, "retrieve")
        if how not in ("move", "get"):
            raise JobFailed(f"priors job {job.id}: retrieve must be 'move' or 'get', got {how!r}", permanent=True)
        return how

    async def perform(self, conn: DicomConnection, job: Job) -> None:
        patient_id = payload_str(job, "patient_id")
        how = self._retrieve(job)
        current = str(job.payload.get("study") or "")
        limit = job.payload.get("max", 3)
        if not isinstance(limit, int) or limit < 1:
            raise JobFailed(f"priors job {job.id}: max must be a positive integer, got {limit!r}", permanent=True)
        try:
            outcome, matches = await scu.find(conn, STUDY_ROOT.find, study_query(patient_id))
        except scu.QueryError as exc:
            raise JobFailed(str(exc), permanent=True) from exc
        check_status(outcome.status, f"C-FIND of the studies of patient {patient_id}")
        priors = choose_priors(matches, current, limit)
        missing = []
        for uid, number in priors:
            held = await self.blocking.run(lambda u=uid: len(self.store.find(study_instance_uid=u)))
            if number is None or held < number:
                missing.append(uid)
        log.info("priors of patient %s: %d earlier stud(ies) at %s, %d to retrieve", patient_id, len(priors),
                 conn.remote, len(missing))
        failures = []
        for uid in missing:
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.StudyInstanceUID = uid
            try:
                if how == "move":
                    result = await scu.move(conn, STUDY_ROOT.move, identifier, self.ae_title)
                else:
                    result = await scu.get(conn, STUDY_ROOT.get, identifier, store=self.storage_handler)
            except scu.QueryError as exc:
                raise JobFailed(str(exc), permanent=True) from exc
            cat = category(result.status)
            if cat is StatusCategory.FAILURE and result.completed == 0 and result.failed == 0:
                check_status(result.status, f"C-{how.upper()} of prior study {uid}")  # refused outright
            if result.failed or cat is StatusCategory.FAILURE:
                failures.append(f"{uid}: {result.failed} failed ({describe(result.status)})")
                continue
            self.fetched += 1
            log.info("prior study %s of patient %s retrieved: %d instance(s)", uid, patient_id, result.completed)
        if failures:
            raise JobFailed("priors not all retrieved (retried later): " + "; ".join(failures), permanent=False)


__all__ = ["PRIORS_JOB", "PriorsPerformer", "choose_priors", "queue_priors", "study_query"]
