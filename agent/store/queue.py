"""The durable job queue: store-and-forward, MPPS and commitment jobs in the agent's SQLite database.

Invariants:
- A job lives in one row of `queue_jobs` in the shared agent database (`agent.store.db`). Its payload is
  JSON (file references, never pickle). States: PENDING -> CLAIMED -> DONE, or -> DEAD; a DEAD or
  PENDING job goes back to PENDING only through `retry`, a CLAIMED one only through `fail`, `release`
  or lease recovery.
- Every write is one `transaction()` (`BEGIN IMMEDIATE` … `COMMIT`), so two processes on the same file
  (the agent and a CLI command) serialise on the write lock instead of deadlocking, and a claim is a
  single `UPDATE … RETURNING`: a job is never claimed twice while its lease holds.
- `enqueue` joins a caller's open transaction, so "index row written" and "forward jobs queued" commit
  or roll back together.
- Claim order: the oldest (smallest id) due PENDING job of a destination whose `after_job` is DONE or
  gone and which has no PENDING, CLAIMED or DEAD predecessor in its group (strict FIFO per group; a dead
  predecessor blocks its group until an operator retries or drops it).
- A CLAIMED job whose process died returns to PENDING: all of them at start-up (`recover`), those whose
  lease expired while the agent runs (`recover_expired`). Neither counts an attempt.
- DONE rows are kept until `purge_done` (a deleted `after_job` counts as DONE). A job completed with a
  warning from its peer (e.g. a C-STORE answered B007) keeps that warning in its `warning` column,
  written in the same UPDATE that makes it DONE (a C-MOVE counts its warning sub-operations from it).
- Time comes only from the injected `clock`, randomness only from the injected `rng`.
- One JobQueue serialises its own calls with a lock, so trio workers may call it through
  `trio.to_thread.run_sync` from several threads; a second process uses its own connection.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agent.errors import QueueError
from agent.store.db import create_tables, transaction

__all__ = [
    "DestinationStats",
    "Job",
    "JobQueue",
    "JobState",
    "NewJob",
    "RetryPolicy",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT    NOT NULL,
    destination     TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'claimed', 'done', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    lease_until     REAL,
    group_key       TEXT,
    after_job       INTEGER,
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    last_error      TEXT,
    warning         TEXT  -- a DONE job's peer answered with a warning: which (NULL: plain success)
);
-- next_due (earliest due time of a destination) and stats
CREATE INDEX IF NOT EXISTS queue_jobs_due ON queue_jobs (destination, state, next_attempt_at);
-- claim walks a destination's pending jobs in id order and stops at the first claimable one (no sort)
CREATE INDEX IF NOT EXISTS queue_jobs_order ON queue_jobs (destination, state, id);
-- group FIFO, "is an earlier job of my group unfinished?": state before id so that the probe touches
-- only unfinished predecessors, never the group's DONE history
CREATE INDEX IF NOT EXISTS queue_jobs_group ON queue_jobs (group_key, state, id) WHERE group_key IS NOT NULL;
-- recover / recover_expired / purge_done
CREATE INDEX IF NOT EXISTS queue_jobs_state ON queue_jobs (state, lease_until, updated_at);
"""

_COLUMNS = (
    "id, kind, destination, payload, state, attempts, next_attempt_at, lease_until, group_key, "
    "after_job, created_at, updated_at, last_error, warning"
)

# A job may be claimed when it is due, its `after_job` is DONE or gone, and no earlier job of its group
# is unfinished (DONE and deleted predecessors no longer block).
_CLAIM = f"""
UPDATE queue_jobs
   SET state = 'claimed', lease_until = :lease_until, updated_at = :now
 WHERE id = (
    SELECT j.id FROM queue_jobs AS j
     WHERE j.destination = :destination
       AND j.state = 'pending'
       AND +j.next_attempt_at <= :now  -- unary +: walk queue_jobs_order in id order, no sort
       AND (j.after_job IS NULL OR NOT EXISTS (
            SELECT 1 FROM queue_jobs AS a WHERE a.id = j.after_job AND a.state != 'done'))
       AND (j.group_key IS NULL OR NOT EXISTS (
            SELECT 1 FROM queue_jobs AS g
             WHERE g.group_key = j.group_key AND g.id < j.id
               AND g.state IN ('pending', 'claimed', 'dead')))
     ORDER BY j.id
     LIMIT 1)
RETURNING {_COLUMNS}
"""

# 2**60 * base is far above any sensible cap; bounding the exponent keeps the float finite.
_MAX_EXPONENT = 60


class JobState(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    DONE = "done"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    destination: str
    payload: dict[str, Any]
    state: JobState
    attempts: int
    next_attempt_at: float
    lease_until: float | None
    group_key: str | None
    after_job: int | None
    created_at: float
    updated_at: float
    last_error: str | None
    warning: str | None = None  # DONE with a warning from the peer (see the module invariants)

    @classmethod
    def _from_row(cls, row: sqlite3.Row | tuple[Any, ...]) -> Job:
        (id_, kind, destination, payload, state, attempts, next_attempt_at, lease_until,
         group_key, after_job, created_at, updated_at, last_error, warning) = tuple(row)
        return cls(
            id=id_,
            kind=kind,
            destination=destination,
            payload=_payload_of(payload),
            state=JobState(state),
            attempts=attempts,
            next_attempt_at=next_attempt_at,
            lease_until=lease_until,
            group_key=group_key,
            after_job=after_job,
            created_at=created_at,
            updated_at=updated_at,
            last_error=last_error,
            warning=warning,
        )


def _payload_of(text: str) -> dict[str, Any]:
    """A stored payload; one that is not a JSON object (written by hand, or damaged) is shown as
    `{"unreadable_payload": <its start>}`, so its job fails on its own, visibly, and nothing else does."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        value = None
    if isinstance(value, dict):
        return value
    return {"unreadable_payload": str(text)[:200]}


@dataclass(frozen=True, slots=True)
class NewJob:
    """One job for `JobQueue.enqueue_many`; the fields are `enqueue`'s arguments."""

    kind: str
    destination: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    group_key: str | None = None
    after_job: int | None = None
    not_before: float | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to retry a transiently failed job, and when to give up on it (docs/architecture.md "Durable queue")."""

    base: float = 5.0
    cap: float = 600.0
    max_age: float = 7 * 86400
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not (self.base > 0 and self.cap >= self.base):
            raise QueueError(f"retry policy needs 0 < base <= cap, got base={self.base} cap={self.cap}")
        if self.max_age <= 0:
            raise QueueError(f"retry policy max_age must be positive, got {self.max_age}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise QueueError(f"retry policy max_attempts must be >= 1, got {self.max_attempts}")

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Seconds to wait after the `attempts`-th failure: capped exponential backoff, "equal jitter".

        d = min(cap, base * 2**(attempts - 1)); the result is uniform in [d/2, d], so it never exceeds
        the cap and many agents failing together do not retry in lock-step.
        """
        exponent = min(max(attempts, 1) - 1, _MAX_EXPONENT)
        d = min(self.cap, self.base * 2.0**exponent)
        return rng.uniform(d / 2, d)


@dataclass(frozen=True, slots=True)
class DestinationStats:
    pending: int = 0
    claimed: int = 0
    dead: int = 0
    done: int = 0
    oldest_pending_created_at: float | None = None


class JobQueue:
    """The durable queue over one connection from `agent.store.db.open_database`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._conn = conn
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._lock = threading.RLock()
        self._listeners: builtins.list[Callable[[str, str], None]] = []
        with self._write():
            create_tables(conn, _SCHEMA)
            if "warning" not in {r[1] for r in conn.execute("PRAGMA table_info(queue_jobs)")}:
                conn.execute("ALTER TABLE queue_jobs ADD COLUMN warning TEXT")  # a database of an older version

    # -- producing ------------------------------------------------------------------------------------

    def enqueue(
        self,
        kind: str,
        destination: str,
        payload: Mapping[str, Any],
        *,
        group_key: str | None = None,
        after_job: int | None = None,
        not_before: float | None = None,
    ) -> int:
        """Queue one job and return its id; joins the caller's open `transaction(conn)` if any."""
        return self.enqueue_many(
            [NewJob(kind, destination, payload, group_key, after_job, not_before)]
        )[0]

    def enqueue_many(self, items: Iterable[NewJob]) -> list[int]:
        """Queue many jobs in one transaction (all or none); return their ids in order."""
        now = self._clock()
        rows = [self._row_for(item, now) for item in items]
        ids: list[int] = []
        with self._write() as conn:
            for row in rows:
                cur = conn.execute(
                    "INSERT INTO queue_jobs (kind, destination, payload, state, attempts, "
                    "next_attempt_at, group_key, after_job, created_at, updated_at) "
                    "VALUES (?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?)",
                    row,
                )
                assert cur.lastrowid is not None
                ids.append(cur.lastrowid)
        return ids

    @staticmethod
    def _row_for(item: NewJob, now: float) -> tuple[Any, ...]:
        if not item.kind or not item.destination:
            raise QueueError(f"a job needs a kind and a destination, got {item.kind!r}, {item.destination!r}")
        if not isinstance(item.payload, Mapping):
            raise QueueError(f"job payload must be a mapping, got {type(item.payload).__name__}")
        try:
            payload = json.dumps(dict(item.payload), separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise QueueError(f"job payload is not JSON-serialisable: {exc}") from exc
        next_attempt_at = now if item.not_before is None else item.not_before
        return (item.kind, item.destination, payload, next_attempt_at, item.group_key,
                item.after_job, now, now)

    # -- consuming ------------------------------------------------------------------------------------

    def claim(self, destination: str, *, lease: float = 300.0) -> Job | None:
        """Take the next claimable job for `destination` (see the module invariants), or None."""
        if lease <= 0:
            raise QueueError(f"lease must be positive, got {lease}")
        now = self._clock()
        with self._write() as conn:
            rows = conn.execute(
                _CLAIM, {"destination": destination, "now": now, "lease_until": now + lease}
            ).fetchall()
        return Job._from_row(rows[0]) if rows else None

    def claim_job(self, job_id: int, *, lease: float = 300.0) -> Job | None:
        """Claim this PENDING job now, due or not, or None when it is not PENDING (another process has
        it, or it is done or dead). For a command that queues a job and then runs it in-process: the
        claim keeps a running agent's worker off it while the lease holds. Jobs with a group or a
        prerequisite are not claimed this way (their order is the queue's to keep)."""
        if lease <= 0:
            raise QueueError(f"lease must be positive, got {lease}")
        now = self._clock()
        with self._write() as conn:
            rows = conn.execute(
                f"UPDATE queue_jobs SET state = 'claimed', lease_until = ?, updated_at = ? "
                f"WHERE id = ? AND state = 'pending' AND group_key IS NULL AND after_job IS NULL "
                f"RETURNING {_COLUMNS}",
                (now + lease, now, job_id),
            ).fetchall()
        return Job._from_row(rows[0]) if rows else None

    def claim_batch(self, destination: str, *, kinds: frozenset[str], limit: int, lease: float = 300.0) -> list[Job]:
        """Claim the next job as `claim` does; if it is of one of `kinds` and has no group and no
        prerequisite, also claim up to `limit - 1` more such jobs of the same kind, oldest first, in
        the same transaction. For jobs whose repetition is harmless (C-STORE is idempotent), so that
        a worker pays one claim transaction per batch; it still completes each job on its own, so a
        crash repeats only the job in flight, and the jobs not yet tried simply go back to PENDING."""
        first = self.claim(destination, lease=lease)
        if first is None:
            return []
        if first.kind not in kinds or first.group_key is not None or first.after_job is not None or limit <= 1:
            return [first]
        now = self._clock()
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE queue_jobs SET state = 'claimed', lease_until = :lease_until, updated_at = :now "
                "WHERE id IN (SELECT id FROM queue_jobs WHERE destination = :destination "
                "AND state = 'pending' AND kind = :kind AND next_attempt_at <= :now "
                "AND group_key IS NULL AND after_job IS NULL AND id > :after ORDER BY id LIMIT :limit) "
                f"RETURNING {_COLUMNS}",
                {"destination": destination, "now": now, "lease_until": now + lease, "kind": first.kind,
                 "after": first.id, "limit": limit - 1},
            ).fetchall()
        return [first, *sorted((Job._from_row(r) for r in rows), key=lambda j: j.id)]

    def complete_many(self, job_ids: Iterable[int], *, power_safe: bool = True, warning: str | None = None) -> None:
        """CLAIMED -> DONE for several jobs in one transaction; `warning`: the peer answered them with
        that warning (kept in the row, see the module invariants).

        `power_safe=False` is for jobs whose repetition the peer treats as a repeat (a C-STORE, by SOP
        Instance UID): the commit then skips its fsync (WAL with synchronous=NORMAL). A process crash
        still cannot lose it (the WAL write is done before this returns); only a power cut can, and
        then the job runs once more, harmlessly. It saves one fsync per forwarded instance."""
        ids = list(job_ids)
        if not ids:
            return
        if not power_safe:
            with self._lock:
                self._conn.execute("PRAGMA synchronous=NORMAL")
                try:
                    self.complete_many(ids, warning=warning)
                finally:
                    self._conn.execute("PRAGMA synchronous=FULL")
            return
        now = self._clock()
        finished: builtins.list[tuple[str, str]] = []
        with self._write() as conn:
            for job_id in ids:
                row = conn.execute(
                    "UPDATE queue_jobs SET state = 'done', lease_until = NULL, updated_at = ?, warning = ? "
                    "WHERE id = ? AND state = 'claimed' RETURNING kind, destination",
                    (now, warning, job_id),
                ).fetchone()
                if row is None:
                    raise self._not_claimed(job_id)
                finished.append((row[0], row[1]))
        for kind, destination in finished:
            self._tell(kind, destination)

    def complete(self, job_id: int, *, power_safe: bool = True, warning: str | None = None) -> None:
        """CLAIMED -> DONE (see `complete_many` for `power_safe` and `warning`)."""
        self.complete_many([job_id], power_safe=power_safe, warning=warning)

    def add_listener(self, listener: Callable[[str, str], None]) -> Callable[[], None]:
        """Call `listener(kind, destination)` after each job this object completes (in the thread that
        completed it; a hint to look again, never the only way to learn it). Returns the remover."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def _tell(self, kind: str, destination: str) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(kind, destination)

    def fail(self, job_id: int, error: str, *, permanent: bool, policy: RetryPolicy) -> JobState:
        """Record a failed attempt of a CLAIMED job; it goes DEAD or back to PENDING after a backoff."""
        now = self._clock()
        with self._write() as conn:
            row = conn.execute(
                "SELECT attempts, created_at FROM queue_jobs WHERE id = ? AND state = 'claimed'",
                (job_id,),
            ).fetchone()
            if row is None:
                raise self._not_claimed(job_id)
            attempts = row[0] + 1
            dead = (
                permanent
                or (policy.max_attempts is not None and attempts >= policy.max_attempts)
                or now - row[1] >= policy.max_age
            )
            state = JobState.DEAD if dead else JobState.PENDING
            next_attempt_at = now if dead else now + policy.delay(attempts, self._rng)
            conn.execute(
                "UPDATE queue_jobs SET state = ?, attempts = ?, last_error = ?, next_attempt_at = ?, "
                "lease_until = NULL, updated_at = ? WHERE id = ?",
                (state.value, attempts, error, next_attempt_at, now, job_id),
            )
        return state

    def release(self, job_id: int, *, delay: float = 0.0) -> None:
        """Give a CLAIMED job back without counting an attempt, due again after `delay` seconds
        (graceful shutdown: 0; a job whose prerequisites are not met yet: a few seconds)."""
        now = self._clock()
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE queue_jobs SET state = 'pending', lease_until = NULL, updated_at = ?, "
                "next_attempt_at = MAX(next_attempt_at, ?) WHERE id = ? AND state = 'claimed'",
                (now, now + delay, job_id),
            )
            if cur.rowcount != 1:
                raise self._not_claimed(job_id)

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def recover(self) -> int:
        """At start-up: every CLAIMED job goes back to PENDING (its process is gone). Returns the count."""
        now = self._clock()
        with self._write() as conn:
            return conn.execute(
                "UPDATE queue_jobs SET state = 'pending', lease_until = NULL, updated_at = ? "
                "WHERE state = 'claimed'",
                (now,),
            ).rowcount

    def recover_expired(self) -> int:
        """While running: CLAIMED jobs whose lease has run out go back to PENDING. Returns the count."""
        now = self._clock()
        with self._write() as conn:
            return conn.execute(
                "UPDATE queue_jobs SET state = 'pending', lease_until = NULL, updated_at = ? "
                "WHERE state = 'claimed' AND lease_until < ?",
                (now, now),
            ).rowcount

    def next_due(self, destination: str, *, after: float | None = None) -> float | None:
        """Earliest `next_attempt_at` of the destination's PENDING jobs (for a worker to sleep until);
        with `after`, only of those due later than that (the ones due earlier were already looked at)."""
        sql = "SELECT MIN(next_attempt_at) FROM queue_jobs WHERE destination = ? AND state = 'pending'"
        params: tuple[Any, ...] = (destination,)
        if after is not None:
            sql += " AND next_attempt_at > ?"
            params += (after,)
        with self._read() as conn:
            row = conn.execute(sql, params).fetchone()
        return None if row[0] is None else float(row[0])

    # -- operating (CLI) ------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM queue_jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else Job._from_row(row)

    def list(
        self,
        *,
        states: Iterable[JobState] | None = None,
        destination: str | None = None,
        kind: str | None = None,
        limit: int = 1000,
    ) -> builtins.list[Job]:
        """Jobs in id order, filtered by any of state, destination and kind."""
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        if states is not None:
            wanted = [JobState(s).value for s in states]
            if not wanted:
                return []
            clauses.append(f"state IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        if destination is not None:
            clauses.append("destination = ?")
            params.append(destination)
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM queue_jobs {where} ORDER BY id LIMIT ?", params
            ).fetchall()
        return [Job._from_row(r) for r in rows]

    def retry(self, job_id: int) -> bool:
        """DEAD or PENDING -> PENDING, due now, attempts kept. False if no such job in those states."""
        now = self._clock()
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE queue_jobs SET state = 'pending', next_attempt_at = ?, updated_at = ? "
                "WHERE id = ? AND state IN ('dead', 'pending')",
                (now, now, job_id),
            )
            return cur.rowcount == 1

    def retry_dead(self, destination: str | None = None) -> int:
        """Every DEAD job (of `destination`, if given) -> PENDING, due now. Returns the count."""
        now = self._clock()
        sql = "UPDATE queue_jobs SET state = 'pending', next_attempt_at = ?, updated_at = ? WHERE state = 'dead'"
        params: tuple[Any, ...] = (now, now)
        if destination is not None:
            sql += " AND destination = ?"
            params += (destination,)
        with self._write() as conn:
            return conn.execute(sql, params).rowcount

    def drop(self, job_id: int) -> bool:
        """Delete a job that is not CLAIMED. False if there is no such job."""
        with self._write() as conn:
            row = conn.execute("SELECT state FROM queue_jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return False
            if row[0] == JobState.CLAIMED:
                raise QueueError(f"job {job_id} is claimed by a worker; cannot drop it")
            conn.execute("DELETE FROM queue_jobs WHERE id = ?", (job_id,))
            return True

    def purge_done(self, older_than: float, *, except_kinds: Iterable[str] = ()) -> int:
        """Delete DONE jobs finished more than `older_than` seconds ago, except those of `except_kinds`
        (whose owner prunes them itself). Returns the count."""
        cutoff = self._clock() - older_than
        kept = sorted(set(except_kinds))
        sql = "DELETE FROM queue_jobs WHERE state = 'done' AND updated_at < ?"
        if kept:
            sql += f" AND kind NOT IN ({', '.join('?' * len(kept))})"
        with self._write() as conn:
            return conn.execute(sql, (cutoff, *kept)).rowcount

    def unfinished_payload_values(self, kind: str, destinations: Iterable[str], key: str) -> set[str]:
        """The distinct values of payload field `key` ('' when absent) over the jobs of `kind` to any
        of `destinations` that are not DONE (e.g. the studies whose C-STOREs are still in flight)."""
        dests = list(destinations)
        if not dests:
            return set()
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT DISTINCT json_extract(payload, '$.' || ?) FROM queue_jobs WHERE kind = ? "
                f"AND destination IN ({', '.join('?' * len(dests))}) AND state != 'done'",
                (key, kind, *dests),
            ).fetchall()
        return {"" if r[0] is None else str(r[0]) for r in rows}

    def stats(self) -> dict[str, DestinationStats]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT destination, state, COUNT(*), "
                "MIN(CASE WHEN state = 'pending' THEN created_at END) "
                "FROM queue_jobs GROUP BY destination, state"
            ).fetchall()
        counts: dict[str, dict[str, Any]] = {}
        for destination, state, count, oldest in rows:
            entry = counts.setdefault(destination, {"oldest_pending_created_at": None})
            entry[state] = count
            if oldest is not None:
                entry["oldest_pending_created_at"] = float(oldest)
        return {d: DestinationStats(**fields) for d, fields in sorted(counts.items())}

    def destinations(self) -> builtins.list[str]:
        """Destinations with PENDING or CLAIMED jobs (the ones that need a worker)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT DISTINCT destination FROM queue_jobs WHERE state IN ('pending', 'claimed') "
                "ORDER BY destination"
            ).fetchall()
        return [r[0] for r in rows]

    # -- plumbing -------------------------------------------------------------------------------------

    @staticmethod
    def _not_claimed(job_id: int) -> QueueError:
        return QueueError(f"job {job_id} is not claimed (unknown, or its lease was recovered)")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (or the caller's, joined), sqlite errors translated to QueueError."""
        with self._lock, _translated(), transaction(self._conn) as conn:
            yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _translated():
            yield self._conn


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise QueueError(f"queue database error: {exc}") from exc
