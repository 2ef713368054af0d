"""TLS cost on the receive path: 200 images of 0.5 MB sent by DCMTK storescu over plain TCP and over TLS
(`+tls`, Non-downgrading BCP 195), into the agent and into DCMTK storescp, on this machine, in one run.

    python tests/bench/tls.py [-n COUNT] [--runs RUNS] [--workdir DIR] [--keep]

Not collected by pytest (no test_ prefix). For each receiver (a fresh `dicom-agent run` with [storage] and
[tls], fsync on as always; a fresh DCMTK `storescp`, writing to its own folder) and each transport, the
same sender (DCMTK `storescu +sd`, `TCP_NODELAY=1`) sends the same files on one association; the wall time
of the sender is the measure (median of --runs, default 3). Prints MB/s and the TLS / plain ratio per
receiver. Certificates come from tests/tls_certs.py (a throw-away CA, RSA 2048, mutual authentication).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[0] = str(ROOT)  # not tests/bench (its queue.py would shadow the stdlib module)

from tests.interop.storage_helpers import make_image  # noqa: E402
from tests.tls_certs import make_pki  # noqa: E402

ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def tls_args(pki, who: str) -> list[str]:
    return ["+tls", str(getattr(pki, f"{who}_key")), str(getattr(pki, f"{who}_pem")), "-pw", "+cf", str(pki.ca_pem), "+py"]


def send(folder: Path, port: int, aec: str, tls: list[str]) -> float:
    start = time.monotonic()
    r = subprocess.run(["storescu", *tls, "+sd", "-aec", aec, "127.0.0.1", str(port), str(folder)],
                       env=ENV, capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - start
    if r.returncode != 0:
        raise RuntimeError(f"storescu failed: {r.stdout}{r.stderr}")
    return seconds


def start_agent(work: Path, pki, plain: int, secure: int) -> subprocess.Popen:
    work.mkdir(parents=True)
    profile = work / "profile.toml"
    profile.write_text(
        f'[agent]\nae_title = "AGENT"\nbind = "127.0.0.1"\nport = {plain}\ndata_dir = "{work / "data"}"\n'
        f'[storage]\n[tls]\nport = {secure}\ncertificate = "{pki.server_pem}"\nkey = "{pki.server_key}"\n'
        f'ca = "{pki.ca_pem}"\n'
    )
    return subprocess.Popen([sys.executable, "-m", "agent", "run", "--profile", str(profile)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)


def start_storescp(work: Path, port: int, tls: list[str]) -> subprocess.Popen:
    work.mkdir(parents=True)
    return subprocess.Popen(["storescp", *tls, "-aet", "STORESCP", "-od", str(work), str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="images of 0.5 MB [200]")
    ap.add_argument("--runs", type=int, default=3, help="runs per cell; the median is shown [3]")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    for tool in ("storescu", "storescp", "openssl"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-tls-"))
    try:
        pki = make_pki(work / "pki")
        images = work / "images"
        for i in range(args.n):
            make_image(images / f"{i:04d}.dcm", rows=512, columns=512, seed=i)
        megabytes = sum(p.stat().st_size for p in images.iterdir()) / 1e6
        rows: dict[tuple[str, str], float] = {}
        for run in range(args.runs):
            plain, secure = free_port(), free_port()
            agent = start_agent(work / f"agent-{run}", pki, plain, secure)
            try:
                wait_port(plain, agent)
                wait_port(secure, agent)
                rows.setdefault(("dicom-agent", "plain"), []).append(send(images, plain, "AGENT", []))  # type: ignore[attr-defined]
                rows.setdefault(("dicom-agent", "tls"), []).append(send(images, secure, "AGENT", tls_args(pki, "client")))  # type: ignore[attr-defined]
            finally:
                agent.terminate()
                agent.wait(60)
            for transport, server_tls, client_tls in (("plain", [], []),
                                                       ("tls", tls_args(pki, "server"), tls_args(pki, "client"))):
                port = free_port()
                scp = start_storescp(work / f"storescp-{transport}-{run}", port, server_tls)
                try:
                    wait_port(port, scp)
                    rows.setdefault(("storescp", transport), []).append(send(images, port, "STORESCP", client_tls))  # type: ignore[attr-defined]
                finally:
                    scp.terminate()
                    scp.wait(60)
        print(f"{args.n} images, {megabytes:.1f} MB, DCMTK storescu +sd as sender, median of {args.runs} runs")
        print(f"{'receiver':<14}{'transport':<11}{'seconds':>9}{'MB/s':>9}")
        medians = {k: statistics.median(v) for k, v in rows.items()}  # type: ignore[arg-type]
        for (receiver, transport), seconds in medians.items():
            print(f"{receiver:<14}{transport:<11}{seconds:>9.2f}{megabytes / seconds:>9.1f}")
        for receiver in ("dicom-agent", "storescp"):
            print(f"{receiver}: TLS / plain time = {medians[(receiver, 'tls')] / medians[(receiver, 'plain')]:.2f}")
        print(f"TLS: dicom-agent / storescp time = {medians[('dicom-agent', 'tls')] / medians[('storescp', 'tls')]:.2f}")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
