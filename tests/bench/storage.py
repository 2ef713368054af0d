"""Storage throughput and memory: the agent against DCMTK and pynetdicom, on this machine, in one run.

    python tests/bench/storage.py [--quick] [--workdir DIR] [--keep]

Not collected by pytest (no test_ prefix). It generates its workloads in a temporary folder:
- small: 200 CT images of 512x512 16-bit (0.5 MB each); --quick: 50
- multiframe: 5 multi-frame objects of 50 MB; --quick: 2
- huge: one object of 1 GiB, written streaming (the generator never holds it); --quick: 100 MiB

and runs, for every workload, with TCP_NODELAY=1 in every peer's environment (docs/peers.md):
- receivers fed by DCMTK storescu: the agent (`dicom-agent run --profile`, fsync on as always), DCMTK
  storescp, pynetdicom storescp;
- senders into DCMTK storescp: `dicom-agent store`, DCMTK storescu, pynetdicom storescu.

Each receiver and each DCMTK storescp sink is a fresh process, so its VmHWM (peak RSS, polled from
/proc/PID/status while it runs) belongs to that workload alone. Prints a table and the ratios the
performance targets name.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

MF_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
ENV = {**os.environ, "TCP_NODELAY": "1"}
PY = sys.executable
FRAME = 512 * 512 * 2
RUN_TIMEOUT = 1800.0


# ---------------------------------------------------------------- workloads


def _header(sop_class: str, uid: str, frames: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid
    ds.StudyDate = "20240102"
    ds.Modality = "CT" if sop_class == CTImageStorage else "OT"
    ds.PatientName = "BENCH^STORAGE"
    ds.PatientID = "BENCH"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.555"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.555.1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = 40.0
    ds.Rows = 512
    ds.Columns = 512
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write_object(path: Path, sop_class: str, frames: int, pattern: bytes) -> int:
    """Header via pydicom, then the PixelData element written in chunks: bounded memory for any size."""
    ds = _header(sop_class, generate_uid(), frames)
    ds.save_as(path, enforce_file_format=True, little_endian=True, implicit_vr=False)
    total = frames * FRAME
    with open(path, "ab") as f:
        f.write(struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OW", total))
        left = total
        while left:
            n = min(left, len(pattern))
            f.write(pattern[:n])
            left -= n
    return path.stat().st_size


@dataclass
class Workload:
    name: str
    folder: Path
    files: list[Path]
    nbytes: int


def make_workloads(root: Path, quick: bool) -> list[Workload]:
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, 4096, size=8 * 1024 * 1024 // 2, dtype=np.uint16).tobytes()  # 8 MiB
    plan = [
        ("small", CTImageStorage, 50 if quick else 200, 1),
        ("multiframe", MF_GRAYSCALE_WORD_SC, 2 if quick else 5, 100),  # 100 frames x 512 KiB = 50 MiB
        ("huge", MF_GRAYSCALE_WORD_SC, 1, (100 if quick else 1024) * 1024 * 1024 // FRAME),
    ]
    workloads = []
    for name, sop_class, count, frames in plan:
        folder = root / "workloads" / name
        folder.mkdir(parents=True)
        files, total = [], 0
        for i in range(count):
            path = folder / f"{name}{i:04d}.dcm"
            # A different slice of the pattern per small image so files differ.
            offset = (i * 4099) % (len(pattern) // 2)
            total += write_object(path, sop_class, frames, pattern[offset:] + pattern[:offset])
            files.append(path)
        workloads.append(Workload(name, folder, files, total))
        print(f"workload {name}: {count} files, {total / 1e6:.1f} MB", flush=True)
    return workloads


# ---------------------------------------------------------------- processes and memory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vm_hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class PeakWatcher:
    """Polls VmHWM of a process every 10 ms until stopped or the process is gone; keeps the maximum."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            value = vm_hwm_kb(self.pid)
            if value is None:
                return
            self.peak_kb = max(self.peak_kb, value)
            self._stop.wait(0.01)

    def stop(self) -> float:
        value = vm_hwm_kb(self.pid)
        if value is not None:
            self.peak_kb = max(self.peak_kb, value)
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


class Server:
    """A receiving peer as a subprocess, with its peak RSS watched from start to stop."""

    def __init__(self, cmd: Sequence[str], port: int, log: Path) -> None:
        self.log = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(list(cmd), env=ENV, stdout=self.log, stderr=subprocess.STDOUT)
        self.watch = PeakWatcher(self.proc.pid)
        wait_listening(port, self.proc)

    def stop(self) -> float:
        peak = self.watch.stop()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        return peak


def run_client(cmd: Sequence[str], log: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB, exit code) of a sending process run to completion."""
    with open(log, "wb") as out:
        start = time.monotonic()
        proc = subprocess.Popen(list(cmd), env=ENV, stdout=out, stderr=subprocess.STDOUT)
        watch = PeakWatcher(proc.pid)
        try:
            rc = proc.wait(RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        wall = time.monotonic() - start
    return wall, watch.stop(), rc


# ---------------------------------------------------------------- the peers


def agent_server(work: Path, port: int) -> Server:
    data = work / "agent-data"
    profile = work / "agent.toml"
    profile.write_text(
        f'[agent]\nae_title = "AGENT"\nbind = "127.0.0.1"\nport = {port}\ndata_dir = "{data}"\n'
        'log_level = "warning"\n\n[storage]\nfree_space_floor = "1GB"\n'
    )
    return Server([PY, "-m", "agent", "run", "--profile", str(profile)], port, work / "agent.log")


def dcmtk_server(work: Path, port: int) -> Server:
    out = work / "storescp-out"
    out.mkdir()
    return Server(["storescp", "--promiscuous", "-aet", "STORESCP", "-od", str(out), str(port)], port,
                  work / "storescp.log")


def pynetdicom_server(work: Path, port: int) -> Server:
    out = work / "pynscp-out"
    out.mkdir()
    return Server([PY, "-m", "pynetdicom", "storescp", str(port), "-od", str(out), "-aet", "PYNSCP"], port,
                  work / "pynscp.log")


RECEIVERS = {"agent": (agent_server, "AGENT"), "dcmtk storescp": (dcmtk_server, "STORESCP"),
             "pynetdicom storescp": (pynetdicom_server, "PYNSCP")}


def sender_cmd(kind: str, port: int, workload: Workload) -> list[str]:
    if kind == "agent store":
        return [PY, "-m", "agent", "store", "--aet", "AGENTSCU", "--aec", "STORESCP", "--timeout", "600",
                "127.0.0.1", str(port), str(workload.folder)]
    if kind == "dcmtk storescu":
        return ["storescu", "-aet", "DCMTKSCU", "-aec", "STORESCP", "+sd", "127.0.0.1", str(port),
                str(workload.folder)]
    return [PY, "-m", "pynetdicom", "storescu", "127.0.0.1", str(port), str(workload.folder), "-r", "-cx",
            "-aet", "PYNSCU", "-aec", "STORESCP", "-td", "600", "-tn", "600"]


SENDERS = ("agent store", "dcmtk storescu", "pynetdicom storescu")


@dataclass
class Result:
    workload: Workload
    direction: str  # "receive" or "send"
    who: str  # the process under test
    wall: float
    rc: int
    peak_mb: float  # the process under test
    peer_peak_mb: float  # the other side, for reference
    received: int

    @property
    def inst_s(self) -> float:
        return len(self.workload.files) / self.wall

    @property
    def mb_s(self) -> float:
        return self.workload.nbytes / 1e6 / self.wall


def count_received(work: Path) -> int:
    dirs = [work / "agent-data" / "objects", work / "storescp-out", work / "pynscp-out"]
    return sum(1 for d in dirs if d.exists() for p in d.rglob("*") if p.is_file())


def bench_receive(work: Path, workload: Workload, who: str) -> Result:
    port = free_port()
    factory, aec = RECEIVERS[who]
    server = factory(work, port)
    try:
        cmd = ["storescu", "-aet", "DCMTKSCU", "-aec", aec, "+sd", "127.0.0.1", str(port), str(workload.folder)]
        wall, client_peak, rc = run_client(cmd, work / "storescu.log")
    finally:
        peak = server.stop()
    return Result(workload, "receive", who, wall, rc, peak, client_peak, count_received(work))


def bench_send(work: Path, workload: Workload, who: str) -> Result:
    port = free_port()
    sink = dcmtk_server(work, port)
    try:
        wall, peak, rc = run_client(sender_cmd(who, port, workload), work / "sender.log")
    finally:
        sink_peak = sink.stop()
    return Result(workload, "send", who, wall, rc, peak, sink_peak, count_received(work))


# ---------------------------------------------------------------- report


def table(results: list[Result]) -> str:
    head = (f"{'workload':<11} {'dir':<8} {'process under test':<20} {'files':>5} {'MB':>8} {'wall s':>8} "
            f"{'inst/s':>8} {'MB/s':>8} {'peak RSS MB':>11} {'peer RSS MB':>11} {'ok':>4}")
    lines = [head, "-" * len(head)]
    for r in results:
        ok = "yes" if r.rc == 0 and r.received == len(r.workload.files) else f"NO({r.rc},{r.received})"
        lines.append(
            f"{r.workload.name:<11} {r.direction:<8} {r.who:<20} {len(r.workload.files):>5} "
            f"{r.workload.nbytes / 1e6:>8.1f} {r.wall:>8.2f} {r.inst_s:>8.1f} {r.mb_s:>8.1f} "
            f"{r.peak_mb:>11.1f} {r.peer_peak_mb:>11.1f} {ok:>4}"
        )
    return "\n".join(lines)


def ratios(results: list[Result]) -> str:
    def get(workload: str, direction: str, who: str) -> Result | None:
        for r in results:
            if (r.workload.name, r.direction, r.who) == (workload, direction, who):
                return r
        return None

    lines = []

    def ratio(label: str, a: Result | None, b: Result | None, attr: str, target: float) -> None:
        if a is None or b is None:
            lines.append(f"{label}: not measured")
            return
        value = getattr(a, attr) / getattr(b, attr)
        verdict = "PASS" if value >= target else "FAIL"
        lines.append(f"{label}: {value:.2f} (target >= {target}) {verdict}")

    ratio("receive small inst/s  agent / DCMTK storescp     ", get("small", "receive", "agent"),
          get("small", "receive", "dcmtk storescp"), "inst_s", 0.7)
    ratio("receive small inst/s  agent / pynetdicom storescp", get("small", "receive", "agent"),
          get("small", "receive", "pynetdicom storescp"), "inst_s", 2.0)
    ratio("receive large MB/s    agent / DCMTK storescp     ", get("multiframe", "receive", "agent"),
          get("multiframe", "receive", "dcmtk storescp"), "mb_s", 0.8)
    ratio("receive huge  MB/s    agent / DCMTK storescp     ", get("huge", "receive", "agent"),
          get("huge", "receive", "dcmtk storescp"), "mb_s", 0.8)
    ratio("send small    inst/s  agent / DCMTK storescu     ", get("small", "send", "agent store"),
          get("small", "send", "dcmtk storescu"), "inst_s", 0.7)
    for direction, who in (("receive", "agent"), ("send", "agent store")):
        r = get("huge", direction, who)
        if r is not None:
            size = r.workload.nbytes / 2**20
            verdict = "PASS" if r.peak_mb < 100 and r.rc == 0 else "FAIL"
            lines.append(f"huge ({size:.0f} MiB) {direction:<7} agent peak RSS: {r.peak_mb:.1f} MB "
                         f"(target < 100 MB) {verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer files, 100 MiB instead of 1 GiB")
    parser.add_argument("--workdir", type=Path, help="where to generate workloads (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--only", choices=["small", "multiframe", "huge"], action="append")
    args = parser.parse_args(argv)
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            print(f"{tool} (DCMTK) is not on PATH", file=sys.stderr)
            return 2
    root = Path(tempfile.mkdtemp(prefix="bench-storage-", dir=args.workdir))
    print(f"work folder {root}; {'quick' if args.quick else 'full'} mode", flush=True)
    results: list[Result] = []
    try:
        for workload in make_workloads(root, args.quick):
            if args.only and workload.name not in args.only:
                continue
            runs = [("receive", who) for who in RECEIVERS] + [("send", who) for who in SENDERS]
            for direction, who in runs:
                work = root / "runs" / f"{workload.name}-{direction}-{who.replace(' ', '_')}"
                work.mkdir(parents=True)
                bench = bench_receive if direction == "receive" else bench_send
                result = bench(work, workload, who)
                results.append(result)
                print(table([result]).splitlines()[-1], flush=True)
                shutil.rmtree(work / "agent-data" / "objects", ignore_errors=True)
                for out in ("storescp-out", "pynscp-out"):
                    shutil.rmtree(work / out, ignore_errors=True)
        print()
        print(table(results))
        print()
        print(ratios(results))
        start = time.monotonic()
        subprocess.run([PY, "-m", "agent", "store", "--help"], env=ENV, capture_output=True, check=False)
        print(f"(start-up of `dicom-agent store` (interpreter + imports), included in its wall times: "
              f"{time.monotonic() - start:.2f} s)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r.rc == 0 and r.received == len(r.workload.files) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
