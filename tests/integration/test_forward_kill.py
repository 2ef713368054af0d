"""Forwarding progress is durable per job: an agent (a subprocess) killed with SIGKILL while forwarding
a backlog sends again at most the C-STOREs in flight, not the rest of its claimed batch. Forwarding is
pipelined (the completion of one C-STORE is committed while the next is sent), so in flight means at
most two per destination: the one held unanswered and the one answered just before it, whose
completion may not have been committed yet (README, "Durable queue").

The destination is a pynetdicom Storage SCP in the test process; it counts every C-STORE it receives
and kills the agent while it holds the N-th one (received, not yet answered: the job in flight).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import trio

from tests.conftest import free_port, require_pynetdicom
from tests.integration.commitment_helpers import query, send_images, wait_until
from tests.interop.storage_helpers import PEER_ENV, make_images, wait_listening

N_IMAGES = 60
KILL_AT = (10, 30)  # deliveries (repeats included) at which the agent is killed


def profile_text(tmp_path: Path, agent_port: int, pacs_port: int) -> str:
    return f"""
[agent]
ae_title = "AGENT"
bind = "127.0.0.1"
port = {agent_port}
data_dir = "{tmp_path / 'data'}"
artim_timeout = "5s"
dimse_timeout = "10s"
connect_timeout = "5s"

[peers.pacs]
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs_port}
retry_base = "0.1s"
retry_cap = "0.5s"
linger = "0.5s"

[storage]
forward_to = ["pacs"]
"""


class CountingPacs:
    """Counts C-STOREs by SOP Instance UID; kills `pid` while holding the delivery numbered in `kill_at`."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.pid = 0
        self.kills = 0
        self.lock = threading.Lock()

    def start(self, port: int) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.presentation import StoragePresentationContexts

        ae = AE(ae_title="PACS")
        for cx in StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax)
        self.server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.on_store)])

    def on_store(self, event) -> int:  # type: ignore[no-untyped-def]
        with self.lock:
            self.received.append(str(event.request.AffectedSOPInstanceUID))
            if len(self.received) in KILL_AT and self.pid:
                os.kill(self.pid, signal.SIGKILL)  # the agent never sees this C-STORE's response
                self.kills += 1
                self.pid = 0
        return 0x0000


async def test_a_kill_mid_batch_repeats_at_most_the_jobs_in_flight(tmp_path: Path) -> None:
    require_pynetdicom()
    agent_port, pacs_port = free_port(), free_port()
    profile = tmp_path / "profile.toml"
    profile.write_text(profile_text(tmp_path, agent_port, pacs_port))
    log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115
    pacs = CountingPacs()

    async def start(*, armed: bool) -> trio.Process:
        proc = await trio.lowlevel.open_process([sys.executable, "-m", "agent", "run", "--profile", str(profile)],
                                                stdout=log, stderr=subprocess.STDOUT, env=PEER_ENV)
        if armed:
            pacs.pid = proc.pid  # before it can forward anything
        await wait_listening(agent_port, proc, timeout=30)
        return proc

    proc = await start(armed=False)
    try:
        # A backlog: the destination is down while the images arrive, so many jobs wait to be claimed.
        await send_images(agent_port, make_images(tmp_path / "images", N_IMAGES, rows=16, columns=16))
        pacs.pid = proc.pid
        pacs.start(pacs_port)
        for _ in KILL_AT:
            with trio.fail_after(60):
                await proc.wait()  # killed by the peer mid-batch
            assert proc.returncode == -signal.SIGKILL
            proc = await start(armed=True)
        data = tmp_path / "data"
        await wait_until(lambda: query(data, "SELECT COUNT(*) FROM queue_jobs WHERE state = 'done'")[0][0] == N_IMAGES,
                         60, "every image forwarded")
    finally:
        pacs.pid = 0
        proc.kill()
        await proc.wait()
        if hasattr(pacs, "server"):
            pacs.server.shutdown()
    counts = Counter(pacs.received)
    assert len(counts) == N_IMAGES and pacs.kills == len(KILL_AT)
    repeats = sum(n - 1 for n in counts.values())
    assert repeats <= 2 * pacs.kills, f"{repeats} repeated deliveries for {pacs.kills} kills"
