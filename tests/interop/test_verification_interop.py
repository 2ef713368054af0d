"""Verification (C-ECHO) and association admission against real peers: DCMTK and pynetdicom.

Every peer runs as a subprocess (or, for pynetdicom's AE, in its own threads) while the agent runs
in the test's trio loop; the assertions are on what the peer itself reports.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from agent.dimse.status import Status
from agent.net.connection import Timeouts
from agent.services.verification import VERIFICATION_SOP_CLASS, echo
from tests.conftest import free_port, require_pynetdicom, require_tool, wait_listening, write_profile

pytestmark = pytest.mark.interop

FAST = Timeouts(artim=5, dimse=5, idle=10, connect=5)
ENV = {**os.environ, "TCP_NODELAY": "1"}


async def run(cmd: list[str], timeout: float = 20) -> tuple[int, str]:
    """Run a peer to completion without blocking the agent that serves it; (exit code, stdout+stderr)."""
    with trio.fail_after(timeout):
        proc = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False, env=ENV)
    return proc.returncode, proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


# ---------------------------------------------------------------- DCMTK


async def test_dcmtk_echoscu_against_agent(tmp_path: Path, start_agent, caplog) -> None:
    echoscu = require_tool("echoscu")
    caplog.set_level(logging.INFO, logger="agent.net")
    running = await start_agent(write_profile(tmp_path, ""))
    rc, out = await run([echoscu, "-v", "-aet", "DCMTK", "-aec", "AGENT", "127.0.0.1", str(running.port)])
    assert rc == 0, out
    assert "Received Echo Response (Success)" in out
    # The agent's one line for the association, once DCMTK has closed its end.
    with trio.fail_after(10):
        while not any("association ended: DCMTK -> AGENT" in r.getMessage() for r in caplog.records):
            await trio.sleep(0.01)
    line = next(r.getMessage() for r in caplog.records if "association ended: DCMTK -> AGENT" in r.getMessage())
    assert "released by the peer" in line and "1 C-ECHO-RQ (Verification SOP Class)" in line, line


async def test_agent_echo_cli_against_dcmtk_storescp(tmp_path: Path, nursery: trio.Nursery) -> None:
    storescp = require_tool("storescp")
    port = free_port()
    proc = await nursery.start(
        lambda task_status: trio.run_process(
            [storescp, "-aet", "STORESCP", "-od", str(tmp_path), str(port)],
            check=False, env=ENV, task_status=task_status,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    )
    try:
        await wait_listening(port, proc)
        rc, out = await run(
            [sys.executable, "-m", "agent", "echo", "--aec", "STORESCP", "--timeout", "5", "127.0.0.1", str(port)]
        )
        assert rc == 0, out
        assert f"C-ECHO STORESCP@127.0.0.1:{port}: 0x0000 Success" in out
    finally:
        proc.kill()


async def test_dcmtk_rejected_for_wrong_called_ae(tmp_path: Path, start_agent) -> None:
    echoscu = require_tool("echoscu")
    running = await start_agent(write_profile(tmp_path, "", agent_extra="called_ae_check = true"))
    rc, out = await run([echoscu, "-aec", "WRONG", "127.0.0.1", str(running.port)])
    assert rc != 0
    assert "Association Rejected" in out
    assert "Rejected Permanent, Source: Service User" in out
    assert "Reason: Called AE Title Not Recognized" in out
    # The right called AE still gets in.
    rc, out = await run([echoscu, "-aec", "AGENT", "127.0.0.1", str(running.port)])
    assert rc == 0, out


async def test_dcmtk_findscu_unsupported_sop_class_has_no_acceptable_context(tmp_path: Path, start_agent) -> None:
    findscu = require_tool("findscu")
    running = await start_agent(write_profile(tmp_path, ""))
    rc, out = await run(
        [findscu, "-S", "-aec", "AGENT", "127.0.0.1", str(running.port), "-k", "QueryRetrieveLevel=STUDY"]
    )
    assert rc != 0
    assert "No Acceptable Presentation Contexts" in out


async def test_max_associations_rejects_transiently_then_admits(tmp_path: Path, start_agent) -> None:
    echoscu = require_tool("echoscu")
    require_pynetdicom()
    from pynetdicom import AE

    running = await start_agent(write_profile(tmp_path, "", agent_extra="max_associations = 2"))
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(VERIFICATION_SOP_CLASS)
    held = []
    try:
        for _ in range(2):
            assoc = await trio.to_thread.run_sync(lambda: ae.associate("127.0.0.1", running.port, ae_title="AGENT"))
            assert assoc.is_established
            held.append(assoc)
        rc, out = await run([echoscu, "-aec", "AGENT", "127.0.0.1", str(running.port)])
        assert rc != 0
        assert "Rejected Transient, Source: Service Provider (Presentation Related)" in out
        assert "Reason: Local Limit Exceeded" in out

        await trio.to_thread.run_sync(held.pop().release)
        # The agent frees the slot once the released peer has closed its socket: allow a moment.
        with trio.fail_after(30):
            while True:
                rc, out = await run([echoscu, "-aec", "AGENT", "127.0.0.1", str(running.port)])
                if rc == 0 or "Local Limit Exceeded" not in out:
                    break
                await trio.sleep(0.05)
        assert rc == 0, out
    finally:
        for assoc in held:
            await trio.to_thread.run_sync(assoc.release)


# ---------------------------------------------------------------- pynetdicom


async def test_pynetdicom_echoscu_against_agent(tmp_path: Path, start_agent) -> None:
    require_pynetdicom()
    running = await start_agent(write_profile(tmp_path, ""))
    rc, out = await run(
        [sys.executable, "-m", "pynetdicom", "echoscu", "127.0.0.1", str(running.port), "-aec", "AGENT", "-v"]
    )
    assert rc == 0, out
    assert "Received Echo Response (Status: 0x0000 - Success)" in out


async def test_agent_against_pynetdicom_scp(tmp_path: Path) -> None:
    require_pynetdicom()
    from pynetdicom import AE, evt

    seen: list[str] = []

    def on_echo(event) -> int:
        seen.append(event.assoc.requestor.ae_title)
        return 0x0000

    ae = AE(ae_title="PYNSCP")
    ae.add_supported_context(VERIFICATION_SOP_CLASS)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_ECHO, on_echo)])
    try:
        result = await echo("127.0.0.1", port, calling_ae="AGENTSCU", called_ae="PYNSCP", timeouts=FAST)
        assert result.ok and result.status == Status.SUCCESS
        assert seen == ["AGENTSCU"]
    finally:
        await trio.to_thread.run_sync(server.shutdown)
