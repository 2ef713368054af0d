"""Semantics of the durable job queue (agent/store/queue.py), with a fake clock and a real SQLite file."""

from __future__ import annotations

import random
import sqlite3
import statistics
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import QueueError
from agent.store.db import open_database, transaction
from agent.store.queue import (
    DestinationStats,
    Job,
    JobQueue,
    JobState,
    NewJob,
    RetryPolicy,
)

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "agent.db"


@pytest.fixture
def conn(db_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_database(db_path)
    yield c
    c.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def q(conn: sqlite3.Connection, clock: FakeClock) -> JobQueue:
    return JobQueue(conn, clock=clock, rng=random.Random(1234))


def claim_id(q: JobQueue, destination: str = "pacs") -> int | None:
    job = q.claim(destination)
    return None if job is None else job.id


# -- enqueue / claim -----------------------------------------------------------------------------------


def test_enqueue_then_get_round_trips_every_field(q: JobQueue) -> None:
    payload = {"path": "/data/1.2.3.dcm", "sop_instance_uid": "1.2.3", "n": [1, 2]}
    job_id = q.enqueue("store", "pacs", payload, group_key="g1", not_before=T0 + 10)
    assert q.get(job_id) == Job(
        id=job_id, kind="store", destination="pacs", payload=payload, state=JobState.PENDING,
        attempts=0, next_attempt_at=T0 + 10, lease_until=None, group_key="g1", after_job=None,
        created_at=T0, updated_at=T0, last_error=None,
    )
    assert q.get(job_id + 1) is None


def test_payload_is_stored_as_json(q: JobQueue, conn: sqlite3.Connection) -> None:
    job_id = q.enqueue("store", "pacs", {"a": 1})
    (raw,) = conn.execute("SELECT payload FROM queue_jobs WHERE id = ?", (job_id,)).fetchone()
    assert raw == '{"a":1}'
    with pytest.raises(QueueError):
        q.enqueue("store", "pacs", {"not json": object()})
    with pytest.raises(QueueError):
        q.enqueue("", "pacs", {})
    assert [j.id for j in q.list()] == [job_id]


def test_claim_is_fifo_per_destination(q: JobQueue, clock: FakeClock) -> None:
    a = q.enqueue("store", "pacs", {"i": 1})
    other = q.enqueue("store", "archive", {"i": 2})
    b = q.enqueue("store", "pacs", {"i": 3})
    first = q.claim("pacs", lease=60)
    assert first is not None and first.id == a
    assert first.state is JobState.CLAIMED and first.lease_until == T0 + 60
    assert claim_id(q) == b
    assert claim_id(q) is None
    assert claim_id(q, "archive") == other
    assert q.get(a).state is JobState.CLAIMED  # type: ignore[union-attr]


def test_claim_respects_not_before_and_next_due(q: JobQueue, clock: FakeClock) -> None:
    assert q.next_due("pacs") is None
    late = q.enqueue("store", "pacs", {}, not_before=T0 + 30)
    early = q.enqueue("store", "pacs", {}, not_before=T0 + 10)
    assert q.next_due("pacs") == T0 + 10
    assert claim_id(q) is None
    clock.advance(10)
    assert claim_id(q) == early
    assert q.next_due("pacs") == T0 + 30
    clock.advance(19.9)
    assert claim_id(q) is None
    clock.advance(0.1)
    assert claim_id(q) == late
    assert q.next_due("pacs") is None  # claimed jobs are not "due"


def test_complete_and_purge_done(q: JobQueue, clock: FakeClock) -> None:
    job_id = q.enqueue("store", "pacs", {})
    with pytest.raises(QueueError):
        q.complete(job_id)  # not claimed yet
    assert claim_id(q) == job_id
    q.complete(job_id)
    assert q.get(job_id).state is JobState.DONE  # type: ignore[union-attr]
    with pytest.raises(QueueError):
        q.complete(job_id)  # twice
    clock.advance(100)
    assert q.purge_done(older_than=200) == 0
    assert q.purge_done(older_than=50) == 1
    assert q.get(job_id) is None


def test_a_warning_given_at_completion_is_kept_by_the_done_job_and_seen_by_another_process(
    q: JobQueue, db_path: Path
) -> None:
    """A C-MOVE counts its warning sub-operations from the DONE rows (agent/services/query/scp.py)."""
    warned, plain = q.enqueue("move-store", "pacs", {}), q.enqueue("move-store", "pacs", {})
    assert claim_id(q) == warned
    q.complete(warned, power_safe=False, warning="B007 Warning: data set does not match SOP class")
    assert claim_id(q) == plain
    q.complete(plain)
    other = JobQueue(open_database(db_path))
    assert [(j.state, j.warning) for j in other.list()] == [
        (JobState.DONE, "B007 Warning: data set does not match SOP class"), (JobState.DONE, None)]


def test_a_database_of_a_version_without_the_warning_column_gains_it(db_path: Path) -> None:
    old = open_database(db_path)
    old.execute(
        "CREATE TABLE queue_jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, destination TEXT "
        "NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'done', "
        "'dead')), attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, lease_until REAL, "
        "group_key TEXT, after_job INTEGER, created_at REAL NOT NULL, updated_at REAL NOT NULL, last_error TEXT)")
    old.execute("INSERT INTO queue_jobs (kind, destination, payload, state, next_attempt_at, created_at, "
                "updated_at) VALUES ('store', 'pacs', '{}', 'pending', 0, 0, 0)")
    old.commit()
    q = JobQueue(open_database(db_path))
    job = q.claim("pacs")
    assert job is not None and job.warning is None
    q.complete(job.id, warning="B000 coerced")
    assert q.get(job.id).warning == "B000 coerced"  # type: ignore[union-attr]


def test_completion_without_power_safety_is_visible_to_others_and_later_commits_fsync_again(
    q: JobQueue, conn: sqlite3.Connection, db_path: Path
) -> None:
    """A forwarded C-STORE's completion skips its fsync (a repeat is harmless), but it is committed
    (another process, e.g. `dicom-agent queue list`, sees it done), and every later commit of the
    agent is power-safe again."""
    job_id = q.enqueue("store", "pacs", {})
    assert claim_id(q) == job_id
    q.complete(job_id, power_safe=False)
    other = sqlite3.connect(str(db_path))
    try:
        assert other.execute("SELECT state FROM queue_jobs WHERE id = ?", (job_id,)).fetchone()[0] == "done"
    finally:
        other.close()
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with pytest.raises(QueueError):
        q.complete(job_id, power_safe=False)  # twice: still refused, and still FULL afterwards
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_enqueue_many_is_one_all_or_nothing_batch(q: JobQueue) -> None:
    ids = q.enqueue_many(NewJob("store", "pacs", {"i": i}) for i in range(5))
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [j.payload["i"] for j in q.list()] == [0, 1, 2, 3, 4]
    with pytest.raises(QueueError):
        q.enqueue_many([NewJob("store", "pacs", {"i": 5}), NewJob("store", "pacs", {"bad": {1, 2}})])
    assert len(q.list()) == 5


# -- leases and recovery -------------------------------------------------------------------------------


def test_recover_returns_every_claimed_job(q: JobQueue, clock: FakeClock) -> None:
    a = q.enqueue("store", "pacs", {})
    b = q.enqueue("store", "pacs", {})
    c = q.enqueue("store", "pacs", {})
    assert [claim_id(q), claim_id(q)] == [a, b]
    q.complete(b)
    assert q.recover() == 1
    job = q.get(a)
    assert job is not None
    assert job.state is JobState.PENDING and job.lease_until is None and job.attempts == 0
    assert q.get(b).state is JobState.DONE  # type: ignore[union-attr]
    assert [claim_id(q), claim_id(q)] == [a, c]


def test_recover_expired_only_returns_lapsed_leases(q: JobQueue, clock: FakeClock) -> None:
    a = q.enqueue("store", "pacs", {})
    b = q.enqueue("store", "pacs", {})
    assert q.claim("pacs", lease=10).id == a  # type: ignore[union-attr]
    assert q.claim("pacs", lease=100).id == b  # type: ignore[union-attr]
    clock.advance(10)
    assert q.recover_expired() == 0  # lease_until == now: not yet expired
    clock.advance(1)
    assert q.recover_expired() == 1
    assert q.get(a).state is JobState.PENDING  # type: ignore[union-attr]
    assert q.get(b).state is JobState.CLAIMED  # type: ignore[union-attr]
    with pytest.raises(QueueError):
        q.complete(a)  # the worker whose lease lapsed no longer owns it


def test_release_gives_back_without_counting_an_attempt(q: JobQueue) -> None:
    a = q.enqueue("store", "pacs", {})
    with pytest.raises(QueueError):
        q.release(a)
    assert claim_id(q) == a
    q.release(a)
    job = q.get(a)
    assert job is not None and job.state is JobState.PENDING and job.attempts == 0
    assert claim_id(q) == a


# -- backoff and failure -------------------------------------------------------------------------------


def test_backoff_jitter_bounds_and_cap() -> None:
    policy = RetryPolicy(base=5.0, cap=600.0)
    rng = random.Random(7)
    for attempts in range(1, 40):
        d = min(600.0, 5.0 * 2 ** (attempts - 1))
        samples = [policy.delay(attempts, rng) for _ in range(200)]
        assert all(d / 2 <= s <= d for s in samples), attempts
        assert max(samples) <= policy.cap
    assert policy.delay(1, rng) <= 5.0
    assert 300.0 <= policy.delay(10_000, rng) <= 600.0  # huge attempt counts neither overflow nor exceed cap


def test_backoff_expectation_is_monotone_and_jittered() -> None:
    policy = RetryPolicy(base=2.0, cap=100.0)
    rng = random.Random(11)
    means = [statistics.fmean(policy.delay(n, rng) for _ in range(2000)) for n in range(1, 12)]
    expected = [0.75 * min(100.0, 2.0 * 2 ** (n - 1)) for n in range(1, 12)]
    for i in range(1, len(means)):
        if expected[i] > expected[i - 1]:
            assert means[i] > means[i - 1]  # grows while below the cap
        else:
            assert means[i] == pytest.approx(means[i - 1], rel=0.03)  # flat at the cap
    for mean, want in zip(means, expected):
        assert mean == pytest.approx(want, rel=0.03)  # uniform(d/2, d) has mean 3d/4
    assert len({round(policy.delay(3, rng), 6) for _ in range(50)}) > 40  # really jittered


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(QueueError):
        RetryPolicy(base=10, cap=5)
    with pytest.raises(QueueError):
        RetryPolicy(max_attempts=0)


def test_transient_failure_backs_off_then_retries(q: JobQueue, clock: FakeClock) -> None:
    policy = RetryPolicy(base=5.0, cap=600.0)
    a = q.enqueue("store", "pacs", {})
    assert claim_id(q) == a
    assert q.fail(a, "connection refused", permanent=False, policy=policy) is JobState.PENDING
    job = q.get(a)
    assert job is not None
    assert job.attempts == 1 and job.last_error == "connection refused" and job.lease_until is None
    assert T0 + 2.5 <= job.next_attempt_at <= T0 + 5.0
    assert claim_id(q) is None
    clock.now = job.next_attempt_at
    assert claim_id(q) == a
    assert q.fail(a, "timeout", permanent=False, policy=policy) is JobState.PENDING
    job = q.get(a)
    assert job is not None and job.attempts == 2 and job.last_error == "timeout"
    assert clock.now + 5.0 <= job.next_attempt_at <= clock.now + 10.0
    with pytest.raises(QueueError):
        q.fail(a, "again", permanent=False, policy=policy)  # not claimed


def test_permanent_failure_is_dead_at_once(q: JobQueue) -> None:
    a = q.enqueue("store", "pacs", {})
    b = q.enqueue("store", "pacs", {})
    assert claim_id(q) == a
    assert q.fail(a, "0122 SOP class not supported", permanent=True, policy=RetryPolicy()) is JobState.DEAD
    job = q.get(a)
    assert job is not None and job.state is JobState.DEAD and job.attempts == 1
    assert claim_id(q) == b  # a dead job without a group blocks nothing


def test_max_attempts_makes_dead(q: JobQueue, clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=3)
    a = q.enqueue("store", "pacs", {})
    states = []
    for _ in range(3):
        clock.advance(10_000)
        assert claim_id(q) == a
        states.append(q.fail(a, "reset", permanent=False, policy=policy))
    assert states == [JobState.PENDING, JobState.PENDING, JobState.DEAD]
    clock.advance(10_000)
    assert claim_id(q) is None


def test_max_age_makes_dead(q: JobQueue, clock: FakeClock) -> None:
    policy = RetryPolicy(max_age=3600)
    a = q.enqueue("store", "pacs", {})
    clock.advance(3599)
    assert claim_id(q) == a
    assert q.fail(a, "refused", permanent=False, policy=policy) is JobState.PENDING
    clock.advance(1000)
    assert claim_id(q) == a
    assert q.fail(a, "refused", permanent=False, policy=policy) is JobState.DEAD


# -- operator actions ----------------------------------------------------------------------------------


def test_retry_and_retry_dead(q: JobQueue, clock: FakeClock) -> None:
    dead = [q.enqueue("store", d, {}) for d in ("pacs", "pacs", "archive")]
    for job_id, d in zip(dead, ("pacs", "pacs", "archive")):
        assert claim_id(q, d) == job_id
        q.fail(job_id, "A9xx", permanent=True, policy=RetryPolicy())
    clock.advance(50)
    assert q.retry(dead[0]) is True
    job = q.get(dead[0])
    assert job is not None and job.state is JobState.PENDING
    assert job.next_attempt_at == clock.now and job.attempts == 1  # attempts kept
    assert q.retry(999) is False
    assert claim_id(q) == dead[0]
    assert q.retry(dead[0]) is False  # claimed: not retryable
    assert q.retry_dead("archive") == 1
    assert q.get(dead[1]).state is JobState.DEAD  # type: ignore[union-attr]
    assert q.retry_dead() == 1
    assert q.get(dead[1]).state is JobState.PENDING  # type: ignore[union-attr]


def test_retry_makes_a_backed_off_job_due_now(q: JobQueue, clock: FakeClock) -> None:
    a = q.enqueue("store", "pacs", {})
    assert claim_id(q) == a
    q.fail(a, "refused", permanent=False, policy=RetryPolicy(base=500, cap=600))
    assert claim_id(q) is None
    assert q.retry(a) is True
    assert claim_id(q) == a


def test_drop(q: JobQueue) -> None:
    a = q.enqueue("store", "pacs", {})
    b = q.enqueue("store", "pacs", {})
    assert claim_id(q) == a
    with pytest.raises(QueueError):
        q.drop(a)
    assert q.get(a).state is JobState.CLAIMED  # type: ignore[union-attr]
    assert q.drop(b) is True
    assert q.get(b) is None
    assert q.drop(b) is False


def test_list_filters(q: JobQueue) -> None:
    a = q.enqueue("store", "pacs", {})
    b = q.enqueue("mpps", "ris", {})
    c = q.enqueue("store", "archive", {})
    assert claim_id(q, "ris") == b
    assert [j.id for j in q.list()] == [a, b, c]
    assert [j.id for j in q.list(states=[JobState.CLAIMED])] == [b]
    assert [j.id for j in q.list(states=[JobState.PENDING, JobState.CLAIMED], kind="store")] == [a, c]
    assert [j.id for j in q.list(destination="archive")] == [c]
    assert q.list(states=[]) == []
    assert [j.id for j in q.list(limit=2)] == [a, b]


def test_stats_and_destinations(q: JobQueue, clock: FakeClock) -> None:
    assert q.stats() == {} and q.destinations() == []
    a = q.enqueue("store", "pacs", {})
    clock.advance(5)
    q.enqueue("store", "pacs", {})
    d = q.enqueue("store", "archive", {})
    e = q.enqueue("store", "printer", {})
    assert claim_id(q) == a
    assert claim_id(q, "archive") == d
    q.complete(d)
    assert claim_id(q, "printer") == e
    q.fail(e, "film jam", permanent=True, policy=RetryPolicy())
    assert q.stats() == {
        "archive": DestinationStats(done=1),
        "pacs": DestinationStats(pending=1, claimed=1, oldest_pending_created_at=T0 + 5),
        "printer": DestinationStats(dead=1),
    }
    assert q.destinations() == ["pacs"]


# -- ordering ------------------------------------------------------------------------------------------


def test_group_is_strict_fifo(q: JobQueue) -> None:
    first = q.enqueue("mpps", "ris", {"op": "N-CREATE"}, group_key="mpps-1")
    second = q.enqueue("mpps", "ris", {"op": "N-SET"}, group_key="mpps-1")
    loose = q.enqueue("mpps", "ris", {}, group_key="mpps-2")
    assert claim_id(q, "ris") == first
    assert claim_id(q, "ris") == loose  # the other group is not held up
    assert claim_id(q, "ris") is None  # second waits for first
    q.complete(first)
    assert claim_id(q, "ris") == second


def test_group_waits_for_a_backed_off_predecessor(q: JobQueue, clock: FakeClock) -> None:
    first = q.enqueue("mpps", "ris", {}, group_key="g")
    second = q.enqueue("mpps", "ris", {}, group_key="g")
    assert claim_id(q, "ris") == first
    q.fail(first, "timeout", permanent=False, policy=RetryPolicy(base=10, cap=10))
    clock.advance(1)
    assert claim_id(q, "ris") is None  # first is pending in backoff; second must not overtake it
    clock.advance(10)
    assert claim_id(q, "ris") == first


def test_dead_predecessor_blocks_group_until_retried_or_dropped(q: JobQueue) -> None:
    first = q.enqueue("mpps", "ris", {}, group_key="g")
    second = q.enqueue("mpps", "ris", {}, group_key="g")
    third = q.enqueue("mpps", "ris", {}, group_key="g")
    assert claim_id(q, "ris") == first
    q.fail(first, "A9xx", permanent=True, policy=RetryPolicy())
    assert claim_id(q, "ris") is None
    assert q.retry(first)
    assert claim_id(q, "ris") == first
    q.fail(first, "A9xx", permanent=True, policy=RetryPolicy())
    assert claim_id(q, "ris") is None
    assert q.drop(first)
    assert claim_id(q, "ris") == second
    assert claim_id(q, "ris") is None
    q.complete(second)
    assert claim_id(q, "ris") == third


def test_group_spans_destinations(q: JobQueue) -> None:
    store = q.enqueue("store", "pacs", {}, group_key="study-1")
    commit = q.enqueue("commit", "pacs-commit", {}, group_key="study-1")
    assert claim_id(q, "pacs-commit") is None
    assert claim_id(q) == store
    q.complete(store)
    assert claim_id(q, "pacs-commit") == commit


def test_after_job_dependency(q: JobQueue) -> None:
    store = q.enqueue("store", "pacs", {})
    commit = q.enqueue("commit", "pacs", {}, after_job=store)
    orphan = q.enqueue("commit", "archive", {}, after_job=10_000)  # dependency gone: free to run
    assert claim_id(q, "archive") == orphan
    assert claim_id(q) == store
    assert claim_id(q) is None  # commit waits although it is due
    q.release(store)
    assert claim_id(q) == store
    q.fail(store, "A9xx", permanent=True, policy=RetryPolicy())
    assert claim_id(q) is None  # a dead dependency does not satisfy after_job
    assert q.drop(store)
    assert claim_id(q) == commit


def test_after_job_done_satisfies_dependency(q: JobQueue) -> None:
    store = q.enqueue("store", "pacs", {})
    commit = q.enqueue("commit", "pacs", {}, after_job=store)
    assert claim_id(q) == store
    q.complete(store)
    assert claim_id(q) == commit


# -- transactions, connections, durability -------------------------------------------------------------


def test_enqueue_joins_outer_transaction_and_rolls_back_with_it(
    q: JobQueue, conn: sqlite3.Connection, db_path: Path
) -> None:
    conn.execute("CREATE TABLE instances (uid TEXT PRIMARY KEY)")
    with pytest.raises(RuntimeError):
        with transaction(conn):
            conn.execute("INSERT INTO instances VALUES ('1.2.3')")
            q.enqueue("store", "pacs", {"uid": "1.2.3"})
            q.enqueue_many([NewJob("store", "archive", {"uid": "1.2.3"})])
            assert conn.in_transaction
            raise RuntimeError("crash before commit")
    assert conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 0
    assert q.list() == []

    with transaction(conn):
        conn.execute("INSERT INTO instances VALUES ('1.2.4')")
        job_id = q.enqueue("store", "pacs", {"uid": "1.2.4"})
        assert conn.in_transaction  # enqueue did not commit the caller's transaction
    other = open_database(db_path)
    try:
        assert other.execute("SELECT uid FROM instances").fetchall()[0][0] == "1.2.4"
        assert JobQueue(other).get(job_id) is not None
    finally:
        other.close()


def test_two_connections_see_each_others_writes(db_path: Path, clock: FakeClock) -> None:
    agent_conn, cli_conn = open_database(db_path), open_database(db_path)
    try:
        agent, cli = JobQueue(agent_conn, clock=clock), JobQueue(cli_conn, clock=clock)
        a = agent.enqueue("store", "pacs", {})
        assert claim_id(agent) == a
        agent.fail(a, "A9xx", permanent=True, policy=RetryPolicy())
        assert [j.id for j in cli.list(states=[JobState.DEAD])] == [a]
        assert cli.retry(a)
        assert claim_id(agent) == a
        with pytest.raises(QueueError):
            cli.drop(a)  # the agent holds it
        assert claim_id(cli) is None
    finally:
        agent_conn.close()
        cli_conn.close()


def test_concurrent_claims_never_double_claim(db_path: Path) -> None:
    setup = open_database(db_path)
    ids = JobQueue(setup).enqueue_many(NewJob("store", "pacs", {"i": i}) for i in range(500))
    setup.close()

    claimed: dict[str, list[int]] = {"agent": [], "cli": []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker(name: str) -> None:
        conn = open_database(db_path)
        try:
            q = JobQueue(conn)
            start.wait()
            while (job := q.claim("pacs")) is not None:
                claimed[name].append(job.id)
                q.complete(job.id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    everything = claimed["agent"] + claimed["cli"]
    assert sorted(everything) == ids  # each job exactly once
    assert len(set(everything)) == len(everything) == 500
    for mine in claimed.values():
        assert mine == sorted(mine)  # each claimer sees FIFO order
    check = open_database(db_path)
    try:
        assert JobQueue(check).stats()["pacs"] == DestinationStats(done=500)
    finally:
        check.close()


def test_one_queue_shared_by_threads_never_double_claims(q: JobQueue) -> None:
    ids = q.enqueue_many(NewJob("store", "pacs", {}) for _ in range(200))
    claimed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        while (job := q.claim("pacs")) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claimed) == ids


def test_data_survives_close_and_reopen(db_path: Path, clock: FakeClock) -> None:
    conn = open_database(db_path)
    q = JobQueue(conn, clock=clock)
    done = q.enqueue("store", "pacs", {"k": "v"})
    crashed = q.enqueue("store", "pacs", {"k": "w"}, group_key="g")
    assert claim_id(q) == done
    q.complete(done)
    assert claim_id(q) == crashed
    conn.close()  # the agent dies holding `crashed`

    conn = open_database(db_path)
    try:
        q = JobQueue(conn, clock=clock)  # CREATE … IF NOT EXISTS leaves the data alone
        assert q.get(done).state is JobState.DONE  # type: ignore[union-attr]
        assert q.get(crashed).state is JobState.CLAIMED  # type: ignore[union-attr]
        assert claim_id(q) is None
        assert q.recover() == 1
        job = q.claim("pacs")
        assert job is not None and job.id == crashed and job.payload == {"k": "w"}
    finally:
        conn.close()


def test_sqlite_errors_become_queue_errors(q: JobQueue, conn: sqlite3.Connection) -> None:
    conn.execute("DROP TABLE queue_jobs")
    with pytest.raises(QueueError):
        q.enqueue("store", "pacs", {})
    with pytest.raises(QueueError):
        q.stats()
    assert not conn.in_transaction


# ---------------------------------------------------------------- batches (idempotent job kinds)


def test_claim_batch_takes_consecutive_ungrouped_jobs_of_the_same_kind(q: JobQueue) -> None:
    ids = [q.enqueue("store", "pacs", {"n": i}) for i in range(5)]
    other_kind = q.enqueue("commit-request", "pacs", {})
    grouped = q.enqueue("store", "pacs", {}, group_key="g")
    elsewhere = q.enqueue("store", "ris", {})
    batch = q.claim_batch("pacs", kinds=frozenset({"store"}), limit=10)
    assert [j.id for j in batch] == ids
    assert all(q.get(i).state is JobState.CLAIMED for i in ids)
    for untouched in (other_kind, grouped, elsewhere):
        assert q.get(untouched).state is JobState.PENDING


def test_claim_batch_respects_its_limit_and_non_batch_kinds(q: JobQueue) -> None:
    first = q.enqueue("mpps-create", "ris", {})
    q.enqueue("mpps-create", "ris", {})
    assert [j.id for j in q.claim_batch("ris", kinds=frozenset({"store"}), limit=10)] == [first]
    ids = [q.enqueue("store", "pacs", {}) for _ in range(5)]
    assert [j.id for j in q.claim_batch("pacs", kinds=frozenset({"store"}), limit=3)] == ids[:3]
    assert q.claim_batch("nobody", kinds=frozenset({"store"}), limit=3) == []


def test_complete_many_is_all_or_nothing(q: JobQueue) -> None:
    ids = [q.enqueue("store", "pacs", {}) for _ in range(3)]
    q.claim_batch("pacs", kinds=frozenset({"store"}), limit=2)
    with pytest.raises(QueueError):
        q.complete_many(ids)  # the third was never claimed
    assert [q.get(i).state for i in ids] == [JobState.CLAIMED, JobState.CLAIMED, JobState.PENDING]
    q.complete_many(ids[:2])
    assert [q.get(i).state for i in ids[:2]] == [JobState.DONE, JobState.DONE]
