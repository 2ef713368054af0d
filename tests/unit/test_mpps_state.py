"""MPPS instances: the F.1.5 state machine, duplicates, lifetime; the SCU's attribute lists and jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.services.dataset import decode
from agent.services.mpps import (
    MPPS_CREATE_JOB,
    MPPS_SET_JOB,
    MppsError,
    MppsSCU,
    create_attributes,
    step_refs,
)
from agent.store.db import open_database
from agent.store.mpps import DuplicateInstance, MppsStore, NoLongerUpdatable, NoSuchInstance, PpsStatus
from agent.store.queue import JobQueue, JobState
from agent.store.worklist import WorklistStore
from tests.interop.worklist_items import ISO_IR_100_NAME, make_item


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_state_machine(tmp_path: Path) -> None:
    clock = Clock()
    store = MppsStore(open_database(tmp_path / "a.db"), lifetime=100, clock=clock)
    store.create("1.2", "remote", PpsStatus.IN_PROGRESS, b"x")
    with pytest.raises(DuplicateInstance):
        store.create("1.2", "remote", PpsStatus.IN_PROGRESS, b"x")
    store.create("1.2", "local", PpsStatus.IN_PROGRESS, b"x")  # another origin is another instance
    with pytest.raises(NoSuchInstance):
        store.update("9.9", "remote", PpsStatus.COMPLETED, b"y")
    store.update("1.2", "remote", PpsStatus.IN_PROGRESS, b"y")
    store.update("1.2", "remote", PpsStatus.DISCONTINUED, b"z")
    with pytest.raises(NoLongerUpdatable):
        store.update("1.2", "remote", PpsStatus.COMPLETED, b"w")
    got = store.get("1.2", "remote")
    assert got is not None and got.status is PpsStatus.DISCONTINUED and got.data == b"z"
    clock.now += 101  # past instance_lifetime: gone, and the UID may be created again
    assert store.get("1.2", "remote") is None
    store.create("1.2", "remote", PpsStatus.IN_PROGRESS, b"again")
    assert store.purge_expired() == 1  # the expired 'local' one


def test_scu_queues_create_then_set_per_destination(tmp_path: Path) -> None:
    db = open_database(tmp_path / "a.db")
    queue = JobQueue(db)
    worklist = WorklistStore(db)
    scu = MppsSCU(db, MppsStore(db), queue, worklist, ("ris", "pacs"), "CT01", "CT")
    item = make_item("ACC9", ISO_IR_100_NAME, charset="ISO_IR 100", study_uid="1.2.3")
    uid = scu.mpps_started(item)
    scu.mpps_ended(uid, "COMPLETED", [{"series_uid": "1.2.3.4", "images": [("1.2.840.10008.5.1.4.1.1.2", "1.5")]}])
    with pytest.raises(MppsError):
        scu.mpps_ended(uid, "DISCONTINUED")
    jobs = queue.list()
    assert [(j.kind, j.destination) for j in jobs] == [
        (MPPS_CREATE_JOB, "ris"), (MPPS_CREATE_JOB, "pacs"), (MPPS_SET_JOB, "ris"), (MPPS_SET_JOB, "pacs")]
    assert {j.group_key for j in jobs if j.destination == "ris"} == {f"{uid}@ris"}
    # group FIFO: only the N-CREATEs are claimable now
    set_ris = queue.claim("ris")
    assert set_ris is not None and set_ris.kind == MPPS_CREATE_JOB
    assert queue.claim("ris") is None
    queue.complete(set_ris.id)
    assert queue.claim("ris").kind == MPPS_SET_JOB
    # the completed step is recorded as performed
    assert any(ref.study_uid == "1.2.3" and ref.accession == "ACC9" for ref in worklist.performed())
    assert all(j.state is not JobState.DEAD for j in queue.list())


def test_create_attributes_type_1_and_2() -> None:
    item = make_item("ACC7", ISO_IR_100_NAME, charset="ISO_IR 100", modality="MR", study_uid="1.2.7")
    ds = create_attributes(item, station_ae="MR01")
    for keyword in ("PerformedProcedureStepID", "PerformedStationAETitle", "PerformedProcedureStepStartDate",
                    "PerformedProcedureStepStartTime", "Modality"):
        assert ds[keyword].value
    for keyword in ("PatientBirthDate", "PatientSex", "PerformedStationName", "PerformedLocation",
                    "PerformedProcedureStepEndDate", "StudyID", "PerformedProtocolCodeSequence",
                    "PerformedSeriesSequence", "ProcedureCodeSequence", "ReferencedPatientSequence"):
        assert keyword in ds
    assert ds.PerformedProcedureStepStatus == "IN PROGRESS" and ds.Modality == "MR"
    assert ds.SpecificCharacterSet == "ISO_IR 100" and str(ds.PatientName) == ISO_IR_100_NAME
    assert step_refs(ds)[0].study_uid == "1.2.7" and step_refs(ds)[0].sps_id == "SPSACC7"
    unscheduled = create_attributes(None, station_ae="MR01", patient={"PatientName": "Ünal^Ayşe", "PatientID": "9"})
    step = unscheduled.ScheduledStepAttributesSequence[0]
    assert step.StudyInstanceUID and not step.AccessionNumber and not step.ScheduledProcedureStepID
    assert unscheduled.SpecificCharacterSet == "ISO_IR 192"
    from agent.services.dataset import encode

    assert str(decode(encode(unscheduled)).PatientName) == "Ünal^Ayşe"
