"""The worklist tables: the RIS answers cache, locally added items, and steps already performed.

Invariants:
- Items are stored as data set bytes (Explicit VR Little Endian, each with its own Specific Character
  Set), never re-encoded: what the RIS sent is what the MWL SCP serves.
- A successful refresh replaces the whole cached set for its source in one transaction together with
  `fetched_at`; a failed refresh only records the attempt and the error, so the previous answers stay
  served (and are reported stale after `stale_after`).
- `worklist_version.value` increases on every change to these tables (from the agent or from a CLI
  command beside it), so a reader can cheaply tell whether its decoded copy is still current.
- A step is "performed" (PS3.4 F, seed S-34) once an MPPS for it is COMPLETED or DISCONTINUED; the
  reference (Study Instance UID, Accession Number, Requested Procedure ID, SPS ID) is kept in
  `worklist_done` and such items are no longer served.
- Pure sqlite3; callers in trio go through `Blocking.run`.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager as contextlib_contextmanager
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from agent.store.db import create_tables, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS worklist_cache (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS worklist_cache_source ON worklist_cache (source);
CREATE TABLE IF NOT EXISTS worklist_fetch (
    source TEXT PRIMARY KEY,
    fetched_at REAL,
    last_attempt REAL,
    last_error TEXT,
    count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS worklist_local (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    data BLOB NOT NULL,
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS worklist_done (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL DEFAULT '',
    accession TEXT NOT NULL DEFAULT '',
    requested_procedure_id TEXT NOT NULL DEFAULT '',
    sps_id TEXT NOT NULL DEFAULT '',
    mpps_uid TEXT NOT NULL,
    status TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS worklist_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO worklist_version (id, value) VALUES (1, 0)
"""


@dataclass(frozen=True, slots=True)
class FetchState:
    """What the last refreshes of one source did."""

    source: str
    fetched_at: float | None  # last successful refresh
    last_attempt: float | None
    last_error: str | None
    count: int

    def is_stale(self, now: float, stale_after: float) -> bool:
        return self.fetched_at is None or now - self.fetched_at > stale_after


@dataclass(frozen=True, slots=True)
class StepRef:
    """A scheduled step as an MPPS names it (one Scheduled Step Attributes Sequence item)."""

    study_uid: str = ""
    accession: str = ""
    requested_procedure_id: str = ""
    sps_id: str = ""

    def refers_to(self, item: StepRef) -> bool:
        """Same step: every identifier both sides have agrees, and at least the study or accession does."""
        pairs = [
            (self.study_uid, item.study_uid),
            (self.accession, item.accession),
            (self.requested_procedure_id, item.requested_procedure_id),
            (self.sps_id, item.sps_id),
        ]
        if any(a and b and a != b for a, b in pairs):
            return False
        return bool((self.study_uid and item.study_uid) or (self.accession and item.accession))


class WorklistStore:
    """The worklist tables over the agent's database connection."""

    def __init__(self, conn: sqlite3.Connection, *, clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._clock = clock
        self._lock = threading.RLock()
        with self._lock, transaction(conn):
            create_tables(conn, _SCHEMA)

    @contextlib_contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, transaction(self._conn) as conn:
            yield conn
            conn.execute("UPDATE worklist_version SET value = value + 1 WHERE id = 1")

    # -- the RIS cache -----------------------------------------------------------------------------

    def replace_cache(self, source: str, items: Iterable[bytes], *, at: float | None = None) -> int:
        """Replace the cached answers of `source` by `items` (one transaction); return their number."""
        now = self._clock() if at is None else at
        rows = [(source, bytes(b)) for b in items]
        with self._write() as conn:
            conn.execute("DELETE FROM worklist_cache WHERE source = ?", (source,))
            conn.executemany("INSERT INTO worklist_cache (source, data) VALUES (?, ?)", rows)
            conn.execute(
                "INSERT INTO worklist_fetch (source, fetched_at, last_attempt, last_error, count) "
                "VALUES (?, ?, ?, NULL, ?) ON CONFLICT (source) DO UPDATE SET fetched_at = excluded.fetched_at, "
                "last_attempt = excluded.last_attempt, last_error = NULL, count = excluded.count",
                (source, now, now, len(rows)),
            )
        return len(rows)

    def record_failure(self, source: str, error: str, *, at: float | None = None) -> None:
        now = self._clock() if at is None else at
        with self._lock, transaction(self._conn) as conn:
            conn.execute(
                "INSERT INTO worklist_fetch (source, fetched_at, last_attempt, last_error, count) "
                "VALUES (?, NULL, ?, ?, 0) ON CONFLICT (source) DO UPDATE SET "
                "last_attempt = excluded.last_attempt, last_error = excluded.last_error",
                (source, now, error),
            )

    def fetch_state(self, source: str) -> FetchState:
        with self._lock:
            row = self._conn.execute(
                "SELECT fetched_at, last_attempt, last_error, count FROM worklist_fetch WHERE source = ?",
                (source,),
            ).fetchone()
        if row is None:
            return FetchState(source, None, None, None, 0)
        return FetchState(source, row[0], row[1], row[2], row[3])

    def cached(self, source: str | None = None) -> list[bytes]:
        with self._lock:
            if source is None:
                rows = self._conn.execute("SELECT data FROM worklist_cache ORDER BY id").fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT data FROM worklist_cache WHERE source = ? ORDER BY id", (source,)
                ).fetchall()
        return [bytes(r[0]) for r in rows]

    def cached_entries(self) -> list[tuple[float, bytes]]:
        """Every cached answer with the time its source last answered (to tell the freshest copy)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT COALESCE(f.fetched_at, 0), c.data FROM worklist_cache AS c "
                "LEFT JOIN worklist_fetch AS f ON f.source = c.source ORDER BY c.id"
            ).fetchall()
        return [(float(r[0]), bytes(r[1])) for r in rows]

    # -- local items -------------------------------------------------------------------------------

    def add_local(self, name: str, data: bytes) -> None:
        """Add (or replace) a local item under `name`."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO worklist_local (name, data, added_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET data = excluded.data, added_at = excluded.added_at",
                (name, bytes(data), self._clock()),
            )

    def remove_local(self, name: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM worklist_local WHERE name = ?", (name,)).rowcount > 0

    def local_entries(self) -> list[tuple[float, bytes]]:
        """Every local item with the time it was added."""
        with self._lock:
            rows = self._conn.execute("SELECT added_at, data FROM worklist_local ORDER BY id").fetchall()
        return [(float(r[0]), bytes(r[1])) for r in rows]

    def local(self) -> list[tuple[str, bytes]]:
        with self._lock:
            rows = self._conn.execute("SELECT name, data FROM worklist_local ORDER BY id").fetchall()
        return [(r[0], bytes(r[1])) for r in rows]

    # -- performed steps ---------------------------------------------------------------------------

    def mark_performed(self, refs: Iterable[StepRef], mpps_uid: str, status: str) -> None:
        rows = [(r.study_uid, r.accession, r.requested_procedure_id, r.sps_id, mpps_uid, status, self._clock())
                for r in refs]
        if not rows:
            return
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO worklist_done (study_uid, accession, requested_procedure_id, sps_id, mpps_uid, "
                "status, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def performed(self) -> list[StepRef]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT study_uid, accession, requested_procedure_id, sps_id FROM worklist_done"
            ).fetchall()
        return [StepRef(*r) for r in rows]

    def performed_entries(self) -> list[tuple[int, StepRef, float]]:
        """(row id, step, when it was performed) of every performed step."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, study_uid, accession, requested_procedure_id, sps_id, at FROM worklist_done ORDER BY id"
            ).fetchall()
        return [(int(r[0]), StepRef(r[1], r[2], r[3], r[4]), float(r[5])) for r in rows]

    def forget_performed(self, ids: Iterable[int]) -> int:
        """Delete performed-step rows by id (once no source lists their step any more)."""
        rows = [(i,) for i in ids]
        if not rows:
            return 0
        with self._write() as conn:
            return conn.executemany("DELETE FROM worklist_done WHERE id = ?", rows).rowcount

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    # -- change detection --------------------------------------------------------------------------

    def version(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT value FROM worklist_version WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def summary(self) -> Mapping[str, int]:
        with self._lock:
            c = self._conn
            return {
                "cached": c.execute("SELECT count(*) FROM worklist_cache").fetchone()[0],
                "local": c.execute("SELECT count(*) FROM worklist_local").fetchone()[0],
                "performed": c.execute("SELECT count(*) FROM worklist_done").fetchone()[0],
            }


__all__ = ["FetchState", "StepRef", "WorklistStore"]
