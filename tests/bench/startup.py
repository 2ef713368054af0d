"""Start-up time and idle memory: dicom-agent vs DCMTK storescp vs pynetdicom storescp, side by side.

For each program, N times: start it on a free loopback port, measure the time from process start to
the port accepting a TCP connection and to a first successful C-ECHO (sent in-process by the agent's
own Verification SCU, the same client for every program), then let it idle 3 s and read VmRSS from
/proc/PID/status. Prints medians and the ratios to dicom-agent.

Run by hand (not part of the test suite):  .venv/bin/python tests/bench/startup.py [-n 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from agent.net.connection import Timeouts
from agent.services.verification import echo

IDLE_SECONDS = 3.0
TIMEOUTS = Timeouts(artim=5, dimse=5, idle=10, connect=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Sample:
    listen_ms: float
    echo_ms: float
    rss_mib: float


@dataclass
class Program:
    name: str
    called_ae: str

    def command(self, port: int, workdir: Path) -> list[str]:
        raise NotImplementedError

    env: dict[str, str] | None = None


class DicomAgent(Program):
    def command(self, port: int, workdir: Path) -> list[str]:
        profile = workdir / "profile.toml"
        profile.write_text(
            f'[agent]\nae_title = "AGENT"\nbind = "127.0.0.1"\nport = {port}\n'
            f'data_dir = "{workdir / "data"}"\nlog_level = "warning"\n'
        )
        exe = shutil.which("dicom-agent", path=str(Path(sys.executable).parent)) or "dicom-agent"
        return [exe, "run", "--profile", str(profile)]


class DcmtkStorescp(Program):
    def command(self, port: int, workdir: Path) -> list[str]:
        return ["storescp", "-aet", "STORESCP", "-od", str(workdir), str(port)]


class PynetdicomStorescp(Program):
    def command(self, port: int, workdir: Path) -> list[str]:
        return [sys.executable, "-m", "pynetdicom", "storescp", str(port), "-aet", "STORESCP", "-od", str(workdir)]


def measure(program: Program, workdir: Path) -> Sample:
    port = free_port()
    cmd = program.command(port, workdir)
    env = {**os.environ, **(program.env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = start + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{program.name} exited with {proc.returncode}: {cmd}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{program.name} did not listen within 20 s") from None
                time.sleep(0.002)
        listen = time.perf_counter() - start
        result = trio.run(
            lambda: echo("127.0.0.1", port, calling_ae="BENCH", called_ae=program.called_ae, timeouts=TIMEOUTS)
        )
        if not result.ok:
            raise RuntimeError(f"{program.name}: C-ECHO failed: {result.describe()}")
        echoed = time.perf_counter() - start
        time.sleep(IDLE_SECONDS)
        rss = vm_rss_kib(proc.pid) / 1024
        return Sample(listen * 1000, echoed * 1000, rss)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="runs per program [5]")
    args = parser.parse_args()

    programs: list[Program] = [DicomAgent("dicom-agent", "AGENT")]
    if shutil.which("storescp"):
        # DCMTK enables Nagle unless TCP_NODELAY=1 is in its environment (docs/peers.md).
        programs.append(DcmtkStorescp("DCMTK storescp", "STORESCP", env={"TCP_NODELAY": "1"}))
    else:
        print("storescp not on PATH: DCMTK column skipped", file=sys.stderr)
    try:
        import pynetdicom  # noqa: F401

        programs.append(PynetdicomStorescp("pynetdicom storescp", "STORESCP"))
    except ImportError:
        print("pynetdicom not installed: its column skipped", file=sys.stderr)

    results: dict[str, list[Sample]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        for program in programs:
            samples = []
            for i in range(args.n):
                workdir = Path(tmp) / f"{program.name.replace(' ', '_')}-{i}"
                workdir.mkdir()
                samples.append(measure(program, workdir))
            results[program.name] = samples

    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in results[name])

    base = programs[0].name
    print(f"start-up and idle memory, median of {args.n} runs (ratio to {base})")
    print(f"{'program':<22} {'start->listen ms':>18} {'start->C-ECHO ms':>18} {'idle VmRSS MiB':>18}")
    for program in programs:
        name = program.name
        cells = []
        for attr in ("listen_ms", "echo_ms", "rss_mib"):
            value = med(name, attr)
            ratio = value / med(base, attr)
            cells.append(f"{value:8.1f} ({ratio:4.2f}x)")
        print(f"{name:<22} {cells[0]:>18} {cells[1]:>18} {cells[2]:>18}")
    spread = {
        name: (min(s.listen_ms for s in samples), max(s.listen_ms for s in samples))
        for name, samples in results.items()
    }
    print("start->listen min..max ms: " + ", ".join(f"{n} {lo:.0f}..{hi:.0f}" for n, (lo, hi) in spread.items()))


if __name__ == "__main__":
    main()
