"""What the demo shows: each step of each procedure as it becomes visible in the two agents' databases.

Invariants:
- Read-only: the databases are opened with `mode=ro` connections of their own (SQLite WAL lets them
  read beside the agents' writers); nothing here changes what the agents do. A table that does not
  exist yet reads as empty.
- A step is reported where its outcome is durable and visible to the peer that needs it: "MPPS IN
  PROGRESS" once the RIS holds the instance, "forwarded" once the PACS has indexed the image,
  "committed" once the modality recorded the PACS's commitment, "film printed" once the printer's job is
  done. Counts only grow, so every line is printed once, in order, even when a poll sees several steps.
- Done means, for every worklist item: the modality's procedure completed, MPPS COMPLETED at the RIS,
  every image at the PACS with the item's patient ID, accession number and Study Instance UID, every
  image committed; and one film printed per procedure. A failed or discontinued procedure or a dead
  queue job means it never will be (`DemoReport.failed`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from pydicom import Dataset

if TYPE_CHECKING:
    from agent.demo import DemoLayout

POLL = 0.2


@dataclass
class ProcedureView:
    """One worklist item as both sides see it."""

    accession: str
    patient: str
    patient_id: str
    study_uid: str
    procedure_key: str = ""  # the device's key for the procedure that performs this item
    state: str = ""  # the modality workflow's state of that procedure
    local_mpps: str = ""  # the modality's own MPPS status ('' before the procedure started)
    ris_mpps: str = ""  # the status the RIS holds
    stored: int = 0  # images in the modality's store
    at_pacs: int = 0  # images the PACS indexed with this accession
    matching_at_pacs: int = 0  # ... of them with the item's patient ID and Study Instance UID
    committed: int = 0  # images the PACS committed (per the modality's index)
    started_at: float | None = None  # time.monotonic() when the procedure was first seen


@dataclass
class Snapshot:
    fetched: int | None = None  # worklist items the modality's last refresh got from the RIS
    fetch_error: str = ""
    procedures: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # accession -> (key, state, error)
    local_mpps: dict[str, str] = field(default_factory=dict)  # accession -> status
    ris_mpps: dict[str, str] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)
    committed: dict[str, int] = field(default_factory=dict)
    at_pacs: dict[str, tuple[int, int]] = field(default_factory=dict)  # accession -> (all, matching)
    films: list[str] = field(default_factory=list)  # film files of printed jobs, in print order
    dead_jobs: list[str] = field(default_factory=list)  # "kind to dest: error" of the modality's dead jobs


@dataclass(frozen=True, slots=True)
class DemoReport:
    layout: DemoLayout
    images: int
    procedures: tuple[ProcedureView, ...]
    fetched: int | None  # the most items one refresh got (later ones serve fewer: performed steps drop out)
    fetch_error: str
    films: tuple[str, ...]
    dead_jobs: tuple[str, ...]
    elapsed: float

    @property
    def complete(self) -> bool:
        return not self.missing()

    @property
    def failed(self) -> bool:
        """A step failed for good (a procedure failed or was discontinued, a job is dead): waiting longer
        cannot complete the run."""
        return bool(self.dead_jobs) or any(p.state in ("failed", "discontinued") for p in self.procedures)

    def missing(self) -> list[str]:
        """One line per step that did not complete."""
        out = []
        if self.fetched is None:
            error = f" (last error: {self.fetch_error})" if self.fetch_error else ""
            out.append(f"the worklist was never fetched from the RIS{error}")
        for p in self.procedures:
            what = []
            if p.state != "completed":
                what.append(f"the modality's procedure is {p.state or 'not started'}, not completed")
            if p.ris_mpps != "COMPLETED":
                what.append(f"MPPS at the RIS is {p.ris_mpps or 'absent'}, not COMPLETED")
            if p.matching_at_pacs < self.images:
                what.append(f"{p.matching_at_pacs}/{self.images} images at the PACS with the worklist's patient and study")
            if p.committed < self.images:
                what.append(f"{p.committed}/{self.images} images committed")
            if what:
                out.append(f"procedure {p.accession}: " + "; ".join(what))
        if len(self.films) < len(self.procedures):
            out.append(f"{len(self.films)}/{len(self.procedures)} films printed")
        out += [f"dead job: {d}" for d in self.dead_jobs]
        return out

    def summary(self) -> str:
        n, m, lay = len(self.procedures), self.images, self.layout
        performed = sum(p.state == "completed" for p in self.procedures)
        states: dict[str, int] = {}
        for p in self.procedures:
            states[p.ris_mpps or "none"] = states.get(p.ris_mpps or "none", 0) + 1
        lines = [
            f"Demo summary ({self.elapsed:.1f} s): {'every step completed' if self.complete else 'NOT COMPLETE'}",
            f"  worklist items fetched:  {self.fetched if self.fetched is not None else 0}",
            f"  procedures performed:    {performed}/{n}",
            "  MPPS states at the RIS:  " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())),
            f"  instances stored:        {sum(p.stored for p in self.procedures)}/{n * m} at the modality, "
            f"{sum(p.matching_at_pacs for p in self.procedures)}/{n * m} at the PACS",
            f"  instances committed:     {sum(p.committed for p in self.procedures)}/{n * m}",
            f"  films printed:           {len(self.films)}/{n}",
            "Where everything is:",
            f"  PACS store:              {lay.pacs_store}",
            f"  printed films:           {lay.films}",
            f"  modality store:          {lay.modality / 'objects'}",
            f"  databases:               {lay.modality_db} (modality), {lay.hospital_db} (RIS, PACS, printer)",
            f"  profiles:                {lay.modality_profile}, {lay.hospital_profile}",
            f"  look closer:             dicom-agent procedures list --profile {lay.modality_profile}",
            f"                           dicom-agent mpps list --profile {lay.hospital_profile}",
        ]
        if not self.complete:
            lines.append("Not completed:")
            lines += [f"  {m}" for m in self.missing()]
        return "\n".join(lines)


class Progress:
    """Polls both databases and says each new step once."""

    def __init__(self, layout: DemoLayout, items: list[Dataset], images: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.layout = layout
        self.images = images
        self.clock = clock
        self.views = {
            str(ds.AccessionNumber): ProcedureView(str(ds.AccessionNumber), str(ds.PatientName), str(ds.PatientID),
                                                   str(ds.StudyInstanceUID))
            for ds in items
        }
        self.snapshot = Snapshot()
        self._fetched: int | None = None
        self._said_films = 0
        self._said_dead: set[str] = set()

    async def watch(self, say: Callable[[str], None]) -> None:
        """Report steps until every one is done (the caller bounds this with its deadline)."""
        while True:
            snap = await trio.to_thread.run_sync(self.read)
            self.update(snap, say)
            report = self.report(0.0)
            if report.complete or report.failed:
                return
            await trio.sleep(POLL)

    # ---- reading

    def read(self) -> Snapshot:
        snap = Snapshot()
        with _reader(self.layout.modality_db) as db:
            if db is not None:
                self._read_modality(db, snap)
        with _reader(self.layout.hospital_db) as db:
            if db is not None:
                self._read_hospital(db, snap)
        return snap

    def _read_modality(self, db: sqlite3.Connection, snap: Snapshot) -> None:
        row = _one(db, "SELECT count, last_error, fetched_at FROM worklist_fetch WHERE source = 'ris'")
        if row is not None:
            snap.fetched = row[0] if row[2] is not None else None
            snap.fetch_error = row[1] or ""
        snap.local_mpps = _mpps_by_accession(db, "local")
        for key, state, acc, error in _all(db, "SELECT procedure_key, state, accession_number, error FROM procedures "
                                               "ORDER BY created_at"):
            snap.procedures[acc] = (key, state, error)
        for acc, total, committed in _all(db, "SELECT accession_number, count(*), count(committed_at) "
                                              "FROM instances GROUP BY accession_number"):
            snap.stored[acc or ""] = total
            snap.committed[acc or ""] = committed
        for kind, dest, error in _all(db, "SELECT kind, destination, last_error FROM queue_jobs WHERE state = 'dead'"):
            snap.dead_jobs.append(f"{kind} to {dest}: {error}")

    def _read_hospital(self, db: sqlite3.Connection, snap: Snapshot) -> None:
        snap.ris_mpps = _mpps_by_accession(db, "remote")
        counts: dict[str, list[int]] = {}
        for acc, patient_id, study_uid in _all(db, "SELECT accession_number, patient_id, study_instance_uid FROM instances"):
            c = counts.setdefault(acc or "", [0, 0])
            c[0] += 1
            view = self.views.get(acc or "")
            if view is not None and patient_id == view.patient_id and study_uid == view.study_uid:
                c[1] += 1
        snap.at_pacs = {k: (v[0], v[1]) for k, v in counts.items()}
        # driver_ref is the `file` driver's file name in its folder (film_path is the rendered raster).
        for state, ref, raster in _all(db, "SELECT state, driver_ref, film_path FROM print_jobs ORDER BY created_at, id"):
            if state == "done":
                snap.films.append(str(self.layout.films / ref) if ref else raster)

    # ---- saying

    def update(self, snap: Snapshot, say: Callable[[str], None]) -> None:
        self.snapshot = snap
        if snap.fetched is not None:
            if self._fetched is None:
                say(f"worklist: {snap.fetched} item(s) fetched from the RIS")
            self._fetched = max(self._fetched or 0, snap.fetched)
        now = self.clock()
        for acc, v in self.views.items():
            label = f"procedure {acc} ({v.patient})"
            key, state, error = snap.procedures.get(acc, ("", "", ""))
            local = snap.local_mpps.get(acc, "")
            if (key or local) and v.started_at is None:
                v.started_at = now
                by = f" by the device as {key}" if key else ""
                say(f"{label}: started{by}, MPPS IN PROGRESS queued for the RIS")
            v.local_mpps = local or v.local_mpps
            ris = snap.ris_mpps.get(acc, "")
            if ris and not v.ris_mpps:
                say(f"{label}: MPPS IN PROGRESS received by the RIS")
                v.ris_mpps = "IN PROGRESS"
            stored = snap.stored.get(acc, 0)
            for k in range(v.stored + 1, stored + 1):
                say(f"{label}: image {k}/{self.images} stored")
            v.stored = max(v.stored, stored)
            total, matching = snap.at_pacs.get(acc, (0, 0))
            for k in range(v.at_pacs + 1, total + 1):
                say(f"{label}: image {k}/{self.images} forwarded to the PACS")
            v.at_pacs, v.matching_at_pacs = max(v.at_pacs, total), max(v.matching_at_pacs, matching)
            if ris and ris != v.ris_mpps:
                say(f"{label}: MPPS {ris} received by the RIS")
                v.ris_mpps = ris
            committed = snap.committed.get(acc, 0)
            for k in range(v.committed + 1, committed + 1):
                say(f"{label}: image {k}/{self.images} committed by the PACS")
            v.committed = max(v.committed, committed)
            if state and state != v.state:
                v.procedure_key = key
                if state in ("failed", "discontinued"):
                    say(f"{label}: {state.upper()}{': ' + error if error else ''}")
                elif state == "completed":
                    say(f"{label}: completed")
                v.state = state
        for path in snap.films[self._said_films:]:
            say(f"film printed: {path}")
        self._said_films = max(self._said_films, len(snap.films))
        for dead in snap.dead_jobs:
            if dead not in self._said_dead:
                self._said_dead.add(dead)
                say(f"FAILED: {dead}")

    def report(self, elapsed: float) -> DemoReport:
        snap = self.snapshot
        return DemoReport(self.layout, self.images, tuple(self.views.values()), self._fetched,
                          snap.fetch_error, tuple(snap.films), tuple(snap.dead_jobs), elapsed)


# ------------------------------------------------------------------ helpers


class _reader:
    """A read-only connection to `path`, or None while the agent has not created it yet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection | None:
        if not self.path.exists():
            return None
        try:
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
        except sqlite3.Error:
            return None
        return self.conn

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()


def _all(db: sqlite3.Connection, sql: str, params: tuple[str, ...] = ()) -> list[tuple]:
    try:
        return db.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # no such table yet, or a moment of lock contention
        return []


def _one(db: sqlite3.Connection, sql: str) -> tuple | None:
    rows = _all(db, sql)
    return rows[0] if rows else None


def _mpps_by_accession(db: sqlite3.Connection, origin: str) -> dict[str, str]:
    """Accession Number (from the Scheduled Step Attributes Sequence) -> MPPS status."""
    from agent.services.dataset import DataSetError, decode

    out = {}
    for status, data in _all(db, "SELECT status, data FROM mpps_instances WHERE origin = ? ORDER BY created_at", (origin,)):
        try:
            steps = decode(bytes(data), eager=True).get("ScheduledStepAttributesSequence") or []
        except DataSetError:
            continue
        for step in steps:
            acc = str(step.get("AccessionNumber") or "")
            if acc:
                out[acc] = status
    return out


__all__ = ["DemoReport", "Progress", "ProcedureView", "Snapshot"]
