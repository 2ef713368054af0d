"""The Q/R summaries kept by triggers (agent/store/query.py) and the identifier rules of the engine
(agent/services/query/engine.py), on a real SQLite database of index rows (no files, no network)."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
from pydicom import Dataset

from agent.services.query import engine
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
    return conn


def put(conn: sqlite3.Connection, uid: str, series: str, study: str, *, modality: str = "CT", patient: str = "P1",
        name: str = "DOE^JOHN", date: str = "20240102", charset: str | None = None) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO instances (sop_instance_uid, sop_class_uid, transfer_syntax_uid, size, path, "
        "received_at, calling_ae, series_instance_uid, study_instance_uid, modality, patient_id, patient_name, "
        "study_date, specific_character_set) VALUES (?, '1.2.3', '1.2.840.10008.1.2.1', 1, 'x', ?, 'A', ?, ?, ?, ?, "
        "?, ?, ?)",
        (uid, next(_clock), series, study, modality, patient, name, date, charset),
    )


def summary(conn: sqlite3.Connection) -> tuple[dict[str, tuple], dict[str, tuple]]:
    series = {r["series_instance_uid"]: (r["study_instance_uid"], r["related_instances"])
              for r in conn.execute("SELECT * FROM qr_series")}
    studies = {r["study_instance_uid"]: (r["related_series"], r["related_instances"], r["modalities"])
               for r in conn.execute("SELECT * FROM qr_studies")}
    return series, studies


def test_triggers_follow_insert_replace_and_delete(db: sqlite3.Connection) -> None:
    put(db, "1", "1.1", "9.1")
    put(db, "2", "1.1", "9.1")
    put(db, "3", "1.2", "9.1", modality="MR")
    put(db, "4", "2.1", "9.2")
    assert summary(db) == ({"1.1": ("9.1", 2), "1.2": ("9.1", 1), "2.1": ("9.2", 1)},
                           {"9.1": (2, 3, "CT\\MR"), "9.2": (1, 1, "CT")})
    put(db, "2", "1.1", "9.1")  # the same instance again: nothing changes
    put(db, "3", "2.1", "9.2")  # re-sent into another series and study: it moves
    assert summary(db) == ({"1.1": ("9.1", 2), "2.1": ("9.2", 2)}, {"9.1": (1, 2, "CT"), "9.2": (1, 2, "CT")})
    db.execute("DELETE FROM instances WHERE sop_instance_uid IN ('1', '2')")  # retention
    assert summary(db) == ({"2.1": ("9.2", 2)}, {"9.2": (1, 2, "CT")})


def test_ensure_schema_rebuilds_summaries_of_an_older_database(db: sqlite3.Connection) -> None:
    put(db, "1", "1.1", "9.1")
    put(db, "2", "1.2", "9.1", modality="MR")
    before = summary(db)
    db.execute("DELETE FROM qr_series")
    db.execute("DELETE FROM qr_studies")  # as a database made before the triggers existed
    assert q.ensure_schema(db) is True
    assert summary(db) == before
    assert q.ensure_schema(db) is False  # idempotent


def find(conn: sqlite3.Connection, model: object, **keys: object) -> list[Dataset]:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    plan = engine.plan_find(model, ds, relational=False)  # type: ignore[arg-type]
    found, more = engine.run_find(conn, plan, 100)
    assert not more
    return found


def test_find_matches_through_the_summaries(db: sqlite3.Connection) -> None:
    put(db, "1", "1.1", "9.1", name="MÜLLER^JÜRGEN", charset="ISO_IR 100", date="20230105")
    put(db, "2", "2.1", "9.2", name="Wałęsa^Łucja=山田^太郎", patient="P2", charset="ISO_IR 192", modality="MR")
    put(db, "3", "3.1", "9.3", name="DOE^JOHN", patient="P3", date="20240612")
    uids = lambda found: sorted(str(m.StudyInstanceUID) for m in found)  # noqa: E731
    assert uids(find(db, STUDY_ROOT, QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientName="müller*")) == ["9.1"]
    assert uids(find(db, STUDY_ROOT, QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientName="山田*")) == ["9.2"]
    assert uids(find(db, STUDY_ROOT, QueryRetrieveLevel="STUDY", StudyInstanceUID="",
                     StudyDate="20240101-")) == ["9.2", "9.3"]
    assert uids(find(db, STUDY_ROOT, QueryRetrieveLevel="STUDY", StudyInstanceUID="", ModalitiesInStudy="MR")) == ["9.2"]
    answer = find(db, STUDY_ROOT, QueryRetrieveLevel="STUDY", StudyInstanceUID="9.2", PatientName="",
                  NumberOfStudyRelatedInstances="")
    assert str(answer[0].PatientName) == "Wałęsa^Łucja=山田^太郎" and answer[0].SpecificCharacterSet == "ISO_IR 192"
    assert int(answer[0].NumberOfStudyRelatedInstances) == 1 and answer[0].QueryRetrieveLevel == "STUDY"
    patients = find(db, PATIENT_ROOT, QueryRetrieveLevel="PATIENT", PatientID="", NumberOfPatientRelatedStudies="")
    assert sorted(str(p.PatientID) for p in patients) == ["P1", "P2", "P3"]


def test_max_results_is_reported(db: sqlite3.Connection) -> None:
    for n in range(5):
        put(db, f"{n}", f"1.{n}", f"9.{n}")
    ds = Dataset()
    ds.QueryRetrieveLevel, ds.StudyInstanceUID = "STUDY", ""
    found, more = engine.run_find(db, engine.plan_find(STUDY_ROOT, ds, relational=False), 3)
    assert len(found) == 3 and more


@pytest.mark.parametrize(
    ("model", "keys", "status", "offending"),
    [
        (STUDY_ROOT, {"QueryRetrieveLevel": "PATIENT"}, 0xC001, 0x00080052),  # no PATIENT level in Study Root
        (STUDY_ROOT, {}, 0xC001, 0x00080052),
        (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "SeriesInstanceUID": ""}, 0xA900, 0x0020000E),
        (PATIENT_ROOT, {"QueryRetrieveLevel": "PATIENT", "StudyDate": ""}, 0xA900, 0x00080020),
        (PATIENT_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}, 0xA900, 0x00100020),
        (STUDY_ROOT, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.*"},
         0xA900, 0x0020000E),
        (STUDY_ROOT, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "1", "ConceptNameCodeSequence": []},
         0xA900, 0x0040A043),  # an IMAGE key the index does not hold is still below SERIES
    ],
)
def test_refusals_name_the_offending_tag(model: object, keys: dict[str, object], status: int, offending: int) -> None:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    with pytest.raises(engine.QueryRefused) as caught:
        engine.plan_find(model, ds, relational=False)  # type: ignore[arg-type]
    assert (caught.value.status, caught.value.offending) == (status, (offending,))


def test_relational_lifts_the_upper_unique_keys_and_unknown_keys_flag_ff01() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel, ds.SOPInstanceUID, ds.PatientName = "IMAGE", "", "DOE*"
    assert engine.plan_find(STUDY_ROOT, ds, relational=True).level == "IMAGE"
    ds = Dataset()
    ds.QueryRetrieveLevel, ds.StudyInstanceUID, ds.InstitutionName = "STUDY", "", "X*"
    assert engine.plan_find(STUDY_ROOT, ds, relational=False).unsupported_matching
    ds.InstitutionName = ""
    assert not engine.plan_find(STUDY_ROOT, ds, relational=False).unsupported_matching


def test_retrieve_keys() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel, ds.StudyInstanceUID = "STUDY", ["1.2.3", "1.2.4"]
    assert engine.retrieve_keys(STUDY_ROOT, ds) == ("STUDY", ["1.2.3", "1.2.4"])
    ds.StudyInstanceUID = ""
    with pytest.raises(engine.QueryRefused) as caught:
        engine.retrieve_keys(STUDY_ROOT, ds)
    assert caught.value.offending == (0x0020000D,)


@pytest.mark.trio
async def test_backfill_fills_columns_rows_of_an_older_version_lack(tmp_path: Path) -> None:
    """Instances received before a query column existed get it from their file's header, once, and the
    series summary follows; a database whose rows are all current is not re-read."""
    from pydicom import dcmread

    from agent.profile import QuerySettings
    from agent.services.blocking import Blocking
    from agent.services.query.scp import QuerySCP
    from agent.store.dicomfile import read_meta
    from agent.store.queue import JobQueue
    from tests.interop.qr_peers import ROOT, make_archive

    conn = open_database(tmp_path / "agent.db")
    store = InstanceStore(tmp_path, conn)
    assert q.ensure_schema(conn) is False and not q.backfill_pending(conn)  # empty: current by definition
    for path in make_archive(tmp_path / "files"):
        ds = dcmread(path)
        ds.SeriesDescription = f"series of {ds.SOPInstanceUID}"
        ds.save_as(path, enforce_file_format=True)
        meta = read_meta(path)
        incoming = store.begin(meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax_uid, calling_ae="T")
        incoming.write(path.read_bytes()[meta.dataset_offset:])
        incoming.commit()
    # As an older version left them: no series description, and no record of the column set.
    conn.execute("UPDATE instances SET series_description = NULL, image_rows = NULL")
    conn.execute("DELETE FROM qr_meta")
    assert q.backfill_pending(conn)

    scp = QuerySCP(QuerySettings(), conn, Blocking(), JobQueue(conn), {}, tmp_path)
    await scp.backfill()
    rows = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT sop_instance_uid, series_description, image_rows "
                                                     "FROM instances")}
    assert rows[f"{ROOT}.4.2.1"] == (f"series of {ROOT}.4.2.1", 16) and all(v[0] for v in rows.values())
    assert conn.execute("SELECT series_description FROM qr_series WHERE series_instance_uid = ?",
                        (f"{ROOT}.4.2",)).fetchone()[0] == f"series of {ROOT}.4.2.1"
    assert not q.backfill_pending(conn)


def test_fast_encoding_is_what_pydicom_writes(db: sqlite3.Connection) -> None:
    """Every answer of a mixed query, encoded by agent.services.query.encode, is the bytes pydicom
    writes for it, in both little endian transfer syntaxes; an ISO 2022 character set or Big Endian is
    left to pydicom."""
    from agent.services.dataset import EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE, encode
    from agent.services.query.encode import encode_flat

    put(db, "1", "1.1", "9.1", name="MÜLLER^JÜRGEN", charset="ISO_IR 100")
    put(db, "2", "2.1", "9.2", name="Wałęsa^Łucja=山田^太郎=やまだ^たろう", patient="P2", charset="ISO_IR 192",
        modality="MR")
    put(db, "3", "2.2", "9.2", name="Wałęsa^Łucja=山田^太郎=やまだ^たろう", patient="P2", charset="ISO_IR 192")
    put(db, "4", "3.1", "9.3", name="DOE^JOHN", patient="P3")
    put(db, "5", "4.1", "9.4", name="ÅSTRÖM^K", patient="P4")  # no charset stored: answered in ISO_IR 192
    ds = Dataset()
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "ModalitiesInStudy",
                    "NumberOfStudyRelatedInstances", "AccessionNumber"):
        setattr(ds, keyword, "")
    ds.QueryRetrieveLevel, ds.ReferencedStudySequence = "STUDY", []
    plan = engine.plan_find(STUDY_ROOT, ds, relational=False)
    found, _ = engine.answers(plan, engine.fetch_rows(db, plan), 100)
    assert len(found) == 4
    for answer in found:
        for ts in (EXPLICIT_VR_LE, IMPLICIT_VR_LE):
            assert encode_flat(answer, ts) == encode(engine.as_dataset(answer), ts)
        assert encode_flat(answer, EXPLICIT_VR_BE) is None
    assert encode_flat([(0x00080005, "CS", ["", "ISO 2022 IR 87"]), (0x00100010, "PN", "X")], EXPLICIT_VR_LE) is None
