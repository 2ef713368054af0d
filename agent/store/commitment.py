"""Storage Commitment state in the agent database (PS3.4 Annex J), both roles.

Requester side (we are the SCU, `[storage] commit_with`):
- `commit_requests`: one row per Transaction UID (destination, state, created/sent/deadline, rerequest
  number). States: PENDING (persisted, N-ACTION queued) -> SENT (N-ACTION-RSP success, deadline runs)
  -> DONE (every item answered) | EXPIRED (deadline passed; still-awaiting items were re-batched).
- `commit_items`: the instances of a request. States: AWAITING -> COMMITTED | FAILED (Failed SOP
  Sequence, with its Failure Reason) | EXPIRED (no report by the deadline).
- A request and its instance list are written, with the `commit-request` queue job, in ONE transaction
  before anything is sent; a crash at any point leaves either nothing or a request whose job will (re)send
  the same N-ACTION.
- An instance needs commitment while its index row has no `committed_at`. It is a batch candidate when
  every `store` job for it to the gating destinations is DONE, no AWAITING item holds it, and it has not
  failed or expired more than `max_rerequests` times with that destination (then it is given up and
  shown by `dicom-agent status`).
- Reports are honoured for any Transaction UID we issued, old ones included: a late "committed" is still
  a commitment.

Performer side (we are the SCP, `[commitment]`):
- `commit_reports`: one row per received N-ACTION: requester AE, the results computed against the local
  store when the request arrived (JSON lists), route (the peer it goes to on a new association, NULL
  while the requester's AE title matches no peer), state PENDING -> SENT.

Every method is blocking (sqlite3); the agent calls them through `Blocking.run`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent.store.db import transaction

__all__ = [
    "Candidate",
    "CommitmentStore",
    "ItemState",
    "ReportRow",
    "RequestRow",
    "RequestState",
]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS commit_requests (
        transaction_uid TEXT PRIMARY KEY,
        destination     TEXT NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'done', 'expired')),
        rerequest       INTEGER NOT NULL DEFAULT 0,
        created_at      REAL NOT NULL,
        sent_at         REAL,
        deadline        REAL,
        job_id          INTEGER,
        updated_at      REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS commit_requests_state ON commit_requests (state, deadline)",
    """CREATE TABLE IF NOT EXISTS commit_items (
        transaction_uid  TEXT NOT NULL REFERENCES commit_requests (transaction_uid) ON DELETE CASCADE,
        sop_instance_uid TEXT NOT NULL,
        sop_class_uid    TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('awaiting', 'committed', 'failed', 'expired')),
        failure_reason   INTEGER,
        PRIMARY KEY (transaction_uid, sop_instance_uid)
    )""",
    "CREATE INDEX IF NOT EXISTS commit_items_uid ON commit_items (sop_instance_uid, state)",
    """CREATE TABLE IF NOT EXISTS commit_reports (
        transaction_uid TEXT NOT NULL,
        calling_ae      TEXT NOT NULL,
        route           TEXT,
        committed       TEXT NOT NULL,
        failed          TEXT NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('pending', 'sent')),
        job_id          INTEGER,
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL,
        PRIMARY KEY (transaction_uid, calling_ae)
    )""",
)

# The `store` jobs of an instance, found by the UID inside their JSON payload; the expression index
# keeps batching linear in the number of candidates.
_STORE_JOB_INDEX = (
    "CREATE INDEX IF NOT EXISTS commit_store_jobs ON queue_jobs "
    "(json_extract(payload, '$.uid'), destination) WHERE kind = 'store'"
)


class RequestState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DONE = "done"
    EXPIRED = "expired"


class ItemState(StrEnum):
    AWAITING = "awaiting"
    COMMITTED = "committed"
    FAILED = "failed"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Candidate:
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    last_activity: float  # latest of received_at and the store jobs' completion
    rerequest: int  # how many earlier requests for it failed or expired


@dataclass(frozen=True, slots=True)
class RequestRow:
    transaction_uid: str
    destination: str
    state: RequestState
    rerequest: int
    created_at: float
    sent_at: float | None
    deadline: float | None
    job_id: int | None
    items: tuple[tuple[str, str, ItemState, int | None], ...]  # (instance, class, state, reason)


@dataclass(frozen=True, slots=True)
class ReportRow:
    transaction_uid: str
    calling_ae: str
    route: str | None
    committed: tuple[tuple[str, str], ...]  # (class, instance)
    failed: tuple[tuple[str, str, int], ...]  # (class, instance, failure reason)
    state: str
    job_id: int | None
    created_at: float


class CommitmentStore:
    """Both roles' commitment tables on the shared agent connection (create after JobQueue)."""

    def __init__(self, conn: sqlite3.Connection, *, clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._clock = clock
        self._lock = threading.RLock()
        with self._lock, transaction(conn):
            for statement in _SCHEMA:
                conn.execute(statement)
            has_queue = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'queue_jobs'"
            ).fetchone()
            if has_queue:
                conn.execute(_STORE_JOB_INDEX)

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    # ================================================================== requester (SCU) side

    def candidates(self, destination: str, gating: Sequence[str], max_rerequests: int) -> list[Candidate]:
        """Instances ready to be put in a commitment request to `destination` (module invariants)."""
        if not gating:
            return []
        marks = ", ".join(f":g{k}" for k in range(len(gating)))
        sql = f"""
            SELECT i.sop_instance_uid, i.sop_class_uid, COALESCE(i.study_instance_uid, ''),
                   MAX(i.received_at, MAX(j.updated_at)),
                   (SELECT COUNT(*) FROM commit_items c JOIN commit_requests r USING (transaction_uid)
                     WHERE c.sop_instance_uid = i.sop_instance_uid AND r.destination = :dest
                       AND c.state IN ('failed', 'expired')) AS rerequest
              FROM instances AS i
              JOIN queue_jobs AS j
                ON j.kind = 'store' AND json_extract(j.payload, '$.uid') = i.sop_instance_uid
               AND j.destination IN ({marks})
             WHERE i.committed_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM commit_items c JOIN commit_requests r USING (transaction_uid)
                                WHERE c.sop_instance_uid = i.sop_instance_uid AND r.destination = :dest
                                  AND c.state = 'awaiting')
             GROUP BY i.sop_instance_uid
            HAVING SUM(j.state != 'done') = 0 AND rerequest <= :max
             ORDER BY i.received_at, i.sop_instance_uid
        """
        params: dict[str, Any] = {"dest": destination, "max": max_rerequests}
        params.update({f"g{k}": v for k, v in enumerate(gating)})
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [Candidate(r[0], r[1], r[2], float(r[3]), int(r[4])) for r in rows]

    def create_request(
        self,
        transaction_uid: str,
        destination: str,
        items: Iterable[tuple[str, str]],
        *,
        rerequest: int = 0,
        enqueue: Callable[[sqlite3.Connection], int] | None = None,
    ) -> None:
        """Persist a request with its (class, instance) list and, in the same transaction, its job."""
        now = self._clock()
        items = list(items)
        if not items:
            raise ValueError("a commitment request needs at least one instance")
        with self._lock, transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO commit_requests (transaction_uid, destination, state, rerequest, created_at, "
                "updated_at) VALUES (?, ?, 'pending', ?, ?, ?)",
                (transaction_uid, destination, rerequest, now, now),
            )
            conn.executemany(
                "INSERT INTO commit_items (transaction_uid, sop_instance_uid, sop_class_uid, state) "
                "VALUES (?, ?, ?, 'awaiting')",
                [(transaction_uid, uid, cls) for cls, uid in items],
            )
            if enqueue is not None:
                job_id = enqueue(conn)
                conn.execute("UPDATE commit_requests SET job_id = ? WHERE transaction_uid = ?",
                             (job_id, transaction_uid))

    def request(self, transaction_uid: str) -> RequestRow | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT transaction_uid, destination, state, rerequest, created_at, sent_at, deadline, job_id "
                "FROM commit_requests WHERE transaction_uid = ?", (transaction_uid,)
            ).fetchone()
            if row is None:
                return None
            items = self._conn.execute(
                "SELECT sop_instance_uid, sop_class_uid, state, failure_reason FROM commit_items "
                "WHERE transaction_uid = ? ORDER BY rowid", (transaction_uid,)
            ).fetchall()
        return RequestRow(
            row[0], row[1], RequestState(row[2]), row[3], row[4], row[5], row[6], row[7],
            tuple((i[0], i[1], ItemState(i[2]), i[3]) for i in items),
        )

    def requests(self, states: Iterable[RequestState] | None = None, limit: int = 1000) -> list[RequestRow]:
        wanted = [RequestState(s).value for s in (states or list(RequestState))]
        with self._lock:
            uids = [r[0] for r in self._conn.execute(
                f"SELECT transaction_uid FROM commit_requests WHERE state IN ({', '.join('?' * len(wanted))}) "
                "ORDER BY created_at LIMIT ?", (*wanted, limit)).fetchall()]
        return [r for r in (self.request(u) for u in uids) if r is not None]

    def mark_sent(self, transaction_uid: str, timeout: float) -> None:
        """N-ACTION-RSP success: the report deadline starts now (a repeated send restarts it)."""
        now = self._clock()
        with self._lock, transaction(self._conn) as conn:
            conn.execute(
                "UPDATE commit_requests SET state = 'sent', sent_at = ?, deadline = ?, updated_at = ? "
                "WHERE transaction_uid = ? AND state IN ('pending', 'sent')",
                (now, now + timeout, now, transaction_uid),
            )

    def apply_report(
        self,
        transaction_uid: str,
        committed: Iterable[str],
        failed: Iterable[tuple[str, int]],
        *,
        on_failed: Callable[[sqlite3.Connection, list[str]], None] | None = None,
    ) -> tuple[int, int] | None:
        """Record a report: committed instances get `committed_at` in the index, failed ones their
        reason (and `on_failed` runs in the same transaction, to re-queue their C-STOREs). Honoured for
        EXPIRED (late) requests too. Returns (committed, failed) counts, or None for an unknown UID."""
        now = self._clock()
        committed = list(committed)
        failed = list(failed)
        with self._lock, transaction(self._conn) as conn:
            row = conn.execute("SELECT state FROM commit_requests WHERE transaction_uid = ?",
                               (transaction_uid,)).fetchone()
            if row is None:
                return None
            conn.executemany(
                "UPDATE commit_items SET state = 'committed', failure_reason = NULL "
                "WHERE transaction_uid = ? AND sop_instance_uid = ?",
                [(transaction_uid, u) for u in committed],
            )
            conn.executemany(
                "UPDATE instances SET committed_at = ? WHERE sop_instance_uid = ? AND committed_at IS NULL",
                [(now, u) for u in committed],
            )
            # A failure never overrides a commitment recorded earlier (from another report).
            failed_uids: list[str] = []
            for uid, reason in failed:
                cur = conn.execute(
                    "UPDATE commit_items SET state = 'failed', failure_reason = ? "
                    "WHERE transaction_uid = ? AND sop_instance_uid = ? AND state IN ('awaiting', 'expired')",
                    (reason, transaction_uid, uid),
                )
                if cur.rowcount:
                    failed_uids.append(uid)
            if failed_uids and on_failed is not None:
                on_failed(conn, failed_uids)
            awaiting = conn.execute(
                "SELECT COUNT(*) FROM commit_items WHERE transaction_uid = ? AND state = 'awaiting'",
                (transaction_uid,),
            ).fetchone()[0]
            if awaiting == 0 and row[0] != RequestState.EXPIRED:
                conn.execute("UPDATE commit_requests SET state = 'done', updated_at = ? WHERE transaction_uid = ?",
                             (now, transaction_uid))
        return len(committed), len(failed_uids)

    def expire_overdue(self) -> list[str]:
        """SENT requests past their deadline become EXPIRED, their awaiting items too (the batcher then
        re-requests them under a new Transaction UID). Returns the expired Transaction UIDs."""
        now = self._clock()
        with self._lock, transaction(self._conn) as conn:
            uids = [r[0] for r in conn.execute(
                "SELECT transaction_uid FROM commit_requests WHERE state = 'sent' AND deadline < ?", (now,)
            ).fetchall()]
            for uid in uids:
                conn.execute("UPDATE commit_items SET state = 'expired' WHERE transaction_uid = ? "
                             "AND state = 'awaiting'", (uid,))
                conn.execute("UPDATE commit_requests SET state = 'expired', updated_at = ? "
                             "WHERE transaction_uid = ?", (now, uid))
        return uids

    def next_deadline(self) -> float | None:
        with self._lock:
            row = self._conn.execute("SELECT MIN(deadline) FROM commit_requests WHERE state = 'sent'").fetchone()
        return None if row[0] is None else float(row[0])

    def summary(self, max_rerequests: int | None = None) -> dict[str, int]:
        """Counts for `dicom-agent status`."""
        with self._lock:
            c = self._conn
            out = {
                "requests_pending": c.execute("SELECT COUNT(*) FROM commit_requests WHERE state = 'pending'").fetchone()[0],
                "requests_outstanding": c.execute("SELECT COUNT(*) FROM commit_requests WHERE state = 'sent'").fetchone()[0],
                "requests_done": c.execute("SELECT COUNT(*) FROM commit_requests WHERE state = 'done'").fetchone()[0],
                "requests_expired": c.execute("SELECT COUNT(*) FROM commit_requests WHERE state = 'expired'").fetchone()[0],
                "instances_awaiting": c.execute(
                    "SELECT COUNT(DISTINCT sop_instance_uid) FROM commit_items WHERE state = 'awaiting'").fetchone()[0],
                "reports_pending": c.execute("SELECT COUNT(*) FROM commit_reports WHERE state = 'pending'").fetchone()[0],
                "reports_sent": c.execute("SELECT COUNT(*) FROM commit_reports WHERE state = 'sent'").fetchone()[0],
            }
            has_instances = c.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'instances'").fetchone()
            if has_instances:
                out["instances_committed"] = c.execute(
                    "SELECT COUNT(*) FROM instances WHERE committed_at IS NOT NULL").fetchone()[0]
                out["instances_uncommitted"] = c.execute(
                    "SELECT COUNT(*) FROM instances WHERE committed_at IS NULL").fetchone()[0]
        return out

    # ================================================================== housekeeping

    def purge_finished(self, older_than: float) -> tuple[int, int]:
        """Delete requests DONE or EXPIRED (with their items) and reports SENT more than `older_than`
        seconds ago; returns (requests, reports). A report for a purged Transaction UID is then
        acknowledged as unknown, and failures counted toward `max_rerequests` are forgotten with it."""
        cutoff = self._clock() - older_than
        with self._lock, transaction(self._conn) as conn:
            conn.execute(
                "DELETE FROM commit_items WHERE transaction_uid IN (SELECT transaction_uid FROM commit_requests "
                "WHERE state IN ('done', 'expired') AND updated_at < ?)", (cutoff,))
            requests = conn.execute(
                "DELETE FROM commit_requests WHERE state IN ('done', 'expired') AND updated_at < ?", (cutoff,)
            ).rowcount
            reports = conn.execute(
                "DELETE FROM commit_reports WHERE state = 'sent' AND updated_at < ?", (cutoff,)).rowcount
        return requests, reports

    def purge_settled_store_jobs(self, older_than: float) -> int:
        """Delete DONE `store` jobs finished more than `older_than` seconds ago whose instance is
        committed or no longer stored. Those of an instance still awaiting commitment are kept: they
        are how `candidates` knows it was forwarded."""
        cutoff = self._clock() - older_than
        with self._lock, transaction(self._conn) as conn:
            return conn.execute(
                "DELETE FROM queue_jobs WHERE kind = 'store' AND state = 'done' AND updated_at < ? "
                "AND NOT EXISTS (SELECT 1 FROM instances AS i WHERE i.committed_at IS NULL "
                "AND i.sop_instance_uid = json_extract(queue_jobs.payload, '$.uid'))", (cutoff,)
            ).rowcount

    # ================================================================== performer (SCP) side

    def add_report(
        self,
        transaction_uid: str,
        calling_ae: str,
        route: str | None,
        committed: Sequence[tuple[str, str]],
        failed: Sequence[tuple[str, str, int]],
        *,
        enqueue: Callable[[sqlite3.Connection], int] | None = None,
    ) -> None:
        """Persist the outcome of a received N-ACTION (a repeated Transaction UID replaces the earlier
        outcome); `enqueue` queues its `commit-report` job in the same transaction."""
        now = self._clock()
        with self._lock, transaction(self._conn) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO commit_reports (transaction_uid, calling_ae, route, committed, failed, "
                "state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                (transaction_uid, calling_ae, route, json.dumps([list(x) for x in committed]),
                 json.dumps([list(x) for x in failed]), now, now),
            )
            if enqueue is not None:
                self._attach_job(conn, transaction_uid, calling_ae, enqueue(conn))

    def route_report(self, transaction_uid: str, calling_ae: str, route: str,
                     enqueue: Callable[[sqlite3.Connection], int]) -> None:
        """Give a PENDING report without a job its route and job (same transaction)."""
        now = self._clock()
        with self._lock, transaction(self._conn) as conn:
            conn.execute("UPDATE commit_reports SET route = ?, updated_at = ? WHERE transaction_uid = ? "
                         "AND calling_ae = ?", (route, now, transaction_uid, calling_ae))
            self._attach_job(conn, transaction_uid, calling_ae, enqueue(conn))

    @staticmethod
    def _attach_job(conn: sqlite3.Connection, tuid: str, ae: str, job_id: int) -> None:
        conn.execute("UPDATE commit_reports SET job_id = ? WHERE transaction_uid = ? AND calling_ae = ?",
                     (job_id, tuid, ae))

    def report(self, transaction_uid: str, calling_ae: str) -> ReportRow | None:
        with self._lock:
            r = self._conn.execute(
                "SELECT transaction_uid, calling_ae, route, committed, failed, state, job_id, created_at "
                "FROM commit_reports WHERE transaction_uid = ? AND calling_ae = ?", (transaction_uid, calling_ae)
            ).fetchone()
        if r is None:
            return None
        return ReportRow(r[0], r[1], r[2], tuple(tuple(x) for x in json.loads(r[3])),  # type: ignore[misc]
                         tuple(tuple(x) for x in json.loads(r[4])), r[5], r[6], r[7])  # type: ignore[misc]

    def reports(self, state: str | None = None) -> list[ReportRow]:
        with self._lock:
            keys = self._conn.execute(
                "SELECT transaction_uid, calling_ae FROM commit_reports"
                + (" WHERE state = ?" if state else "") + " ORDER BY created_at",
                (state,) if state else (),
            ).fetchall()
        return [r for r in (self.report(k[0], k[1]) for k in keys) if r is not None]

    def unrouted_reports(self) -> list[ReportRow]:
        return [r for r in self.reports("pending") if r.job_id is None]

    def report_sent(self, transaction_uid: str, calling_ae: str) -> int | None:
        """Mark a report SENT; returns its queue job id (for the caller to drop) if any."""
        now = self._clock()
        with self._lock, transaction(self._conn) as conn:
            conn.execute("UPDATE commit_reports SET state = 'sent', updated_at = ? WHERE transaction_uid = ? "
                         "AND calling_ae = ?", (now, transaction_uid, calling_ae))
            row = conn.execute("SELECT job_id FROM commit_reports WHERE transaction_uid = ? AND calling_ae = ?",
                               (transaction_uid, calling_ae)).fetchone()
        return None if row is None else row[0]
