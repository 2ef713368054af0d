"""Storage Commitment persistence (agent/store/commitment.py): requests, items, reports, state
transitions, with a fake clock and a real SQLite file (reopened to prove durability)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.store.commitment import CommitmentStore, ItemState, RequestState
from agent.store.db import open_database
from agent.store.instances import InstanceStore
from agent.store.queue import JobQueue, JobState

T0 = 1_700_000_000.0
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env(tmp_path: Path):
    clock = FakeClock()
    db = open_database(tmp_path / "agent.db")
    InstanceStore(tmp_path, db)
    queue = JobQueue(db, clock=clock)
    store = CommitmentStore(db, clock=clock)
    yield db, queue, store, clock
    db.close()


def add_instance(db: sqlite3.Connection, uid: str, study: str = "1.9", cls: str = CT) -> None:
    db.execute(
        "INSERT INTO instances (sop_instance_uid, sop_class_uid, transfer_syntax_uid, study_instance_uid, size, "
        "path, received_at, calling_ae) VALUES (?, ?, '1.2.840.10008.1.2.1', ?, 1, ?, ?, 'MOD')",
        (uid, cls, study, f"objects/{uid}", T0),
    )


def forwarded(db, queue: JobQueue, uid: str, dest: str = "pacs", done: bool = True) -> int:
    add_instance(db, uid)
    job = queue.enqueue("store", dest, {"uid": uid, "sop_class": CT, "ts": "1.2.840.10008.1.2.1", "study": "1.9"})
    if done:
        claimed = queue.claim(dest)
        assert claimed is not None and claimed.id == job
        queue.complete(job)
    return job


def uids(cands) -> list[str]:
    return [c.sop_instance_uid for c in cands]


def test_candidates_need_every_store_done_and_no_open_request(env) -> None:
    db, queue, store, clock = env
    forwarded(db, queue, "1.1")
    forwarded(db, queue, "1.2", done=False)  # still queued
    add_instance(db, "1.3")  # never forwarded
    assert uids(store.candidates("pacs", ["pacs"], 3)) == ["1.1"]
    assert store.candidates("other", ["other"], 3) == []
    store.create_request("2.25.1", "pacs", [(CT, "1.1")])
    assert store.candidates("pacs", ["pacs"], 3) == []  # awaiting in 2.25.1


def test_request_and_its_job_commit_together(env, tmp_path: Path) -> None:
    db, queue, store, clock = env
    forwarded(db, queue, "1.1")

    def failing_enqueue(conn: sqlite3.Connection) -> int:
        queue.enqueue("commit-request", "pacs", {"transaction_uid": "2.25.1"})
        raise RuntimeError("crash between the two writes")

    with pytest.raises(RuntimeError):
        store.create_request("2.25.1", "pacs", [(CT, "1.1")], enqueue=failing_enqueue)
    assert store.request("2.25.1") is None and queue.list(kind="commit-request") == []
    store.create_request("2.25.1", "pacs", [(CT, "1.1")],
                         enqueue=lambda c: queue.enqueue("commit-request", "pacs", {"transaction_uid": "2.25.1"}))
    # Another connection (another process) sees both, durably.
    other = CommitmentStore(open_database(tmp_path / "agent.db"))
    row = other.request("2.25.1")
    assert row is not None and row.state is RequestState.PENDING and row.job_id is not None
    assert row.items == (("1.1", CT, ItemState.AWAITING, None),)
    assert [j.payload for j in JobQueue(open_database(tmp_path / "agent.db")).list(kind="commit-request")] == [
        {"transaction_uid": "2.25.1"}]


def test_report_all_committed_marks_index_and_request_done(env) -> None:
    db, queue, store, clock = env
    for u in ("1.1", "1.2"):
        forwarded(db, queue, u)
    store.create_request("2.25.1", "pacs", [(CT, "1.1"), (CT, "1.2")])
    store.mark_sent("2.25.1", timeout=600)
    row = store.request("2.25.1")
    assert row.state is RequestState.SENT and row.deadline == T0 + 600
    clock.now += 5
    assert store.apply_report("2.25.1", ["1.1"], []) == (1, 0)
    assert store.request("2.25.1").state is RequestState.SENT  # 1.2 still awaiting
    assert store.apply_report("2.25.1", ["1.2"], []) == (1, 0)
    assert store.request("2.25.1").state is RequestState.DONE
    assert dict(db.execute("SELECT sop_instance_uid, committed_at FROM instances").fetchall()) == {
        "1.1": T0 + 5, "1.2": T0 + 5}
    assert store.candidates("pacs", ["pacs"], 3) == []
    assert store.apply_report("2.25.999", ["1.1"], []) is None  # not ours


def test_failure_records_reason_requeues_and_allows_bounded_rerequests(env) -> None:
    db, queue, store, clock = env
    forwarded(db, queue, "1.1")
    seen: list[list[str]] = []

    def on_failed(conn: sqlite3.Connection, failed: list[str]) -> None:
        assert conn.in_transaction
        seen.append(failed)

    for attempt in range(3):
        tuid = f"2.25.{attempt}"
        (cand,) = store.candidates("pacs", ["pacs"], max_rerequests=2)
        assert cand.rerequest == attempt
        store.create_request(tuid, "pacs", [(CT, "1.1")], rerequest=attempt)
        store.mark_sent(tuid, 600)
        assert store.apply_report(tuid, [], [("1.1", 0x0110)], on_failed=on_failed) == (0, 1)
        assert store.request(tuid).items[0][2:] == (ItemState.FAILED, 0x0110)
    assert seen == [["1.1"]] * 3
    assert store.candidates("pacs", ["pacs"], max_rerequests=2) == []  # given up after 2 re-requests
    assert store.candidates("pacs", ["pacs"], max_rerequests=5) != []


def test_deadline_expires_and_a_late_report_is_still_honoured(env) -> None:
    db, queue, store, clock = env
    forwarded(db, queue, "1.1")
    store.create_request("2.25.old", "pacs", [(CT, "1.1")])
    store.mark_sent("2.25.old", timeout=10)
    assert store.next_deadline() == T0 + 10
    clock.now += 9
    assert store.expire_overdue() == []
    clock.now += 2
    assert store.expire_overdue() == ["2.25.old"]
    row = store.request("2.25.old")
    assert row.state is RequestState.EXPIRED and row.items[0][2] is ItemState.EXPIRED
    (cand,) = store.candidates("pacs", ["pacs"], 3)  # re-requested under a new Transaction UID
    assert cand.rerequest == 1
    store.create_request("2.25.new", "pacs", [(CT, "1.1")], rerequest=1)
    assert store.apply_report("2.25.old", ["1.1"], []) == (1, 0)  # late, for the old UID
    assert db.execute("SELECT committed_at FROM instances").fetchone()[0] == clock.now
    assert store.request("2.25.old").state is RequestState.EXPIRED
    assert store.candidates("pacs", ["pacs"], 3) == []
    # A failure arriving after a commitment does not undo it.
    assert store.apply_report("2.25.old", [], [("1.1", 0x0110)]) == (0, 0)


def test_gating_on_several_destinations(env) -> None:
    db, queue, store, clock = env
    forwarded(db, queue, "1.1", dest="a")
    queue.enqueue("store", "b", {"uid": "1.1"})
    assert store.candidates("committer", ["a", "b"], 3) == []
    job = queue.claim("b")
    queue.complete(job.id)
    assert uids(store.candidates("committer", ["a", "b"], 3)) == ["1.1"]


def test_reports_persist_route_and_send(env, tmp_path: Path) -> None:
    db, queue, store, clock = env
    store.add_report("2.25.7", "MOD", None, [(CT, "1.1")], [(MR, "1.2", 0x0112)])
    assert [r.transaction_uid for r in store.unrouted_reports()] == ["2.25.7"]
    store.route_report("2.25.7", "MOD", "modality",
                       lambda c: queue.enqueue("commit-report", "modality", {"transaction_uid": "2.25.7"}))
    reopened = CommitmentStore(open_database(tmp_path / "agent.db"))
    row = reopened.report("2.25.7", "MOD")
    assert row.route == "modality" and row.state == "pending" and row.job_id is not None
    assert row.committed == ((CT, "1.1"),) and row.failed == ((MR, "1.2", 0x0112),)
    assert reopened.unrouted_reports() == []
    assert store.report_sent("2.25.7", "MOD") == row.job_id
    assert store.report("2.25.7", "MOD").state == "sent"
    summary = store.summary()
    assert summary["reports_sent"] == 1 and summary["reports_pending"] == 0
    assert queue.get(row.job_id).state is JobState.PENDING
