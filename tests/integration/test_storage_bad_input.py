"""The Storage SCP under bad input: what a peer sees (the C-STORE status) and what is left on disk.

The requests are sent with the agent's own SCU pieces (`associate`, `send_message` with raw data set
bytes, PDVs queued by hand for an association broken half-way), so the bytes on the wire are exactly
the ones each test builds.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from agent.dimse import CStoreRQ, encode_message
from agent.dimse.status import Status
from agent.net.client import associate, open_association
from agent.net.connection import DicomConnection, Timeouts
from agent.net.requests import Reply, await_response
from agent.store.dicomfile import object_relpath, read_meta
from agent.ul import pdu as P
from agent.ul.negotiation import ProposedContext
from tests.conftest import write_profile
from tests.interop.storage_helpers import index_count, index_row, make_image, object_files, temp_files

FAST = Timeouts(artim=5, dimse=10, idle=10, connect=5)
STORAGE = '[storage]\nfree_space_floor = "1MB"\n'
CONTEXTS = [ProposedContext(CTImageStorage, (ExplicitVRLittleEndian,))]


def dataset_of(path: Path) -> tuple[str, bytes]:
    """(SOP Instance UID, data set bytes exactly as in the file, Explicit VR Little Endian)."""
    meta = read_meta(path)
    return meta.sop_instance_uid, path.read_bytes()[meta.dataset_offset :]


def element_offset(data: bytes, tag: int) -> int:
    """Offset of a top-level element's header in an Explicit VR Little Endian data set (a simple walk)."""
    pos = 0
    while pos < len(data):
        group, elem = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR", b"OF", b"OD", b"OL", b"OV", b"SV", b"UV"):
            (length,) = struct.unpack_from("<I", data, pos + 8)
            header = 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            header = 8
        if (group << 16) | elem == tag:
            return pos
        pos += header + length
    raise KeyError(hex(tag))


async def store(conn: DicomConnection, sop_instance_uid: str, data: bytes,
                sop_class_uid: str = CTImageStorage) -> Reply:
    ctx = conn.context_for(sop_class_uid)
    assert ctx is not None
    rq = CStoreRQ(
        message_id=conn.next_message_id(),
        affected_sop_class_uid=sop_class_uid,
        affected_sop_instance_uid=sop_instance_uid,
    )
    with trio.fail_after(20):
        await conn.send_message(ctx.id, rq, data)
        return await await_response(conn, rq.message_id)


def assert_nothing_stored(data_dir: Path) -> None:
    assert object_files(data_dir) == []
    assert temp_files(data_dir) == []
    assert index_count(data_dir) == 0


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return make_image(tmp_path / "send" / "ok.dcm", seed=1)


def _assoc(port: int):
    return associate("127.0.0.1", port, calling_ae="BADSCU", called_ae="AGENT", proposals=CONTEXTS, timeouts=FAST)


# ---------------------------------------------------------------- unreadable data sets


@pytest.mark.parametrize("where", ["pixel-data-value", "patient-name-value", "element-header"])
async def test_truncated_dataset_is_refused_and_leaves_nothing(tmp_path: Path, start_agent, image: Path,
                                                               where: str) -> None:
    running = await start_agent(write_profile(tmp_path / "agent", STORAGE))
    uid, data = dataset_of(image)
    if where == "pixel-data-value":
        cut = element_offset(data, 0x7FE00010) + 12 + 1000
    elif where == "patient-name-value":
        cut = element_offset(data, 0x00100010) + 8 + 3
    else:
        cut = element_offset(data, 0x00100020) + 5  # inside PatientID's 8-byte header
    async with _assoc(running.port) as conn:
        reply = await store(conn, uid, data[:cut])
        assert reply.status in (Status.CANNOT_UNDERSTAND, 0xA900), hex(reply.status)
        # The association is still usable: a good data set after the bad one is stored.
        good_uid, good = dataset_of(make_image(tmp_path / "good.dcm", seed=2))
        assert (await store(conn, good_uid, good)).status == Status.SUCCESS
    assert not (running.data_dir / object_relpath(uid)).exists()
    assert index_row(running.data_dir, uid) is None
    assert temp_files(running.data_dir) == []
    assert [p.name for p in object_files(running.data_dir)] == [f"{good_uid}.dcm"]


@pytest.mark.parametrize("how", ["pixel-data-too-long", "patient-id-length-huge", "odd-garbage-after"])
async def test_wrong_element_length_is_refused_and_leaves_nothing(tmp_path: Path, start_agent, image: Path,
                                                                  how: str) -> None:
    running = await start_agent(write_profile(tmp_path / "agent", STORAGE))
    uid, data = dataset_of(image)
    bad = bytearray(data)
    if how == "pixel-data-too-long":
        pos = element_offset(data, 0x7FE00010)
        (length,) = struct.unpack_from("<I", bad, pos + 8)
        struct.pack_into("<I", bad, pos + 8, length + 2)
    elif how == "patient-id-length-huge":
        pos = element_offset(data, 0x00100020)
        struct.pack_into("<H", bad, pos + 6, 0xFFF0)
    else:
        bad += b"\x10\x00\x20"  # three bytes: not even an element header
    async with _assoc(running.port) as conn:
        reply = await store(conn, uid, bytes(bad))
        assert reply.status in (Status.CANNOT_UNDERSTAND, 0xA900), hex(reply.status)
    assert_nothing_stored(running.data_dir)


# ---------------------------------------------------------------- association broken mid-object


@pytest.mark.parametrize("ending", ["a-abort", "tcp-close"])
async def test_association_broken_mid_object_leaves_nothing(tmp_path: Path, start_agent, ending: str) -> None:
    running = await start_agent(write_profile(tmp_path / "agent", STORAGE))
    big = make_image(tmp_path / "big.dcm", rows=2560, columns=4096, seed=3)  # 20 MiB of pixel data
    uid, data = dataset_of(big)
    assert len(data) > 20_000_000
    conn = await open_association(
        "127.0.0.1", running.port, calling_ae="BADSCU", called_ae="AGENT", proposals=CONTEXTS, timeouts=FAST
    )
    try:
        ctx = conn.context_for(CTImageStorage)
        assert ctx is not None
        # The command and the first half of the data set's PDVs, queued by hand (send_message would
        # send it all); one flush per PDV so the agent sees them arrive.
        command = encode_message(
            CStoreRQ(message_id=1, affected_sop_class_uid=CTImageStorage, affected_sop_instance_uid=uid)
        )
        conn.assoc.send_pdata(P.encode_pdata_header(ctx.id, True, True, len(command)) + command)
        step = conn.max_pdv_data
        half = len(data) // 2
        for start in range(0, half, step):
            chunk = data[start : min(start + step, half)]
            conn.assoc.send_pdata(P.encode_pdata_header(ctx.id, False, False, len(chunk)) + chunk)
            await conn.flush()
        # The agent streams to disk as data arrives: its temp file exists by now.
        with trio.fail_after(30):
            while not temp_files(running.data_dir):
                await trio.sleep(0.01)
        if ending == "a-abort":
            await conn.abort()
        else:
            await conn.stream.aclose()  # no A-ABORT: the transport just closes (PS3.8 Evt17)
    finally:
        await conn.aclose()
    with trio.fail_after(30):
        while temp_files(running.data_dir):
            await trio.sleep(0.01)
    assert object_files(running.data_dir) == []
    assert index_row(running.data_dir, uid) is None
    # The agent still serves: the next association stores an object.
    good_uid, good = dataset_of(make_image(tmp_path / "good.dcm", seed=4))
    async with _assoc(running.port) as conn2:
        assert (await store(conn2, good_uid, good)).status == Status.SUCCESS
    assert index_row(running.data_dir, good_uid) is not None


# ---------------------------------------------------------------- refusals that keep the association


async def test_free_space_floor_refuses_with_a700(tmp_path: Path, start_agent, image: Path) -> None:
    running = await start_agent(write_profile(tmp_path / "agent", '[storage]\nfree_space_floor = "100TB"\n'))
    uid, data = dataset_of(image)
    async with _assoc(running.port) as conn:
        reply = await store(conn, uid, data)
        assert reply.status == Status.OUT_OF_RESOURCES == 0xA700
        # Refused, but the data set was drained: the association still answers the next request.
        assert (await store(conn, uid, data)).status == 0xA700
    assert_nothing_stored(running.data_dir)


async def test_sop_instance_mismatch_answers_b007_and_stores(tmp_path: Path, start_agent, image: Path) -> None:
    running = await start_agent(write_profile(tmp_path / "agent", STORAGE))
    ds_uid, data = dataset_of(image)
    command_uid = "1.2.826.0.1.3680043.8.498.777"
    assert command_uid != ds_uid
    async with _assoc(running.port) as conn:
        reply = await store(conn, command_uid, data)
    assert reply.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS == 0xB007
    assert "Instance UID" in (reply.message.error_comment or "")  # says which UID differs, not "SOP class"
    stored = running.data_dir / object_relpath(command_uid)
    assert stored.is_file()
    assert dcmread(stored).SOPInstanceUID == ds_uid  # the data set is kept as received
    assert index_row(running.data_dir, command_uid) is not None
    assert temp_files(running.data_dir) == []


async def test_command_sop_class_not_the_contexts_is_refused_0122_and_nothing_stored(
    tmp_path: Path, start_agent, image: Path
) -> None:
    """A CT data set sent with Affected SOP Class CT on the presentation context negotiated for MR: the
    SOP Class was not negotiated there, so "Refused: SOP Class not supported" (0122) and nothing kept."""
    running = await start_agent(write_profile(tmp_path / "agent", STORAGE))
    uid, data = dataset_of(image)
    proposals = [ProposedContext(MRImageStorage, (ExplicitVRLittleEndian,)), *CONTEXTS]
    async with associate("127.0.0.1", running.port, calling_ae="BADSCU", called_ae="AGENT",
                         proposals=proposals, timeouts=FAST) as conn:
        mr = conn.context_for(MRImageStorage)
        assert mr is not None
        rq = CStoreRQ(message_id=conn.next_message_id(), affected_sop_class_uid=CTImageStorage,
                      affected_sop_instance_uid=uid)
        with trio.fail_after(20):
            await conn.send_message(mr.id, rq, data)
            reply = await await_response(conn, rq.message_id)
        assert reply.status == Status.SOP_CLASS_NOT_SUPPORTED == 0x0122
        assert_nothing_stored(running.data_dir)
        # The association still serves: the same object on its own context is stored.
        assert (await store(conn, uid, data)).status == Status.SUCCESS
    assert index_count(running.data_dir) == 1


@pytest.mark.parametrize("bad_uid", ["1.2.abc", "1.2..3", "../../etc/passwd", "1.02.3"])
async def test_invalid_sop_instance_uid_refused_and_association_still_serves(
    tmp_path: Path, start_agent, image: Path, bad_uid: str
) -> None:
    running = await start_agent(write_profile(tmp_path / "agent", STORAGE))
    uid, data = dataset_of(image)
    async with _assoc(running.port) as conn:
        reply = await store(conn, bad_uid, data)
        assert reply.status == Status.CANNOT_UNDERSTAND == 0xC000
        assert (await store(conn, uid, data)).status == Status.SUCCESS
    assert [p.name for p in object_files(running.data_dir)] == [f"{uid}.dcm"]
    assert index_count(running.data_dir) == 1
    assert temp_files(running.data_dir) == []
    assert not any("passwd" in p.name for p in (tmp_path / "agent").rglob("*"))


@pytest.mark.parametrize("policy", ["keep-first", "replace"])
async def test_duplicate_instance_policy(tmp_path: Path, start_agent, policy: str) -> None:
    running = await start_agent(
        write_profile(tmp_path / "agent", STORAGE + f'duplicate = "{policy}"\n')
    )
    first = make_image(tmp_path / "first.dcm", seed=5, patient_id="FIRST")
    uid = dcmread(first, stop_before_pixels=True).SOPInstanceUID
    second = make_image(tmp_path / "second.dcm", seed=6, patient_id="SECOND", sop_instance_uid=uid)
    async with _assoc(running.port) as conn:
        assert (await store(conn, uid, dataset_of(first)[1])).status == Status.SUCCESS
        assert (await store(conn, uid, dataset_of(second)[1])).status == Status.SUCCESS
    kept = first if policy == "keep-first" else second
    stored = running.data_dir / object_relpath(uid)
    assert stored.read_bytes()[read_meta(stored).dataset_offset :] == dataset_of(kept)[1]
    row = index_row(running.data_dir, uid)
    assert row is not None and row["patient_id"] == ("FIRST" if policy == "keep-first" else "SECOND")
    assert index_count(running.data_dir) == 1
    assert len(object_files(running.data_dir)) == 1
    assert temp_files(running.data_dir) == []


# ---------------------------------------------------------------- a real full disk


@contextmanager
def small_tmpfs(directory: Path, size: str = "6m") -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a small tmpfs, and mounting needs root")
    directory.mkdir(parents=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


async def test_disk_full_while_receiving_answers_a700_and_leaves_nothing(tmp_path: Path, start_agent) -> None:
    big = make_image(tmp_path / "big.dcm", rows=2048, columns=2048, seed=8)  # 8 MiB: more than the disk
    uid, data = dataset_of(big)
    small_uid, small = dataset_of(make_image(tmp_path / "small.dcm", seed=9))
    with small_tmpfs(tmp_path / "disk") as disk:
        async with trio.open_nursery() as nursery:
            # The agent lives in this nursery so it stops before the tmpfs is unmounted.
            from agent.app import Agent

            agent = Agent(write_profile(disk, '[storage]\nfree_space_floor = "0"\n'))
            ports = await nursery.start(agent.run)
            async with _assoc(ports[0]) as conn:
                reply = await store(conn, uid, data)
                assert reply.status == Status.OUT_OF_RESOURCES == 0xA700
                assert temp_files(disk / "data") == []
                assert object_files(disk / "data") == []
                assert index_row(disk / "data", uid) is None
                # The space came back with the partial file: the same association stores a small object.
                assert (await store(conn, small_uid, small)).status == Status.SUCCESS
            assert index_row(disk / "data", small_uid) is not None
            nursery.cancel_scope.cancel()


def fill_database(db: sqlite3.Connection) -> None:
    """Cap the database at its current size and fill every page of the index, so the next row cannot fit."""
    import sqlite3

    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    size, n = 2048, 0
    while size >= 1:
        try:
            n += 1
            db.execute(
                "INSERT INTO instances (sop_instance_uid, sop_class_uid, transfer_syntax_uid, size, path, "
                "received_at, calling_ae, study_instance_uid) VALUES (?, '1', '1', 0, 'x', 0, 'x', ?)",
                (f"filler.{n}", "x" * size),
            )
        except sqlite3.OperationalError as exc:
            assert "full" in str(exc)
            size //= 2


async def test_database_full_at_the_index_step_answers_a700_and_leaves_nothing(
    tmp_path: Path, start_agent, image: Path
) -> None:
    """SQLITE_FULL ("database or disk is full") while indexing: the peer gets A700, not an abort, and no file
    stays behind. `max_page_count` makes SQLite hit the very error a full disk gives, deterministically."""
    running = await start_agent(write_profile(tmp_path / "agent", STORAGE))
    db = running.agent.db
    # The agent's own tasks (housekeeping at start-up) share this connection: touch it only through the
    # agent's one-thread-at-a-time bridge, as they do, or a race decides what the store meets.
    run = running.agent.blocking.run
    uid, data = dataset_of(image)
    await run(fill_database, db)
    async with _assoc(running.port) as conn:
        reply = await store(conn, uid, data)
        assert reply.status == Status.OUT_OF_RESOURCES == 0xA700
        await run(db.execute, "DELETE FROM instances WHERE sop_instance_uid LIKE 'filler.%'")
        assert_nothing_stored(running.data_dir)
        # Space is back: the same association stores the same instance.
        await run(db.execute, "PRAGMA max_page_count = 1073741823")
        assert (await store(conn, uid, data)).status == Status.SUCCESS
    assert index_row(running.data_dir, uid) is not None
    assert len(object_files(running.data_dir)) == 1
