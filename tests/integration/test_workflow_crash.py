"""Crash safety of the modality workflow: the agent (a subprocess, `python -m agent run`) is killed with
SIGKILL at 30 seeded random moments of a 5-procedure run of the serial device simulator, and restarted
each time; the device and the peers stay up.

Each moment is drawn (seeded) from three kinds, so kills land all over the run and on its sensitive
points: a delay after the restarted agent listens; the k-th message a peer receives (C-STORE, N-ACTION,
N-CREATE, N-SET: the agent dies before it hears the answer); the n-th byte the device sends on the line
(the agent dies in the middle of a device message). A moment that does not come within a few seconds
(the run is over) falls back to a delay.

The serial line is a pair of pseudo-terminals joined by the test (PtyLink), so it survives the agent's
restarts as a real cable would. The peers are pynetdicom in this process: one AE that stores and commits
(counting every C-STORE by SOP Instance UID) and an MPPS SCP with a RIS's rules (0111 for a repeated
N-CREATE, 0112 for an N-SET of an unknown instance, 0110 for one already final), recording every
message. WORKFLOW_CRASH_SEED picks other moments; WORKFLOW_CRASH_REPORT=new has the PACS send its
commitment reports on a new association (one sent while the agent is down is lost: it must ask again).

Afterwards, as the peers saw it:
- every device image is stored exactly once: per procedure (accession number) the PACS holds as many
  distinct SOP Instance UIDs as the device made images, and they are exactly the UIDs the agent recorded;
  the same UID sent again (an idempotent re-send after a kill) is allowed and counted;
- every procedure has exactly one MPPS instance, with exactly one successful N-CREATE, before its N-SET,
  and ends COMPLETED;
- every instance is committed, and no job is left in the agent's queue (none retrying for ever).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import trio

from tests.conftest import free_port, require_pynetdicom
from tests.interop.commitment_peer import PynetdicomArchive
from tests.interop.workflow_peers import (
    PEER_ENV,
    MppsRis,
    PtyLink,
    mpps_order_problems,
    procedure_reports,
    stored_images,
)
from tests.interop.worklist_items import make_item, write_wl

pytestmark = pytest.mark.trio

SEED = int(os.environ.get("WORKFLOW_CRASH_SEED", "20261126"))  # another seed: other moments, same checks
KILLS = 30
PROCEDURES = 5
IMAGES = 3
# Moments are small steps of progress, so the 30 kills spread over the run rather than after it.
KILL_AFTER = (0.0, 0.5)  # seconds after the restarted agent listens, for a "delay" moment
PEER_MESSAGES = (1, 3)  # the k-th message the peers receive after the restart, for a "peer" moment
LINE_BYTES = (500, 12_000)  # the n-th byte the device sends after the restart (an image is ~11 kB)
FALLBACK = 4.0  # seconds: a peer or line moment that does not come by then becomes a kill anyway
ACCESSIONS = [f"ACC2{i:02d}" for i in range(1, PROCEDURES + 1)]


def profile_text(tmp: Path, port: int, pacs: int, ris: int, tty: str) -> str:
    return f"""
[agent]
ae_title = "AGENT"
bind = "127.0.0.1"
port = {port}
data_dir = "{tmp / 'data'}"
artim_timeout = "5s"
dimse_timeout = "10s"
connect_timeout = "5s"

[peers.pacs]
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs}
retry_base = "0.1s"
retry_cap = "0.5s"
linger = "0.5s"

[peers.ris]
ae_title = "RIS"
host = "127.0.0.1"
port = {ris}
retry_base = "0.1s"
retry_cap = "0.5s"

[storage]
commit_idle = "0.5s"
commit_timeout = "10s"
commit_report_wait = "5s"

[worklist]
folder = "{tmp / 'worklist'}"
station_ae = "AGENT"
date = "any"

[mpps]
send_to = ["ris"]

[device]
driver = "serial"
options = {{ port = "{tty}" }}
select = "accession"
unscheduled = "refuse"
send_to = ["pacs"]
commit_with = "pacs"
"""


def completed(data: Path) -> int:
    return sum(1 for r in procedure_reports(data) if r["state"] == "completed")


def unsettled(data: Path) -> list[str]:
    """What is not finished yet: procedures not completed, MPPS and store jobs not done (none may be
    left retrying for ever), instances not committed."""
    rows = procedure_reports(data)
    out = [f"{len(rows)} procedures recorded"] if len(rows) != PROCEDURES else []
    for r in rows:
        key = r["procedure_key"]
        if r["state"] != "completed":
            out.append(f"{key} {r['state']} {r['error'] or ''}")
        for op in ("create", "set"):
            if set(r["mpps"].get(op, {}).values()) != {"done"}:
                out.append(f"{key} MPPS {op}: {r['mpps'].get(op)}")
        for i in r["images"]:
            if set(i["forwarded"].values()) != {"done"} or not i["committed"]:
                out.append(f"{key}/{i['image_key']}: {i['state']}, forwarded {i['forwarded']}, "
                           f"committed {i['committed']}")
    return out


def settled(data: Path) -> bool:
    return not unsettled(data)


def log_tail(path: Path, lines: int = 40) -> str:
    """The agent's last log lines, for a failure message: the temporary folder may be gone when
    someone reads the report."""
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(["--- agent.log (last lines) ---", *text[-lines:]])


def reserve_port() -> socket.socket:
    """A loopback port held for the agent across its restarts: a bound, never listening socket with
    SO_REUSEADDR. The agent's listener (SO_REUSEADDR too) binds it each time, but while the agent is
    down no other process on this shared machine can get it from bind(0) or connect() and make the
    next start-up fail with "address already in use"."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    return holder


def taken_by_another(port: int) -> bool:
    """True when a socket without SO_REUSEADDR (what bind(0) hands out) cannot bind `port`."""
    with socket.socket() as other:
        try:
            other.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class Killer:
    """Kills the armed agent when its moment comes: the k-th peer message or the n-th line byte counted
    from arming. Peers call `peer()` from their handler threads before answering; the line calls
    `line(chunk)` from its shuttle thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = 0
        self.peer_left: int | None = None
        self.bytes_left: int | None = None
        self.fired: Counter[str] = Counter()

    def arm(self, pid: int, *, peer: int | None = None, line: int | None = None) -> None:
        with self.lock:
            self.pid, self.peer_left, self.bytes_left = pid, peer, line

    def disarm(self) -> None:
        with self.lock:
            self.pid = 0

    def _fire(self, kind: str) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.fired[kind] += 1
        self.pid = 0

    def peer(self) -> None:
        with self.lock:
            if self.pid and self.peer_left is not None:
                self.peer_left -= 1
                if self.peer_left <= 0:
                    self._fire("peer message")

    def line(self, chunk: bytes) -> bytes:
        with self.lock:
            if self.pid and self.bytes_left is not None:
                self.bytes_left -= len(chunk)
                if self.bytes_left <= 0:
                    self._fire("device message on the line")
        return chunk


class KillingArchive(PynetdicomArchive):
    """The PACS (storage and commitment in one AE) that lets the killer act before it answers."""

    killer: Killer

    def _on_store(self, event):  # type: ignore[no-untyped-def]
        status = super()._on_store(event)
        self.killer.peer()
        return status

    def _on_action(self, event):  # type: ignore[no-untyped-def]
        answer = super()._on_action(event)
        self.killer.peer()
        return answer


async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    require_pynetdicom()
    rng = random.Random(SEED)
    items = [make_item(a, f"CRASH^{a}", patient_id=f"P{a}", modality="OT") for a in ACCESSIONS]
    for a, item in zip(ACCESSIONS, items):
        write_wl(tmp_path / "worklist" / f"{a}.wl", item)
    killer = Killer()
    link = PtyLink(to_agent=killer.line)
    holder = reserve_port()  # closed at the end (finally)
    port = int(holder.getsockname()[1])
    # "same": the commitment report on the request's association; "new": on a new one to the agent's
    # listener, as some archives do (a report sent while the agent is down is lost: it must ask again)
    pacs = KillingArchive(tmp_path / "pacs", report=os.environ.get("WORKFLOW_CRASH_REPORT", "same"),
                          ae_title="PACS", agent_port=port, agent_ae="AGENT")
    pacs.killer = killer
    pacs_port = free_port()
    pacs.start(pacs_port)
    ris = MppsRis("RIS", on_message=killer.peer)
    profile = tmp_path / "profile.toml"
    profile.write_text(profile_text(tmp_path, port, pacs_port, ris.port, link.agent_path))
    agent_log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115
    device_log = open(tmp_path / "device.log", "ab")  # noqa: SIM115
    device = await trio.lowlevel.open_process(
        [sys.executable, "-m", "drivers.acquisition.serial.device", "--port", link.device_path,
         "--state", str(tmp_path / "device-state.json"), "--procedures", str(PROCEDURES), "--images", str(IMAGES),
         "--size", "64x64", "--seed", "7", "--worklist-keys", ",".join(ACCESSIONS),
         "--reply-timeout", "3", "--retry-delay", "0.2"],
        stdout=device_log, stderr=subprocess.STDOUT)

    async def spawn() -> trio.Process:
        return await trio.lowlevel.open_process([sys.executable, "-m", "agent", "run", "--profile", str(profile)],
                                                stdout=agent_log, stderr=subprocess.STDOUT, env=PEER_ENV)

    async def listening(proc: trio.Process) -> bool:
        """Wait until the agent listens (True) or has died (False: killed at an early moment)."""
        with trio.fail_after(60):
            while proc.poll() is None:
                try:
                    await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                    return True
                except OSError:
                    await trio.sleep(0.05)
        return False

    data = tmp_path / "data"
    done_at_kill: list[int] = []
    proc = None
    try:
        for _ in range(KILLS):
            kind = rng.choice(("delay", "peer", "line"))
            proc = await spawn()
            if kind == "peer":
                killer.arm(proc.pid, peer=rng.randint(*PEER_MESSAGES))
            elif kind == "line":
                killer.arm(proc.pid, line=rng.randint(*LINE_BYTES))
            if await listening(proc):
                with trio.move_on_after(rng.uniform(*KILL_AFTER) if kind == "delay" else FALLBACK):
                    await proc.wait()
            killer.disarm()
            if proc.returncode is None:
                killer.fired["delay" if kind == "delay" else "fallback delay"] += 1
                proc.kill()
            await proc.wait()
            assert proc.returncode == -signal.SIGKILL, (
                f"the agent exited by itself ({proc.returncode})\n{log_tail(tmp_path / 'agent.log')}")
            assert taken_by_another(port), "the agent's port is free for anyone while it is down"
            done_at_kill.append(completed(data))
        proc = await spawn()
        try:
            with trio.fail_after(120):
                while not settled(data):
                    assert proc.poll() is None, f"the agent exited\n{log_tail(tmp_path / 'agent.log')}"
                    await trio.sleep(0.2)
        except trio.TooSlowError:
            tail = log_tail(tmp_path / "agent.log")
            raise AssertionError(f"not settled in 120 s: {unsettled(data)}\n{tail}") from None
        with trio.fail_after(30):
            await device.wait()  # every message acknowledged
        assert device.returncode == 0, "device simulator failed: see device.log"
    finally:
        killer.disarm()
        for p in (proc, device):
            if p is not None and p.returncode is None:
                p.kill()
                await p.wait()
        link.close()
        holder.close()
        pacs.stop()
        ris.close()
        agent_log.close()
        device_log.close()

    rows = procedure_reports(data)
    assert len(rows) == PROCEDURES and {r["state"] for r in rows} == {"completed"}, [
        (r["procedure_key"], r["state"], r["error"]) for r in rows]
    assert sorted(r["accession_number"] for r in rows) == ACCESSIONS

    # every device image stored exactly once: no second UID for one image
    held = {img.uid: img.dataset for img in stored_images(pacs.out_dir)}
    per_accession = Counter(str(ds.AccessionNumber) for ds in held.values())
    assert per_accession == dict.fromkeys(ACCESSIONS, IMAGES), per_accession
    recorded = {i["sop_instance_uid"] for r in rows for i in r["images"]}
    keys = {(r["procedure_key"], i["image_key"]) for r in rows for i in r["images"]}
    assert len(keys) == len(recorded) == PROCEDURES * IMAGES
    assert set(held) == recorded == set(pacs.seen_stores)
    resent = sum(n - 1 for n in pacs.seen_stores.values())
    assert all(i["committed"] for r in rows for i in r["images"])

    # one MPPS per procedure: exactly one successful N-CREATE, before its N-SET; COMPLETED
    messages = ris.snapshot()
    assert mpps_order_problems(messages) == []
    created = {m.uid: m.dataset for m in messages if m.op == "N-CREATE" and m.status == 0}
    assert set(created) == {r["mpps_uid"] for r in rows}
    by_accession = Counter(str(ds.ScheduledStepAttributesSequence[0].AccessionNumber) for ds in created.values())
    assert by_accession == dict.fromkeys(ACCESSIONS, 1)
    assert ris.final_states() == dict.fromkeys(created, "COMPLETED")
    duplicates = Counter(f"{m.op} {m.status:04X}" for m in messages if m.status != 0)
    print(f"\n{KILLS} kills {dict(killer.fired)} (procedures completed at each kill: {done_at_kill}); "
          f"C-STOREs re-sent with the "
          f"same UID: {resent}; MPPS messages answered non-success (idempotent re-sends): {dict(duplicates)}; "
          f"bytes lost on the line while the agent was down: {link.overflowed}")
