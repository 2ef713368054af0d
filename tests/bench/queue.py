"""Benchmark (run by hand): the durable queue, and store-and-forward through it vs DCMTK directly.

    .venv/bin/python tests/bench/queue.py [--jobs 2000] [--images 200]

1. Queue operations per second on a real file with durable commits (WAL, synchronous=FULL): enqueue
   (one transaction each), claim + complete (two transactions per job).
2. Forwarding N small images to DCMTK storescp: the agent draining N queued `store` jobs (one worker,
   one association) against DCMTK storescu sending the same files directly. Both DCMTK tools run with
   TCP_NODELAY=1 (docs/peers.md). Prints the throughput ratio agent / storescu (goal >= 0.7).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named queue.py: keep its folder off sys.path, or it shadows the stdlib `queue`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from agent.store.db import open_database  # noqa: E402
from agent.store.queue import JobQueue  # noqa: E402

ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_queue(tmp: Path, n: int) -> list[tuple[str, int, float]]:
    db = open_database(tmp / "q.db")
    q = JobQueue(db)
    t0 = time.perf_counter()
    for i in range(n):
        q.enqueue("store", "pacs", {"uid": f"1.2.{i}"})
    t1 = time.perf_counter()
    done = 0
    while (job := q.claim("pacs")) is not None:
        q.complete(job.id)
        done += 1
    t2 = time.perf_counter()
    assert done == n
    db.close()
    return [("enqueue (1 txn each)", n, t1 - t0), ("claim + complete", n, t2 - t1)]


def wait_port(port: int, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"port {port} never opened")


def bench_forward(tmp: Path, n: int) -> tuple[float, float]:
    sys.path.insert(0, str(ROOT))
    from tests.interop.storage_helpers import make_images

    from agent.app import Agent
    from agent.profile import load_profile
    from agent.services.forward import STORE_JOB, store_payload

    images = make_images(tmp / "images", n, rows=32, columns=32)
    port = free_port()
    out = tmp / "out"
    out.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(out), str(port)], env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        # DCMTK storescu, directly.
        t0 = time.perf_counter()
        subprocess.run(["storescu", "-aec", "STORESCP", "+sd", "127.0.0.1", str(port), str(tmp / "images")],
                       env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dcmtk = time.perf_counter() - t0
        assert len(list(out.iterdir())) == n
        for p in out.iterdir():
            p.unlink()

        # The agent: instances already in its store with their `store` jobs queued; time the drain.
        profile_path = tmp / "profile.toml"
        profile_path.write_text(f"""
[agent]
ae_title = "AGENT"
bind = "127.0.0.1"
port = 0
data_dir = "{tmp / 'data'}"
log_level = "warning"
[peers.scp]
ae_title = "STORESCP"
host = "127.0.0.1"
port = {port}
[storage]
""")
        agent = Agent(load_profile(profile_path))
        agent.open_persistence()
        for path in images:
            incoming_store(agent, path)
        for st in agent.store.find():
            agent.queue.enqueue(STORE_JOB, "scp", store_payload(st))

        async def drain() -> float:
            async with trio.open_nursery() as nursery:
                agent.open_persistence = lambda: None  # type: ignore[method-assign]
                start = time.perf_counter()
                await nursery.start(agent.run)
                # Poll on a separate connection (as the CLI does), never on the agent's own.
                watch = open_database(tmp / "data" / "agent.db")
                while watch.execute("SELECT COUNT(*) FROM queue_jobs WHERE state = 'done'").fetchone()[0] < n:
                    await trio.sleep(0.005)
                watch.close()
                elapsed = time.perf_counter() - start
                nursery.cancel_scope.cancel()
            return elapsed

        forwarded = trio.run(drain)
        assert len(list(out.iterdir())) == n
    finally:
        scp.kill()
        scp.wait()
    return dcmtk, forwarded


def incoming_store(agent, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Put a Part 10 file in the agent's store the way the Storage SCP does (through `Incoming`)."""
    from pydicom import dcmread

    ds = dcmread(path)
    data = path.read_bytes()
    from agent.store.dicomfile import read_meta

    meta = read_meta(path)
    inc = agent.store.begin(sop_class_uid=str(ds.SOPClassUID), sop_instance_uid=str(ds.SOPInstanceUID),
                            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID), calling_ae="BENCH")
    inc.write(data[meta.dataset_offset:])
    inc.commit()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args()
    if not shutil.which("storescp"):
        raise SystemExit("DCMTK (storescp, storescu) is needed: apt-get install dcmtk")
    with tempfile.TemporaryDirectory() as d:
        rows = bench_queue(Path(d), args.jobs)
    with tempfile.TemporaryDirectory() as d:
        dcmtk, agent = bench_forward(Path(d), args.images)
    print(f"{'measurement':40} {'count':>6} {'seconds':>8} {'per second':>11}")
    for name, n, secs in rows:
        print(f"{'queue: ' + name:40} {n:6d} {secs:8.3f} {n / secs:11.0f}")
    n = args.images
    print(f"{'forward: DCMTK storescu -> storescp':40} {n:6d} {dcmtk:8.3f} {n / dcmtk:11.0f}")
    print(f"{'forward: agent queue -> storescp':40} {n:6d} {agent:8.3f} {n / agent:11.0f}")
    ratio = dcmtk / agent
    print(f"ratio agent / storescu throughput: {ratio:.2f} (goal >= 0.7) {'OK' if ratio >= 0.7 else 'BELOW GOAL'}")


if __name__ == "__main__":
    main()
