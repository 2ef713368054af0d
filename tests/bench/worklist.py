"""MWL SCP benchmark: the agent and DCMTK wlmscpfs over the same 10,000 worklist files, queried by
DCMTK findscu (TCP_NODELAY=1 for every DCMTK process, so neither side meets the delayed-ACK stall).

    .venv/bin/python tests/bench/worklist.py [--items 10000] [--runs 30]

Prints median and p99 latency (wall time of one findscu run: connect, associate, query, all responses,
release) for each query and server, and the ratio wlmscpfs / agent (> 1: the agent is faster).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.interop.worklist_items import make_item, make_wlmscpfs_db  # noqa: E402

ENV = {**os.environ, "TCP_NODELAY": "1"}
SURNAMES = ["SMITH", "MÜLLER", "NGUYEN", "GARCIA", "KOWALSKI", "ROSSI", "DUBOIS", "JONES", "SCHMIDT", "BROWN",
            "TANAKA", "SILVA", "MARTIN", "LEE", "WALSH", "NOVAK", "HANSEN", "MORENO", "KING", "WRIGHT"]
GIVEN = ["ANNA", "JOHN", "MARIA", "PETER", "JULIA", "PAUL", "EVA", "MARK", "SARA", "TOM"]
MODALITIES = ["CT", "MR", "US", "CR"]

QUERIES = {
    "date range + modality": [
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20260110-20260111",
        "ScheduledProcedureStepSequence[0].Modality=CT",
    ],
    "patient name wildcard": ["PatientName=KOWALSKI^J*"],
}
RETURN_KEYS = ["AccessionNumber", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
               "StudyInstanceUID", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
               "ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def make_items(n: int, rng: random.Random) -> list:
    items = []
    for i in range(n):
        name = f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN)}"
        day = 1 + rng.randrange(30)
        items.append(make_item(f"B{i:06d}", name, charset="ISO_IR 100" if "Ü" in name else None,
                               date=f"202601{day:02d}", modality=rng.choice(MODALITIES),
                               time=f"{8 + rng.randrange(10):02d}0000"))
    return items


def findscu(port: int, aec: str, keys: list[str]) -> tuple[float, int]:
    args = ["findscu", "-W", "-aec", aec, "127.0.0.1", str(port)]
    for k in RETURN_KEYS + keys:
        args += ["-k", k]
    start = time.perf_counter()
    out = subprocess.run(args, capture_output=True, env=ENV, check=False)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"findscu failed against {aec}: {out.stderr.decode(errors='replace')}")
    matches = out.stderr.count(b"Find Response:") or out.stdout.count(b"Find Response:")
    return elapsed, matches


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        folder = make_wlmscpfs_db(root / "wldb", "WLM", make_items(args.items, rng))
        print(f"{args.items} worklist files written in {time.perf_counter() - t0:.1f} s")
        wl_port, agent_port = free_port(), free_port()
        profile = root / "agent.toml"
        profile.write_text(
            f'[agent]\nae_title = "AGENT"\nbind = "127.0.0.1"\nport = {agent_port}\n'
            f'data_dir = "{root / "data"}"\nlog_level = "warning"\n\n[worklist]\nfolder = "{folder}"\n'
        )
        procs = [
            subprocess.Popen(["wlmscpfs", "-dfp", str(root / "wldb"), "-csk", str(wl_port)], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            subprocess.Popen([sys.executable, "-m", "agent", "run", "--profile", str(profile)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        try:
            wait_port(wl_port)
            wait_port(agent_port)
            t0 = time.perf_counter()
            findscu(agent_port, "AGENT", ["AccessionNumber=NONE"])  # first query loads the folder
            print(f"agent: first query (decodes the folder once) {time.perf_counter() - t0:.2f} s")
            rows = []
            for label, keys in QUERIES.items():
                result = {}
                for server, port, aec in (("agent", agent_port, "AGENT"), ("wlmscpfs", wl_port, "WLM")):
                    findscu(port, aec, keys)  # warm-up
                    times, matches = [], 0
                    for _ in range(args.runs):
                        elapsed, matches = findscu(port, aec, keys)
                        times.append(elapsed)
                    result[server] = (statistics.median(times), percentile(times, 99), matches)
                rows.append((label, result))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(10)
    print()
    print(f"MWL C-FIND over {args.items} items, {args.runs} runs each, DCMTK findscu as client (ms)")
    header = f"{'query':<24} {'matches':>7} {'agent p50':>10} {'agent p99':>10} {'wlmscpfs p50':>13} {'wlmscpfs p99':>13} {'ratio p50':>10} {'ratio p99':>10}"
    print(header)
    print("-" * len(header))
    for label, r in rows:
        a50, a99, am = r["agent"]
        w50, w99, wm = r["wlmscpfs"]
        matches = f"{am}" if am == wm else f"{am}/{wm}"
        print(f"{label:<24} {matches:>7} {a50 * 1000:>10.1f} {a99 * 1000:>10.1f} {w50 * 1000:>13.1f} "
              f"{w99 * 1000:>13.1f} {w50 / a50:>9.1f}x {w99 / a99:>9.1f}x")
    print("ratio = wlmscpfs / agent (above 1: the agent is faster)")


if __name__ == "__main__":
    main()
