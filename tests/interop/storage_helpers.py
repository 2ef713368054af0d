"""Helpers for the Storage tests: small test images, peers as subprocesses, data set comparison.

Images are made with pydicom and numpy (never taken from a peer), so a comparison with what a peer
received checks the peer and the agent, not a fixture we share with them.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import trio

from tests.conftest import wait_listening  # noqa: F401  (re-exported for the interop tests)
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    UID,
    generate_uid,
)

#: DCMTK enables Nagle unless told otherwise (docs/peers.md): without this a DCMTK peer stalls 40 ms a message.
PEER_ENV = {**os.environ, "TCP_NODELAY": "1"}
#: Multi-frame Grayscale Word Secondary Capture Image Storage.
MF_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"

STUDY_UID = "1.2.826.0.1.3680043.8.498.100"
SERIES_UID = "1.2.826.0.1.3680043.8.498.100.1"


def make_image(
    path: Path,
    *,
    sop_instance_uid: str | None = None,
    rows: int = 64,
    columns: int = 64,
    frames: int = 1,
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int = 0,
    patient_id: str = "PID-STORE",
    instance_number: int = 1,
) -> Path:
    """A 16-bit grayscale image (CT, or multi-frame SC when frames > 1) with random pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sop_class = CTImageStorage if frames == 1 else MF_GRAYSCALE_WORD_SC
    uid = sop_instance_uid or generate_uid()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid
    ds.StudyDate = "20240102"
    ds.StudyTime = "101112"
    ds.AccessionNumber = "ACC1"
    ds.Modality = "CT" if frames == 1 else "OT"
    ds.ReferringPhysicianName = "REF^DOC"
    ds.StudyDescription = "storage interop"
    ds.PatientName = "MÜLLER^JÜRGEN"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.StudyID = "S1"
    ds.SeriesNumber = 3
    ds.InstanceNumber = instance_number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = 40.0
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(seed)
    shape = (frames, rows, columns) if frames > 1 else (rows, columns)
    pixels = rng.integers(0, 65535, size=shape, dtype=np.uint16)
    ds.PixelData = pixels.tobytes()  # little endian machine; pydicom swaps for big endian on write
    ds["PixelData"].VR = "OW"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True, little_endian=transfer_syntax != ExplicitVRBigEndian,
               implicit_vr=transfer_syntax == ImplicitVRLittleEndian)
    return path


def make_images(directory: Path, count: int, **kw: object) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [
        make_image(directory / f"img{i:03d}.dcm", seed=i, instance_number=i + 1, **kw)  # type: ignore[arg-type]
        for i in range(count)
    ]


def assert_same_dataset(sent: Path, received: Path, *, compare_pixels_decoded: bool = False) -> None:
    """Every element of the sent data set (file meta excluded) equals the received one, PixelData too.

    Values are compared after decoding, so an Implicit/Big Endian copy of an Explicit LE original
    compares equal when its values are. With `compare_pixels_decoded` the pixel arrays are compared
    (for a compressed original whose bytes may be re-encapsulated).
    """
    a = dcmread(sent)
    b = dcmread(received)
    a_tags = [e.tag for e in a]
    b_tags = [e.tag for e in b]
    assert a_tags == b_tags, f"{received}: elements differ: {set(a_tags) ^ set(b_tags)}"
    for elem in a:
        other = b[elem.tag]
        if elem.tag == 0x7FE00010:
            assert np.array_equal(a.pixel_array, b.pixel_array), f"{received}: pixel values differ"
            same_ts = a.file_meta.TransferSyntaxUID == b.file_meta.TransferSyntaxUID
            if same_ts and not compare_pixels_decoded:
                assert elem.value == other.value, f"{received}: PixelData bytes differ"
            continue
        assert elem.value == other.value, f"{received}: {elem.keyword or elem.tag} {elem.value!r} != {other.value!r}"


def index_row(data_dir: Path, sop_instance_uid: str) -> sqlite3.Row | None:
    conn = sqlite3.connect(data_dir / "agent.db")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)).fetchone()
    finally:
        conn.close()


def index_count(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / "agent.db")
    try:
        return int(conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0])
    finally:
        conn.close()


def object_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "objects").rglob("*") if p.is_file())


def temp_files(data_dir: Path) -> list[Path]:
    """Files in tmp/ holding received bytes; the store's pool of empty `.slot` files is not one."""
    return sorted(
        p for p in (data_dir / "tmp").rglob("*")
        if p.is_file() and not (p.suffix == ".slot" and p.stat().st_size == 0)
    )


async def run(cmd: Sequence[str], timeout: float = 30) -> tuple[int, str]:
    """Run a peer to completion without blocking the in-process agent; (exit code, stdout+stderr)."""
    with trio.fail_after(timeout):
        proc = await trio.run_process(
            list(cmd), capture_stdout=True, capture_stderr=True, check=False, env=PEER_ENV
        )
    return proc.returncode, proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


async def start_peer(nursery: trio.Nursery, cmd: Sequence[str], log: Path) -> trio.Process:
    """Start a long-running peer (an SCP) in `nursery`, output to `log`."""
    out = open(log, "wb")  # noqa: SIM115 - closed when the process is reaped
    try:
        return await nursery.start(
            lambda task_status: trio.run_process(
                list(cmd), check=False, env=PEER_ENV, task_status=task_status,
                stdout=out, stderr=subprocess.STDOUT,
            )
        )
    finally:
        out.close()


async def wait_files(directory: Path, count: int, timeout: float = 15) -> list[Path]:
    """Poll until `directory` holds `count` files (a peer SCP writes after it answers)."""
    with trio.fail_after(timeout):
        while True:
            files = sorted(p for p in directory.iterdir() if p.is_file()) if directory.exists() else []
            if len(files) >= count:
                return files
            await trio.sleep(0.02)


__all__ = [
    "MF_GRAYSCALE_WORD_SC", "PEER_ENV", "SERIES_UID", "STUDY_UID", "SecondaryCaptureImageStorage",
    "assert_same_dataset", "index_count", "index_row", "make_image", "make_images", "object_files",
    "run", "start_peer", "temp_files", "wait_files", "wait_listening",
]
