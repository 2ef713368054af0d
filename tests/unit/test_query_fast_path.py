"""The C-FIND fast path (agent/services/query/engine.py `answer_bytes`, `plan_for`; encode.py
`FlatLayout`) against the general one as reference: the same rows match as when each candidate is a
pydicom Dataset given to the matcher, and every answer is byte for byte what pydicom (or encode_flat,
itself tested against pydicom) writes for the answer the general path builds; a plan is reused only for
the very same identifier bytes."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.datadict import dictionary_VR

from agent.services.dataset import EXPLICIT_VR_LE, IMPLICIT_VR_LE, encode
from agent.services.query import engine
from agent.services.query.encode import _COLUMN, _CONST, _EMPTY, FlatLayout, encode_flat
from agent.services.query.models import PATIENT_ROOT, STUDY_ROOT
from agent.store import query as q
from agent.store.db import open_database
from agent.store.instances import InstanceStore

_clock = itertools.count(1)


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    conn = open_database(tmp_path / "agent.db")
    InstanceStore(tmp_path, conn)
    q.ensure_schema(conn)
    rows = [
        # uid, series, study, patient, name, charset, date, modality, series no, instance no, accession, rows
        ("1", "1.1", "9.1", "P1", "MÜLLER^JÜRGEN", "ISO_IR 100", "20230105", "CT", 1, 1, "A1", 512),
        ("2", "2.1", "9.2", "P2", "Wałęsa^Łucja=山田^太郎=やまだ^たろう", "ISO_IR 192", "20230301", "MR", 2, 7, "", 256),
        ("3", "2.2", "9.2", "P2", "Wałęsa^Łucja=山田^太郎=やまだ^たろう", "ISO_IR 192", "20230301", "CT", None, None,
         None, None),
        ("4", "3.1", "9.3", "P3", "DOE^JOHN", None, "20240612", "US", 3, 2, "A3", 64),
        ("5", "4.1", "9.4", "P4", "ÅSTRÖM^K", None, "20230215", "MR", 1, 1, "A4", 128),  # non-ASCII, no charset
        ("6", "5.1", "9.5", "P5", "doe^jane", "", "2023", "CT", 4, 3, "A5", 512),  # a date pydicom cannot range
        ("7", "6.1", "9.6", "P6", "KOWALSKI^JAN", "ISO 2022 IR 6\\ISO 2022 IR 87", "20230310", "MR", 5, 1, "A6", 512),
        ("8", "7.1", "9.7", "P7", "KOWALSKI^JOANNA", "ISO_IR 100", "20230331", "CT\\MR", 6, 9, "A7\\A8", 1024),
        ("9", "8.1", "9.8", "P8", "NGUYEN^X", "GB18030", "20230102", "MR", 7, 1, "A9", 2),
        ("10", "9.1", "9.9", "", "", None, "", "", None, None, None, None),
    ]
    for uid, series, study, patient, name, charset, date, modality, sno, ino, acc, image_rows in rows:
        conn.execute(
            "INSERT INTO instances (sop_instance_uid, sop_class_uid, transfer_syntax_uid, size, path, received_at, "
            "calling_ae, series_instance_uid, study_instance_uid, modality, patient_id, patient_name, study_date, "
            "specific_character_set, series_number, instance_number, accession_number, image_rows, study_time) "
            "VALUES (?, '1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.1.2.1', 1, 'x', ?, 'A', ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, '101500')",
            (uid, next(_clock), series, study, modality, patient, name, date, charset, sno, ino, acc, image_rows))
    return conn


def identifier(**keys: object) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


RETURN_STUDY = dict(StudyInstanceUID="", PatientName="", PatientID="", StudyDate="", StudyTime="",
                    AccessionNumber="", ModalitiesInStudy="", NumberOfStudyRelatedInstances="",
                    StudyDescription="", InstitutionName="")
QUERIES = [
    (STUDY_ROOT, {**RETURN_STUDY, "QueryRetrieveLevel": "STUDY"}),
    (STUDY_ROOT, {**RETURN_STUDY, "QueryRetrieveLevel": "STUDY", "PatientName": "KOWALSKI^J*"}),
    (STUDY_ROOT, {**RETURN_STUDY, "QueryRetrieveLevel": "STUDY", "PatientName": "müller*"}),
    (STUDY_ROOT, {**RETURN_STUDY, "QueryRetrieveLevel": "STUDY", "PatientName": "*DOE*"}),
    (STUDY_ROOT, {**RETURN_STUDY, "QueryRetrieveLevel": "STUDY", "StudyDate": "20230101-20230331"}),
    (STUDY_ROOT, {**RETURN_STUDY, "QueryRetrieveLevel": "STUDY", "StudyDate": "20230101-20230331",
                  "StudyTime": "1000-1100"}),
    (STUDY_ROOT, {**RETURN_STUDY, "QueryRetrieveLevel": "STUDY", "ModalitiesInStudy": "MR"}),
    (STUDY_ROOT, {**RETURN_STUDY, "QueryRetrieveLevel": "STUDY", "AccessionNumber": "A8"}),
    (STUDY_ROOT, {**RETURN_STUDY, "QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ["9.2", "9.7"]}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "9.2", "SeriesInstanceUID": "",
                  "Modality": "", "SeriesNumber": "", "NumberOfSeriesRelatedInstances": ""}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": "9.2", "SeriesInstanceUID": "2.1",
                  "SOPInstanceUID": "", "InstanceNumber": "", "Rows": "", "SOPClassUID": ""}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": "9.2", "SeriesInstanceUID": "2.1",
                  "SOPInstanceUID": "", "InstanceNumber": "7", "Rows": 256}),
    (PATIENT_ROOT, {"QueryRetrieveLevel": "PATIENT", "PatientID": "", "PatientName": "",
                    "NumberOfPatientRelatedStudies": "", "NumberOfPatientRelatedInstances": ""}),
]


def reference(plan: engine.FindPlan, rows: list[sqlite3.Row], max_results: int, ts: str) -> tuple[list[bytes], bool]:
    """The general path: each candidate a pydicom Dataset for the matcher, each answer encoded by
    encode_flat, else by pydicom."""
    names = set(rows[0].keys()) if rows else set()
    spec = [(tag, column, dictionary_VR(tag)) for tag, column in plan.columns.items() if column in names]
    wanted = engine._match_tags(plan.identifier)
    out: list[bytes] = []
    for row in rows:
        have = engine._candidate(row, spec)
        candidate = Dataset()
        for tag, (_, vr, value) in have.items():
            if tag in wanted:
                candidate.add(DataElement(tag, vr, value))
        if not plan.matcher.matches(candidate):
            continue
        if len(out) == max_results:
            return out, True
        answer = engine._response(plan, have)
        out.append(encode_flat(answer, ts) or encode(engine.as_dataset(answer), ts))
    return out, False


@pytest.mark.parametrize("ts", [EXPLICIT_VR_LE, IMPLICIT_VR_LE])
@pytest.mark.parametrize(("model", "keys"), QUERIES)
def test_answer_bytes_are_the_general_paths_answers(db: sqlite3.Connection, model: object, keys: dict[str, object],
                                                    ts: str) -> None:
    plan = engine.plan_find(model, identifier(**keys), relational=False)  # type: ignore[arg-type]
    rows = engine.fetch_rows(db, plan)
    for limit in (100, 2):
        expected, expected_more = reference(plan, rows, limit, ts)
        found, more = engine.answer_bytes(plan, rows, limit, ts)
        encoded = [a if isinstance(a, bytes) else encode_flat(a, ts) or encode(engine.as_dataset(a), ts)
                   for a in found]
        assert (encoded, more) == (expected, expected_more)
        answers, more = engine.answers(plan, rows, limit)
        assert ([encode_flat(a, ts) or encode(engine.as_dataset(a), ts) for a in answers], more) == (expected, expected_more)


def test_the_layout_is_used_for_plain_rows_and_not_where_it_does_not_apply(db: sqlite3.Connection) -> None:
    """The compiled layout answers the rows it can (no per-row general path), and leaves to the general
    path a row in an ISO 2022 character set and a non-ASCII row without one."""
    plan = engine.plan_find(STUDY_ROOT, identifier(**RETURN_STUDY, QueryRetrieveLevel="STUDY"), relational=False)
    found, _ = engine.answer_bytes(plan, engine.fetch_rows(db, plan), 100, EXPLICIT_VR_LE)
    general = [a for a in found if not isinstance(a, bytes)]
    assert len(found) == 9 and len(general) == 2
    names = sorted(str(dict((t, v) for t, _, v in a)[0x00100010]) for a in general)
    assert names == ["KOWALSKI^JAN", "ÅSTRÖM^K"]


def test_flat_layout_values_as_encode_flat_writes_them() -> None:
    """Values the index may hold in any column type: digits for IS (leading zeros dropped, as the
    general path's int), several values, integers for binary VRs, a float, empty and NULL; a value that
    is not a number for a binary VR is left to the general path."""
    items = [(0x00080052, "CS", "CS", _CONST, "IMAGE"), (0x00200013, "IS", "IS", _COLUMN, 0),
             (0x00280010, "US", "US", _COLUMN, 1), (0x00080060, "CS", "CS", _COLUMN, 2),
             (0x00100010, "PN", "PN", _COLUMN, 3), (0x00080018, "UI", "UI", _COLUMN, 4),
             (0x00081030, "LO", "LO", _EMPTY, None), (0x00400275, "SQ", "SQ", _EMPTY, None)]
    rows = [("007", 512, "CT\\MR", "DOE^J", "1.2.3", "ISO_IR 100"), (7, "1\\2", "", None, "1.2", None),
            ("-3", None, "OT", "MÜLLER", "1.23", "ISO_IR 100"), (2.5, 3, "X", "Y", "1", "")]
    for ts in (EXPLICIT_VR_LE, IMPLICIT_VR_LE):
        layout = FlatLayout(items, 5, ts)
        for row in rows:
            answer: list[tuple[int, str, object]] = [(0x00080052, "CS", "IMAGE")]
            for tag, vr, _, kind, at in items[1:]:
                value = row[at] if kind == _COLUMN else None
                if value in (None, ""):
                    value = None
                elif vr in ("IS", "US") and isinstance(value, str) and value.isdigit():
                    value = int(value)
                elif isinstance(value, str) and "\\" in value:
                    value = value.split("\\")
                answer.append((tag, vr, value))
            if row[5]:
                answer.append((0x00080005, "CS", row[5]))
            assert layout.encode(row) == encode_flat(answer, ts)
        assert layout.encode((1, "abc", "", "", "", None)) is None  # US "abc": the general path decides


def test_plan_cache_reuses_a_plan_for_the_same_bytes_only() -> None:
    ds = identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientName="DOE*")
    data = encode(ds, EXPLICIT_VR_LE)
    plan = engine.plan_for(STUDY_ROOT, data, EXPLICIT_VR_LE, relational=False)
    assert engine.plan_for(STUDY_ROOT, bytes(data), EXPLICIT_VR_LE, relational=False) is plan
    assert engine.plan_for(STUDY_ROOT, data, EXPLICIT_VR_LE, relational=True) is not plan
    assert engine.plan_for(PATIENT_ROOT, encode(identifier(QueryRetrieveLevel="PATIENT", PatientID=""), EXPLICIT_VR_LE),
                           EXPLICIT_VR_LE, relational=False).level == "PATIENT"
    ds.PatientName = "ROE*"
    other = engine.plan_for(STUDY_ROOT, encode(ds, EXPLICIT_VR_LE), EXPLICIT_VR_LE, relational=False)
    assert other is not plan and other.flt.params != plan.flt.params
    # A refusal is raised every time (never cached); an identifier too large is planned every time.
    bad = encode(identifier(QueryRetrieveLevel="STUDY", SeriesInstanceUID=""), EXPLICIT_VR_LE)
    for _ in range(2):
        with pytest.raises(engine.QueryRefused):
            engine.plan_for(STUDY_ROOT, bad, EXPLICIT_VR_LE, relational=False)
    ds.StudyDescription = "X" * engine.PLAN_CACHE_MAX_BYTES
    big = encode(ds, EXPLICIT_VR_LE)
    assert engine.plan_for(STUDY_ROOT, big, EXPLICIT_VR_LE, relational=False) is not engine.plan_for(
        STUDY_ROOT, big, EXPLICIT_VR_LE, relational=False)


def test_fetch_rows_now_gives_up_instead_of_waiting(db: sqlite3.Connection, tmp_path: Path) -> None:
    """The event loop's look-up (`fetch_rows_now`) reads what `fetch_rows` reads, or nothing (None)
    when it would outrun its budget or when another connection holds the database, without sleeping
    in SQLite's busy handler; the connection's busy timeout and progress handler are restored."""
    import threading

    plan = engine.plan_find(STUDY_ROOT, identifier(**RETURN_STUDY, QueryRetrieveLevel="STUDY"), relational=False)
    timeout = db.execute("PRAGMA busy_timeout").fetchone()[0]
    assert [tuple(r) for r in engine.fetch_rows_now(db, plan) or []] == [tuple(r) for r in engine.fetch_rows(db, plan)]
    for _ in range(50):  # 2,000 more rows: the look-up runs beyond 1,000 SQLite steps
        put_many = [(f"x{n}.{next(_clock)}", next(_clock)) for n in range(40)]
        db.executemany("INSERT INTO instances (sop_instance_uid, sop_class_uid, transfer_syntax_uid, size, path, "
                       "received_at, calling_ae, series_instance_uid, study_instance_uid) VALUES "
                       "(?, '1.2', '1.2.840.10008.1.2.1', 1, 'x', ?, 'A', ?||'.1', ?||'.0')",
                       [(uid, at, uid, uid) for uid, at in put_many])
    assert engine.fetch_rows_now(db, plan, budget=0.0) is None
    assert engine.fetch_rows_now(db, plan, budget=5.0) is None  # this plan's look-up is not tried again
    plan = engine.plan_find(STUDY_ROOT, identifier(**RETURN_STUDY, QueryRetrieveLevel="STUDY"), relational=False)
    # Another process writing: in a rollback-journal database its EXCLUSIVE lock keeps readers out
    # (in WAL mode readers are never kept out so long; the guard is the same).
    assert db.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    other = sqlite3.connect(tmp_path / "agent.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN EXCLUSIVE")
    # The lock is let go 3 s later: a look-up that waited in SQLite's busy handler (30 s) would then
    # read the rows; one that does not wait has given up long before.
    release = threading.Timer(3.0, lambda: other.execute("ROLLBACK"))
    release.start()
    try:
        assert engine.fetch_rows_now(db, plan) is None
    finally:
        release.join()
        other.close()
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == timeout
    assert len(engine.fetch_rows_now(db, plan, budget=5.0) or []) == len(engine.fetch_rows(db, plan)) > 2000


@pytest.mark.parametrize("level", ["STUDY", "PATIENT"])
def test_name_prefilter_keeps_every_match(db: sqlite3.Connection, level: str) -> None:
    """The SQL pre-filter of a name key (index look-ups at the study level, LIKE elsewhere) never drops
    a row the matcher accepts: a key without '=' matches any component group, so a name whose second
    or third group starts with the key is found; the same rows as matching every row."""
    for n, name in enumerate(["KIM^A=KANG^B", "=ROE^JANE", "ROE^X=ROE^Y", "KANGAROO", "kang^c"]):
        db.execute("INSERT INTO instances (sop_instance_uid, sop_class_uid, transfer_syntax_uid, size, path, "
                   "received_at, calling_ae, series_instance_uid, study_instance_uid, patient_id, patient_name) "
                   "VALUES (?, '1.2', '1.2.840.10008.1.2.1', 1, 'x', ?, 'A', ?, ?, ?, ?)",
                   (f"g{n}", next(_clock), f"g{n}.1", f"g{n}.0", f"PG{n}", name))
    model, unique = (STUDY_ROOT, {"StudyInstanceUID": ""}) if level == "STUDY" else (PATIENT_ROOT, {"PatientID": ""})
    for key in ("KANG*", "ROE*", "kim^a*", "K*", "DOE^J*", "WA*"):
        plan = engine.plan_find(model, identifier(QueryRetrieveLevel=level, PatientName=key, **unique),  # type: ignore[arg-type]
                                relational=False)
        assert plan.flt.clauses, key  # the key is pre-filtered in SQL
        everything = engine.fetch_rows(db, engine.FindPlan(**{**plan.__dict__, "flt": q.Filter(), "compiled": {}}))
        found, _ = engine.answers(plan, engine.fetch_rows(db, plan), 1000)
        expected, _ = engine.answers(plan, everything, 1000)
        names = sorted(str(dict((t, v) for t, _, v in a)[0x00100010]) for a in found)
        assert names == sorted(str(dict((t, v) for t, _, v in a)[0x00100010]) for a in expected), key
        if key == "KANG*":
            assert names == ["KANGAROO", "KIM^A=KANG^B", "kang^c"]
        if key == "ROE*":
            assert names == ["=ROE^JANE", "ROE^X=ROE^Y"]


def test_fetch_rows_now_restores_the_connection_when_the_look_up_raises(
        db: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the look-up raises (not only SQLite's interrupt or lock), the shared connection gets
    its busy timeout back and keeps no progress handler: later statements of any thread wait for a
    lock as before and are not interrupted."""
    plan = engine.plan_find(STUDY_ROOT, identifier(**RETURN_STUDY, QueryRetrieveLevel="STUDY"), relational=False)
    timeout = db.execute("PRAGMA busy_timeout").fetchone()[0]
    assert timeout > 0

    def broken(conn: sqlite3.Connection, plan: object) -> list[sqlite3.Row]:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(engine, "fetch_rows", broken)
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        engine.fetch_rows_now(db, plan, budget=0.0)
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == timeout
    # The look-up's deadline (budget 0) is past: a progress handler left behind would interrupt this.
    count = db.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) "
                       "SELECT count(*) FROM c").fetchone()[0]
    assert count == 100000
