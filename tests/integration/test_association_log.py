"""What a service engineer reads in the log: one info line per association when it ends (who, what,
how many, how long, how it ended), and at debug a wire trace of PDUs and DIMSE commands."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest
import trio

from agent.dimse import CEchoRQ, encode_message
from agent.net.connection import Timeouts
from agent.services.verification import VERIFICATION_SOP_CLASS, echo
from agent.ul import pdu as P
from agent.ul.negotiation import ProposedContext, build_request
from tests.conftest import write_profile

FAST = Timeouts(artim=5, dimse=5, idle=10, connect=5)
RQ = P.encode_pdu(build_request("RAW", "AGENT", [ProposedContext(VERIFICATION_SOP_CLASS)], max_pdu_receive=16384))


def ended_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The agent's own lines (associations it accepted: "from" the peer), not our test client's."""
    return [
        r.getMessage() for r in caplog.records
        if r.name == "agent.net" and r.levelno == logging.INFO and "association ended" in r.getMessage()
        and ", to " not in r.getMessage()
    ]


async def wait_for_line(caplog: pytest.LogCaptureFixture, count: int = 1) -> list[str]:
    with trio.fail_after(20):
        while len(ended_lines(caplog)) < count:
            await trio.sleep(0.01)
    await trio.sleep(0.2)  # and no second line for the same association
    return ended_lines(caplog)


async def _raw_associate(port: int) -> tuple[trio.SocketStream, bytearray]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(RQ)
    buf = bytearray()
    while len(buf) < 6 or len(buf) < 6 + struct.unpack_from(">I", buf, 2)[0]:
        buf += await stream.receive_some(65536)
    assert buf[0] == P.A_ASSOCIATE_AC
    return stream, buf


async def test_released_association_is_one_info_line(tmp_path: Path, start_agent, caplog) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    running = await start_agent(write_profile(tmp_path, ""))
    for _ in range(2):
        assert (await echo("127.0.0.1", running.port, calling_ae="ECHOSCU", called_ae="AGENT", timeouts=FAST)).ok
    lines = await wait_for_line(caplog, 2)
    assert len(lines) == 2, lines
    line = lines[0]
    assert "ECHOSCU" in line and "AGENT" in line and "127.0.0.1:" in line
    assert "released" in line
    assert "1 C-ECHO-RQ (Verification SOP Class)" in line
    assert " s" in line  # its duration


async def test_artim_expiry_is_logged(tmp_path: Path, start_agent, caplog) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    running = await start_agent(write_profile(tmp_path, "", agent_extra='artim_timeout = "1s"'))
    stream = await trio.open_tcp_stream("127.0.0.1", running.port)
    (line,) = await wait_for_line(caplog)
    await stream.aclose()
    assert "127.0.0.1:" in line and "ARTIM expired" in line and "no A-ASSOCIATE-RQ" in line


@pytest.mark.parametrize(
    ("garbage", "why"),
    [
        (struct.pack(">BBI", 0x09, 0, 4) + b"\0" * 4, "unrecognized PDU type 09H"),
        (struct.pack(">BBI", P.P_DATA_TF, 0, 70000), "exceeds our maximum length"),
    ],
    ids=["unknown-pdu-type", "oversized-pdu"],
)
async def test_abort_for_a_bad_pdu_is_logged_with_why(
    tmp_path: Path, start_agent, caplog, garbage: bytes, why: str
) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    running = await start_agent(write_profile(tmp_path, "", agent_extra="max_pdu_length = 16384"))
    stream, _ = await _raw_associate(running.port)
    await stream.send_all(garbage)
    (line,) = await wait_for_line(caplog)
    await stream.aclose()
    assert "RAW" in line and "aborted by us" in line and why in line, line


async def test_abort_by_the_peer_is_logged(tmp_path: Path, start_agent, caplog) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    running = await start_agent(write_profile(tmp_path, ""))
    stream, _ = await _raw_associate(running.port)
    command = encode_message(CEchoRQ(message_id=1, affected_sop_class_uid=VERIFICATION_SOP_CLASS))
    await stream.send_all(P.encode_pdu(P.PDataTF((P.PDV(1, True, True, command),))))
    await stream.receive_some(65536)  # the C-ECHO-RSP
    await stream.send_all(P.encode_pdu(P.AAbort(P.ABORT_SOURCE_USER, 0)))
    (line,) = await wait_for_line(caplog)
    await stream.aclose()
    assert "aborted by the peer" in line and "1 C-ECHO-RQ" in line, line


async def test_rejection_is_logged(tmp_path: Path, start_agent, caplog) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    running = await start_agent(write_profile(tmp_path, "", agent_extra="called_ae_check = true"))
    with pytest.raises(Exception):
        await echo("127.0.0.1", running.port, calling_ae="ECHOSCU", called_ae="WRONG", timeouts=FAST)
    (line,) = await wait_for_line(caplog)
    assert "ECHOSCU" in line and "rejected" in line and "called AE title not recognized" in line, line


async def test_debug_trace_shows_pdus_and_dimse_commands(tmp_path: Path, start_agent, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="agent")
    running = await start_agent(write_profile(tmp_path, ""))
    assert (await echo("127.0.0.1", running.port, calling_ae="ECHOSCU", called_ae="AGENT", timeouts=FAST)).ok
    await wait_for_line(caplog)
    trace = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and r.name == "agent.net"]
    text = "\n".join(trace)
    # Both directions of the association set-up, with its details.
    assert any(t.startswith("ECHOSCU@") and "in A-ASSOCIATE-RQ" in t for t in trace), text
    assert "out A-ASSOCIATE-AC" in text
    assert "calling ECHOSCU, called AGENT" in text
    assert "context 1: Verification SOP Class (1.2.840.10008.1.1)" in text
    assert "max PDU 262144" in text
    # DIMSE commands with their fields, and the PDUs that carried them.
    assert "in C-ECHO-RQ on context 1: message_id=1" in text
    assert "out C-ECHO-RSP on context 1: message_id_being_responded_to=1, " in text
    assert "status=0x0000" in text
    assert "in P-DATA-TF" in text and "out P-DATA-TF" in text
    assert "in A-RELEASE-RQ" in text and "out A-RELEASE-RP" in text
