"""`dicom-agent status` against a running agent while DCMTK's storescu sends it one large instance:
`--watch --json` shows the transfer's bytes growing, then the instance counted; the control socket's
modes and its refusal of bad requests; a stale socket replaced at start-up; the documented keys of
the status document (docs/status.md); and, once the agent has stopped, the database fallback. Then,
forwarding to DCMTK storescp, the outgoing association and the delivery counters.

The instance is 1 GiB by default (the issue's case: about 5-10 s here, most of it the agent writing
and syncing the file); STATUS_TEST_BYTES sets another size (a multiple of 32768). The file sent is
sparse, so making it costs nothing; both copies are deleted at the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from agent.status import SCHEMA, TOP_LEVEL_KEYS
from tests.conftest import require_tool, write_profile

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
SIZE = int(os.environ.get("STATUS_TEST_BYTES", str(1 << 30)))
COLUMNS = 32768


def make_big_instance(path: Path, size: int) -> None:
    """A Secondary Capture image of `size` pixel bytes (OB), the pixel data left sparse on disk."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    assert size % COLUMNS == 0
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "BIG", "BIG^TRANSFER", "OT"
    ds.Rows, ds.Columns = size // COLUMNS, COLUMNS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    with path.open("r+b") as f:
        f.seek(0, os.SEEK_END)
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, size))  # Pixel Data, explicit VR LE
        f.truncate(f.tell() + size)


async def cli(*args: str) -> tuple[int, str, str]:
    """The command line in a subprocess, without blocking the event loop the agent runs in."""
    with trio.fail_after(120):
        done = await trio.run_process([sys.executable, "-m", "agent", *args], capture_stdout=True,
                                      capture_stderr=True, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def documented_top_level_keys() -> list[str]:
    """The keys of the first table of docs/status.md's schema section, in order."""
    text = (ROOT / "docs" / "status.md").read_text().split("## The status document", 1)[1]
    table = text.split("| key |", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", table, re.MULTILINE)


def assert_documented(doc: dict[str, Any]) -> None:
    assert list(doc) == list(TOP_LEVEL_KEYS) == documented_top_level_keys()
    assert doc["schema"] == SCHEMA
    docs = (ROOT / "docs" / "status.md").read_text()
    nested = [doc["agent"] or {}, doc["counters"] or {}, doc["queue"], doc["commitment"]]
    nested += doc["associations"] or []
    nested += list(doc["queue"]["destinations"].values())
    for entry in nested:
        for key in entry:
            assert f"`{key}`" in docs, f"{key} is not documented in docs/status.md"


async def ask_raw(path: Path, request: bytes) -> dict[str, Any]:
    def exchange() -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(path))
            s.sendall(request)
            return b"".join(iter(lambda: s.recv(65536), b""))

    return json.loads(await trio.to_thread.run_sync(exchange))


async def test_status_watch_follows_a_large_receive(tmp_path: Path, start_agent) -> None:
    storescu = require_tool("storescu")
    profile = write_profile(tmp_path / "a", '[storage]\naccept = "all-storage"\n')
    run_dir = profile.agent.data_dir / "run"
    control = run_dir / "control.sock"
    # A socket left by an agent that crashed: nobody answers on it, start-up replaces it.
    run_dir.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(control))
    stale.close()
    running = await start_agent(profile)
    assert stat.S_ISSOCK(control.lstat().st_mode)
    assert stat.S_IMODE(control.stat().st_mode) == 0o660 and stat.S_IMODE(run_dir.stat().st_mode) == 0o750
    assert "unknown request" in (await ask_raw(control, b'{"request": "shutdown"}\n'))["error"]
    assert "not JSON" in (await ask_raw(control, b"status\n"))["error"]

    big = tmp_path / "big.dcm"
    make_big_instance(big, SIZE)
    docs: list[dict[str, Any]] = []
    watch = await trio.lowlevel.open_process(
        [sys.executable, "-m", "agent", "status", "--profile", str(profile.source), "--watch", "--json",
         "--interval", "0.2"], stdout=subprocess.PIPE)
    try:
        async def read_watch() -> None:
            assert watch.stdout is not None
            buffer = b""
            async for chunk in watch.stdout:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                docs.extend(json.loads(line) for line in lines if line.strip())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_watch)
            with trio.fail_after(600):  # 1 GiB: about 5-20 s here, loaded
                sent = await trio.run_process(
                    [storescu, "-aet", "MODALITY", "-aec", "AGENT", "127.0.0.1", str(running.port), str(big)],
                    env={**os.environ, "TCP_NODELAY": "1"}, capture_stdout=True, capture_stderr=True, check=False)
            assert sent.returncode == 0, sent.stderr.decode()
            # The watcher's snapshots reach the end of the story: the association gone, the instance counted.
            with trio.fail_after(60):
                while not docs or docs[-1]["associations"] or docs[-1]["counters"]["instances_received"] != 1:
                    await trio.sleep(0.05)
            watch.send_signal(signal.SIGINT)  # Ctrl-C ends --watch, status 0
            with trio.fail_after(30):
                assert await watch.wait() == 0
    finally:
        if watch.returncode is None:
            watch.kill()
        big.unlink(missing_ok=True)

    assert all(d["source"] == "agent" for d in docs)
    transfers = [(a, a["receiving"]) for d in docs for a in d["associations"]
                 if a["receiving"] is not None and a["receiving"]["command"] == "C-STORE-RQ"]
    progress = [t["bytes"] for _, t in transfers]
    assert len(set(progress)) >= 2, f"progress seen: {progress}"  # the bytes grew while we watched
    assert progress == sorted(progress) and 0 < progress[0] and progress[-1] < SIZE
    first = transfers[0][0]
    assert (first["direction"], first["calling_ae"], first["called_ae"]) == ("in", "MODALITY", "AGENT")
    assert "SecondaryCaptureImageStorage" in first["services"]
    assert transfers[0][1]["sop_class"] == "SecondaryCaptureImageStorage"
    assert all(a["bytes_received"] >= t["bytes"] for a, t in transfers)
    last = docs[-1]
    assert last["counters"]["requests_served"] == {"C-STORE-RQ SecondaryCaptureImageStorage": 1}
    assert last["counters"]["associations_served"] >= 1
    assert_documented(docs[len(docs) // 2])
    for path in profile.agent.data_dir.joinpath("objects").rglob("*"):
        if path.is_file():
            path.unlink()  # 1 GiB less in the kept temporary folders

    rc, text, err = await cli("status", "--profile", str(profile.source))
    assert rc == 0 and err == "", err
    assert text.startswith("agent AGENT (dicom-agent ") and "no association open" in text
    assert "1 instances received" in text and "1 C-STORE-RQ SecondaryCaptureImageStorage" in text

    # Stopped: the socket goes, and status reads the database and says so.
    running.cancel_scope.cancel()
    with trio.fail_after(30):
        while control.exists():
            await trio.sleep(0.05)
    rc, out, err = await cli("status", "--profile", str(profile.source), "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["source"] == "database"
    assert [doc[k] for k in ("agent", "associations", "counters", "device")] == [None] * 4
    assert_documented(doc)
    rc, text, err = await cli("status", "--profile", str(profile.source))
    assert rc == 0 and err == "", err
    assert text.startswith(f"agent not running (no control socket at {control}): from the database")
    assert "queue: empty" in text


async def test_status_shows_the_outgoing_association_and_its_counters(tmp_path: Path, start_agent) -> None:
    """Forwarding to DCMTK storescp: while the worker's association lingers, status lists it as "out"
    to its destination, and counts the delivery."""
    storescp, storescu = require_tool("storescp"), require_tool("storescu")
    from tests.conftest import free_port, wait_listening

    port = free_port()
    out = tmp_path / "pacs"
    out.mkdir()
    pacs = await trio.lowlevel.open_process([storescp, "+B", "-aet", "PACS", "-od", str(out), str(port)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_listening(port, pacs)
        profile = write_profile(tmp_path / "a", f"""
            [peers.pacs]
            ae_title = "PACS"
            host = "127.0.0.1"
            port = {port}
            linger = "120s"
            [storage]
            accept = "all-storage"
            forward_to = ["pacs"]
            """)
        running = await start_agent(profile)
        image = tmp_path / "one.dcm"
        make_big_instance(image, 4 * COLUMNS)
        with trio.fail_after(120):
            sent = await trio.run_process([storescu, "-aec", "AGENT", "127.0.0.1", str(running.port), str(image)],
                                          capture_stdout=True, capture_stderr=True, check=False)
        assert sent.returncode == 0, sent.stderr.decode()
        with trio.fail_after(60):
            while True:
                rc, text, err = await cli("status", "--profile", str(profile.source), "--json")
                doc = json.loads(text)
                if doc["counters"]["outbound"]["pacs"]["delivered"] == 1:
                    break
                await trio.sleep(0.1)
        [assoc] = [a for a in doc["associations"] if a["direction"] == "out"]  # kept open by linger
        assert (assoc["destination"], assoc["calling_ae"], assoc["called_ae"]) == ("pacs", "AGENT", "PACS")
        assert assoc["bytes_sent"] > 4 * COLUMNS and assoc["requests"] == 1 and assoc["sending"] is None
        assert doc["queue"]["destinations"]["pacs"]["done"] == 1 and doc["queue"]["depth"] == 0
        assert_documented(doc)
        rc, text, err = await cli("status", "--profile", str(profile.source))
        assert rc == 0 and "out  pacs (PACS@127.0.0.1" in text, text
    finally:
        pacs.kill()
        await pacs.wait()
