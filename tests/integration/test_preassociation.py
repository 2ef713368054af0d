"""Connections that have not sent an A-ASSOCIATE-RQ cannot lock callers out.

PS3.8 9.2 (AE-5, AE-6): ARTIM starts when the transport connection opens and stops only when the
A-ASSOCIATE-RQ arrives; bytes that are not a whole request do not restart it. Only established
associations count against `max_associations`; connections still waiting for their request have their
own bound (in total and per source address), and the oldest of them is closed to make room.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio

from agent.net.connection import Timeouts
from agent.services.verification import echo
from agent.ul import pdu as P
from agent.ul.negotiation import ProposedContext, build_request
from tests.conftest import require_tool, write_profile

FAST = Timeouts(artim=5, dimse=5, idle=10, connect=5)
ENV = {**os.environ, "TCP_NODELAY": "1"}
RQ = P.encode_pdu(build_request("TRICKLE", "AGENT", [ProposedContext("1.2.840.10008.1.1")], max_pdu_receive=16384))


async def _silent(port: int, held: list[trio.SocketStream]) -> None:
    held.append(await trio.open_tcp_stream("127.0.0.1", port))


async def _trickle(port: int, interval: float, closed_after: list[float]) -> None:
    """Send a valid A-ASSOCIATE-RQ one byte every `interval` seconds until the agent closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    start = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                try:
                    while await stream.receive_some(4096):
                        pass
                except trio.BrokenResourceError:
                    pass
                closed_after.append(trio.current_time() - start)
                nursery.cancel_scope.cancel()

            nursery.start_soon(reader)
            for byte in RQ:
                try:
                    await stream.send_all(bytes([byte]))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                await trio.sleep(interval)
    finally:
        await stream.aclose()


async def test_trickling_peer_is_closed_when_artim_expires(tmp_path: Path, start_agent) -> None:
    """A byte every 0.3 s does not keep a connection alive past ARTIM (1 s) without a whole request."""
    running = await start_agent(write_profile(tmp_path, "", agent_extra='artim_timeout = "1s"'))
    closed_after: list[float] = []
    with trio.fail_after(30):
        await _trickle(running.port, 0.3, closed_after)
    assert closed_after, "the agent never closed a connection that trickled bytes"
    # ARTIM runs from the connection to the request: closed after about 1 s, long before the
    # trickler could finish its request (len(RQ) * 0.3 s).
    assert closed_after[0] < 10, closed_after


async def test_connections_without_request_do_not_count_against_max_associations(
    tmp_path: Path, start_agent
) -> None:
    running = await start_agent(write_profile(tmp_path, "", agent_extra="max_associations = 2"))
    held: list[trio.SocketStream] = []
    try:
        for _ in range(10):
            await _silent(running.port, held)
        result = await echo("127.0.0.1", running.port, calling_ae="SCU", called_ae="AGENT", timeouts=FAST)
        assert result.ok
    finally:
        for stream in held:
            await stream.aclose()


async def test_oldest_waiting_connection_is_closed_beyond_the_per_address_bound(
    tmp_path: Path, start_agent
) -> None:
    running = await start_agent(
        write_profile(tmp_path, "", agent_extra="max_pending_per_address = 3\nartim_timeout = \"30s\"")
    )
    held: list[trio.SocketStream] = []
    try:
        for _ in range(4):
            await _silent(running.port, held)
        # The first one is closed by the agent (EOF, nothing sent: as an ARTIM expiry in Sta2)...
        with trio.fail_after(10):
            assert await held[0].receive_some(100) == b""
        # ...and the newest is still open and usable: it can still associate.
        await held[-1].send_all(RQ)
        with trio.fail_after(10):
            answer = await held[-1].receive_some(1)
        assert answer == bytes([P.A_ASSOCIATE_AC])
    finally:
        for stream in held:
            await stream.aclose()


@pytest.mark.interop
async def test_dcmtk_echoscu_gets_in_past_200_silent_and_16_trickling_connections(
    tmp_path: Path, start_agent
) -> None:
    echoscu = require_tool("echoscu")
    running = await start_agent(write_profile(tmp_path, "", agent_extra='artim_timeout = "30s"'))
    held: list[trio.SocketStream] = []
    closed_after: list[float] = []
    async with trio.open_nursery() as nursery:
        for _ in range(16):
            nursery.start_soon(_trickle, running.port, 2.0, closed_after)
        for _ in range(200):
            await _silent(running.port, held)
        await trio.sleep(0)  # let the tricklers send their first byte
        start = time.monotonic()
        with trio.fail_after(30):
            proc = await trio.run_process(
                [echoscu, "-aet", "DCMTK", "-aec", "AGENT", "127.0.0.1", str(running.port)],
                capture_stdout=True, capture_stderr=True, check=False, env=ENV,
            )
        elapsed = time.monotonic() - start
        print(f"echoscu past 200 silent + 16 trickling connections: rc={proc.returncode} in {elapsed:.3f} s")
        out = (proc.stdout + proc.stderr).decode(errors="replace")
        nursery.cancel_scope.cancel()
    for stream in held:
        await stream.aclose()
    assert proc.returncode == 0, out
    # Within a second on an idle machine; 5 s leaves room for a loaded one.
    assert elapsed < 5, f"echoscu took {elapsed:.1f} s"


async def test_a_flood_of_waiting_connections_never_closes_an_established_association(
    tmp_path: Path, start_agent
) -> None:
    from agent.dimse import CEchoRQ
    from agent.net.client import open_association
    from agent.net.requests import request

    running = await start_agent(write_profile(tmp_path, "", agent_extra='artim_timeout = "30s"'))
    conn = await open_association(
        "127.0.0.1", running.port, calling_ae="HELD", called_ae="AGENT",
        proposals=[ProposedContext("1.2.840.10008.1.1")], timeouts=FAST,
    )
    held: list[trio.SocketStream] = []
    try:
        for _ in range(100):  # well past both bounds (16 per address, 64 in all)
            await _silent(running.port, held)
        with trio.fail_after(10):
            # The oldest waiting connection was closed to make room...
            assert await held[0].receive_some(100) == b""
        # ...while the established association still works.
        reply = await request(conn, 1, CEchoRQ(message_id=conn.next_message_id(),
                                               affected_sop_class_uid="1.2.840.10008.1.1"))
        assert reply.status == 0
        await conn.release()
    finally:
        for stream in held:
            await stream.aclose()
        await conn.aclose()
