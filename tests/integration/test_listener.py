"""The agent against itself over loopback: C-ECHO, concurrency, ARTIM on a silent peer, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import trio

from agent.dimse.status import Status
from agent.net.connection import Timeouts
from agent.services.verification import echo
from agent.ul import pdu as P
from agent.ul.negotiation import ProposedContext, build_request
from tests.conftest import free_port, write_profile

FAST = Timeouts(artim=30, dimse=30, idle=30, connect=30)  # deadlines, not expectations: a loaded machine is slow


async def test_echo_against_itself(tmp_path: Path, start_agent) -> None:
    running = await start_agent(write_profile(tmp_path, ""))
    result = await echo("127.0.0.1", running.port, calling_ae="SCU", called_ae="AGENT", timeouts=FAST)
    assert result.ok and result.status == Status.SUCCESS


async def test_twenty_concurrent_echoes(tmp_path: Path, start_agent) -> None:
    running = await start_agent(write_profile(tmp_path, "", agent_extra="max_associations = 32"))
    results: list[int] = []

    async def one(i: int) -> None:
        r = await echo("127.0.0.1", running.port, calling_ae=f"SCU{i}", called_ae="AGENT", timeouts=FAST)
        results.append(r.status)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
    assert results == [Status.SUCCESS] * 20


async def test_silent_peer_is_closed_after_artim(tmp_path: Path, start_agent) -> None:
    running = await start_agent(write_profile(tmp_path, "", agent_extra='artim_timeout = "1s"'))
    stream = await trio.open_tcp_stream("127.0.0.1", running.port)
    start = trio.current_time()
    with trio.fail_after(30):
        data = await stream.receive_some(1024)
    # ARTIM expiry in Sta2 closes the transport without sending anything (PS3.8 AA-2).
    assert data == b""
    assert trio.current_time() - start >= 0.9
    await stream.aclose()
    # The listener is still serving.
    assert (await echo("127.0.0.1", running.port, calling_ae="SCU", called_ae="AGENT", timeouts=FAST)).ok


async def test_partial_pdu_is_closed_after_artim(tmp_path: Path, start_agent) -> None:
    """Half an A-ASSOCIATE-RQ, then silence: the agent waits for the rest only until ARTIM expires."""
    running = await start_agent(write_profile(tmp_path, "", agent_extra='artim_timeout = "1s"'))
    rq = P.encode_pdu(build_request("SCU", "AGENT", [ProposedContext("1.2.840.10008.1.1")], max_pdu_receive=16384))
    stream = await trio.open_tcp_stream("127.0.0.1", running.port)
    await stream.send_all(rq[: len(rq) // 2])
    with trio.fail_after(30):
        received = b""
        while chunk := await stream.receive_some(1024):
            received += chunk
    assert received == b"" or received[0] == P.A_ABORT
    await stream.aclose()


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"agent did not listen on {port} within {timeout} s")


def test_sigterm_stops_gracefully_and_aborts_open_association(tmp_path: Path) -> None:
    port = free_port()
    profile = write_profile(tmp_path, "", port=port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--profile", str(profile.source)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_listening(port, proc)
        # An association that is open (accepted, idle) when the signal arrives.
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        rq = build_request("SCU", "AGENT", [ProposedContext("1.2.840.10008.1.1")], max_pdu_receive=16384)
        sock.sendall(P.encode_pdu(rq))
        header = sock.recv(1)
        assert header == bytes([P.A_ASSOCIATE_AC])
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        assert rc == 0, proc.stderr.read()
        rest = b""
        sock.settimeout(30)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        sock.close()
        # After the rest of the A-ASSOCIATE-AC the agent sent an A-ABORT (or a release request).
        ac_length = int.from_bytes(rest[1:5], "big")  # rest starts at the AC's reserved byte
        tail = rest[5 + ac_length :]
        assert tail[:1] in (bytes([P.A_ABORT]), bytes([P.A_RELEASE_RQ])), tail
        assert "SIGTERM received: stopping" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
