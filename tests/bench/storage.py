"""Storage hot paths against DCMTK, Orthanc and pynetdicom, on this machine, in one run.

    python tests/bench/storage.py [-n 3] [--count 200] [--disk-dir DIR] [--only MEASURE] [--keep]
    python tests/bench/storage.py --suite matrix [--quick] [--workdir DIR] [--keep]

Not collected by pytest (no test_ prefix); tests/bench/README.md says what each row measures.

The default suite ("ratios") prints the issue-11 table for 200 x 0.5 MB CT images (generated on tmpfs),
median of `-n` runs, each run checked (exit status, objects received) before its time counts:
receive on tmpfs vs DCMTK storescp; durable receive on disk vs a plain write+fdatasync+rename+fsync
loop over the same files, and vs Orthanc when installed; `dicom-agent store` vs storescu; forwarding
through the queue vs storescu; four associations at once; start-up with 100,000 indexed instances.

The "matrix" suite generates three workloads in a temporary folder:
- small: 200 CT images of 512x512 16-bit (0.5 MB each); --quick: 50
- multiframe: 5 multi-frame objects of 50 MB; --quick: 2
- huge: one object of 1 GiB, written streaming (the generator never holds it); --quick: 100 MiB

and runs, for every workload, with TCP_NODELAY=1 in every peer's environment (docs/peers.md):
- receivers fed by DCMTK storescu: the agent (`dicom-agent run --profile`, fsync on as always), DCMTK
  storescp, pynetdicom storescp;
- senders into DCMTK storescp: `dicom-agent store`, DCMTK storescu, pynetdicom storescu.

Each receiver and each DCMTK storescp sink is a fresh process, so its VmHWM (peak RSS, polled from
/proc/PID/status while it runs) belongs to that workload alone. Prints a table and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
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



# ---------------------------------------------------------------- the ratios suite (issue 11)
#
# 200 x 0.5 MB CT (`--count`), each measure run `-n` times (default 3) and reported as the median.
# The source files live on tmpfs (/dev/shm) so that no sender waits on the disk. Every run checks the
# sender's exit status and the number of objects the receiver holds afterwards before its time is
# used: a failed run stops the bench with an error, it is never reported as a fast one.


class RunFailed(RuntimeError):
    """A measured run did not do the whole job (exit status, or objects missing)."""


TMPFS = Path("/dev/shm")
AGENT_ENV = {k: v for k, v in ENV.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as installed: .pyc cached


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def count_objects(data_dir: Path) -> int:
    """Instances the agent holds: `objects/<bucket>/<uid>.dcm` files (temporary files are elsewhere)."""
    return sum(1 for _ in (data_dir / "objects").glob("*/*.dcm")) if (data_dir / "objects").exists() else 0


def check(what: str, rc: int, got: int, want: int, log: Path | None = None) -> None:
    if rc != 0 or got < want:
        tail = log.read_text(errors="replace")[-1500:] if log is not None and log.exists() else ""
        raise RunFailed(f"{what}: exit status {rc}, {got} of {want} objects received\n{tail}")


#: CPU seconds (user + system, all threads) of the last process under test, for the CPU columns: on a
#: loaded machine wall times mostly measure the scheduler, CPU time what each program costs.
LAST_CPU: list[float | None] = [None]


def proc_cpu(pid: int) -> float | None:
    """utime + stime of a running process, in seconds (/proc/PID/stat fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(cmd: Sequence[str], log: Path, env: dict[str, str] = ENV) -> tuple[float, int]:
    """Run a sender to completion: (wall seconds, exit status); its CPU seconds go to LAST_CPU."""
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        LAST_CPU[0] = usage.ru_utime + usage.ru_stime
        return wall, proc.returncode


def storescu(port: int, aec: str, folder: Path) -> list[str]:
    return ["storescu", "-aet", "DCMTKSCU", "-aec", aec, "+sd", "127.0.0.1", str(port), str(folder)]


def agent_profile(work: Path, port: int, data_dir: Path, extra: str = "") -> Path:
    profile = work / f"agent-{port}.toml"
    profile.write_text(
        f'[agent]\nae_title = "AGENT"\nbind = "127.0.0.1"\nport = {port}\ndata_dir = "{data_dir}"\n'
        f'log_level = "warning"\nmax_associations = 16\n\n[storage]\nfree_space_floor = "1GB"\n{extra}'
    )
    return profile


class Proc:
    """A server subprocess started and waited for (its port accepting), stopped with SIGTERM."""

    def __init__(self, cmd: Sequence[str], port: int, log: Path, env: dict[str, str] = ENV) -> None:
        self.log = open(log, "wb")  # noqa: SIM115
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(list(cmd), env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_listening(port, self.proc, timeout=120)
        self.listening = time.perf_counter()
        self.cpu_ready = proc_cpu(self.proc.pid) or 0.0  # its start-up, left out of `cpu`
        self.cpu: float | None = None

    def stop(self) -> None:
        used = proc_cpu(self.proc.pid)  # before it is told to stop: the work measured, not the exit
        self.cpu = None if used is None else used - self.cpu_ready
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def start_agent(work: Path, data_dir: Path, extra: str = "", port: int | None = None) -> tuple[Proc, int]:
    port = port or free_port()
    profile = agent_profile(work, port, data_dir, extra)
    return Proc([PY, "-m", "agent", "run", "--profile", str(profile)], port, work / f"agent-{port}.log",
                AGENT_ENV), port


def start_storescp(work: Path, out: Path, *, fork: bool = False) -> tuple[Proc, int]:
    port = free_port()
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["storescp", "--promiscuous", "-aet", "STORESCP", "-od", str(out)] + (["--fork"] if fork else []) + [str(port)]
    return Proc(cmd, port, work / f"storescp-{port}.log"), port


def receive_once(work: Path, src: Path, count: int, who: str, base: Path) -> float:
    """storescu -> `who` ("agent" or "storescp") with its data under `base`; seconds."""
    out = Path(tempfile.mkdtemp(prefix=f"{who}-", dir=base))
    try:
        if who == "agent":
            server, port = start_agent(work, out)
            aec = "AGENT"
        else:
            server, port = start_storescp(work, out)
            aec = "STORESCP"
        try:
            wall, rc = timed(storescu(port, aec, src), work / "storescu.log")
        finally:
            server.stop()
        LAST_CPU[0] = server.cpu
        got = count_objects(out) if who == "agent" else count_files(out)
        check(f"storescu -> {who} ({base})", rc, got, count, work / "storescu.log")
        return wall
    finally:
        shutil.rmtree(out, ignore_errors=True)


def durable_loop_once(src: Path, count: int, base: Path) -> float:
    """The floor for a durable receive: per file, write it to a temporary file, fdatasync, rename
    into place and fsync the folder (what any receiver promising durability must at least do)."""
    files = sorted(p for p in src.iterdir() if p.is_file())
    out = Path(tempfile.mkdtemp(prefix="loop-", dir=base))
    try:
        start, cpu = time.perf_counter(), time.process_time()
        dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for f in files:
                data = f.read_bytes()
                tmp = out / f".{f.name}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
                try:
                    os.write(fd, data)
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, out / f.name)
                os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        wall = time.perf_counter() - start
        LAST_CPU[0] = time.process_time() - cpu
        check("durable loop", 0, count_files(out), count)
        return wall
    finally:
        shutil.rmtree(out, ignore_errors=True)


ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
SYNC_CALLS = "fsync,fdatasync,sync_file_range,sync,syncfs,msync"


def orthanc_once(work: Path, src: Path, count: int, base: Path, trace: Path | None = None) -> float:
    """storescu -> Orthanc (its storage and index on disk, HTTP off, loopback); seconds. With `trace`,
    strace is attached to the server (all its threads) for the transfer and its summary written there."""
    assert ORTHANC is not None
    root = Path(tempfile.mkdtemp(prefix="orthanc-", dir=base))
    port = free_port()
    config = root / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "bench", "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
        "DicomAet": "ORTHANC", "DicomPort": port, "HttpServerEnabled": False, "HttpPort": free_port(),
        "RemoteAccessAllowed": False, "DicomCheckCalledAet": False, "StorageCompression": False,
        "SyncStorageArea": True, "Plugins": [], "DicomAlwaysAllowStore": True,
    }))
    try:
        server = Proc([ORTHANC, str(config)], port, work / "orthanc.log")
        tracer = None
        try:
            if trace is not None:
                tracer = subprocess.Popen(["strace", "-f", "-c", "-o", str(trace), "-e", "trace=" + SYNC_CALLS,
                                           "-p", str(server.proc.pid)], stderr=subprocess.DEVNULL)
                time.sleep(1.0)  # attached to every thread before the first C-STORE
            wall, rc = timed(storescu(port, "ORTHANC", src), work / "storescu-orthanc.log")
        finally:
            if tracer is not None:
                tracer.send_signal(signal.SIGINT)  # detaches and writes the summary
                tracer.wait(30)
            server.stop()
        LAST_CPU[0] = server.cpu
        check("storescu -> Orthanc", rc, count_files(root / "storage"), count, work / "storescu-orthanc.log")
        return wall
    finally:
        shutil.rmtree(root, ignore_errors=True)


def floor_once(work: Path, src: Path, count: int) -> float:
    """storescu -> DCMTK `storescp --ignore` (receives every data set, answers Success, stores nothing);
    seconds. The fastest any receiver can be fed by this sender on this machine: a receive target
    below it cannot be met by any receiver. Counted from storescp's log (`-v`: one "Received Store
    Request" line per C-STORE), since nothing reaches a folder."""
    port = free_port()
    out = Path(tempfile.mkdtemp(prefix="floor-", dir=TMPFS))  # -od must exist; stays empty
    log = work / f"storescp-ignore-{port}.log"
    try:
        server = Proc(["storescp", "-v", "--ignore", "--promiscuous", "-aet", "STORESCP", "-od", str(out), str(port)],
                      port, log)
        try:
            wall, rc = timed(storescu(port, "STORESCP", src), work / "storescu-floor.log")
        finally:
            server.stop()
        LAST_CPU[0] = server.cpu
        got = log.read_text(errors="replace").count("Received Store Request")
        check("storescu -> storescp --ignore", rc, got, count, work / "storescu-floor.log")
        return wall
    finally:
        shutil.rmtree(out, ignore_errors=True)


def flush_once(src: Path, count: int, base: Path) -> float:
    """Seconds spent in fsync alone when each file is written into its own pre-made empty file (their
    names made durable beforehand, as the agent's slots are) and flushed once, file after file: the
    least a receiver that answers only after a flush adds per instance to the floor."""
    files = sorted(p for p in src.iterdir() if p.is_file())
    out = Path(tempfile.mkdtemp(prefix="flush-", dir=base))
    try:
        fds = [os.open(out / f.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600) for f in files]
        dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dir_fd)
        os.close(dir_fd)
        spent, cpu = 0.0, time.process_time()
        try:
            for fd, f in zip(fds, files, strict=True):
                os.write(fd, f.read_bytes())
                start = time.perf_counter()
                os.fsync(fd)
                spent += time.perf_counter() - start
        finally:
            for fd in fds:
                os.close(fd)
        LAST_CPU[0] = time.process_time() - cpu
        check("flush loop", 0, sum(1 for p in out.iterdir() if p.stat().st_size > 0), count)
        return spent
    finally:
        shutil.rmtree(out, ignore_errors=True)


def orthanc_syncs(work: Path, src: Path, count: int, base: Path) -> str:
    """One untimed storescu -> Orthanc run with strace counting the server's sync calls (all threads):
    what it really does per stored instance (the row's label says "fsync on"; this checks it). A line
    for the notes."""
    if ORTHANC is None or shutil.which("strace") is None:
        return "Orthanc syncs: not checked (needs Orthanc and strace)"
    stats = work / "orthanc-strace.txt"
    try:
        orthanc_once(work, src, count, base, trace=stats)
    except RunFailed as exc:
        return f"Orthanc syncs: the strace run failed ({str(exc).splitlines()[0]})"
    calls = {}
    names = SYNC_CALLS.split(",")
    for line in stats.read_text(errors="replace").splitlines() if stats.exists() else ():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in names:
            calls[parts[-1]] = int(parts[3])
    text = ", ".join(f"{n} {name}" for name, n in sorted(calls.items())) or "no sync call at all"
    return (f"Orthanc syncs (strace -f -c on the server during one untimed run of {count} instances, "
            f"SyncStorageArea true): {text}, {sum(calls.values()) / count:.1f} per instance")


def send_once(work: Path, src: Path, count: int, who: str) -> float:
    """`who` ("agent store" or "storescu") -> DCMTK storescp on tmpfs; seconds."""
    out = Path(tempfile.mkdtemp(prefix="sink-", dir=TMPFS))
    try:
        sink, port = start_storescp(work, out)
        try:
            if who == "agent store":
                cmd = [PY, "-m", "agent", "store", "--aet", "AGENTSCU", "--aec", "STORESCP", "--timeout", "600",
                       "127.0.0.1", str(port), str(src)]
                wall, rc = timed(cmd, work / "send.log", AGENT_ENV)
            else:
                wall, rc = timed(storescu(port, "STORESCP", src), work / "send.log")
        finally:
            cpu = LAST_CPU[0]
            sink.stop()
            LAST_CPU[0] = cpu
        check(f"{who} -> storescp", rc, count_files(out), count, work / "send.log")
        return wall
    finally:
        shutil.rmtree(out, ignore_errors=True)


def forward_once(work: Path, src: Path, count: int) -> float:
    """The queue drained to DCMTK storescp (tmpfs), in seconds for `count` objects: the interval from
    the first object appearing at storescp to the last, scaled by count/(count-1) (the throughput of
    the forwarder, without the agent's start-up and the association's set-up, which a storescu run
    does include: a few milliseconds). The queue is filled first by receiving the images while the
    destination is down (jobs pending), then the agent is stopped, the destination started, and the
    agent started again."""
    data = Path(tempfile.mkdtemp(prefix="fwd-agent-", dir=TMPFS))
    out = Path(tempfile.mkdtemp(prefix="fwd-sink-", dir=TMPFS))
    try:
        sink_port = free_port()
        peer = (f'forward_to = ["pacs"]\n\n[peers.pacs]\nae_title = "STORESCP"\nhost = "127.0.0.1"\n'
                f'port = {sink_port}\nretry_base = "0.1s"\nretry_cap = "0.2s"\n')
        agent, port = start_agent(work, data, peer)
        try:
            _, rc = timed(storescu(port, "AGENT", src), work / "fill.log")
        finally:
            agent.stop()
        check("filling the forward queue", rc, count_objects(data), count, work / "fill.log")
        time.sleep(0.3)  # past retry_cap: every job is due when the agent starts again
        sink = Proc(["storescp", "--promiscuous", "-aet", "STORESCP", "-od", str(out), str(sink_port)], sink_port,
                    work / "fwd-storescp.log")
        first = last = 0.0
        try:
            agent, port = start_agent(work, data, peer, port)
            try:
                deadline = time.perf_counter() + RUN_TIMEOUT
                while time.perf_counter() < deadline and agent.proc.poll() is None:
                    n = sum(1 for _ in os.scandir(out))
                    now = time.perf_counter()
                    if n and not first:
                        first = now
                    if n >= count:
                        last = now
                        break
                    time.sleep(0.002)
            finally:
                agent.stop()
        finally:
            sink.stop()
        check("forwarding", 0, count_files(out), count, Path(agent.log.name))
        LAST_CPU[0] = None  # the agent's CPU would include its start-up and the waiting
        return (last - first) * count / (count - 1)
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


def concurrent_once(work: Path, parts: list[Path], per_part: int, who: str, base: Path) -> tuple[float, list[float]]:
    """Four (len(parts)) storescu at once into `who`; (wall of all, each sender's seconds per image)."""
    out = Path(tempfile.mkdtemp(prefix=f"conc-{who}-", dir=base))
    try:
        if who == "agent":
            server, port = start_agent(work, out)
            aec = "AGENT"
        else:
            server, port = start_storescp(work, out, fork=True)
            aec = "STORESCP"
        try:
            start = time.perf_counter()
            procs = []
            for i, part in enumerate(parts):
                log = open(work / f"conc-{i}.log", "wb")  # noqa: SIM115
                procs.append((subprocess.Popen(storescu(port, aec, part), env=ENV, stdout=log, stderr=subprocess.STDOUT),
                              log, time.perf_counter()))
            ends = []
            for proc, log, began in procs:
                rc = proc.wait(RUN_TIMEOUT)
                ends.append((time.perf_counter() - began) / per_part)
                log.close()
                if rc != 0:
                    raise RunFailed(f"storescu -> {who} (4 at once): exit status {rc}")
            wall = time.perf_counter() - start
        finally:
            server.stop()
        got = count_objects(out) if who == "agent" else count_files(out)
        check(f"4 x storescu -> {who}", 0, got, per_part * len(parts))
        return wall, ends
    finally:
        shutil.rmtree(out, ignore_errors=True)


FILLER = "tests/integration/large_store.py"


def startup_with_store(work: Path, instances: int) -> float | None:
    """Seconds from `dicom-agent run` to its port accepting, over a data_dir holding `instances`
    indexed instances (made by the store filler); None when there is no filler."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for `tests.`
    try:
        from tests.integration.large_store import fill_store
    except ImportError:
        return None
    data = Path(tempfile.mkdtemp(prefix="big-store-", dir=TMPFS))  # ext4 allows 65,000 links to the filler template
    try:
        if instances:
            fill_store(data, instances)
        agent, _ = start_agent(work, data)
        agent.stop()
        check(f"start-up with {instances} instances", 0, count_objects(data), instances)
        return agent.listening - agent.started
    finally:
        shutil.rmtree(data, ignore_errors=True)


def install_note() -> str:
    """How the measured `dicom-agent store` is installed: an editable install (`pip install -e .`, what
    .ci/run makes) imports setuptools' path finder at every interpreter start, which the README's
    `pip install .` does not."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    editable = sorted(p.name for p in site.glob("__editable__*dicom_agent*.pth"))
    how = (f"an editable install ({editable[0]}: setuptools' finder is imported at every start, ~12 ms here)"
           if editable else "a regular install (pip install .)")
    return f"send: the agent runs as `{PY} -m agent store` from {Path.cwd()}, {how}"


@dataclass
class Row:
    label: str
    agent: list[tuple[float, float | None]]  # (wall seconds, CPU seconds) per run; empty: a peer-only row
    peer: list[tuple[float, float | None]]
    peer_name: str
    target: float | None  # minimum of peer/agent (the agent's speed relative to the peer's)

    def ratio(self) -> float:
        return statistics.median(w for w, _ in self.peer) / statistics.median(w for w, _ in self.agent)

    def target_seconds(self) -> float | None:
        """The agent's wall time that meets the target: peer median / target."""
        return None if self.target is None else statistics.median(w for w, _ in self.peer) / self.target

    def cpu(self) -> str:
        a = [c for _, c in self.agent if c is not None]
        p = [c for _, c in self.peer if c is not None]
        if not p:
            return "-"
        if not self.agent:
            return f"-/{statistics.median(p):.2f}"
        if not a:
            return "-"
        return f"{statistics.median(a):.2f}/{statistics.median(p):.2f} = {statistics.median(p) / statistics.median(a):.2f}x"


def fmt_times(samples: list[tuple[float, float | None]]) -> str:
    values = [w for w, _ in samples]
    return f"{statistics.median(values):7.3f} s ({min(values):.3f}-{max(values):.3f})"


def ratios_report(rows: list[Row], notes: list[str]) -> str:
    head = (f"{'measure':<52} {'agent wall (median, min-max)':<28} {'peer wall (median, min-max)':<37} "
            f"{'ratio':>6}  {'target':<13} CPU s agent/peer = ratio")
    lines = [head, "-" * len(head)]
    for r in rows:
        if not r.agent:  # a reference measure of a peer alone (the receive floor)
            lines.append(f"{r.label:<52} {'-':<28} {fmt_times(r.peer) + ' ' + r.peer_name:<37} {'-':>6}   "
                         f"{'':<13} {r.cpu()}")
            continue
        verdict = "" if r.target is None else f">= {r.target:<4} {'PASS' if r.ratio() >= r.target else 'FAIL'}"
        lines.append(f"{r.label:<52} {fmt_times(r.agent):<28} {fmt_times(r.peer) + ' ' + r.peer_name:<37} "
                     f"{r.ratio():6.2f}x  {verdict:<13} {r.cpu()}")
    return "\n".join(lines + [""] + notes)


def floor_notes(floor: list[tuple[float, float | None]], rows: list[Row],
                flushes: list[tuple[float, float | None]] | None = None) -> list[str]:
    """Each receive target in seconds beside the floor (storescu into a receiver that stores nothing):
    a target below the floor cannot be reached by any receiver fed by storescu on this machine.

    For the durable rows (on disk) also beside the durable floor: the floor plus one flush per instance
    (`flush_once`). storescu waits for each response and a durable receiver answers only after the
    flush, so per instance at least the receiving and the flush follow each other (the writing can
    overlap the receiving; the flush cannot). A target below it cannot be reached by any receiver that
    answers after a flush, fed by storescu on this machine."""
    lowest = statistics.median(w for w, _ in floor)
    out = [f"receive targets in seconds (agent wall <= peer / target) against the floor, storescu into "
           f"`storescp --ignore` (stores nothing): {lowest:.3f} s"]
    durable = None
    if flushes:
        flush = statistics.median(w for w, _ in flushes)
        durable = lowest + flush
        out.append(f"  and the durable floor: the floor + one flush per instance ({flush:.3f} s for these files on "
                   f"this disk, fsync alone) = {durable:.3f} s")
    for r in rows:
        secs = r.target_seconds()
        if secs is None or not r.agent:
            continue
        agent = statistics.median(w for w, _ in r.agent)
        where = ("BELOW THE FLOOR: no receiver fed by storescu can reach it on this machine" if secs < lowest
                 else f"{secs / lowest:.2f}x the floor")
        if durable is not None and "durable" in r.label and secs >= lowest:
            where += ("; BELOW THE DURABLE FLOOR: no receiver answering after a flush can reach it" if secs < durable
                      else f", {secs / durable:.2f}x the durable floor")
        out.append(f"  {r.label:<58} target {r.peer_name} / {r.target:g} = {secs:.3f} s, agent {agent:.3f} s; {where}")
    return out


def run_ratios(args: argparse.Namespace) -> int:
    n, count = args.runs, args.count
    disk_base = Path(args.disk_dir or tempfile.gettempdir())
    root = Path(tempfile.mkdtemp(prefix="bench-storage-", dir=disk_base))
    src = Path(tempfile.mkdtemp(prefix="bench-src-", dir=TMPFS))
    rows: list[Row] = []
    notes: list[str] = []
    try:
        rng = np.random.default_rng(0)
        pattern = rng.integers(0, 4096, size=8 * 1024 * 1024 // 2, dtype=np.uint16).tobytes()
        size = 0
        for i in range(count):
            offset = (i * 4099) % (len(pattern) // 2)
            size += write_object(src / f"ct{i:04d}.dcm", CTImageStorage, 1, pattern[offset:] + pattern[:offset])
        parts = [Path(tempfile.mkdtemp(prefix=f"part{k}-", dir=src.parent)) for k in range(4)]
        for i, f in enumerate(sorted(src.iterdir())):
            os.link(f, parts[i % 4] / f.name)
        print(f"{count} x {size / count / 1e6:.2f} MB CT on {src} (tmpfs); disk work folder {root}; "
              f"{n} runs each", flush=True)

        def runs(label: str, fn, *a) -> list[tuple[float, float | None]]:  # type: ignore[no-untyped-def]
            out = []
            for k in range(n):
                LAST_CPU[0] = None
                wall = fn(*a)
                out.append((wall, LAST_CPU[0]))
                cpu = "" if LAST_CPU[0] is None else f", CPU {LAST_CPU[0]:.3f} s"
                print(f"  {label} run {k + 1}: {wall:.3f} s{cpu}", flush=True)
            return out

        work = root
        only = set(args.only or ())

        def want(name: str) -> bool:
            return not only or name in only

        if want("receive"):
            floor = runs("storescp --ignore", floor_once, work, src, count)
            flushes = runs("fsync per file", flush_once, src, count, root)
            first_receive = len(rows)
            rows.append(Row("receive floor: storescu -> storescp --ignore", [], floor, "stores nothing", None))
            rows.append(Row("receive, tmpfs, pure processing", runs("agent tmpfs", receive_once, work, src, count,
                            "agent", TMPFS), runs("storescp tmpfs", receive_once, work, src, count, "storescp", TMPFS),
                            "storescp", 0.8))
            rows.append(Row("receive, disk, durable (vs write+fdatasync+rename+dir fsync)",
                            runs("agent disk", receive_once, work, src, count, "agent", root),
                            runs("durable loop", durable_loop_once, src, count, root), "loop", 0.8))
            if ORTHANC is not None:
                agent_disk = rows[-1].agent
                rows.append(Row("receive, disk, durable (vs Orthanc 1.10, fsync on)", agent_disk,
                                runs("orthanc disk", orthanc_once, work, src, count, root), "Orthanc", 5.0))
            else:
                notes.append("Orthanc: not installed, row skipped")
            notes += floor_notes(floor, rows[first_receive:], flushes)
            if ORTHANC is not None:
                notes.append(orthanc_syncs(work, src, count, root))
        if want("send"):
            rows.append(Row("send, `dicom-agent store` (process start to exit)",
                            runs("agent store", send_once, work, src, count, "agent store"),
                            runs("storescu", send_once, work, src, count, "storescu"), "storescu", 0.7))
            notes.append(install_note())
        if want("forward"):
            peer = rows[-1].peer if rows and rows[-1].peer_name == "storescu" else runs(
                "storescu", send_once, work, src, count, "storescu")
            rows.append(Row("forward through the queue (first to last object)",
                            runs("forward", forward_once, work, src, count), peer, "storescu", 0.9))
        if want("concurrent"):
            per = count // 4
            for who, base in (("agent", TMPFS), ("storescp", TMPFS), ("agent", root)):
                walls, lat = [], []
                for _ in range(n):
                    wall, each = concurrent_once(work, parts, per, who, base)
                    walls.append(wall)
                    lat.extend(each)
                where = "tmpfs" if base == TMPFS else "disk"
                notes.append(f"4 associations at once, {who:<8} {where:<5}: {4 * per / statistics.median(walls):7.1f} "
                             f"images/s, per image {1000 * statistics.median(lat):6.2f} ms (median over senders and runs)")
        if want("startup"):
            took = startup_with_store(root, args.instances)
            empty = startup_with_store(root, 0)
            notes.append(f"start-up to listening with {args.instances} indexed instances: "
                         + ("not measured (no store filler: " + FILLER + ")" if took is None else
                            f"{took:.2f} s (target < 2 s; an empty store: {empty:.2f} s)"))
        print()
        print(ratios_report(rows, notes))
        return 0 if all(r.target is None or r.ratio() >= r.target for r in rows) else 3
    except RunFailed as exc:
        print(f"\nbench error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(src, ignore_errors=True)
        for p in src.parent.glob("part?-*"):
            shutil.rmtree(p, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def run_matrix(args: argparse.Namespace) -> int:
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


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=["ratios", "matrix"], default="ratios",
                        help="ratios: the issue-11 table (default); matrix: three workload sizes with peak memory")
    parser.add_argument("-n", "--runs", type=int, default=3, help="ratios: runs per measure (median) [3]")
    parser.add_argument("--count", type=int, default=200, help="ratios: images of 0.5 MB [200]")
    parser.add_argument("--instances", type=int, default=100_000, help="ratios: indexed instances for start-up")
    parser.add_argument("--disk-dir", help="ratios: a folder on a real disk (default: the temp folder)")
    parser.add_argument("--quick", action="store_true", help="matrix: fewer files, 100 MiB instead of 1 GiB")
    parser.add_argument("--workdir", type=Path, help="matrix: where to generate workloads (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--only", action="append",
                        help="ratios: receive|send|forward|concurrent|startup; matrix: small|multiframe|huge")
    args = parser.parse_args(argv)
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            print(f"{tool} (DCMTK) is not on PATH", file=sys.stderr)
            return 2
    if args.suite == "ratios":
        return run_ratios(args)
    return run_matrix(args)


if __name__ == "__main__":
    sys.exit(main())
