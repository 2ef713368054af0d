"""A peer's small Maximum Length (PS3.8 D.1) is respected: every P-DATA-TF we send fits it.

The Maximum Length bounds the variable field of a P-DATA-TF PDU (the PDU length). One PDV item takes
4 bytes of item length and 2 of header before its data (PS3.8 9.3.5.1), so 7 is the smallest value
that carries a byte of a message: the agent fragments commands and data sets down to it, and refuses an
association whose requestor announces 1 to 6 (A-ASSOCIATE-RJ permanent, service user, no reason).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import trio

from agent.dimse import CEchoRQ, CEchoRSP, decode_message, encode_message
from agent.services.verification import VERIFICATION_SOP_CLASS
from agent.ul import pdu as P
from agent.ul.negotiation import ProposedContext, build_request
from tests.conftest import require_pynetdicom, write_profile


async def _read_pdu(stream: trio.SocketStream, buf: bytearray) -> tuple[int, bytes]:
    while len(buf) < 6 or len(buf) < 6 + struct.unpack_from(">I", buf, 2)[0]:
        chunk = await stream.receive_some(65536)
        assert chunk, f"closed by the agent; have {bytes(buf).hex()}"
        buf += chunk
    length = struct.unpack_from(">I", buf, 2)[0]
    pdu = bytes(buf[: 6 + length])
    del buf[: 6 + length]
    return pdu[0], pdu


def _request(max_length: int) -> bytes:
    rq = build_request("SMALL", "AGENT", [ProposedContext(VERIFICATION_SOP_CLASS)], max_pdu_receive=max_length)
    return P.encode_pdu(rq)


@pytest.mark.parametrize("max_length", [7, 40, 100])
async def test_echo_response_is_fragmented_to_the_peers_maximum(
    tmp_path: Path, start_agent, max_length: int
) -> None:
    running = await start_agent(write_profile(tmp_path, ""))
    stream = await trio.open_tcp_stream("127.0.0.1", running.port)
    buf = bytearray()
    with trio.fail_after(20):
        await stream.send_all(_request(max_length))
        kind, _ = await _read_pdu(stream, buf)
        assert kind == P.A_ASSOCIATE_AC
        command = encode_message(CEchoRQ(message_id=7, affected_sop_class_uid=VERIFICATION_SOP_CLASS))
        await stream.send_all(P.encode_pdu(P.PDataTF((P.PDV(1, True, True, command),))))
        received = b""
        lengths = []
        while True:
            kind, pdu = await _read_pdu(stream, buf)
            assert kind == P.P_DATA_TF, pdu.hex()
            lengths.append(len(pdu) - 6)
            decoded = P.decode_pdu(pdu)
            assert isinstance(decoded, P.PDataTF)
            last = False
            for pdv in decoded.pdvs:
                assert pdv.is_command
                received += bytes(pdv.data)
                last = pdv.is_last
            if last:
                break
    await stream.aclose()
    assert max(lengths) <= max_length, lengths
    reply = decode_message(received)
    assert isinstance(reply, CEchoRSP) and reply.status == 0 and reply.message_id_being_responded_to == 7


@pytest.mark.parametrize("max_length", [1, 6])
async def test_maximum_too_small_for_a_pdv_is_rejected(tmp_path: Path, start_agent, max_length: int) -> None:
    running = await start_agent(write_profile(tmp_path, ""))
    stream = await trio.open_tcp_stream("127.0.0.1", running.port)
    buf = bytearray()
    with trio.fail_after(20):
        await stream.send_all(_request(max_length))
        kind, pdu = await _read_pdu(stream, buf)
    await stream.aclose()
    assert kind == P.A_ASSOCIATE_RJ, pdu.hex()
    rj = P.decode_pdu(pdu)
    assert (rj.result, rj.source, rj.reason) == (P.RJ_PERMANENT, P.RJ_SOURCE_USER, P.RJ_USER_NO_REASON)


@pytest.mark.interop
@pytest.mark.parametrize("max_length", [7, 40, 100])
async def test_pynetdicom_echo_with_a_small_maximum(tmp_path: Path, start_agent, max_length: int) -> None:
    require_pynetdicom()
    from pynetdicom import AE

    running = await start_agent(write_profile(tmp_path, ""))
    ae = AE(ae_title="PYNETDICOM")
    ae.maximum_pdu_size = max_length
    ae.add_requested_context(VERIFICATION_SOP_CLASS)

    def echo() -> int:
        assoc = ae.associate("127.0.0.1", running.port, ae_title="AGENT")
        assert assoc.is_established
        try:
            return int(assoc.send_c_echo().Status)
        finally:
            assoc.release()

    with trio.fail_after(30):
        assert await trio.to_thread.run_sync(echo) == 0x0000


async def _fake_acceptor(max_length: int, seen: list[bytes], task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Accept one association with `max_length`, record every PDU received until the peer closes."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    stream = await listeners[0].accept()
    buf = bytearray()
    kind, pdu = await _read_pdu(stream, buf)
    rq = P.decode_pdu(pdu)
    assert isinstance(rq, P.AAssociateRQ)
    ac = P.AAssociateAC(
        called_ae=rq.called_ae, calling_ae=rq.calling_ae,
        presentation_contexts=(P.PresentationContextAC(1, P.PC_ACCEPTANCE, "1.2.840.10008.1.2"),),
        user_information=(P.MaximumLength(max_length), P.ImplementationClassUID("1.2.3")),
    )
    await stream.send_all(P.encode_pdu(ac))
    try:
        while True:
            kind, pdu = await _read_pdu(stream, buf)
            seen.append(pdu)
            if kind in (P.A_ABORT, P.A_RELEASE_RQ):
                break
            decoded = P.decode_pdu(pdu)
            if isinstance(decoded, P.PDataTF) and decoded.pdvs[-1].is_last and decoded.pdvs[-1].is_command:
                rsp = encode_message(CEchoRSP(message_id_being_responded_to=1, status=0,
                                              affected_sop_class_uid=VERIFICATION_SOP_CLASS))
                await stream.send_all(P.encode_pdu(P.PDataTF((P.PDV(1, True, True, rsp),))))
    except AssertionError:
        pass  # closed
    await stream.aclose()
    for listener in listeners:
        await listener.aclose()


async def test_our_request_is_fragmented_to_the_acceptors_maximum(nursery: trio.Nursery) -> None:
    from agent.net.connection import Timeouts
    from agent.services.verification import echo

    seen: list[bytes] = []
    port = await nursery.start(_fake_acceptor, 40, seen)
    with trio.fail_after(20):
        result = await echo("127.0.0.1", port, calling_ae="SCU", called_ae="FAKE",
                            timeouts=Timeouts(artim=5, dimse=5, idle=5, connect=5))
    assert result.ok
    data = [p for p in seen if p[0] == P.P_DATA_TF]
    assert len(data) > 1 and max(len(p) - 6 for p in data) <= 40, [len(p) for p in data]


async def test_acceptor_maximum_too_small_for_a_pdv_aborts(nursery: trio.Nursery) -> None:
    from agent.errors import AssociationAborted
    from agent.net.connection import Timeouts
    from agent.services.verification import echo

    seen: list[bytes] = []
    port = await nursery.start(_fake_acceptor, 3, seen)
    with trio.fail_after(20), pytest.raises(AssociationAborted, match="too small to carry a PDV"):
        await echo("127.0.0.1", port, calling_ae="SCU", called_ae="FAKE",
                   timeouts=Timeouts(artim=5, dimse=5, idle=5, connect=5))
    with trio.fail_after(20):
        while not seen:
            await trio.sleep(0.01)
    assert [p[0] for p in seen] == [P.A_ABORT]
