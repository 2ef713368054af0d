"""Durable print jobs (PS3.4 H.4.6 Print Job SOP instances) in the agent's SQLite database.

Invariants:
- A job is one row of `print_jobs`, keyed by its Print Job SOP Instance UID, which is also the
  `drivers.base.Film.job_id` the driver sees. The row is committed, and the rendered film file it
  names is already on disk (fsynced), before the Print SCP answers the N-ACTION that created it.
- States: PENDING -> SUBMITTING -> PRINTING -> DONE, or -> FAILED from any of them. SUBMITTING is
  written (committed) *before* the driver's `submit` is called and PRINTING with the driver's reference
  after it returns; a job found SUBMITTING at start-up is therefore one whose submit may or may not have
  reached the device, and the worker asks the driver (`lookup(job_id)`) before submitting again: each
  film prints once.
- FAILED goes back to PENDING only through `retry` (the operator's `dicom-agent printer retry`).
- `printer_status` keeps the last status the worker read from the driver, for the CLI.
- Pure sqlite3 with its own lock: callers in trio go through `Blocking.run`; a CLI process uses its own
  connection and serialises on SQLite's write lock (`transaction()` is BEGIN IMMEDIATE).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from agent.errors import AgentError
from agent.store.db import create_tables, transaction

__all__ = ["JobState", "PrintJob", "PrintJobError", "PrintJobStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS print_jobs (
    id           TEXT PRIMARY KEY,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'submitting', 'printing', 'done', 'failed')),
    film_path    TEXT NOT NULL,
    film_box_uid TEXT NOT NULL,
    session_uid  TEXT NOT NULL,
    calling_ae   TEXT NOT NULL,
    copies       INTEGER NOT NULL,
    priority     TEXT NOT NULL,
    label        TEXT NOT NULL,
    film_size_id TEXT NOT NULL,
    driver_ref   TEXT,
    info         TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT NOT NULL DEFAULT '',
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS print_jobs_state ON print_jobs (state, created_at);
CREATE TABLE IF NOT EXISTS printer_status (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    status  TEXT NOT NULL,
    info    TEXT NOT NULL,
    seen_at REAL NOT NULL
);
"""

_COLUMNS = (
    "id, state, film_path, film_box_uid, session_uid, calling_ae, copies, priority, label, film_size_id, "
    "driver_ref, info, attempts, last_error, created_at, updated_at"
)


class PrintJobError(AgentError):
    """An unknown print job, or an operation its state does not allow."""


class JobState(StrEnum):
    PENDING = "pending"
    SUBMITTING = "submitting"
    PRINTING = "printing"
    DONE = "done"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED)


@dataclass(frozen=True, slots=True)
class PrintJob:
    id: str
    state: JobState
    film_path: str
    film_box_uid: str
    session_uid: str
    calling_ae: str
    copies: int
    priority: str
    label: str
    film_size_id: str
    driver_ref: str | None
    info: str
    attempts: int
    last_error: str
    created_at: float
    updated_at: float


def _job(row: sqlite3.Row | tuple) -> PrintJob:
    values = list(row)
    values[1] = JobState(values[1])
    return PrintJob(*values)


class PrintJobStore:
    def __init__(self, conn: sqlite3.Connection, *, clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._clock = clock
        self._lock = threading.RLock()
        with self._lock, transaction(conn):
            create_tables(conn, _SCHEMA)

    # ------------------------------------------------------------ the SCP

    def add(self, job_id: str, film_path: str, *, film_box_uid: str, session_uid: str, calling_ae: str,
            copies: int = 1, priority: str = "MED", label: str = "", film_size_id: str = "") -> PrintJob:
        """Record a new PENDING job (its film file must already be durable)."""
        now = self._clock()
        with self._lock, transaction(self._conn) as conn:
            conn.execute(
                f"INSERT INTO print_jobs ({_COLUMNS}) VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, NULL, "
                "'NORMAL', 0, '', ?, ?)",
                (job_id, film_path, film_box_uid, session_uid, calling_ae, copies, priority, label,
                 film_size_id, now, now),
            )
        job = self.get(job_id)
        assert job is not None
        return job

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Several `add`s in one transaction: all recorded or none."""
        with self._lock, transaction(self._conn):
            yield

    # ------------------------------------------------------------ the CLI

    def list(self, state: JobState | str | None = None, limit: int = 100) -> list[PrintJob]:
        """Jobs, newest first; only those in `state` when given."""
        with self._lock:
            if state is None:
                rows = self._conn.execute(
                    f"SELECT {_COLUMNS} FROM print_jobs ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = self._conn.execute(
                    f"SELECT {_COLUMNS} FROM print_jobs WHERE state = ? ORDER BY created_at DESC, rowid DESC "
                    "LIMIT ?", (str(JobState(state)), limit),
                ).fetchall()
        return [_job(r) for r in rows]

    def get(self, job_id: str) -> PrintJob | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLUMNS} FROM print_jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def retry(self, job_id: str) -> PrintJob:
        """A FAILED job back to PENDING (attempts kept, error cleared)."""
        with self._lock, transaction(self._conn) as conn:
            row = conn.execute("SELECT state FROM print_jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise PrintJobError(f"no print job {job_id}")
            if row[0] != JobState.FAILED:
                raise PrintJobError(f"print job {job_id} is {row[0]}, only a failed job can be retried")
            conn.execute(
                "UPDATE print_jobs SET state = 'pending', driver_ref = NULL, info = 'NORMAL', last_error = '', "
                "updated_at = ? WHERE id = ?", (self._clock(), job_id),
            )
        job = self.get(job_id)
        assert job is not None
        return job

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT state, COUNT(*) FROM print_jobs GROUP BY state").fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    # ------------------------------------------------------------ the worker

    def unfinished(self) -> list[PrintJob]:
        """PENDING, SUBMITTING and PRINTING jobs: those already at the driver first, then by Print
        Priority (2000,0020: HIGH, MED, LOW), then oldest first (the worker's to-do list)."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM print_jobs WHERE state IN ('pending', 'submitting', 'printing') "
                "ORDER BY state = 'pending', CASE priority WHEN 'HIGH' THEN 0 WHEN 'MED' THEN 1 ELSE 2 END, "
                "created_at, rowid"
            ).fetchall()
        return [_job(r) for r in rows]

    def film_ids(self) -> set[str]:
        """Ids of the jobs whose film file is still needed (every job not DONE)."""
        with self._lock:
            rows = self._conn.execute("SELECT id FROM print_jobs WHERE state != 'done'").fetchall()
        return {str(r[0]) for r in rows}

    def mark_submitting(self, job_id: str) -> None:
        """Committed before `driver.submit` (see module invariants); counts an attempt."""
        self._set(job_id, "state = 'submitting', attempts = attempts + 1", ())

    def mark_printing(self, job_id: str, driver_ref: str, info: str = "NORMAL") -> None:
        self._set(job_id, "state = 'printing', driver_ref = ?, info = ?", (driver_ref, info))

    def mark_done(self, job_id: str, info: str = "NORMAL") -> None:
        self._set(job_id, "state = 'done', info = ?", (info,))

    def mark_failed(self, job_id: str, info: str, error: str) -> None:
        self._set(job_id, "state = 'failed', info = ?, last_error = ?", (info, error))

    def mark_pending(self, job_id: str, info: str, error: str = "") -> None:
        """Back to PENDING (the printer refused for now: it is held until the printer is NORMAL)."""
        self._set(job_id, "state = 'pending', driver_ref = NULL, info = ?, last_error = ?", (info, error))

    def set_info(self, job_id: str, info: str) -> None:
        self._set(job_id, "info = ?", (info,))

    def _set(self, job_id: str, assignments: str, params: tuple) -> None:
        with self._lock, transaction(self._conn) as conn:
            cur = conn.execute(f"UPDATE print_jobs SET {assignments}, updated_at = ? WHERE id = ?",
                               (*params, self._clock(), job_id))
            if cur.rowcount != 1:
                raise PrintJobError(f"no print job {job_id}")

    # ------------------------------------------------------------ printer status

    def record_printer_status(self, status: str, info: str) -> None:
        with self._lock, transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO printer_status (id, status, info, seen_at) VALUES (1, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET status = excluded.status, info = excluded.info, "
                "seen_at = excluded.seen_at", (status, info, self._clock()),
            )

    def printer_status(self) -> tuple[str, str, float] | None:
        """(Printer Status, Printer Status Info, time seen) as the worker last read it, or None."""
        with self._lock:
            row = self._conn.execute("SELECT status, info, seen_at FROM printer_status WHERE id = 1").fetchone()
        return None if row is None else (str(row[0]), str(row[1]), float(row[2]))
