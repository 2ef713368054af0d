"""MPPS instances (PS3.4 F.7): the ones the agent created as SCU and the ones peers created on its SCP.

Invariants:
- One row per SOP Instance UID and origin ('local': we are the performer; 'remote': a peer N-CREATEd
  it on our SCP). The attribute set is stored as data set bytes (Explicit VR LE, its own charset).
- The state machine is PS3.4 F.1.5 (Table F.1-3): IN PROGRESS -> COMPLETED | DISCONTINUED, nothing
  after a final state. `update` refuses to change a final instance (the SCP's 0110).
- Rows live until `expires_at` (created + `[mpps] instance_lifetime`); `purge_expired` removes them.
- Pure sqlite3; callers in trio go through `Blocking.run`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from agent.errors import AgentError
from agent.store.db import transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mpps_instances (
    uid TEXT NOT NULL,
    origin TEXT NOT NULL,
    status TEXT NOT NULL,
    data BLOB NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (uid, origin)
)
"""


class PpsStatus(StrEnum):
    """Performed Procedure Step Status (0040,0252), PS3.3 C.4.14."""

    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"

    @property
    def final(self) -> bool:
        return self is not PpsStatus.IN_PROGRESS


class MppsStoreError(AgentError):
    pass


class DuplicateInstance(MppsStoreError):
    pass


class NoSuchInstance(MppsStoreError):
    pass


class NoLongerUpdatable(MppsStoreError):
    pass


@dataclass(frozen=True, slots=True)
class MppsInstance:
    uid: str
    origin: str
    status: PpsStatus
    data: bytes
    created_at: float
    updated_at: float
    expires_at: float


class MppsStore:
    def __init__(self, conn: sqlite3.Connection, *, lifetime: float = 7 * 86400.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._lifetime = lifetime
        self._clock = clock
        self._lock = threading.RLock()
        with self._lock, transaction(conn):
            conn.execute(_SCHEMA)

    def create(self, uid: str, origin: str, status: PpsStatus, data: bytes) -> MppsInstance:
        """Insert a new instance; DuplicateInstance if (uid, origin) exists and has not expired."""
        now = self._clock()
        with self._lock, transaction(self._conn) as conn:
            row = conn.execute(
                "SELECT expires_at FROM mpps_instances WHERE uid = ? AND origin = ?", (uid, origin)
            ).fetchone()
            if row is not None:
                if row[0] > now:
                    raise DuplicateInstance(f"MPPS instance {uid} already exists")
                conn.execute("DELETE FROM mpps_instances WHERE uid = ? AND origin = ?", (uid, origin))
            conn.execute(
                "INSERT INTO mpps_instances (uid, origin, status, data, created_at, updated_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (uid, origin, str(status), bytes(data), now, now, now + self._lifetime),
            )
        return MppsInstance(uid, origin, status, bytes(data), now, now, now + self._lifetime)

    def get(self, uid: str, origin: str) -> MppsInstance | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT uid, origin, status, data, created_at, updated_at, expires_at FROM mpps_instances "
                "WHERE uid = ? AND origin = ? AND expires_at > ?",
                (uid, origin, self._clock()),
            ).fetchone()
        if row is None:
            return None
        return MppsInstance(row[0], row[1], PpsStatus(row[2]), bytes(row[3]), row[4], row[5], row[6])

    def update(self, uid: str, origin: str, status: PpsStatus, data: bytes) -> MppsInstance:
        """Replace the attributes and status; NoSuchInstance / NoLongerUpdatable per F.1.5."""
        now = self._clock()
        with self._lock, transaction(self._conn) as conn:
            current = self.get(uid, origin)
            if current is None:
                raise NoSuchInstance(f"no MPPS instance {uid}")
            if current.status.final:
                raise NoLongerUpdatable(f"MPPS instance {uid} is {current.status} and may no longer be updated")
            conn.execute(
                "UPDATE mpps_instances SET status = ?, data = ?, updated_at = ? WHERE uid = ? AND origin = ?",
                (str(status), bytes(data), now, uid, origin),
            )
        return MppsInstance(uid, origin, status, bytes(data), current.created_at, now, current.expires_at)

    def list(self, origin: str | None = None) -> list[MppsInstance]:
        with self._lock:
            sql = ("SELECT uid, origin, status, data, created_at, updated_at, expires_at FROM mpps_instances "
                   "WHERE expires_at > ?")
            args: tuple = (self._clock(),)
            if origin is not None:
                sql += " AND origin = ?"
                args += (origin,)
            rows = self._conn.execute(sql + " ORDER BY created_at", args).fetchall()
        return [MppsInstance(r[0], r[1], PpsStatus(r[2]), bytes(r[3]), r[4], r[5], r[6]) for r in rows]

    def purge_expired(self) -> int:
        with self._lock, transaction(self._conn) as conn:
            return conn.execute("DELETE FROM mpps_instances WHERE expires_at <= ?", (self._clock(),)).rowcount


__all__ = ["DuplicateInstance", "MppsInstance", "MppsStore", "MppsStoreError", "NoLongerUpdatable",
           "NoSuchInstance", "PpsStatus"]
