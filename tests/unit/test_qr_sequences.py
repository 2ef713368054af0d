"""Sequence keys in the index (issue 12): what the receive path keeps of a sequence and what a C-FIND
then answers, on a real store (InstanceStore receives the bytes, agent.services.query.engine plans and
matches over its SQLite index; no network). The wire-level behaviour with pynetdicom and findscu is in
tests/interop/test_qr_scp_sequences.py.

- a sequence over 64 KiB is not kept (the walker names it oversized): a non-universal key does not
  match it, a universal one answers it empty; the elements after it are still indexed;
- a database written before the sequence columns existed gets them from the files' headers (backfill),
  and its series summary is rebuilt with the Request Attributes Sequence.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from agent.services.query import engine
from agent.services.query.models import STUDY_ROOT
from agent.store import query as q
from agent.store.db import open_database
from agent.store.dicomfile import read_meta
from agent.store.instances import InstanceStore
from agent.store.sequences import OVERSIZED

ROOT = "1.2.826.0.1.3680043.8.498.7714"


def _file(directory: Path, n: int, items: list[Dataset], *, undefined: bool = False) -> Path:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, f"{ROOT}.1.{n}.1"
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "P", f"{ROOT}.1", f"{ROOT}.1.{n}"
    if items:
        ds.RequestAttributesSequence = Sequence(items)
        ds["RequestAttributesSequence"].is_undefined_length = undefined
    ds.SeriesDescription = f"after the sequence {n}"  # (0008,103E) < (0040,0275): indexed before it
    ds.PerformedProcedureStepStartDate = "20240611"  # (0040,0244) < (0040,0275) as well
    ds.ContentTemplateSequence = Sequence([Dataset()])  # a wanted sequence with one empty item
    ds.ObservationDateTime = "20240611101010"  # (0040,A032) after (0040,0275): read after the recording
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = CTImageStorage, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = directory / f"{n}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _receive(store: InstanceStore, path: Path) -> None:
    meta = read_meta(path)
    incoming = store.begin(meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax_uid, calling_ae="T")
    incoming.write(path.read_bytes()[meta.dataset_offset:])
    incoming.commit()


def _series(conn: sqlite3.Connection, key: Sequence) -> dict[str, Dataset]:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = f"{ROOT}.1"
    ds.SeriesInstanceUID = ""
    ds.RequestAttributesSequence = key
    plan = engine.plan_find(STUDY_ROOT, ds, relational=False)
    found, more = engine.run_find(conn, plan, 100)
    assert not more
    return {str(m.SeriesInstanceUID): m for m in found}


@pytest.fixture
def received(tmp_path: Path) -> sqlite3.Connection:
    conn = open_database(tmp_path / "agent.db")
    store = InstanceStore(tmp_path, conn)
    q.ensure_schema(conn)
    big = Dataset()
    big.RequestedProcedureID = "BIG"
    big.RequestedProcedureDescription = "x" * 64
    files = tmp_path / "files"
    files.mkdir()
    _receive(store, _file(files, 1, [_req("RP1")]))
    _receive(store, _file(files, 2, [_req("RP2")], undefined=True))
    for n, undefined in ((3, False), (4, True)):  # 1100 items of ~80 bytes: over 64 KiB
        _receive(store, _file(files, n, [big] * 1100, undefined=undefined))
    _receive(store, _file(files, 5, []))
    return conn


def _req(rp: str) -> Dataset:
    item = Dataset()
    item.RequestedProcedureID = rp
    item.ScheduledProcedureStepID = "S" + rp
    return item


def test_what_the_index_keeps(received: sqlite3.Connection) -> None:
    rows = {r["series_instance_uid"]: r for r in received.execute("SELECT * FROM instances")}
    assert {s: rows[s]["request_attributes_seq"] == OVERSIZED for s in rows} == {
        f"{ROOT}.1.{n}": n in (3, 4) for n in range(1, 6)}
    assert rows[f"{ROOT}.1.5"]["request_attributes_seq"] is None
    for n in range(1, 6):  # elements before and after a recorded (or oversized) sequence are indexed
        row = rows[f"{ROOT}.1.{n}"]
        assert (row["series_description"], row["pps_start_date"], row["observation_datetime"]) == (
            f"after the sequence {n}", "20240611", "20240611101010")
        assert row["content_template_seq"] is not None  # one empty item is kept as it is


def test_oversized_and_absent_sequences_answer_empty_and_match_only_universal(received: sqlite3.Connection) -> None:
    everything = _series(received, Sequence())
    assert sorted(everything) == [f"{ROOT}.1.{n}" for n in range(1, 6)]
    assert [i.RequestedProcedureID for i in everything[f"{ROOT}.1.2"].RequestAttributesSequence] == ["RP2"]
    for n in (3, 4, 5):
        assert len(everything[f"{ROOT}.1.{n}"].RequestAttributesSequence) == 0
    assert sorted(_series(received, Sequence([_item(RequestedProcedureID="*")]))) == sorted(everything)
    assert sorted(_series(received, Sequence([_item(RequestedProcedureID="RP?")]))) == [f"{ROOT}.1.1", f"{ROOT}.1.2"]
    assert sorted(_series(received, Sequence([_item(RequestedProcedureID="BIG")]))) == []


def _item(**keys: str) -> Dataset:
    ds = Dataset()
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


@pytest.mark.trio
async def test_an_older_database_gets_its_sequences_from_the_files(received: sqlite3.Connection, tmp_path: Path
                                                                   ) -> None:
    """As a version without sequence columns left it: the instance columns empty, `qr_series` without
    the column (and its triggers), no record of the column set. Start-up rebuilds the summary, the
    backfill reads the headers, and the SERIES query matches again."""
    from agent.profile import QuerySettings
    from agent.services.blocking import Blocking
    from agent.services.query.scp import QuerySCP
    from agent.store.queue import JobQueue

    conn = received
    old_columns = [c for c in q.SERIES_COLUMNS if c != "request_attributes_seq"]
    for name in ("insert", "delete", "replace", "update"):
        conn.execute(f"DROP TRIGGER qr_instances_{name}")
    conn.execute("DROP TABLE qr_series")
    conn.execute(f"CREATE TABLE qr_series (series_instance_uid TEXT PRIMARY KEY, {', '.join(old_columns)}, "
                 "related_instances INTEGER NOT NULL)")
    conn.execute("UPDATE instances SET request_attributes_seq = NULL, content_template_seq = NULL")
    conn.execute("DELETE FROM qr_meta")
    conn.commit()

    assert q.ensure_schema(conn) is True  # the outdated summary is made again and rebuilt
    assert _series(conn, Sequence([_item(RequestedProcedureID="RP1")])) == {}
    scp = QuerySCP(QuerySettings(), conn, Blocking(), JobQueue(conn), {}, tmp_path)
    await scp.backfill()
    assert sorted(_series(conn, Sequence([_item(RequestedProcedureID="RP?")]))) == [f"{ROOT}.1.1", f"{ROOT}.1.2"]
    assert not q.backfill_pending(conn)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2",
                                    "1.2.840.10008.1.2.1.99"])
@pytest.mark.parametrize("undefined", [False, True])
def test_items_come_back_as_written_in_every_transfer_syntax(tmp_path: Path, syntax: str, undefined: bool) -> None:
    """The header walk keeps a sequence in any transfer syntax (deflated included), of defined or
    undefined length, nested items too, and `unpack` gives back the items pydicom wrote, ISO_IR 192 text
    decoded."""
    from agent.store.dicomfile import scan_dataset
    from agent.store.header import index_values
    from agent.store.index_columns import INDEX_TAGS
    from agent.store.sequences import unpack

    ds = _observer_dataset(syntax)
    ds["VerifyingObserverSequence"].is_undefined_length = undefined
    for item in ds.VerifyingObserverSequence:
        item.is_undefined_length_sequence_item = undefined
    path = tmp_path / "sr.dcm"
    ds.save_as(path, enforce_file_format=True)
    meta = read_meta(path)
    values, _, _ = index_values(scan_dataset(path, meta.dataset_offset, meta.transfer_syntax_uid, INDEX_TAGS))
    items = unpack(values["verifying_observer_seq"], 0x0040A073, values["specific_character_set"])
    assert items is not None and len(items) == 2
    assert [str(i.VerifyingObserverName) for i in items] == ["Wałęsa^Łucja", "Doe^Jane"]
    assert items[0].VerifyingObserverIdentificationCodeSequence[0].CodeMeaning == "Łódź"
    assert values["observation_datetime"] == "20240611"  # the element after the sequence


def test_a_sequence_received_as_un_is_kept_as_implicit_vr(tmp_path: Path) -> None:
    """Explicit VR with the sequence's VR unknown to the sender (UN, Implicit VR Little Endian inside,
    PS3.5 6.2.2): the items are still decoded."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from agent.store.dicomfile import scan_dataset
    from agent.store.header import index_values
    from agent.store.index_columns import INDEX_TAGS
    from agent.store.sequences import unpack

    ds = _observer_dataset("1.2.840.10008.1.2.1")
    inner = Dataset()
    inner.SpecificCharacterSet = "ISO_IR 192"
    inner.VerifyingObserverSequence = ds.VerifyingObserverSequence
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, inner)
    written = fp.getvalue()
    implicit = written[written.index(b"\x40\x00\x73\xa0") + 8:]  # the items, after the element header
    del ds.VerifyingObserverSequence
    path = tmp_path / "un.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = bytearray(path.read_bytes())
    element = b"\x40\x00\x73\xa0UN\x00\x00" + len(implicit).to_bytes(4, "little") + implicit
    meta = read_meta(path)
    at = data.index(b"\x40\x00\x32\xa0", meta.dataset_offset)  # before Observation DateTime
    data[at:at] = element
    path.write_bytes(bytes(data))
    values, _, _ = index_values(scan_dataset(path, meta.dataset_offset, meta.transfer_syntax_uid, INDEX_TAGS))
    items = unpack(values["verifying_observer_seq"], 0x0040A073, values["specific_character_set"])
    assert items is not None and [str(i.VerifyingObserverName) for i in items] == ["Wałęsa^Łucja", "Doe^Jane"]


def _observer_dataset(syntax: str) -> Dataset:
    from pydicom.uid import ComprehensiveSRStorage

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = ComprehensiveSRStorage, f"{ROOT}.9.1"
    ds.ObservationDateTime = "20240611"
    code = _item(CodeValue="C1", CodingSchemeDesignator="99X", CodeMeaning="Łódź")
    first = _item(VerifyingObserverName="Wałęsa^Łucja", VerificationDateTime="20240611101500")
    first.VerifyingObserverIdentificationCodeSequence = Sequence([code])
    ds.VerifyingObserverSequence = Sequence([first, _item(VerifyingObserverName="Doe^Jane")])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ComprehensiveSRStorage, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def test_non_ascii_item_text_without_a_stored_character_set_is_answered_in_iso_ir_192(tmp_path: Path) -> None:
    """An instance that declares no character set but has Latin-1 bytes in an item (read as Latin-1,
    as pydicom does): the answer names ISO_IR 192 so the text is not lost."""
    conn = open_database(tmp_path / "agent.db")
    store = InstanceStore(tmp_path, conn)
    q.ensure_schema(conn)
    ds = _observer_dataset("1.2.840.10008.1.2.1")
    del ds.SpecificCharacterSet
    ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{ROOT}.9", f"{ROOT}.9.1"
    ds.VerifyingObserverSequence = Sequence([_item(VerifyingObserverName="Doe^Jane")])
    ds.VerifyingObserverSequence[0].VerifyingOrganization = b"M\xfcnchen"
    path = tmp_path / "latin1.dcm"
    ds.save_as(path, enforce_file_format=True)
    _receive(store, path)
    ident = Dataset()
    ident.QueryRetrieveLevel, ident.StudyInstanceUID, ident.SeriesInstanceUID = "IMAGE", f"{ROOT}.9", f"{ROOT}.9.1"
    ident.SOPInstanceUID = ""
    ident.VerifyingObserverSequence = Sequence()
    found, _ = engine.run_find(conn, engine.plan_find(STUDY_ROOT, ident, relational=False), 10)
    assert len(found) == 1 and found[0].SpecificCharacterSet == "ISO_IR 192"
    assert found[0].VerifyingObserverSequence[0].VerifyingOrganization == "München"


@pytest.mark.parametrize("stored", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"])
def test_answers_on_the_wire_in_either_transfer_syntax(tmp_path: Path, stored: str) -> None:
    """The bytes the SCP sends (`scp._encoded`), in Explicit and Implicit VR Little Endian, for items
    stored in Explicit, Implicit or Big Endian, decode to the stored items: whole for a universal key,
    reduced to the key item's keys otherwise, ISO_IR 192 text intact, asked twice (decoded items are
    reused across queries and must not be changed by answering)."""
    from agent.services.dataset import decode
    from agent.services.query.scp import _encoded

    conn = open_database(tmp_path / "agent.db")
    store = InstanceStore(tmp_path, conn)
    q.ensure_schema(conn)
    ds = _observer_dataset(stored)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{ROOT}.8", f"{ROOT}.8.1"
    path = tmp_path / "sr.dcm"
    ds.save_as(path, enforce_file_format=True)
    _receive(store, path)
    for key_items in ([], [_item(VerifyingObserverName="wałęsa*")]):
        ident = Dataset()
        ident.SpecificCharacterSet = "ISO_IR 192"
        ident.QueryRetrieveLevel, ident.StudyInstanceUID, ident.SeriesInstanceUID = "IMAGE", f"{ROOT}.8", f"{ROOT}.8.1"
        ident.SOPInstanceUID = ""
        ident.VerifyingObserverSequence = Sequence(key_items)
        plan = engine.plan_find(STUDY_ROOT, ident, relational=False)
        for _ in range(2):
            for syntax in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"):
                encoded, _ = _encoded(plan, engine.fetch_rows(conn, plan), 10, syntax, "test")
                (answer,) = [decode(b, syntax, eager=True) for b in encoded]
                items = answer.VerifyingObserverSequence
                assert answer.SpecificCharacterSet == "ISO_IR 192", syntax
                if key_items:
                    assert len(items) == 1 and list(items[0].keys()) == [0x0040A075], syntax
                else:
                    assert len(items) == 2 and items[0].VerifyingObserverIdentificationCodeSequence[0].CodeMeaning \
                        == "Łódź", syntax
                assert str(items[0].VerifyingObserverName) == "Wałęsa^Łucja", syntax


def test_only_a_sequence_column_is_marked_oversized() -> None:
    """A value over the walker's bound is not kept; for a sequence column the index says so (OVERSIZED),
    any other column is NULL, never the sequence marker's byte in a text column a query would answer."""
    from agent.store.dicomfile import DataSetScan
    from agent.store.header import index_values
    from agent.store.index_columns import INDEX_COLUMNS

    concept, description = 0x0040A043, 0x00081030  # Concept Name Code Sequence, Study Description
    out, _, _ = index_values(DataSetScan(count=2, values={}, implicit=False, little=True,
                                         oversized=frozenset({concept, description})))
    column = {c.tag: c.column for c in INDEX_COLUMNS}
    assert out[column[concept]] == OVERSIZED
    assert out[column[description]] is None
