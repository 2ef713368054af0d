"""Crash safety: the agent (a subprocess) receives 200 instances, forwards them to DCMTK storescp and asks
a pynetdicom commitment SCP, which commits only what storescp really wrote to its folder, for Storage
Commitment; it is killed with SIGKILL at 20+ seeded random moments and restarted each time. At the end
every instance reached storescp, every one is committed in the agent's index, the queue holds nothing
pending, claimed or dead.

The commitment SCP reports on a new association and never retries (like the archives in docs/peers.md), so a
report that finds the agent dead is lost and only the agent's re-request after `commit_timeout` recovers.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

import trio

from agent.errors import AgentError
from tests.conftest import free_port, require_pynetdicom, require_tool
from tests.integration.commitment_helpers import query, send_images, wait_until
from tests.interop.storage_helpers import PEER_ENV, make_images, start_peer, wait_listening

N_IMAGES = 200
KILLS = 20


def profile_text(tmp_path: Path, agent_port: int, storescp_port: int, committer_port: int) -> str:
    return f"""
[agent]
ae_title = "MODALITY"
bind = "127.0.0.1"
port = {agent_port}
data_dir = "{tmp_path / 'data'}"
artim_timeout = "3s"
dimse_timeout = "5s"
connect_timeout = "3s"
log_level = "info"

[peers.storescp]
ae_title = "STORESCP"
host = "127.0.0.1"
port = {storescp_port}
retry_base = "0.1s"
retry_cap = "0.5s"
linger = "0.5s"

[peers.committer]
ae_title = "COMMITTER"
host = "127.0.0.1"
port = {committer_port}
retry_base = "0.1s"
retry_cap = "0.5s"
linger = "0.5s"

[storage]
forward_to = ["storescp"]
commit_with = "committer"
commit_batch = 25
commit_idle = "0.3s"
commit_timeout = "2s"
commit_max_rerequests = 50
commit_report_wait = "0.3s"
"""


def received_uids(out: Path) -> set[str]:
    # storescp names files <MODALITY>.<SOPInstanceUID>; a file still being written has no such name yet
    return {p.name.split(".", 1)[1] for p in out.iterdir() if p.name.startswith("CT.")} if out.exists() else set()


def unfinished(data: Path) -> bool:
    try:
        return bool(query(data, "SELECT (SELECT COUNT(*) FROM queue_jobs WHERE state IN ('pending', 'claimed'))"
                                " + (SELECT COUNT(*) FROM instances WHERE committed_at IS NULL)")[0][0])
    except Exception:  # no database yet
        return True


async def test_sigkill_at_twenty_moments_loses_nothing(tmp_path: Path, nursery) -> None:
    storescp = require_tool("storescp")
    require_pynetdicom()
    from tests.interop.commitment_peer import PynetdicomArchive

    agent_port, storescp_port, committer_port = free_port(), free_port(), free_port()
    out = tmp_path / "storescp"
    out.mkdir()
    peer = await start_peer(nursery, [storescp, "-aet", "STORESCP", "-od", str(out), str(storescp_port)],
                            tmp_path / "storescp.log")
    committer = PynetdicomArchive(tmp_path / "unused", report="new", agent_port=agent_port, agent_ae="MODALITY",
                                  ae_title="COMMITTER", holdings=lambda: received_uids(out))
    committer.start(committer_port)
    profile = tmp_path / "profile.toml"
    profile.write_text(profile_text(tmp_path, agent_port, storescp_port, committer_port))
    images = make_images(tmp_path / "images", N_IMAGES, rows=16, columns=16)
    log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115
    rng = random.Random(20261123)
    procs: list[trio.Process] = []

    async def start() -> trio.Process:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "agent", "run", "--profile", str(profile)],
            stdout=log, stderr=subprocess.STDOUT, env=PEER_ENV)
        procs.append(proc)
        await wait_listening(agent_port, proc, timeout=20)
        return proc

    try:
        await wait_listening(storescp_port, peer)
        proc = await start()
        acked: set[int] = set()

        async def sender() -> None:
            # The modality: keeps offering every image until the agent acknowledged it once.
            while len(acked) < N_IMAGES:
                batch = [i for i in range(N_IMAGES) if i not in acked][:10]
                try:
                    await send_images(agent_port, [images[i] for i in batch], called_ae="MODALITY")
                    acked.update(batch)
                    await trio.sleep(0.25)  # acquisition pace: the run spans the kills
                except (AgentError, OSError, AssertionError):
                    await trio.sleep(0.05)

        kills = 0
        busy_kills = 0  # kills that found work unfinished (receiving, forwarding or committing)
        async with trio.open_nursery() as run:
            run.start_soon(sender)
            while kills < KILLS:
                await trio.sleep(rng.uniform(0.05, 0.6))
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                kills += 1
                busy_kills += unfinished(tmp_path / "data") or len(acked) < N_IMAGES
                proc = await start()

        assert kills >= KILLS and len(acked) == N_IMAGES
        assert busy_kills >= KILLS // 2, f"only {busy_kills} kills hit unfinished work"
        data = tmp_path / "data"
        sent = {u for (u,) in query(data, "SELECT sop_instance_uid FROM instances")}
        assert len(sent) == N_IMAGES
        await wait_until(lambda: received_uids(out) >= sent, 60, "every instance at storescp")

        def settled() -> bool:
            committed = {u for (u,) in query(data, "SELECT sop_instance_uid FROM instances WHERE committed_at IS NOT NULL")}
            open_jobs = query(data, "SELECT COUNT(*) FROM queue_jobs WHERE state IN ('pending', 'claimed', 'dead')")
            return committed == sent and open_jobs == [(0,)]

        await wait_until(settled, 60, "every instance committed and the queue drained")
        assert received_uids(out) == sent
        assert query(data, "SELECT COUNT(*) FROM queue_jobs WHERE state = 'dead'") == [(0,)]
        assert len(committer.actions) >= 1
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGKILL)
                await p.wait()
        log.close()
        committer.stop()
        peer.kill()
