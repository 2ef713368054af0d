"""The SQL side of Query/Retrieve: study and series summaries kept by triggers, and candidate look-ups.

Invariants:
- `qr_series` has one row per Series Instance UID present in `instances`, `qr_studies` one per Study
  Instance UID; SQLite triggers on `instances` keep them right inside the very transaction that inserts,
  replaces or deletes an instance (a receive, a retention delete, a start-up clean-up, another process
  writing the same database), so the numbers of related series and instances and the modalities in a
  study (PS3.4 C.6.1.1.3) never need a pass over the instances at query time.
- A summary row's descriptive attributes come from the latest instance written to it; its counts are
  recomputed from `instances` (series) or `qr_series` (study) by the trigger, never incremented blindly,
  so they cannot drift. An `INSERT OR REPLACE` whose old row named another series or study (a re-sent
  SOP Instance UID with other hierarchy) is handled by the BEFORE INSERT trigger.
- `ensure_schema` is idempotent: tables, indexes and triggers are created if missing, and summaries
  are rebuilt from `instances` when they do not cover it (a database made before this module) or lack
  a summary column (made by a version with fewer: the tables and triggers are made again).
- Look-ups are conservative pre-filters on indexed columns (`Filter`): they may return rows that do not
  match, never miss one that does; the caller's matcher (agent.matching) decides on the rest. Queries
  never open an instance file.
- Index columns added after instances were received (a newer version's `INDEX_COLUMNS`) are filled
  for the old rows by `backfill_step`, which re-reads each stored file's header once; `qr_meta` records
  which column set the rows hold, so this happens once per change of the set, and never for a database
  whose rows were all written with the current set.
- No trio, no sockets: callers run these functions through the agent's blocking bridge.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import StoreError
from agent.store.db import transaction
from agent.store.dicomfile import read_meta, scan_dataset
from agent.store.header import index_values
from agent.store.index_columns import INDEX_COLUMNS, INDEX_TAGS

__all__ = ["Filter", "OUTPUT_COLUMNS", "SERIES_COLUMNS", "STUDY_COLUMNS", "backfill_pending", "backfill_step", "ensure_schema",
           "instances", "patients", "retrieve_uids", "series", "studies"]

#: Columns copied from an instance into its study summary (patient and study attributes).
STUDY_COLUMNS: tuple[str, ...] = (
    "patient_id", "patient_name", "patient_birth_date", "patient_sex", "study_date", "study_time",
    "accession_number", "study_id", "study_description", "referring_physician_name", "specific_character_set",
)
#: Columns copied from an instance into its series summary.
SERIES_COLUMNS: tuple[str, ...] = (
    "study_instance_uid", "patient_id", "modality", "series_number", "series_date", "series_time",
    "series_description", "body_part_examined", "pps_start_date", "pps_start_time", "specific_character_set",
    "request_attributes_seq",  # a SERIES sequence key (agent.store.sequences), its items as received
)

_TABLES = f"""
CREATE TABLE IF NOT EXISTS qr_series (
    series_instance_uid TEXT PRIMARY KEY,
    {", ".join(c + (" INTEGER" if c == "series_number" else " TEXT") for c in SERIES_COLUMNS)},
    related_instances INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS qr_series_study ON qr_series (study_instance_uid);
CREATE TABLE IF NOT EXISTS qr_studies (
    study_instance_uid TEXT PRIMARY KEY,
    {", ".join(c + " TEXT" for c in STUDY_COLUMNS)},
    modalities TEXT,
    related_series INTEGER NOT NULL,
    related_instances INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS qr_studies_patient ON qr_studies (patient_id);
CREATE INDEX IF NOT EXISTS qr_studies_date ON qr_studies (study_date);
CREATE INDEX IF NOT EXISTS qr_studies_name ON qr_studies (patient_name COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS qr_studies_name_groups ON qr_studies (patient_name COLLATE NOCASE)
    WHERE instr(patient_name, '=') > 0;
CREATE INDEX IF NOT EXISTS qr_studies_accession ON qr_studies (accession_number);
CREATE INDEX IF NOT EXISTS instances_sop_class ON instances (sop_class_uid);
CREATE TABLE IF NOT EXISTS qr_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)
"""

#: The index column set rows are written with (recorded in qr_meta once every row holds it).
_SIGNATURE = ",".join(sorted(c.column for c in INDEX_COLUMNS))


def _refresh_series(row: str) -> str:
    """SQL (for a trigger) that rewrites the series summary of `row` (NEW or OLD) from `instances`."""
    uid = f"{row}.series_instance_uid"
    cols = ", ".join(SERIES_COLUMNS)
    if row == "NEW":
        values = ", ".join(f"NEW.{c}" for c in SERIES_COLUMNS)
        return (
            f"INSERT OR REPLACE INTO qr_series (series_instance_uid, {cols}, related_instances) "
            f"SELECT {uid}, {values}, (SELECT COUNT(*) FROM instances WHERE series_instance_uid = {uid}) "
            f"WHERE {uid} IS NOT NULL;"
        )
    return (
        f"UPDATE qr_series SET related_instances = (SELECT COUNT(*) FROM instances "
        f"WHERE series_instance_uid = {uid}) WHERE series_instance_uid = {uid};"
        f"DELETE FROM qr_series WHERE series_instance_uid = {uid} AND related_instances = 0;"
    )


def _study_counts(uid: str) -> str:
    return (
        f"(SELECT COUNT(*) FROM qr_series WHERE study_instance_uid = {uid}), "
        f"(SELECT COALESCE(SUM(related_instances), 0) FROM qr_series WHERE study_instance_uid = {uid}), "
        # Modality is CS (no comma possible): GROUP_CONCAT's comma becomes the DICOM value separator.
        f"(SELECT REPLACE(GROUP_CONCAT(DISTINCT modality), ',', '\\') FROM qr_series "
        f"WHERE study_instance_uid = {uid} AND modality IS NOT NULL)"
    )


def _refresh_study(row: str) -> str:
    uid = f"{row}.study_instance_uid"
    if row == "NEW":
        cols = ", ".join(STUDY_COLUMNS)
        values = ", ".join(f"NEW.{c}" for c in STUDY_COLUMNS)
        return (
            f"INSERT OR REPLACE INTO qr_studies (study_instance_uid, {cols}, related_series, "
            f"related_instances, modalities) SELECT {uid}, {values}, {_study_counts(uid)} "
            f"WHERE {uid} IS NOT NULL;"
        )
    return (
        f"UPDATE qr_studies SET (related_series, related_instances, modalities) = "
        f"(SELECT {_study_counts(uid)}) WHERE study_instance_uid = {uid};"
        f"DELETE FROM qr_studies WHERE study_instance_uid = {uid} AND related_series = 0;"
    )


_OLD_SERIES = "(SELECT series_instance_uid FROM instances WHERE sop_instance_uid = NEW.sop_instance_uid)"
_OLD_STUDY = "(SELECT study_instance_uid FROM instances WHERE sop_instance_uid = NEW.sop_instance_uid)"


_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS qr_instances_insert AFTER INSERT ON instances BEGIN "
    + _refresh_series("NEW") + _refresh_study("NEW") + " END",
    "CREATE TRIGGER IF NOT EXISTS qr_instances_delete AFTER DELETE ON instances BEGIN "
    + _refresh_series("OLD") + _refresh_study("OLD") + " END",
    # INSERT OR REPLACE deletes the old row without firing the delete trigger (recursive triggers are
    # off): when the old row named another series or study, take it out of those summaries here, while
    # it still exists (hence "- 1"); the AFTER INSERT trigger then counts the new row where it belongs.
    "CREATE TRIGGER IF NOT EXISTS qr_instances_replace BEFORE INSERT ON instances "
    "WHEN EXISTS (SELECT 1 FROM instances WHERE sop_instance_uid = NEW.sop_instance_uid "
    "AND (series_instance_uid IS NOT NEW.series_instance_uid OR study_instance_uid IS NOT NEW.study_instance_uid)) "
    f"BEGIN UPDATE qr_series SET related_instances = related_instances - 1 WHERE series_instance_uid = {_OLD_SERIES};"
    f"DELETE FROM qr_series WHERE series_instance_uid = {_OLD_SERIES} AND related_instances <= 0;"
    f"UPDATE qr_studies SET (related_series, related_instances, modalities) = (SELECT {_study_counts(_OLD_STUDY)}) "
    f"WHERE study_instance_uid = {_OLD_STUDY};"
    f"DELETE FROM qr_studies WHERE study_instance_uid = {_OLD_STUDY} AND related_series = 0; END",
    "CREATE TRIGGER IF NOT EXISTS qr_instances_update AFTER UPDATE OF series_instance_uid, "
    "study_instance_uid, modality ON instances BEGIN "
    + _refresh_series("OLD") + _refresh_study("OLD") + _refresh_series("NEW") + _refresh_study("NEW") + " END",
)


def ensure_schema(conn: sqlite3.Connection) -> bool:
    """Create the summary tables, indexes and triggers if missing; rebuild summaries that do not cover
    `instances`. Returns True when a rebuild happened. The `instances` table must exist."""
    with transaction(conn):
        _drop_outdated(conn)
        for statement in _TABLES.split(";"):
            if statement.strip():
                conn.execute(statement)
        for statement in _TRIGGERS:
            conn.execute(statement)
        if conn.execute("SELECT 1 FROM instances LIMIT 1").fetchone() is None:
            conn.execute("INSERT OR REPLACE INTO qr_meta VALUES ('index_columns', ?)", (_SIGNATURE,))
        covered = conn.execute("SELECT COALESCE(SUM(related_instances), 0) FROM qr_series").fetchone()[0]
        total = conn.execute(
            "SELECT COUNT(*) FROM instances WHERE series_instance_uid IS NOT NULL").fetchone()[0]
        if covered == total:
            return False
        rebuild(conn)
        return True


def _drop_outdated(conn: sqlite3.Connection) -> None:
    """A summary table made by a version with fewer SERIES_COLUMNS / STUDY_COLUMNS is dropped with the
    triggers that write it; `ensure_schema` then makes both again and rebuilds them from `instances`."""
    for table, columns in (("qr_series", SERIES_COLUMNS), ("qr_studies", STUDY_COLUMNS)):
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if have and not set(columns) <= have:
            for name in ("insert", "delete", "replace", "update"):
                conn.execute(f"DROP TRIGGER IF EXISTS qr_instances_{name}")
            conn.execute("DROP TABLE IF EXISTS qr_series")
            conn.execute("DROP TABLE IF EXISTS qr_studies")
            return


def rebuild(conn: sqlite3.Connection) -> None:
    """Recompute both summaries from `instances` (joins the caller's transaction)."""
    with transaction(conn):
        conn.execute("DELETE FROM qr_series")
        conn.execute("DELETE FROM qr_studies")
        scols = ", ".join(SERIES_COLUMNS)
        # SQLite: with MAX() the bare columns come from the row holding the maximum (the latest).
        conn.execute(
            f"INSERT INTO qr_series (series_instance_uid, {scols}, related_instances) "
            f"SELECT series_instance_uid, {scols}, n FROM (SELECT series_instance_uid, {scols}, "
            f"MAX(received_at), COUNT(*) AS n FROM instances WHERE series_instance_uid IS NOT NULL "
            f"GROUP BY series_instance_uid)"
        )
        ccols = ", ".join(STUDY_COLUMNS)
        conn.execute(
            f"INSERT INTO qr_studies (study_instance_uid, {ccols}, related_series, related_instances, "
            f"modalities) SELECT study_instance_uid, {ccols}, 0, 0, NULL FROM (SELECT study_instance_uid, "
            f"{ccols}, MAX(received_at) FROM instances WHERE study_instance_uid IS NOT NULL "
            f"GROUP BY study_instance_uid)"
        )
        conn.execute(
            f"UPDATE qr_studies SET (related_series, related_instances, modalities) = "
            f"(SELECT {_study_counts('qr_studies.study_instance_uid')})"
        )
        conn.execute("DELETE FROM qr_studies WHERE related_series = 0")


def backfill_pending(conn: sqlite3.Connection) -> bool:
    """True when some rows may lack index columns added since they were written."""
    row = conn.execute("SELECT value FROM qr_meta WHERE key = 'index_columns'").fetchone()
    return row is None or row[0] != _SIGNATURE


def backfill_rows(conn: sqlite3.Connection, after: str, limit: int) -> list[tuple[str, str, float]]:
    """The next `limit` rows to re-index after SOP Instance UID `after`: (uid, relative path, received_at)."""
    return [tuple(r) for r in conn.execute(  # type: ignore[misc]
        "SELECT sop_instance_uid, path, received_at FROM instances WHERE sop_instance_uid > ? "
        "ORDER BY sop_instance_uid LIMIT ?", (after, limit))]


def read_index_values(path: Path) -> dict[str, Any] | None:
    """The index columns of a stored file, from its header (blocking I/O); None if unreadable."""
    try:
        meta = read_meta(path)
        values, _, _ = index_values(scan_dataset(path, meta.dataset_offset, meta.transfer_syntax_uid, INDEX_TAGS))
    except (StoreError, OSError, LookupError, ValueError):
        return None
    return values


def backfill_step(conn: sqlite3.Connection, updates: list[tuple[str, float, dict[str, Any]]], *, done: bool) -> None:
    """Write re-read index values; a row replaced meanwhile (another received_at) is left alone. With
    `done`, record that every row now holds the current column set."""
    with transaction(conn):
        for uid, received_at, values in updates:
            columns = list(values)
            conn.execute(
                f"UPDATE instances SET {', '.join(f'{c} = ?' for c in columns)} "
                f"WHERE sop_instance_uid = ? AND received_at = ?",
                [values[c] for c in columns] + [uid, received_at],
            )
        if done:
            conn.execute("INSERT OR REPLACE INTO qr_meta VALUES ('index_columns', ?)", (_SIGNATURE,))


# ------------------------------------------------------------------ look-ups


@dataclass
class Filter:
    """A conservative WHERE clause over one table: every condition is necessary for a match."""

    clauses: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def equal(self, column: str, values: Sequence[str]) -> None:
        """`column` is one of `values` (exact, case-sensitive: UIDs, IDs, CS)."""
        if len(values) == 1:
            self.clauses.append(f"{column} = ?")
        else:
            self.clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
        self.params.extend(values)

    def between(self, column: str, lo: str, hi: str) -> None:
        """Text comparison on fixed-width digits (DA as YYYYMMDD): `lo <= column <= hi`, open when ''."""
        if lo:
            self.clauses.append(f"{column} >= ?")
            self.params.append(lo)
        if hi:
            self.clauses.append(f"{column} <= ?")
            self.params.append(hi)

    def prefix_nocase(self, column: str, prefix: str) -> None:
        """`column` starts with `prefix`, ASCII case-insensitive (LIKE; uses a NOCASE index)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        self.clauses.append(f"{column} LIKE ? ESCAPE '\\'")
        self.params.append(escaped + "%")

    def name_prefix(self, column: str, prefix: str, *, studies: bool = False) -> None:
        """A person name whose first component group, or any other, starts with `prefix` (ASCII
        letters, digits and '^' only; case-insensitive, as LIKE). With `studies` (the column is
        qr_studies.patient_name, queried from that table) the rows come from two index look-ups:
        the names starting with it (qr_studies_name) and, among the few names with several groups
        (the partial index qr_studies_name_groups), those with a group starting with it; otherwise
        every row is tested."""
        if studies:
            self.clauses.append(
                "rowid IN (SELECT rowid FROM qr_studies WHERE patient_name LIKE ? UNION ALL SELECT rowid "
                "FROM qr_studies WHERE instr(patient_name, '=') > 0 AND patient_name LIKE ?)")
        else:
            self.clauses.append(f"({column} LIKE ? OR {column} LIKE ?)")
        self.params.extend([prefix + "%", "%=" + prefix + "%"])

    def contains_value(self, column: str, value: str) -> None:
        """A backslash-separated multi-value column holds `value` (e.g. Modalities in Study)."""
        self.clauses.append(f"('\\' || {column} || '\\') LIKE ? ESCAPE '|'")
        self.params.append("%\\" + value.replace("|", "||").replace("%", "|%").replace("_", "|_") + "\\%")

    def where(self) -> str:
        return (" WHERE " + " AND ".join(self.clauses)) if self.clauses else ""


#: The columns each look-up's rows can have, by query level: a caller may ask for some of them only
#: (`columns`); the rows then hold just those, in that order (fewer values made per row).
_PATIENT_OUT = ("patient_id", "patient_name", "patient_birth_date", "patient_sex", "specific_character_set",
                "related_studies", "related_series", "related_instances")
_STUDY_OUT = ("study_instance_uid", *STUDY_COLUMNS, "modalities", "related_series", "related_instances")
_SERIES_OUT = ("series_instance_uid", *SERIES_COLUMNS, "related_instances",
               *(c for c in STUDY_COLUMNS if c not in SERIES_COLUMNS), "modalities", "study_related_series",
               "study_related_instances")
_IMAGE_OUT = ("sop_instance_uid", "sop_class_uid", "transfer_syntax_uid", *(c.column for c in INDEX_COLUMNS),
              "series_related_instances")
OUTPUT_COLUMNS: dict[str, frozenset[str]] = {
    "PATIENT": frozenset(_PATIENT_OUT), "STUDY": frozenset(_STUDY_OUT), "SERIES": frozenset(_SERIES_OUT),
    "IMAGE": frozenset(_IMAGE_OUT),
}


def _select(conn: sqlite3.Connection, sql: str, flt: Filter, limit: int | None,
            columns: Sequence[str] | None = None) -> list[sqlite3.Row]:
    if columns:
        head = "SELECT * FROM "
        sql = (f"SELECT {', '.join(columns)} FROM {sql[len(head):]}" if sql.startswith(head)
               else f"SELECT {', '.join(columns)} FROM ({sql})")
    sql += flt.where()
    params = list(flt.params)
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return conn.execute(sql, params).fetchall()


def patients(conn: sqlite3.Connection, flt: Filter, limit: int | None = None,
             columns: Sequence[str] | None = None) -> list[sqlite3.Row]:
    """One row per Patient ID with the patient attributes of its latest study and related counts."""
    sql = (
        "SELECT patient_id, patient_name, patient_birth_date, patient_sex, specific_character_set, "
        "related_studies, related_series, related_instances FROM (SELECT patient_id, patient_name, "
        "patient_birth_date, patient_sex, specific_character_set, COUNT(*) AS related_studies, "
        "SUM(related_series) AS related_series, SUM(related_instances) AS related_instances, "
        "MAX(rowid) FROM qr_studies GROUP BY patient_id)"
    )
    return _select(conn, sql, flt, limit, columns)


def studies(conn: sqlite3.Connection, flt: Filter, limit: int | None = None,
            columns: Sequence[str] | None = None) -> list[sqlite3.Row]:
    return _select(conn, "SELECT * FROM qr_studies", flt, limit, columns)


def series(conn: sqlite3.Connection, flt: Filter, limit: int | None = None,
           columns: Sequence[str] | None = None) -> list[sqlite3.Row]:
    """Series joined with their study's patient and study attributes (for relational queries)."""
    study_cols = ", ".join(f"st.{c} AS {c}" for c in STUDY_COLUMNS if c not in SERIES_COLUMNS)
    sql = (
        f"SELECT * FROM (SELECT se.*, {study_cols}, st.modalities AS modalities, "
        f"st.related_series AS study_related_series, st.related_instances AS study_related_instances "
        f"FROM qr_series AS se LEFT JOIN qr_studies AS st USING (study_instance_uid))"
    )
    return _select(conn, sql, flt, limit, columns)


def instances(conn: sqlite3.Connection, flt: Filter, limit: int | None = None,
              columns: Sequence[str] | None = None) -> list[sqlite3.Row]:
    """Instance rows (with their series' instance count)."""
    sql = (
        "SELECT * FROM (SELECT i.*, se.related_instances AS series_related_instances FROM instances AS i "
        "LEFT JOIN qr_series AS se USING (series_instance_uid))"
    )
    return _select(conn, sql, flt, limit, columns)


def retrieve_uids(conn: sqlite3.Connection, level: str, uids: Iterable[str]) -> list[sqlite3.Row]:
    """The instances under the given entities of `level` (PATIENT: Patient IDs; STUDY, SERIES, IMAGE:
    UIDs), oldest first, with what a C-STORE sub-operation needs (UID, class, syntax, path)."""
    column = {"PATIENT": "patient_id", "STUDY": "study_instance_uid", "SERIES": "series_instance_uid",
              "IMAGE": "sop_instance_uid"}[level]
    wanted = list(dict.fromkeys(uids))
    out: list[sqlite3.Row] = []
    for start in range(0, len(wanted), 500):  # SQLite's host-parameter limit
        chunk = wanted[start:start + 500]
        out.extend(conn.execute(
            f"SELECT sop_instance_uid, sop_class_uid, transfer_syntax_uid, path, study_instance_uid "
            f"FROM instances WHERE {column} IN ({', '.join('?' * len(chunk))}) "
            f"ORDER BY study_instance_uid, series_instance_uid, instance_number, received_at",
            chunk,
        ).fetchall())
    return out
