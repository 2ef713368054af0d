"""The maintenance pass (agent/services/maintenance.py) on a real database with a fake clock: what is
older than its retention goes, what is younger or still needed stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.services.blocking import Blocking
from agent.services.dataset import EXPLICIT_VR_LE, encode
from agent.services.maintenance import Maintenance, Retention
from agent.store.commitment import CommitmentStore
from agent.store.db import open_database
from agent.store.mpps import MppsStore, PpsStatus
from agent.store.queue import JobQueue, JobState
from agent.store.worklist import StepRef, WorklistStore
from tests.interop.worklist_items import make_item, write_wl
from tests.unit.test_commitment_store import CT, T0, FakeClock, add_instance

RETENTION = Retention(done_jobs=10.0, commitments=20.0, performed_steps=30.0)


@pytest.fixture
def env(tmp_path: Path):
    from agent.store.instances import InstanceStore

    clock = FakeClock()
    db = open_database(tmp_path / "agent.db")
    InstanceStore(tmp_path, db)
    queue = JobQueue(db, clock=clock)
    stores = dict(commitments=CommitmentStore(db, clock=clock), worklist=WorklistStore(db, clock=clock),
                  mpps=MppsStore(db, clock=clock, lifetime=40.0))
    yield db, queue, stores, clock
    db.close()


def maintenance(queue: JobQueue, stores: dict, **kw) -> Maintenance:  # type: ignore[no-untyped-def]
    return Maintenance(Blocking(), queue, retention=RETENTION, **stores, **kw)


def finished(queue: JobQueue, kind: str, payload: dict) -> int:
    job_id = queue.enqueue(kind, "pacs", payload)
    job = queue.claim("pacs")
    assert job is not None and job.id == job_id
    queue.complete(job_id)
    return job_id


def test_done_jobs_go_after_their_retention_dead_and_pending_stay(env) -> None:
    db, queue, stores, clock = env
    old = finished(queue, "mpps-create", {"uid": "1"})
    dead = queue.enqueue("mpps-set", "pacs", {"uid": "2"})
    queue.fail(queue.claim("pacs").id, "refused", permanent=True, policy=_policy())  # type: ignore[union-attr]
    clock.now += 11
    young = finished(queue, "mpps-create", {"uid": "3"})
    pending = queue.enqueue("mpps-create", "pacs", {"uid": "4"})
    maintenance(queue, stores).run_once()
    assert queue.get(old) is None
    assert queue.get(young).state is JobState.DONE  # type: ignore[union-attr]
    assert queue.get(dead).state is JobState.DEAD  # type: ignore[union-attr]
    assert queue.get(pending).state is JobState.PENDING  # type: ignore[union-attr]


def test_expired_leases_return_to_the_queue(env) -> None:
    db, queue, stores, clock = env
    job_id = queue.enqueue("store", "pacs", {"uid": "1"})
    queue.claim("pacs", lease=5.0)
    maintenance(queue, stores).run_once()
    assert queue.get(job_id).state is JobState.CLAIMED  # type: ignore[union-attr]
    clock.now += 6
    maintenance(queue, stores).run_once()
    assert queue.get(job_id).state is JobState.PENDING  # type: ignore[union-attr]


def test_store_jobs_of_uncommitted_instances_stay_while_commitment_is_asked_for(env) -> None:
    db, queue, stores, clock = env
    add_instance(db, "1.1")
    add_instance(db, "1.2")
    waiting = finished(queue, "store", {"uid": "1.1", "sop_class": CT, "ts": "1.2.840.10008.1.2.1"})
    settled = finished(queue, "store", {"uid": "1.2", "sop_class": CT, "ts": "1.2.840.10008.1.2.1"})
    gone = finished(queue, "store", {"uid": "1.3", "sop_class": CT, "ts": "1.2.840.10008.1.2.1"})  # deleted
    db.execute("UPDATE instances SET committed_at = ? WHERE sop_instance_uid = '1.2'", (T0,))
    clock.now += 11
    maintenance(queue, stores, commitment_requested=True).run_once()
    assert queue.get(waiting) is not None
    assert queue.get(settled) is None and queue.get(gone) is None
    # Without Storage Commitment nothing waits for them.
    maintenance(queue, stores).run_once()
    assert queue.get(waiting) is None


def test_finished_commitment_requests_and_sent_reports_go(env) -> None:
    db, queue, stores, clock = env
    c: CommitmentStore = stores["commitments"]
    add_instance(db, "1.1")
    c.create_request("2.25.1", "pacs", [(CT, "1.1")])
    c.mark_sent("2.25.1", 100.0)
    c.apply_report("2.25.1", ["1.1"], [])
    c.create_request("2.25.2", "pacs", [(CT, "1.1")])  # still pending: kept however old
    c.add_report("2.25.3", "MOD", "mod", [(CT, "1.1")], [])
    c.report_sent("2.25.3", "MOD")
    c.add_report("2.25.4", "OTHER", None, [(CT, "1.1")], [])  # unrouted: kept for a peer to appear
    clock.now += 21
    maintenance(queue, stores).run_once()
    assert c.request("2.25.1") is None and c.request("2.25.2") is not None
    assert db.execute("SELECT COUNT(*) FROM commit_items WHERE transaction_uid = '2.25.1'").fetchone()[0] == 0
    assert c.report("2.25.3", "MOD") is None and c.report("2.25.4", "OTHER") is not None


def test_expired_mpps_instances_go(env) -> None:
    db, queue, stores, clock = env
    m: MppsStore = stores["mpps"]
    m.create("1.2.3", "remote", PpsStatus.IN_PROGRESS, b"")
    clock.now += 41
    m.create("1.2.4", "remote", PpsStatus.IN_PROGRESS, b"")
    maintenance(queue, stores).run_once()
    rows = db.execute("SELECT uid FROM mpps_instances").fetchall()
    assert [r[0] for r in rows] == ["1.2.4"]


def test_performed_steps_are_forgotten_only_once_no_source_lists_them(env, tmp_path: Path) -> None:
    db, queue, stores, clock = env
    w: WorklistStore = stores["worklist"]
    local = make_item("L1", "LOCAL^ONE", study_uid="1.5.1", sps_id="S1")
    in_folder = make_item("F1", "FOLDER^ONE", study_uid="1.5.2", sps_id="S2")
    in_cache = make_item("C1", "CACHE^ONE", study_uid="1.5.3", sps_id="S3")
    w.add_local("one", encode(local, EXPLICIT_VR_LE))
    write_wl(tmp_path / "wl" / "f.wl", in_folder)
    w.replace_cache("ris", [encode(in_cache, EXPLICIT_VR_LE)])
    for item, mpps in ((local, "9.1"), (in_folder, "9.2"), (in_cache, "9.3")):
        w.mark_performed([StepRef(str(item.StudyInstanceUID), str(item.AccessionNumber))], mpps, "COMPLETED")
    job = maintenance(queue, stores, worklist_folder=tmp_path / "wl")
    job.run_once()
    assert len(w.performed()) == 3 and len(w.local()) == 1  # performed 0 s ago: all kept
    clock.now += 31
    job.run_once()
    # The local item is removed, its record with it; the folder and the RIS still list theirs.
    assert w.local() == []
    assert sorted(r.study_uid for r in w.performed()) == ["1.5.2", "1.5.3"]
    (tmp_path / "wl" / "f.wl").unlink()
    w.replace_cache("ris", [])
    job.run_once()
    assert w.performed() == []


def _policy():  # type: ignore[no-untyped-def]
    from agent.store.queue import RetryPolicy

    return RetryPolicy()



def test_finished_procedures_go_after_their_retention_open_ones_stay(env) -> None:
    from agent.store.procedures import ProcedureState, ProcedureStore

    db, queue, stores, clock = env
    procedures = ProcedureStore(db, clock=clock)
    for key, state in (("DONE", ProcedureState.COMPLETED), ("ABORTED", ProcedureState.DISCONTINUED),
                       ("REFUSED", ProcedureState.FAILED), ("RUNNING", ProcedureState.ACQUIRING)):
        procedures.insert(procedure_key=key, state=state, scheduled=False, item=None, patient={},
                          study_instance_uid="1.2.3", series_instance_uid="1.2.3.1", mpps_uid=None,
                          pps_id="1", started_at=clock.now)
    procedures.reserve_image("DONE", "I1", "1.2.3.1.1", "1.2.840.10008.5.1.4.1.1.7")
    retention = Retention(done_jobs=10.0, commitments=20.0, performed_steps=30.0, procedures=50.0)
    job = Maintenance(Blocking(), queue, procedures=procedures, retention=retention)
    clock.now += 49
    assert job.run_once().get("finished procedures deleted") == 0
    clock.now += 2
    assert job.run_once()["finished procedures deleted"] == 3
    assert [row.procedure_key for row in procedures.list()] == ["RUNNING"]
    assert procedures.image("DONE", "I1") is None  # its image records went with it
