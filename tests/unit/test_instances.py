"""The instance store as the Storage SCP and a peer see it: bytes in, Part 10 file + index row out."""

from __future__ import annotations

import errno
import os
import sqlite3
import struct
import threading
import time
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset, dcmread
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from agent import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from agent.store.db import open_database
from agent.store.dicomfile import validate_uid
from agent.store.instances import (
    SOP_CLASS_MISMATCH_WARNING,
    SOP_INSTANCE_MISMATCH_WARNING,
    DataSetError,
    InstanceNotFound,
    InstanceStore,
    InvalidUID,
    NotDicom,
    OutOfResources,
    StoreError,
    read_meta,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
PDF = "1.2.840.10008.5.1.4.1.1.104.1"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
BIG = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG = "1.2.840.10008.1.2.4.50"
UID = "1.2.826.0.1.3680043.2.1143.1.1"


def make_dataset(uid: str = UID, sop_class: str = CT, name: str = "Doe^Jane") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC1"
    ds.Modality = "CT"
    ds.ReferringPhysicianName = "Who^Doctor"
    ds.StudyDescription = "Chest Ärger"
    ds.PatientName = name
    ds.PatientID = "PID1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.5"
    ds.StudyID = "S1"
    ds.SeriesNumber = 3
    ds.InstanceNumber = 7
    item = Dataset()
    item.ReferencedSOPClassUID = CT
    item.ReferencedSOPInstanceUID = "1.2.3.4.5.6"
    ds.ReferencedImageSequence = Sequence([item])
    # One undefined-length sequence with an undefined-length item, to walk delimiters.
    ds["ReferencedImageSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    ds.SourceImageSequence = Sequence([Dataset()])
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(32))
    ds["PixelData"].VR = "OW"
    return ds


def encode(ds: Dataset, ts: str) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = ts != BIG
    fp.is_implicit_VR = ts == IMPLICIT
    write_dataset(fp, ds)
    raw = fp.getvalue()
    if ts == DEFLATED:
        z = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return z.compress(raw) + z.flush()
    return raw


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return open_database(tmp_path / "agent.db")


@pytest.fixture
def store(tmp_path: Path, conn: sqlite3.Connection) -> InstanceStore:
    return InstanceStore(tmp_path / "data", conn)


def receive(store: InstanceStore, data: bytes, *, uid: str = UID, sop_class: str = CT,
            ts: str = EXPLICIT, chunk: int = 7000, **commit_kw):
    incoming = store.begin(sop_class, uid, ts, calling_ae="MODALITY", called_ae="AGENT")
    for i in range(0, len(data), chunk):
        incoming.write(data[i:i + chunk])
    return incoming.commit(**commit_kw)


def leftovers(store: InstanceStore) -> list[Path]:
    """Object files and received bytes in tmp/ (the pool of empty `.slot` files is not a leftover)."""
    return [p for p in (store.data_dir / "objects").rglob("*") if p.is_file()] + [
        p for p in (store.data_dir / "tmp").iterdir() if not (p.suffix == ".slot" and p.stat().st_size == 0)
    ]


@pytest.mark.parametrize("ts", [EXPLICIT, IMPLICIT, BIG, DEFLATED])
@pytest.mark.parametrize("chunk", [1, 7000])
def test_round_trip(store: InstanceStore, ts: str, chunk: int) -> None:
    ds = make_dataset()
    data = encode(ds, ts)
    result = receive(store, data, ts=ts, chunk=chunk)

    assert result.warnings == [] and not result.duplicate
    stored = result.stored
    digest = stored.path.parent.name
    assert stored.path == store.data_dir / "objects" / digest / f"{UID}.dcm"
    assert len(digest) == 2
    meta = read_meta(stored.path)
    assert (meta.transfer_syntax_uid, meta.sop_class_uid, meta.sop_instance_uid) == (ts, CT, UID)
    raw = stored.path.read_bytes()
    assert raw[:132] == b"\x00" * 128 + b"DICM"
    assert raw[meta.dataset_offset:] == data  # stored exactly as received
    assert stored.size == len(raw)

    back = dcmread(stored.path)
    fm = back.file_meta
    assert fm.FileMetaInformationGroupLength == meta.dataset_offset - 132 - 12
    assert fm.FileMetaInformationVersion == b"\x00\x01"
    assert fm.MediaStorageSOPClassUID == CT
    assert fm.MediaStorageSOPInstanceUID == UID
    assert fm.TransferSyntaxUID == ts
    assert fm.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert fm.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert fm.SourceApplicationEntityTitle == "MODALITY"
    assert fm.ReceivingApplicationEntityTitle == "AGENT"
    for elem in ds:
        assert back[elem.tag].value == elem.value, elem.keyword
    assert back.PixelData == bytes(range(32))
    assert len(back) == len(ds)

    row = store.get(UID)
    assert row == stored
    assert (row.patient_name, row.patient_id, row.study_description) == ("Doe^Jane", "PID1", "Chest Ärger")
    assert (row.series_number, row.instance_number, row.modality) == (3, 7, "CT")
    assert (row.study_instance_uid, row.series_instance_uid) == ("1.2.3.4", "1.2.3.4.5")
    assert (row.calling_ae, row.committed_at, row.specific_character_set) == ("MODALITY", None, "ISO_IR 100")
    assert leftovers(store) == [stored.path]


def test_encapsulated_pixel_data_stored_as_received(store: InstanceStore) -> None:
    ds = make_dataset()
    ds.PixelData = encapsulate([b"\xff\xd8frame-one\xff\xd9", b"\xff\xd8frame-2\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.LossyImageCompression = "01"
    data = encode(ds, EXPLICIT)
    data += struct.pack("<HH2s2xI", 0xFFFC, 0xFFFC, b"OB", 4) + b"\0" * 4  # padding after pixel data
    result = receive(store, data, ts=JPEG)
    raw = result.stored.path.read_bytes()
    assert raw[read_meta(result.stored.path).dataset_offset:] == data
    back = dcmread(result.stored.path)
    assert back.PixelData == ds.PixelData
    assert back.file_meta.TransferSyntaxUID == JPEG


def _patched_length(data: bytes, marker: bytes, delta: int) -> bytes:
    """Add `delta` to the 2-byte explicit-VR length following `marker` (tag + VR)."""
    at = data.index(marker) + len(marker)
    (length,) = struct.unpack("<H", data[at:at + 2])
    return data[:at] + struct.pack("<H", length + delta) + data[at + 2:]


def _bad_payloads() -> dict[str, tuple[str, bytes]]:
    good = encode(make_dataset(), EXPLICIT)
    px = good.index(b"\xe0\x7f\x10\x00OW") + 8
    (px_len,) = struct.unpack("<I", good[px:px + 4])
    encap_ds = make_dataset()
    encap_ds.PixelData = encapsulate([b"frame-one!"])
    encap_ds["PixelData"].VR = "OB"
    encap_ds["PixelData"].is_undefined_length = True
    encap = encode(encap_ds, EXPLICIT)
    return {
        "empty": (EXPLICIT, b""),
        "truncated": (EXPLICIT, good[:-5]),
        "truncated-header": (EXPLICIT, good + b"\x10\x00"),
        "last-length-overruns": (EXPLICIT, good[:px] + struct.pack("<I", px_len + 2) + good[px + 4:]),
        "wrong-inner-length": (EXPLICIT, _patched_length(good, b"\x10\x00\x10\x00PN", 3)),
        "truncated-implicit": (IMPLICIT, encode(make_dataset(), IMPLICIT)[:-1]),
        "truncated-big-endian": (BIG, encode(make_dataset(), BIG)[:-3]),
        "encapsulated-no-delimiter": (JPEG, encap[:-8]),
        "encapsulated-fragment-overruns": (JPEG, encap[:-12]),
        "sequence-not-delimited": (EXPLICIT, good[:good.index(b"\x08\x00\x40\x11SQ") + 40]),
        "deflated-truncated": (DEFLATED, encode(make_dataset(), DEFLATED)[:-4]),
        "not-deflated": (DEFLATED, b"\x00\x01" * 100),
    }


@pytest.mark.parametrize("case", list(_bad_payloads()))
def test_bad_data_set_leaves_nothing(store: InstanceStore, case: str) -> None:
    ts, data = _bad_payloads()[case]
    with pytest.raises(DataSetError):
        receive(store, data, ts=ts)
    assert leftovers(store) == []
    assert store.count() == 0 and store.get(UID) is None


def test_sop_instance_mismatch_warns_but_stores(store: InstanceStore) -> None:
    data = encode(make_dataset(uid="1.2.3.999"), EXPLICIT)
    result = receive(store, data)
    assert result.warnings == [SOP_INSTANCE_MISMATCH_WARNING]
    assert store.get(UID) == result.stored and result.stored.path.is_file()
    assert read_meta(result.stored.path).sop_instance_uid == UID


def test_sop_class_mismatch_warns(store: InstanceStore) -> None:
    result = receive(store, encode(make_dataset(sop_class=PDF), EXPLICIT))
    assert result.warnings == [SOP_CLASS_MISMATCH_WARNING]
    assert store.count() == 1


def test_duplicate_replace(store: InstanceStore) -> None:
    first = receive(store, encode(make_dataset(name="First^One"), EXPLICIT))
    second = receive(store, encode(make_dataset(name="Second^Two"), EXPLICIT))
    assert not first.duplicate and second.duplicate and not second.kept_existing
    assert store.get(UID).patient_name == "Second^Two"
    assert dcmread(second.stored.path).PatientName == "Second^Two"
    assert leftovers(store) == [second.stored.path] and store.count() == 1


def test_duplicate_keep_first(tmp_path: Path, conn: sqlite3.Connection) -> None:
    store = InstanceStore(tmp_path / "data", conn, duplicate="keep-first")
    first = receive(store, encode(make_dataset(name="First^One"), EXPLICIT))
    calls = []
    second = receive(store, encode(make_dataset(name="Second^Two"), EXPLICIT),
                     on_commit=lambda c, s: calls.append(s))
    assert second.duplicate and second.kept_existing
    assert second.stored == first.stored == store.get(UID)
    assert calls == [first.stored]
    assert dcmread(first.stored.path).PatientName == "First^One"
    assert leftovers(store) == [first.stored.path]


def test_replace_with_failing_on_commit_keeps_the_earlier_instance(store: InstanceStore) -> None:
    first = receive(store, encode(make_dataset(name="First^One"), EXPLICIT))

    def boom(conn: sqlite3.Connection, stored) -> None:
        raise RuntimeError("queue full")

    with pytest.raises(RuntimeError):
        receive(store, encode(make_dataset(name="Second^Two"), EXPLICIT), on_commit=boom)
    assert store.get(UID) == first.stored
    assert dcmread(first.stored.path).PatientName == "First^One"
    assert leftovers(store) == [first.stored.path]


def test_free_space_floor(tmp_path: Path, conn: sqlite3.Connection) -> None:
    store = InstanceStore(tmp_path / "data", conn, free_space_floor=1 << 62)
    with pytest.raises(OutOfResources):
        store.begin(CT, UID, EXPLICIT, calling_ae="MOD")
    assert leftovers(store) == []
    InstanceStore(tmp_path / "data", conn, free_space_floor=1).begin(CT, UID, EXPLICIT, calling_ae="M").abort()


def test_enospc_while_writing(store: InstanceStore, monkeypatch: pytest.MonkeyPatch) -> None:
    incoming = store.begin(CT, UID, EXPLICIT, calling_ae="MOD")
    real_write = os.write

    def full_disk(fd: int, data) -> int:
        if fd == incoming._fd:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OutOfResources):
        incoming.write(b"\x08\x00\x16\x00")
    monkeypatch.undo()
    assert leftovers(store) == []
    with pytest.raises(StoreError):
        incoming.commit()


@pytest.mark.parametrize(
    "bad", ["../etc", "1.2.abc", "1.02.3", "", "1..2", "1.2.", ".1", "1/2", "1.2\x00", "1" * 65, "1.2 "]
)
def test_invalid_uid(store: InstanceStore, bad: str) -> None:
    with pytest.raises(InvalidUID):
        store.begin(CT, bad, EXPLICIT, calling_ae="MOD")
    with pytest.raises(InvalidUID):
        store.begin(bad, UID, EXPLICIT, calling_ae="MOD")
    with pytest.raises(InvalidUID):
        store.begin(CT, UID, bad, calling_ae="MOD")
    assert leftovers(store) == []


@pytest.mark.parametrize("good", ["0", "0.0", "1.2.840.10008.1.2", "2.25." + "9" * 59, "10.20.0"])
def test_valid_uid(good: str) -> None:
    assert validate_uid(good) == good


def test_on_commit_raising_leaves_nothing(store: InstanceStore) -> None:
    def boom(conn: sqlite3.Connection, stored) -> None:
        assert stored.path.is_file()
        raise RuntimeError("enqueue failed")

    with pytest.raises(RuntimeError, match="enqueue failed"):
        receive(store, encode(make_dataset(), EXPLICIT), on_commit=boom)
    assert store.count() == 0 and leftovers(store) == []


def test_on_commit_enqueues_atomically(tmp_path: Path, store: InstanceStore, conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, uid TEXT)")

    def enqueue(c: sqlite3.Connection, stored) -> None:
        assert c.in_transaction
        c.execute("INSERT INTO jobs (uid) VALUES (?)", (stored.sop_instance_uid,))

    def enqueue_then_fail(c: sqlite3.Connection, stored) -> None:
        enqueue(c, stored)
        raise RuntimeError("second destination unknown")

    with pytest.raises(RuntimeError):
        receive(store, encode(make_dataset(uid="1.2.3"), EXPLICIT), uid="1.2.3", on_commit=enqueue_then_fail)
    receive(store, encode(make_dataset(), EXPLICIT), on_commit=enqueue)

    other = open_database(tmp_path / "agent.db")  # what a crash-restarted agent would see
    assert [tuple(r) for r in other.execute("SELECT uid FROM jobs")] == [(UID,)]
    assert [r[0] for r in other.execute("SELECT sop_instance_uid FROM instances")] == [UID]


def test_abort_is_idempotent_and_final(store: InstanceStore) -> None:
    incoming = store.begin(CT, UID, EXPLICIT, calling_ae="MOD")
    incoming.write(encode(make_dataset(), EXPLICIT))
    assert incoming.temp_path.exists()
    incoming.abort()
    incoming.abort()
    assert leftovers(store) == []
    with pytest.raises(StoreError):
        incoming.commit()
    with pytest.raises(StoreError):
        incoming.write(b"x")


def test_commit_twice_raises(store: InstanceStore) -> None:
    incoming = store.begin(CT, UID, EXPLICIT, calling_ae="MOD")
    incoming.write(encode(make_dataset(), EXPLICIT))
    incoming.commit()
    with pytest.raises(StoreError):
        incoming.commit()
    incoming.abort()  # no-op after commit
    assert store.get(UID).path.is_file()


def test_commit_from_worker_threads(store: InstanceStore) -> None:
    uids = [f"1.2.3.{i}" for i in range(1, 9)]
    incomings = []
    for uid in uids:
        incoming = store.begin(CT, uid, EXPLICIT, calling_ae="MOD")
        incoming.write(encode(make_dataset(uid=uid), EXPLICIT))
        incomings.append(incoming)
    errors: list[BaseException] = []

    def run(incoming) -> None:
        try:
            incoming.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in incomings]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(s.sop_instance_uid for s in store.find()) == sorted(uids)


def test_startup_cleanup(tmp_path: Path, conn: sqlite3.Connection, store: InstanceStore) -> None:
    kept = receive(store, encode(make_dataset(uid="1.2.1"), EXPLICIT), uid="1.2.1").stored
    lost = receive(store, encode(make_dataset(uid="1.2.2"), EXPLICIT), uid="1.2.2").stored
    lost.path.unlink()
    crashed = store.begin(CT, "1.2.3", EXPLICIT, calling_ae="MOD")  # receive interrupted by a crash
    crashed.write(b"\x08\x00")
    orphan = store.data_dir / "objects" / "ab" / "1.2.4.dcm"  # renamed, row never written
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"x")

    restarted = InstanceStore(tmp_path / "data", conn)
    report = restarted.startup_cleanup()
    assert (report.temp_files_removed, report.rows_removed, report.orphan_files_removed) == (1, 1, 1)
    assert [s.sop_instance_uid for s in restarted.find()] == ["1.2.1"]
    assert leftovers(restarted) == [kept.path]
    assert restarted.startup_cleanup() == type(report)(0, 0, 0)


def test_whole_files_whose_row_was_lost_are_indexed_again_with_the_hook(
    tmp_path: Path, conn: sqlite3.Connection, store: InstanceStore
) -> None:
    # The row's COMMIT is not flushed: a power cut may lose it (and the rename). Start-up indexes the
    # flushed files again, exactly as at receive, running the receive hook (forwarding) for each.
    data = encode(make_dataset(), EXPLICIT)
    stored = receive(store, data).stored
    in_slot = receive(store, encode(make_dataset(uid="1.2.5"), EXPLICIT), uid="1.2.5").stored
    os.rename(in_slot.path, store.data_dir / "tmp" / "lost-rename.slot")
    unfinished = store.begin(CT, "1.2.6", EXPLICIT, calling_ae="MOD")  # whole bytes, never completed
    unfinished.write(encode(make_dataset(uid="1.2.6"), EXPLICIT))
    with conn:
        conn.execute("DELETE FROM instances")
    hooked: list[str] = []

    restarted = InstanceStore(tmp_path / "data", conn)
    report = restarted.startup_cleanup(on_commit=lambda c, s: hooked.append(s.sop_instance_uid))
    assert sorted(hooked) == sorted([UID, "1.2.5"]) and report.temp_files_removed == 1
    again = restarted.get(UID)
    assert again is not None and again.path == stored.path and again.path.read_bytes().endswith(data)
    assert (again.patient_name, again.calling_ae, again.size) == (stored.patient_name, "MODALITY", stored.size)
    assert restarted.get("1.2.6") is None and len(leftovers(restarted)) == 2
    assert restarted.startup_cleanup() == type(report)(0, 0, 0)


def test_a_rename_lost_by_a_power_cut_after_the_commit_is_redone_at_start_up(
    tmp_path: Path, conn: sqlite3.Connection, store: InstanceStore
) -> None:
    # The acknowledgement needs the data (fdatasync), the file's name (its slot in tmp/, flushed when
    # the slot was made) and the row (COMMIT); the rename into objects/ is not flushed. A power cut can
    # leave the file under its slot name: start-up must put it back, not drop the acknowledged row.
    data = encode(make_dataset(), EXPLICIT)
    stored = receive(store, data).stored
    staged = conn.execute("SELECT staged FROM instances WHERE sop_instance_uid = ?", (UID,)).fetchone()[0]
    assert staged and staged.endswith(".slot")
    os.rename(stored.path, store.data_dir / "tmp" / staged)

    restarted = InstanceStore(tmp_path / "data", conn)
    report = restarted.startup_cleanup()
    assert (report.temp_files_removed, report.rows_removed, report.orphan_files_removed) == (0, 0, 0)
    again = restarted.get(UID)
    assert again is not None and again.path.read_bytes()[-len(data):] == data
    assert leftovers(restarted) == [again.path]


def test_one_file_flush_per_instance_and_a_directory_flush_per_batch_of_slots(
    store: InstanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.store import instances

    for i in range(256):  # buckets made once in a store's life; their creation is flushed then
        (store.data_dir / "objects" / f"{i:02x}").mkdir(exist_ok=True)
    calls: list[str] = []
    monkeypatch.setattr(instances.os, "fsync", lambda fd, real=os.fsync: (calls.append("fsync"), real(fd))[1])
    monkeypatch.setattr(instances.os, "fdatasync",
                        lambda fd, real=os.fdatasync: (calls.append("fdatasync"), real(fd))[1])
    monkeypatch.setattr(instances, "SLOT_BATCH", 8)
    count = 2 * instances.SLOT_BATCH
    for i in range(count):
        uid = f"1.2.826.0.1.3680043.8.498.5.{i}"
        receive(store, encode(make_dataset(uid), EXPLICIT), uid=uid)
    # One flush of each file (data, size and its completion mode), plus one directory flush per batch
    # of slots; the index COMMIT adds none (synchronous=NORMAL for it, FULL again afterwards).
    assert calls.count("fdatasync") == 0
    assert count <= calls.count("fsync") <= count + 2
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL for everyone else
    assert all(oct(p.stat().st_mode & 0o777) == "0o640" for p in (store.data_dir / "objects").rglob("*.dcm"))
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in (store.data_dir / "tmp").glob("*.slot"))


def test_write_keeps_no_reference_to_the_callers_buffer(store: InstanceStore) -> None:
    # The network layer hands in views of buffers it may reuse or resize once write() returns.
    data = encode(make_dataset(), EXPLICIT)
    first, second = bytearray(data[:100]), bytearray(data[100:300])
    incoming = store.begin(CT, UID, EXPLICIT, calling_ae="MODALITY")
    incoming.write(memoryview(first))
    incoming.write_all([memoryview(second), memoryview(bytearray(data[300:]))])
    first.extend(b"resizable")  # BufferError if a view of it were still held
    second.clear()
    stored = incoming.commit().stored
    assert stored.path.read_bytes().endswith(data)


def test_concurrent_installs_share_commits_and_a_failing_one_fails_alone(
    store: InstanceStore, conn: sqlite3.Connection
) -> None:
    # Eight threads reach the commit together (the database lock is held until all have queued):
    # fewer COMMITs than instances; the one whose on_commit raises gets its error and leaves nothing.
    blocking_lock = threading.Lock()
    uids = [f"1.2.826.0.1.3680043.8.498.7.{i}" for i in range(8)]
    prepared = []
    for uid in uids:
        incoming = store.begin(CT, uid, EXPLICIT, calling_ae="MODALITY")
        incoming.write(encode(make_dataset(uid), EXPLICIT))
        incoming.prepare()
        prepared.append(incoming)
    commits: list[str] = []
    conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)

    def on_commit(c: sqlite3.Connection, stored) -> None:  # type: ignore[no-untyped-def]
        if stored.sop_instance_uid == uids[3]:
            raise RuntimeError("refused by on_commit")

    def exclusive(fn, *args):  # type: ignore[no-untyped-def]
        with blocking_lock:
            return fn(*args)

    outcomes: dict[str, object] = {}

    def install(incoming) -> None:  # type: ignore[no-untyped-def]
        try:
            outcomes[incoming.sop_instance_uid] = store.install_group(incoming, on_commit, exclusive)
        except RuntimeError as exc:
            outcomes[incoming.sop_instance_uid] = exc

    with blocking_lock:
        threads = [threading.Thread(target=install, args=(i,)) for i in prepared]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(store._group) + (1 if store._group_leader else 0) < len(uids) and time.monotonic() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join()
    conn.set_trace_callback(None)
    assert isinstance(outcomes[uids[3]], RuntimeError)
    assert all(outcomes[u].stored.path.is_file() for u in uids if u != uids[3])  # type: ignore[attr-defined]
    assert sorted(s.sop_instance_uid for s in store.find()) == sorted(u for u in uids if u != uids[3])
    assert len(commits) == 1, commits  # the leader took all eight once it had the database lock
    assert len(leftovers(store)) == len(uids) - 1


def test_lookups_commitment_and_deletion(store: InstanceStore) -> None:
    for i, pid in enumerate(["A", "A", "B"], start=1):
        ds = make_dataset(uid=f"1.2.{i}")
        ds.PatientID = pid
        receive(store, encode(ds, EXPLICIT), uid=f"1.2.{i}")
    assert store.count() == 3
    assert store.total_size() == sum(s.path.stat().st_size for s in store.find())
    assert [s.sop_instance_uid for s in store.find(patient_id="A")] == ["1.2.1", "1.2.2"]
    assert [s.sop_instance_uid for s in store.find(patient_id="B", modality="CT")] == ["1.2.3"]
    assert store.find(patient_id="C") == [] and len(store.find(committed_at=None)) == 3
    with pytest.raises(ValueError):
        store.find(path="/etc/passwd")
    with pytest.raises(ValueError):
        store.find(nonsense=1)

    with store.open_for_read("1.2.1") as f:
        assert f.read()[128:132] == b"DICM"
    with pytest.raises(InstanceNotFound):
        store.open_for_read("../../etc/passwd")

    assert store.mark_committed(["1.2.1", "1.2.2", "9.9"], when=1000.0) == 2
    store.mark_committed(["1.2.2"], when=5000.0)
    assert store.get("1.2.1").committed_at == 1000.0
    assert [s.sop_instance_uid for s in store.eligible_for_deletion(3600, now=4700.0)] == ["1.2.1"]
    assert [s.sop_instance_uid for s in store.eligible_for_deletion(3600, now=9000.0)] == ["1.2.1", "1.2.2"]

    path = store.get("1.2.1").path
    assert store.delete("1.2.1") is True
    assert not path.exists() and store.get("1.2.1") is None
    assert store.delete("1.2.1") is False
    assert store.count() == 2


def test_read_meta_of_foreign_files(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = IMPLICIT
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = UID
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    meta = read_meta(path)
    assert (meta.transfer_syntax_uid, meta.sop_class_uid, meta.sop_instance_uid) == (IMPLICIT, CT, UID)
    assert path.read_bytes()[meta.dataset_offset:] == encode(ds, IMPLICIT)

    bare = tmp_path / "bare.dcm"
    bare.write_bytes(encode(ds, EXPLICIT))  # no preamble
    with pytest.raises(NotDicom):
        read_meta(bare)
    text = tmp_path / "notes.txt"
    text.write_bytes(b"hello" * 100)
    with pytest.raises(NotDicom):
        read_meta(text)


def _vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_200_mb_object_with_bounded_memory(store: InstanceStore) -> None:
    size = 200 * 1024 * 1024
    ds = make_dataset(sop_class=PDF)
    del ds.PixelData
    head = encode(ds, EXPLICIT)
    # A 200 MB Encapsulated Document (0042,0011) OB after the indexed attributes, so neither pixel
    # data handling nor stop_before_pixels can be what keeps it out of memory.
    header = struct.pack("<HH2s2xI", 0x0042, 0x0011, b"OB", size)
    block = b"%PDF" + b"\x5a" * (1024 * 1024 - 4)

    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _vm_hwm()
    started = time.perf_counter()
    incoming = store.begin(PDF, UID, EXPLICIT, calling_ae="MOD")
    incoming.write(head)
    incoming.write(header)
    for _ in range(size // len(block)):
        incoming.write(memoryview(block))
    result = incoming.commit()
    elapsed = time.perf_counter() - started
    grown = _vm_hwm() - before

    assert result.stored.size == read_meta(result.stored.path).dataset_offset + len(head) + 12 + size
    assert result.stored.patient_name == "Doe^Jane"
    assert grown < 60 * 1024 * 1024, f"peak RSS grew by {grown / 2**20:.1f} MiB"
    assert elapsed < 30  # generous: fsync of 200 MB depends on the disk
