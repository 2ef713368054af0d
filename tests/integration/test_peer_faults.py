"""The queue against misbehaving destinations: down then up, reset mid-association, stalled, A700 then
0000, and a permanent failure retried from the CLI. In every case the work stays queued, backs off within
the peer's cap and is delivered once the peer behaves.

Real time with short retry settings (retry_base 0.2 s, cap 1 s): the agent's sockets and pynetdicom's
threads do not follow trio's autojump clock.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import trio

from agent.dimse import CStoreRQ
from agent.errors import AssociationAborted
from agent.net.connection import Timeouts
from agent.net.server import AcceptorPolicy, Listener, ServiceRegistry
from agent.ul.negotiation import SyntaxSupport
from tests.conftest import free_port, require_pynetdicom, write_profile
from tests.integration.commitment_helpers import query, send_images, wait_until
from tests.interop.storage_helpers import make_images, wait_listening

CT = "1.2.840.10008.5.1.4.1.1.2"
CAP = 1.0


def forwarding_profile(tmp_path: Path, pacs_port: int, **extra: str):
    lines = "\n".join(f'{k} = "{v}"' for k, v in extra.items())
    return write_profile(tmp_path / "agent", f"""
        [peers.pacs]
        ae_title = "PACS"
        host = "127.0.0.1"
        port = {pacs_port}
        retry_base = "0.2s"
        retry_cap = "{CAP}s"
        linger = "0.5s"
        {lines}

        [storage]
        forward_to = ["pacs"]
        """)


def jobs(data_dir: Path) -> list[tuple]:
    return query(data_dir, "SELECT state, attempts, last_error FROM queue_jobs ORDER BY id")


def all_done(data_dir: Path, n: int) -> bool:
    return [s for s, *_ in jobs(data_dir)] == ["done"] * n


async def fake_pacs(nursery: trio.Nursery, on_store) -> tuple[int, set[str]]:
    """A destination built on the agent's own Listener; `on_store(conn, ctx, msg, n)` decides each C-STORE."""
    received: set[str] = set()
    count = [0]

    async def handler(conn, ctx, msg) -> None:
        count[0] += 1
        await on_store(conn, ctx, msg, count[0])
        await conn.read_dataset(ctx.id)
        received.add(msg.affected_sop_instance_uid)
        await conn.send_message(ctx.id, msg.response(0x0000))

    registry = ServiceRegistry()
    registry.add([CT], SyntaxSupport(), {CStoreRQ: handler})
    listener = Listener(AcceptorPolicy(ae_title="PACS", timeouts=Timeouts(artim=5, dimse=5, idle=30)), registry)
    listeners = await nursery.start(listener.serve_tcp, "127.0.0.1", 0)
    return listeners[0].socket.getsockname()[1], received


async def test_destination_down_then_up(tmp_path: Path, start_agent) -> None:
    require_pynetdicom()
    from tests.interop.commitment_peer import PynetdicomArchive

    port = free_port()
    agent = await start_agent(forwarding_profile(tmp_path, port))
    await send_images(agent.port, make_images(tmp_path / "images", 3))
    # Connection refused: the jobs stay pending and are retried with backoff, never dead.
    await wait_until(lambda: max(a for _, a, _ in jobs(agent.data_dir)) >= 2, 10, "two failed attempts")
    states = jobs(agent.data_dir)
    # Never dead; a job may be caught in the middle of its next attempt (claimed) on a busy machine.
    assert {s for s, _, _ in states} <= {"pending", "claimed"} and all("connect" in (e or "") for *_, e in states if e)
    # The destination pauses as a whole: far fewer attempts than a retry per job per backoff would make.
    archive = PynetdicomArchive(tmp_path / "pacs", stores_only=True, ae_title="PACS")
    up = time.monotonic()
    archive.start(port)
    try:
        await wait_until(lambda: all_done(agent.data_dir, 3), 10, "delivery after the peer came back")
        assert time.monotonic() - up < CAP + 3  # within the backoff cap (plus one association)
        assert len(archive.holds()) == 3
    finally:
        archive.stop()


async def test_reset_mid_association(tmp_path: Path, start_agent, nursery) -> None:
    async def on_store(conn, ctx, msg, n: int) -> None:
        if n == 2:  # after the first C-STORE: the peer vanishes without a word
            await conn.stream.aclose()
            raise AssociationAborted("test peer reset", local=True)

    port, received = await fake_pacs(nursery, on_store)
    agent = await start_agent(forwarding_profile(tmp_path, port))
    await send_images(agent.port, make_images(tmp_path / "images", 4))
    await wait_until(lambda: all_done(agent.data_dir, 4), 15, "delivery after the reset")
    assert len(received) == 4
    assert sum(a for _, a, _ in jobs(agent.data_dir)) == 1  # exactly the interrupted one was retried


async def test_stalled_peer_hits_the_dimse_deadline(tmp_path: Path, start_agent, nursery) -> None:
    async def on_store(conn, ctx, msg, n: int) -> None:
        if n == 1:
            await trio.sleep_forever()  # never answers; the agent's deadline must fire

    port, received = await fake_pacs(nursery, on_store)
    agent = await start_agent(forwarding_profile(tmp_path, port, dimse_timeout="0.5s"))
    await send_images(agent.port, make_images(tmp_path / "images", 2))
    await wait_until(lambda: all_done(agent.data_dir, 2), 15, "delivery after the stall")
    assert len(received) == 2
    errors = [e for _, a, e in jobs(agent.data_dir) if a]
    assert len(errors) == 1 and "DIMSE response" in errors[0]


async def test_out_of_resources_then_success(tmp_path: Path, start_agent) -> None:
    require_pynetdicom()
    from tests.interop.commitment_peer import PynetdicomArchive

    port = free_port()
    archive = PynetdicomArchive(tmp_path / "pacs", stores_only=True, ae_title="PACS", store_status_first=0xA700)
    archive.start(port)
    try:
        await wait_listening(port)
        agent = await start_agent(forwarding_profile(tmp_path, port))
        await send_images(agent.port, make_images(tmp_path / "images", 3))
        await wait_until(lambda: all_done(agent.data_dir, 3), 15, "delivery after A700")
        assert sorted(archive.seen_stores.values()) == [2, 2, 2] and len(archive.holds()) == 3
        assert all(a == 1 and "A700" in e.upper() for _, a, e in jobs(agent.data_dir))
    finally:
        archive.stop()


async def cli(*args: str) -> tuple[int, str]:
    proc = await trio.run_process([sys.executable, "-m", "agent", *args], capture_stdout=True,
                                  capture_stderr=True, check=False)
    return proc.returncode, proc.stdout.decode() + proc.stderr.decode()


async def test_permanent_failure_is_dead_until_retried_from_the_cli(tmp_path: Path, start_agent) -> None:
    require_pynetdicom()
    from tests.interop.commitment_peer import PynetdicomArchive

    port = free_port()
    archive = PynetdicomArchive(tmp_path / "pacs", stores_only=True, ae_title="PACS", store_status_first=0xA900)
    archive.start(port)
    try:
        await wait_listening(port)
        profile = forwarding_profile(tmp_path, port)
        agent = await start_agent(profile)
        await send_images(agent.port, make_images(tmp_path / "images", 2))
        await wait_until(lambda: [s for s, *_ in jobs(agent.data_dir)] == ["dead", "dead"], 10, "dead jobs")
        rc, out = await cli("status", "--profile", profile.source, "--json")
        status = json.loads(out)
        assert rc == 0 and status["queue"]["dead"] == 2 and status["queue"]["destinations"]["pacs"]["dead"] == 2
        rc, out = await cli("queue", "list", "--profile", profile.source)
        assert rc == 0 and out.count("dead") == 2 and "A900" in out.upper()
        rc, out = await cli("queue", "show", "1", "--profile", profile.source, "--json")
        assert rc == 0 and json.loads(out)["state"] == "dead"
        rc, out = await cli("queue", "retry", "--dead", "--profile", profile.source)
        assert rc == 0 and "2 dead job(s)" in out
        await wait_until(lambda: all_done(agent.data_dir, 2), 8, "the running agent picks the retried jobs up")
        assert len(archive.holds()) == 2
        rc, out = await cli("queue", "drop", "1", "--profile", profile.source, "--json")
        assert rc == 0 and json.loads(out)["dropped"] == 1
        rc, out = await cli("queue", "show", "1", "--profile", profile.source)
        assert rc == 1 and "no job 1" in out
        rc, out = await cli("status", "--profile", profile.source)
        assert rc == 0 and "pacs" in out and "dead jobs 0" in out
    finally:
        archive.stop()
