"""Storage (C-STORE) against real peers: DCMTK storescu/storescp and pynetdicom storescu/storescp.

Every received data set is compared with the sent one element by element, PixelData included (by value
when the transfer syntax changed on the way); what the agent received must also be indexed and carry
our Implementation Class UID in its File Meta Information.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import trio
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from agent import IMPLEMENTATION_CLASS_UID
from agent.store.dicomfile import object_relpath
from tests.conftest import free_port, require_pynetdicom, require_tool, write_profile
from tests.interop.storage_helpers import (
    SERIES_UID,
    STUDY_UID,
    assert_same_dataset,
    index_count,
    index_row,
    make_image,
    make_images,
    run,
    start_peer,
    wait_files,
    wait_listening,
)

pytestmark = pytest.mark.interop

STORAGE = '[storage]\nfree_space_floor = "1MB"\n'


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Three 64x64 16-bit CT images and one 8-frame multi-frame object, Explicit VR Little Endian."""
    files = make_images(tmp_path / "send", 3)
    files.append(make_image(tmp_path / "send" / "multiframe.dcm", frames=8, seed=99, instance_number=9))
    return files


def check_received(data_dir: Path, sent: Path, *, transfer_syntax: str, calling_ae: str,
                   compare_pixels_decoded: bool = False) -> None:
    """The agent stored `sent` under objects/, indexed it, and wrote our File Meta Information."""
    original = dcmread(sent, stop_before_pixels=True)
    uid = original.SOPInstanceUID
    stored = data_dir / object_relpath(uid)
    assert stored.is_file(), f"{uid} not stored at {stored}"
    assert_same_dataset(sent, stored, compare_pixels_decoded=compare_pixels_decoded)

    meta = dcmread(stored, stop_before_pixels=True).file_meta
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.TransferSyntaxUID == transfer_syntax
    assert meta.MediaStorageSOPInstanceUID == uid
    assert meta.MediaStorageSOPClassUID == original.SOPClassUID
    assert meta.SourceApplicationEntityTitle.strip() == calling_ae

    row = index_row(data_dir, uid)
    assert row is not None, f"no index row for {uid}"
    assert row["sop_class_uid"] == original.SOPClassUID
    assert row["transfer_syntax_uid"] == transfer_syntax
    assert row["patient_id"] == "PID-STORE"
    assert row["patient_name"] == "MÜLLER^JÜRGEN"
    assert row["study_instance_uid"] == STUDY_UID
    assert row["series_instance_uid"] == SERIES_UID
    assert row["instance_number"] == original.InstanceNumber
    assert row["size"] == stored.stat().st_size
    assert row["calling_ae"] == calling_ae
    assert data_dir / row["path"] == stored


# ---------------------------------------------------------------- DCMTK storescu -> agent


@pytest.mark.parametrize(
    ("option", "transfer_syntax"),
    [(None, ExplicitVRLittleEndian), ("-xi", ImplicitVRLittleEndian), ("-xb", ExplicitVRBigEndian)],
    ids=["default-explicit-le", "implicit-only", "big-endian-only"],
)
async def test_dcmtk_storescu_into_agent(
    tmp_path: Path, start_agent, images: list[Path], option: str | None, transfer_syntax: str
) -> None:
    storescu = require_tool("storescu")
    body = STORAGE
    if option == "-xb":
        # storescu -xb proposes every uncompressed syntax (Big Endian first, one context each) and then
        # picks the context matching the file's own syntax; accept Big Endian only so it must transcode.
        body += 'transfer_syntaxes = ["explicit-be"]\n'
    running = await start_agent(write_profile(tmp_path / "agent", body))
    cmd = [storescu, "-aet", "DCMTKSCU", "-aec", "AGENT"] + ([option] if option else [])
    rc, out = await run([*cmd, "127.0.0.1", str(running.port), *map(str, images)])
    assert rc == 0, out
    assert index_count(running.data_dir) == len(images)
    for sent in images:
        check_received(running.data_dir, sent, transfer_syntax=transfer_syntax, calling_ae="DCMTKSCU")


async def test_dcmtk_storescu_rle_compressed_kept_compressed(tmp_path: Path, start_agent, images: list[Path]) -> None:
    storescu, dcmcrle = require_tool("storescu"), require_tool("dcmcrle")
    rle_dir = tmp_path / "rle"
    rle_dir.mkdir()
    compressed = []
    for source in (images[0], images[-1]):  # a single-frame and the multi-frame object
        target = rle_dir / source.name
        rc, out = await run([dcmcrle, str(source), str(target)])
        assert rc == 0, out
        assert dcmread(target, stop_before_pixels=True).file_meta.TransferSyntaxUID == RLELossless
        compressed.append(target)
    running = await start_agent(write_profile(tmp_path / "agent", STORAGE))
    rc, out = await run(
        [storescu, "-xr", "-aet", "DCMTKSCU", "-aec", "AGENT", "127.0.0.1", str(running.port),
         *map(str, compressed)]
    )
    assert rc == 0, out
    for sent, original in zip(compressed, (images[0], images[-1])):
        # Same bytes as the RLE file DCMTK sent, and the same pixel values as the uncompressed original.
        check_received(running.data_dir, sent, transfer_syntax=RLELossless, calling_ae="DCMTKSCU")
        stored = running.data_dir / object_relpath(dcmread(sent, stop_before_pixels=True).SOPInstanceUID)
        assert np.array_equal(dcmread(original).pixel_array, dcmread(stored).pixel_array)


# ---------------------------------------------------------------- pynetdicom storescu -> agent


async def test_pynetdicom_storescu_into_agent(tmp_path: Path, start_agent, images: list[Path]) -> None:
    require_pynetdicom()
    running = await start_agent(write_profile(tmp_path / "agent", STORAGE))
    rc, out = await run(
        [sys.executable, "-m", "pynetdicom", "storescu", "127.0.0.1", str(running.port), str(images[0].parent),
         "-r", "-cx", "-aet", "PYNSCU", "-aec", "AGENT", "-v"]
    )
    assert rc == 0, out
    assert out.count("Received Store Response (Status: 0x0000 - Success)") == len(images), out
    for sent in images:
        check_received(running.data_dir, sent, transfer_syntax=ExplicitVRLittleEndian, calling_ae="PYNSCU")


# ---------------------------------------------------------------- dicom-agent store -> peers


def received_by_uid(directory: Path, files: list[Path]) -> dict[str, Path]:
    found = {}
    for path in files:
        found[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    return found


async def _agent_store(port: int, aec: str, paths: list[Path]) -> tuple[int, str]:
    return await run(
        [sys.executable, "-m", "agent", "store", "--aet", "AGENTSCU", "--aec", aec, "--timeout", "10",
         "127.0.0.1", str(port), *map(str, paths)]
    )


async def _rle_copy(tmp_path: Path, source: Path) -> Path:
    dcmcrle = require_tool("dcmcrle")
    target = tmp_path / "rle" / source.name
    target.parent.mkdir(exist_ok=True)
    rc, out = await run([dcmcrle, str(source), str(target)])
    assert rc == 0, out
    return target


async def test_agent_store_into_dcmtk_storescp(tmp_path: Path, nursery: trio.Nursery, images: list[Path]) -> None:
    storescp = require_tool("storescp")
    rle = await _rle_copy(tmp_path, make_image(tmp_path / "extra.dcm", seed=7, instance_number=20))
    outdir = tmp_path / "received"
    outdir.mkdir()
    port = free_port()
    proc = await start_peer(
        nursery, [storescp, "--promiscuous", "+xa", "-aet", "STORESCP", "-od", str(outdir), str(port)],
        tmp_path / "storescp.log",
    )
    try:
        await wait_listening(port, proc)
        sent = [*images, rle]
        rc, out = await _agent_store(port, "STORESCP", sent)
        assert rc == 0, out + (tmp_path / "storescp.log").read_text(errors="replace")
        assert f"sent {len(sent)} (0 with warnings), failed 0" in out
        received = received_by_uid(outdir, await wait_files(outdir, len(sent)))
    finally:
        proc.kill()
    for path in sent:
        ds = dcmread(path, stop_before_pixels=True)
        got = received[ds.SOPInstanceUID]
        # storescp names files <SOP class abbreviation>.<SOP Instance UID> (CT., SCw., RLE kept as is).
        assert got.name.endswith(f".{ds.SOPInstanceUID}")
        assert_same_dataset(path, got)
        # Sent as is, not decompressed or re-encoded: the peer's file has the original transfer syntax.
        assert dcmread(got, stop_before_pixels=True).file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


async def test_agent_store_into_pynetdicom_storescp(tmp_path: Path, nursery: trio.Nursery, images: list[Path]) -> None:
    require_pynetdicom()
    outdir = tmp_path / "received"
    outdir.mkdir()
    port = free_port()
    proc = await start_peer(
        nursery, [sys.executable, "-m", "pynetdicom", "storescp", str(port), "-od", str(outdir), "-aet", "PYNSCP"],
        tmp_path / "pynscp.log",
    )
    try:
        await wait_listening(port, proc)
        rc, out = await _agent_store(port, "PYNSCP", images)
        assert rc == 0, out + (tmp_path / "pynscp.log").read_text(errors="replace")
        assert f"sent {len(images)} (0 with warnings), failed 0" in out
        received = received_by_uid(outdir, await wait_files(outdir, len(images)))
    finally:
        proc.kill()
    for path in images:
        uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert_same_dataset(path, received[uid])


async def test_agent_store_exit_69_when_nobody_listens(tmp_path: Path, images: list[Path]) -> None:
    rc, out = await _agent_store(free_port(), "NOBODY", images[:1])
    assert rc == 69, out
