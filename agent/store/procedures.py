"""Durable state of the modality workflow: one row per device procedure, one per image.

Invariants:
- A procedure is keyed by the device's `procedure_key`, an image by `(procedure_key, image_key)`; the
  device never reuses a key, so an event for a known key is a replay and changes nothing.
- Every UID a procedure uses (Study, Series, MPPS SOP Instance, each SOP Instance) is written here in a
  committed transaction before anything carrying it is stored or queued, so a replayed event or a
  restarted agent uses the same UID again: never a second instance or a second MPPS.
- States (`ProcedureState`) only move forward along
  selected -> mpps-created -> acquiring -> acquired -> stored -> committed -> completed,
  or to one of the terminal states discontinued (the device aborted) and failed (no worklist item
  and unscheduled procedures refused, or nothing usable to start from). Image states:
  pending (UID reserved) -> stored | failed.
- Pure sqlite3 on the agent's shared connection; writers run inside the caller's `transaction()` so a
  state change commits together with the queue jobs it implies. The agent calls it through
  `Blocking.run`; the CLI reads it on an existing database only.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent.store.db import transaction

__all__ = [
    "ImageRow", "ImageState", "ProcedureRow", "ProcedureState", "ProcedureStore", "TERMINAL",
    "procedure_report",
]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS procedures (
        procedure_key       TEXT PRIMARY KEY,
        state               TEXT NOT NULL,
        scheduled           INTEGER NOT NULL,
        item                BLOB,
        patient             TEXT NOT NULL DEFAULT '{}',
        accession_number    TEXT NOT NULL DEFAULT '',
        patient_id          TEXT NOT NULL DEFAULT '',
        patient_name        TEXT NOT NULL DEFAULT '',
        study_instance_uid  TEXT,
        series_instance_uid TEXT,
        mpps_uid            TEXT,
        pps_id              TEXT NOT NULL DEFAULT '',
        started_at          REAL NOT NULL,
        ended_at            REAL,
        description         TEXT NOT NULL DEFAULT '',
        operator            TEXT NOT NULL DEFAULT '',
        reason              TEXT NOT NULL DEFAULT '',
        error               TEXT NOT NULL DEFAULT '',
        print_job           INTEGER,
        step_study          TEXT NOT NULL DEFAULT '',
        step_accession      TEXT NOT NULL DEFAULT '',
        step_sps            TEXT NOT NULL DEFAULT '',
        created_at          REAL NOT NULL,
        updated_at          REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS procedures_state ON procedures (state)",
    "CREATE INDEX IF NOT EXISTS procedures_step ON procedures (step_study, step_accession, step_sps)",
    """CREATE TABLE IF NOT EXISTS procedure_images (
        procedure_key    TEXT NOT NULL REFERENCES procedures (procedure_key) ON DELETE CASCADE,
        image_key        TEXT NOT NULL,
        sop_instance_uid TEXT NOT NULL UNIQUE,
        sop_class_uid    TEXT NOT NULL,
        instance_number  INTEGER NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('pending', 'stored', 'failed')),
        error            TEXT NOT NULL DEFAULT '',
        created_at       REAL NOT NULL,
        updated_at       REAL NOT NULL,
        PRIMARY KEY (procedure_key, image_key)
    )""",
    """CREATE TABLE IF NOT EXISTS procedure_measurements (
        procedure_key TEXT NOT NULL REFERENCES procedures (procedure_key) ON DELETE CASCADE,
        name          TEXT NOT NULL,
        value         TEXT NOT NULL,
        unit          TEXT NOT NULL DEFAULT '',
        recorded_at   REAL NOT NULL,
        PRIMARY KEY (procedure_key, name)
    )""",
)


class ProcedureState(StrEnum):
    SELECTED = "selected"
    MPPS_CREATED = "mpps-created"
    ACQUIRING = "acquiring"
    ACQUIRED = "acquired"
    STORED = "stored"
    COMMITTED = "committed"
    COMPLETED = "completed"
    DISCONTINUED = "discontinued"
    FAILED = "failed"


TERMINAL = frozenset({ProcedureState.COMPLETED, ProcedureState.DISCONTINUED, ProcedureState.FAILED})
#: States in which the device may still send images or end the procedure.
OPEN = frozenset({ProcedureState.SELECTED, ProcedureState.MPPS_CREATED, ProcedureState.ACQUIRING})


class ImageState(StrEnum):
    PENDING = "pending"
    STORED = "stored"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ImageRow:
    image_key: str
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int
    state: ImageState
    error: str


@dataclass(frozen=True, slots=True)
class ProcedureRow:
    procedure_key: str
    state: ProcedureState
    scheduled: bool
    item: bytes | None  # the selected worklist item (Explicit VR LE), None when unscheduled
    patient: Mapping[str, str]  # patient attributes by keyword (unscheduled: the device's data)
    accession_number: str
    patient_id: str
    patient_name: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    mpps_uid: str | None  # None without [mpps]
    pps_id: str
    started_at: float
    ended_at: float | None
    description: str
    operator: str
    reason: str  # the device's discontinuation reason
    error: str  # why the procedure failed, or the last problem worth showing
    print_job: int | None
    created_at: float
    updated_at: float
    images: tuple[ImageRow, ...] = ()
    measurements: tuple[tuple[str, str, str], ...] = ()  # (name, value, unit)

    @property
    def stored_images(self) -> list[ImageRow]:
        return [i for i in self.images if i.state is ImageState.STORED]


_PROC_COLUMNS = (
    "procedure_key", "state", "scheduled", "item", "patient", "accession_number", "patient_id",
    "patient_name", "study_instance_uid", "series_instance_uid", "mpps_uid", "pps_id", "started_at",
    "ended_at", "description", "operator", "reason", "error", "print_job", "created_at", "updated_at",
)


class ProcedureStore:
    """The workflow tables on the agent's connection (blocking; see the module invariants)."""

    def __init__(self, conn: sqlite3.Connection, *, clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._clock = clock
        self._lock = threading.RLock()
        with self._lock, transaction(conn):
            for statement in _SCHEMA:
                if "procedures_step" in statement:
                    self._add_missing_columns(conn)  # the index needs them
                conn.execute(statement)

    @staticmethod
    def _add_missing_columns(conn: sqlite3.Connection) -> None:
        """Columns added after the table was first made (a database from an earlier build keeps working)."""
        have = {r[1] for r in conn.execute("PRAGMA table_info(procedures)")}
        for column in ("step_study", "step_accession", "step_sps"):
            if column not in have:
                conn.execute(f"ALTER TABLE procedures ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")

    # -- writing (inside the caller's transaction) ---------------------------------------------------

    def insert(self, *, procedure_key: str, state: ProcedureState, scheduled: bool, item: bytes | None,
               patient: Mapping[str, str], accession_number: str = "", study_instance_uid: str | None,
               series_instance_uid: str | None, mpps_uid: str | None, pps_id: str, started_at: float,
               description: str = "", operator: str = "", error: str = "") -> None:
        now = self._clock()
        step = ("", "", "")
        if item is not None:
            from agent.services.dataset import decode  # the store stays free of service imports at load

            step = step_identity(decode(item, eager=True))
        with self._lock, transaction(self._conn) as conn:
            conn.execute(
                f"INSERT INTO procedures ({', '.join(_PROC_COLUMNS)}, step_study, step_accession, step_sps) "
                f"VALUES ({', '.join('?' * (len(_PROC_COLUMNS) + 3))})",
                (procedure_key, str(state), int(scheduled), item, json.dumps(dict(patient)), accession_number,
                 patient.get("PatientID", ""), patient.get("PatientName", ""), study_instance_uid,
                 series_instance_uid, mpps_uid, pps_id, started_at, None, description, operator, "", error,
                 None, now, now, *step),
            )

    def purge_finished(self, older_than: float) -> int:
        """Delete procedures that ended (completed, discontinued, failed) and did not change for
        `older_than` seconds, with their images and measurements. Their instances stay in the store
        (retention there is `[storage] retention`); a device does not re-send an event that old."""
        cutoff = self._clock() - older_than
        finished = tuple(str(state) for state in TERMINAL)
        with self._lock, transaction(self._conn) as conn:
            cursor = conn.execute(
                f"DELETE FROM procedures WHERE state IN ({', '.join('?' * len(finished))}) AND updated_at < ?",
                (*finished, cutoff),
            )
            return cursor.rowcount

    def set_state(self, procedure_key: str, state: ProcedureState, **fields: Any) -> None:
        """Move a procedure to `state`, with optional `ended_at`, `reason`, `error`, `print_job`."""
        allowed = {"ended_at", "reason", "error", "print_job"}
        if not set(fields) <= allowed:
            raise ValueError(f"unknown procedure fields: {sorted(set(fields) - allowed)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._lock, transaction(self._conn) as conn:
            conn.execute(
                f"UPDATE procedures SET state = ?, updated_at = ?{', ' + sets if sets else ''} "
                "WHERE procedure_key = ?",
                (str(state), self._clock(), *fields.values(), procedure_key),
            )

    def reserve_image(self, procedure_key: str, image_key: str, sop_instance_uid: str, sop_class_uid: str) -> ImageRow:
        """The image's row, reserving `sop_instance_uid` for it unless it already has one (a replay)."""
        with self._lock, transaction(self._conn) as conn:
            found = self.image(procedure_key, image_key)
            if found is not None:
                return found
            number = conn.execute(
                "SELECT COALESCE(MAX(instance_number), 0) + 1 FROM procedure_images WHERE procedure_key = ?",
                (procedure_key,),
            ).fetchone()[0]
            now = self._clock()
            conn.execute(
                "INSERT INTO procedure_images (procedure_key, image_key, sop_instance_uid, sop_class_uid, "
                "instance_number, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                (procedure_key, image_key, sop_instance_uid, sop_class_uid, number, now, now),
            )
        found = self.image(procedure_key, image_key)
        assert found is not None
        return found

    def set_image(self, procedure_key: str, image_key: str, state: ImageState, error: str = "",
                  sop_class_uid: str | None = None) -> None:
        with self._lock, transaction(self._conn) as conn:
            conn.execute(
                "UPDATE procedure_images SET state = ?, error = ?, updated_at = ?, "
                "sop_class_uid = COALESCE(?, sop_class_uid) WHERE procedure_key = ? AND image_key = ?",
                (str(state), error, self._clock(), sop_class_uid, procedure_key, image_key),
            )

    def record_measurement(self, procedure_key: str, name: str, value: str, unit: str) -> None:
        with self._lock, transaction(self._conn) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO procedure_measurements (procedure_key, name, value, unit, recorded_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (procedure_key, name, value, unit, self._clock()),
            )

    # -- reading ---------------------------------------------------------------------------------------

    def image(self, procedure_key: str, image_key: str) -> ImageRow | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT image_key, sop_instance_uid, sop_class_uid, instance_number, state, error "
                "FROM procedure_images WHERE procedure_key = ? AND image_key = ?",
                (procedure_key, image_key),
            ).fetchone()
        return None if row is None else _image(row)

    def get(self, procedure_key: str, *, details: bool = True) -> ProcedureRow | None:
        """One procedure; `details=False` leaves out its images and measurements (cheaper per event)."""
        rows = self._select("WHERE procedure_key = ?", (procedure_key,), details=details)
        return rows[0] if rows else None

    def list(self, states: Iterable[str] | None = None) -> list[ProcedureRow]:
        """Procedures, oldest first, optionally only those in `states`."""
        if states is None:
            return self._select("", ())
        wanted = [str(s) for s in states]
        if not wanted:
            return []
        return self._select(f"WHERE state IN ({', '.join('?' * len(wanted))})", tuple(wanted))

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT state, COUNT(*) FROM procedures GROUP BY state").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def has_state(self, state: ProcedureState) -> bool:
        with self._lock:
            return self._conn.execute(
                "SELECT 1 FROM procedures WHERE state = ? LIMIT 1", (str(state),)
            ).fetchone() is not None

    def taken_steps(self) -> set[tuple[str, str, str]]:
        """(Study Instance UID, Accession Number, SPS ID) of the worklist items procedures used."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT step_study, step_accession, step_sps FROM procedures "
                "WHERE item IS NOT NULL AND state != 'failed'"
            ).fetchall()
        return {(r[0], r[1], r[2]) for r in rows}

    def _select(self, where: str, params: tuple[Any, ...], *, details: bool = True) -> list[ProcedureRow]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join(_PROC_COLUMNS)} FROM procedures {where} ORDER BY created_at, procedure_key",
                params,
            ).fetchall()
            images: dict[str, list[ImageRow]] = {}
            measurements: dict[str, list[tuple[str, str, str]]] = {}
            keys = [r[0] for r in rows] if details else []
            for chunk in range(0, len(keys), 500):
                part = keys[chunk:chunk + 500]
                marks = ", ".join("?" * len(part))
                for r in self._conn.execute(
                    "SELECT procedure_key, image_key, sop_instance_uid, sop_class_uid, instance_number, state, "
                    f"error FROM procedure_images WHERE procedure_key IN ({marks}) ORDER BY instance_number",
                    part,
                ):
                    images.setdefault(r[0], []).append(_image(tuple(r)[1:]))
                for r in self._conn.execute(
                    "SELECT procedure_key, name, value, unit FROM procedure_measurements "
                    f"WHERE procedure_key IN ({marks}) ORDER BY recorded_at, name",
                    part,
                ):
                    measurements.setdefault(r[0], []).append((r[1], r[2], r[3]))
        out = []
        for r in rows:
            v = dict(zip(_PROC_COLUMNS, tuple(r), strict=True))
            out.append(ProcedureRow(
                procedure_key=v["procedure_key"], state=ProcedureState(v["state"]), scheduled=bool(v["scheduled"]),
                item=v["item"], patient=json.loads(v["patient"] or "{}"),
                accession_number=v["accession_number"], patient_id=v["patient_id"],
                patient_name=v["patient_name"], study_instance_uid=v["study_instance_uid"],
                series_instance_uid=v["series_instance_uid"], mpps_uid=v["mpps_uid"], pps_id=v["pps_id"],
                started_at=v["started_at"], ended_at=v["ended_at"], description=v["description"],
                operator=v["operator"], reason=v["reason"], error=v["error"], print_job=v["print_job"],
                created_at=v["created_at"], updated_at=v["updated_at"],
                images=tuple(images.get(v["procedure_key"], ())),
                measurements=tuple(measurements.get(v["procedure_key"], ())),
            ))
        return out


def _image(row: Any) -> ImageRow:
    r = tuple(row)
    return ImageRow(r[0], r[1], r[2], int(r[3]), ImageState(r[4]), r[5])


def step_identity(item: Any) -> tuple[str, str, str]:
    """What names a worklist item's scheduled step: (Study Instance UID, Accession Number, SPS ID)."""
    sps = (item.get("ScheduledProcedureStepSequence") or [None])[0]
    sps_id = str(sps.get("ScheduledProcedureStepID", "") or "") if sps is not None else ""
    return (str(item.get("StudyInstanceUID", "") or ""), str(item.get("AccessionNumber", "") or ""), sps_id)


# ------------------------------------------------------------------ report (CLI, demo, tests)


def _job_states(conn: sqlite3.Connection, kind: str, where: str, params: tuple[Any, ...]) -> dict[str, str]:
    """Destination -> the state of the newest job of `kind` matching `where`. A job id recorded but no
    longer in the queue was purged after it was done."""
    out: dict[str, str] = {}
    for dest, state in conn.execute(
        f"SELECT destination, state FROM queue_jobs WHERE kind = ? AND {where} ORDER BY id", (kind, *params)
    ):
        out[dest] = state
    return out


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def procedure_report(conn: sqlite3.Connection, row: ProcedureRow) -> dict[str, Any]:
    """A JSON-able view of one procedure and each of its steps: MPPS jobs per destination, each image's
    local store, forwarding jobs and commitment, and the print job."""
    queue = _has_table(conn, "queue_jobs")
    instances = _has_table(conn, "instances")
    mpps: dict[str, Any] = {"uid": row.mpps_uid, "create": {}, "set": {}}
    if row.mpps_uid and queue:
        like = (f"{row.mpps_uid}@%",)
        mpps["create"] = _job_states(conn, "mpps-create", "group_key LIKE ?", like)
        mpps["set"] = _job_states(conn, "mpps-set", "group_key LIKE ?", like)
    images = []
    for image in row.images:
        entry: dict[str, Any] = {
            "image_key": image.image_key, "sop_instance_uid": image.sop_instance_uid,
            "sop_class_uid": image.sop_class_uid, "instance_number": image.instance_number,
            "state": str(image.state), "error": image.error, "forwarded": {}, "committed": False,
            "in_store": False,
        }
        if image.state is ImageState.STORED:
            if queue:
                entry["forwarded"] = _job_states(conn, "store", "json_extract(payload, '$.uid') = ?",
                                                 (image.sop_instance_uid,))
            if instances:
                found = conn.execute("SELECT committed_at FROM instances WHERE sop_instance_uid = ?",
                                     (image.sop_instance_uid,)).fetchone()
                entry["committed"] = found is not None and found[0] is not None
                # False once retention deleted it (only committed instances are ever deleted).
                entry["in_store"] = found is not None
        images.append(entry)
    printing: dict[str, Any] = {}
    if row.print_job is not None:
        printing = {"job": row.print_job, "state": "done (purged)", "destination": None}
        if queue:
            found = conn.execute("SELECT destination, state, last_error FROM queue_jobs WHERE id = ?",
                                 (row.print_job,)).fetchone()
            if found is not None:
                printing = {"job": row.print_job, "destination": found[0], "state": found[1],
                            "last_error": found[2]}
    return {
        "procedure_key": row.procedure_key, "state": str(row.state), "scheduled": row.scheduled,
        "accession_number": row.accession_number, "patient_id": row.patient_id,
        "patient_name": row.patient_name, "study_instance_uid": row.study_instance_uid,
        "series_instance_uid": row.series_instance_uid, "mpps_uid": row.mpps_uid, "pps_id": row.pps_id,
        "description": row.description, "operator": row.operator, "reason": row.reason, "error": row.error,
        "started_at": row.started_at, "ended_at": row.ended_at,
        "created_at": row.created_at, "updated_at": row.updated_at,
        "images": images, "mpps": mpps, "print": printing,
        "measurements": [{"name": n, "value": v, "unit": u} for n, v, u in row.measurements],
    }
