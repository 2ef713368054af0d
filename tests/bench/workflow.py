"""The modality workflow on the demo setup: procedures per minute, and its cost per image over storescu.

    python tests/bench/workflow.py [--procedures 10] [--images 4] [--size 256] [--workdir DIR] [--keep]

Not collected by pytest (no test_ prefix). Two measurements in one run:

1. The demo (agent.demo.run_demo, in this process: a simulated device feeding the modality workflow, the
   hospital agent as RIS, PACS and printer, over loopback) with N procedures of M images of SIZE x SIZE
   12-bit pixels, one film each. From the modality's database afterwards: per procedure, the time from
   its device event being recorded (`procedures.created_at`) to the last of its images committed by the
   PACS (`instances.committed_at`). Reported: procedures per minute over the whole run (first device
   event to last commitment; procedures overlap, as on a real modality), the median latency of one
   procedure, and the workflow's wall time per image (the run's span / (N * M)).
2. The same images (the very files the modality stored: same count, size and transfer syntax) sent by
   DCMTK `storescu +sd +r` (TCP_NODELAY=1, see the storage bench) to a fresh `dicom-agent run` Storage SCP,
   the same kind of SCP as the demo's PACS (fsync before each response), and to DCMTK `storescp` for
   reference. Reported: wall time per image, and the workflow's overhead per image over storescu to the
   agent: everything the workflow adds (worklist selection, MPPS N-CREATE and N-SET, the Annex J mapping,
   the local durable store, the queue, commitment, one film per procedure).

Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and its queue.py would hide the standard
# library's `queue` from trio.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import trio  # noqa: E402

ENV = {**os.environ, "TCP_NODELAY": "1"}
PY = sys.executable
RUN_TIMEOUT = 1800.0


@dataclass
class WorkflowRun:
    procedures: int
    images: int
    span: float  # first device event recorded -> last image committed (s)
    latencies: list[float]  # per procedure: device event -> its last image committed (s)
    wall: float  # the whole demo, agents' start-up included

    @property
    def per_minute(self) -> float:
        return self.procedures * 60.0 / self.span

    @property
    def per_image(self) -> float:
        return self.span / (self.procedures * self.images)


def run_workflow(folder: Path, procedures: int, images: int, size: int) -> WorkflowRun:
    from agent.demo import DemoOptions, run_demo

    options = DemoOptions(folder=folder, procedures=procedures, images=images, timeout=600.0,
                          rows=size, columns=size)
    start = time.monotonic()
    report = trio.run(run_demo, options, lambda line: None)
    wall = time.monotonic() - start
    if not report.complete:
        raise RuntimeError("the demo did not complete:\n" + "\n".join(report.missing()))
    db = sqlite3.connect(f"file:{report.layout.modality_db}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT p.created_at, max(i.committed_at) FROM procedures AS p "
        "JOIN instances AS i ON i.accession_number = p.accession_number GROUP BY p.procedure_key"
    ).fetchall()
    db.close()
    first, last = min(r[0] for r in rows), max(r[1] for r in rows)
    return WorkflowRun(procedures, images, last - first, [r[1] - r[0] for r in rows], wall)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
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


def storescu_to(kind: str, work: Path, images: Path) -> float:
    """Wall seconds of `storescu +sd` sending `images` to a fresh receiver of `kind`."""
    port = free_port()
    work.mkdir(parents=True)
    if kind == "agent":
        profile = work / "agent.toml"
        profile.write_text(f'[agent]\nae_title = "PACS"\nbind = "127.0.0.1"\nport = {port}\n'
                           f'data_dir = "{work / "data"}"\nlog_level = "warning"\n\n[storage]\n')
        cmd = [PY, "-m", "agent", "run", "--profile", str(profile)]
    else:
        (work / "out").mkdir()
        cmd = ["storescp", "--promiscuous", "-aet", "PACS", "-od", str(work / "out"), str(port)]
    with open(work / "server.log", "wb") as log:
        server = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_listening(port, server)
            start = time.monotonic()
            sent = subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "PACS", "+sd", "+r", "127.0.0.1", str(port),
                                   str(images)], env=ENV, capture_output=True, timeout=RUN_TIMEOUT)
            wall = time.monotonic() - start
            if sent.returncode != 0:
                raise RuntimeError(f"storescu failed: {sent.stderr.decode(errors='replace')}")
            return wall
        finally:
            server.terminate()
            server.wait(30)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procedures", type=int, default=10)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="rows and columns of each image [256]")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    if shutil.which("storescu") is None or shutil.which("storescp") is None:
        print("DCMTK storescu/storescp not found (apt-get install dcmtk)", file=sys.stderr)
        return 1
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-workflow-"))
    try:
        run = run_workflow(work / "demo", args.procedures, args.images, args.size)
        images = work / "demo" / "modality" / "objects"
        count = sum(1 for _ in images.rglob("*.dcm"))
        size_mb = sum(p.stat().st_size for p in images.rglob("*.dcm")) / count / 1e6
        to_agent = storescu_to("agent", work / "storescu-agent", images)
        to_dcmtk = storescu_to("dcmtk", work / "storescu-dcmtk", images)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    n = run.procedures * run.images
    print(f"{run.procedures} procedures x {run.images} images of {args.size}x{args.size} 12-bit "
          f"({count} files, {size_mb:.2f} MB each), one film per procedure; load {os.getloadavg()[0]:.2f}")
    print()
    print(f"| {'measurement':<60} | {'value':>12} |")
    print(f"|{'-' * 62}|{'-' * 14}|")
    rows = [
        ("workflow: procedures per minute (device event -> committed)", f"{run.per_minute:.1f}"),
        ("workflow: median latency of one procedure (s)", f"{statistics.median(run.latencies):.2f}"),
        ("workflow: span, first event -> last commitment (s)", f"{run.span:.2f}"),
        ("workflow: wall time of the whole demo incl. start-up (s)", f"{run.wall:.2f}"),
        ("workflow: ms per image (span / images)", f"{run.per_image * 1000:.1f}"),
        ("storescu -> dicom-agent run: ms per image", f"{to_agent / n * 1000:.1f}"),
        ("storescu -> DCMTK storescp: ms per image", f"{to_dcmtk / n * 1000:.1f}"),
        ("workflow overhead per image over storescu -> agent (ms)", f"{(run.per_image - to_agent / n) * 1000:.1f}"),
        ("workflow per image / storescu -> agent per image", f"{run.per_image / (to_agent / n):.1f}x"),
    ]
    for label, value in rows:
        print(f"| {label:<60} | {value:>12} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
