"""What a peer observes on the wire for requests and association requests the agent cannot act on.

- A C-STORE-RQ whose command carries a UID that is not one (over 64 characters, a NUL inside) is
  answered with a failure status and the association stays usable (it used to be aborted).
- An A-ASSOCIATE-RQ with no presentation context at all is rejected (it used to be accepted).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import trio

from agent.dimse import CEchoRQ, CEchoRSP, CStoreRSP, Tag, decode_message, encode_command_set, encode_message
from agent.services.verification import VERIFICATION_SOP_CLASS
from agent.ul import pdu as P
from agent.ul.negotiation import ProposedContext, build_request
from tests.conftest import write_profile

SC = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
LONG = "1." * 32 + "1"  # 65 characters


async def _read_pdu(stream: trio.SocketStream, buf: bytearray) -> bytes:
    while len(buf) < 6 or len(buf) < 6 + struct.unpack_from(">I", buf, 2)[0]:
        chunk = await stream.receive_some(65536)
        assert chunk, f"the agent closed the connection; have {bytes(buf).hex()}"
        buf += chunk
    length = struct.unpack_from(">I", buf, 2)[0]
    pdu = bytes(buf[: 6 + length])
    del buf[: 6 + length]
    return pdu


async def _read_command(stream: trio.SocketStream, buf: bytearray) -> bytes:
    command = b""
    while True:
        pdu = P.decode_pdu(await _read_pdu(stream, buf))
        assert isinstance(pdu, P.PDataTF), pdu
        for pdv in pdu.pdvs:
            command += bytes(pdv.data)
            if pdv.is_last:
                return command


def _pdata(context_id: int, is_command: bool, data: bytes) -> bytes:
    return P.encode_pdu(P.PDataTF((P.PDV(context_id, is_command, True, data),)))


@pytest.mark.parametrize("bad_uid", [LONG, "1.2.3\0.4"])
async def test_c_store_with_a_bad_instance_uid_is_answered_and_the_association_goes_on(
    tmp_path: Path, start_agent, bad_uid: str
) -> None:
    running = await start_agent(write_profile(tmp_path, "[storage]\n"))
    rq = build_request(
        "RAW", "AGENT", [ProposedContext(SC), ProposedContext(VERIFICATION_SOP_CLASS)], max_pdu_receive=65536
    )
    stream = await trio.open_tcp_stream("127.0.0.1", running.port)
    buf = bytearray()
    with trio.fail_after(20):
        await stream.send_all(P.encode_pdu(rq))
        assert (await _read_pdu(stream, buf))[0] == P.A_ASSOCIATE_AC
        command = encode_command_set({
            Tag.CommandField: 0x0001, Tag.MessageID: 5, Tag.Priority: 0, Tag.CommandDataSetType: 1,
            Tag.AffectedSOPClassUID: SC, Tag.AffectedSOPInstanceUID: bad_uid,
        })
        # Implicit VR LE data set: (0008,0016) SOP Class UID, (0008,0018) SOP Instance UID.
        sc = SC.encode() + b"\0" * (len(SC) % 2)
        inst = b"1.2.3.4\0"
        dataset = struct.pack("<HHI", 8, 0x16, len(sc)) + sc + struct.pack("<HHI", 8, 0x18, len(inst)) + inst
        await stream.send_all(_pdata(1, True, command) + _pdata(1, False, dataset))
        reply = decode_message(await _read_command(stream, buf))
        assert isinstance(reply, CStoreRSP)
        assert reply.message_id_being_responded_to == 5
        assert reply.status == 0xC000  # PS3.4 B.2.3 Cannot understand, as for a bad UID in the data set
        # The same association still serves the next request.
        echo = encode_message(CEchoRQ(message_id=6, affected_sop_class_uid=VERIFICATION_SOP_CLASS))
        await stream.send_all(_pdata(3, True, echo))
        reply = decode_message(await _read_command(stream, buf))
        assert isinstance(reply, CEchoRSP) and reply.status == 0 and reply.message_id_being_responded_to == 6
        await stream.send_all(P.encode_pdu(P.AReleaseRQ()))
        assert (await _read_pdu(stream, buf))[0] == P.A_RELEASE_RP
    await stream.aclose()
    assert not list((running.data_dir).rglob("*.dcm")), "nothing may be stored under a bad UID"


async def test_association_request_without_presentation_contexts_is_rejected(
    tmp_path: Path, start_agent
) -> None:
    running = await start_agent(write_profile(tmp_path, ""))
    rq = build_request("RAW", "AGENT", [], max_pdu_receive=65536)
    stream = await trio.open_tcp_stream("127.0.0.1", running.port)
    buf = bytearray()
    with trio.fail_after(20):
        await stream.send_all(P.encode_pdu(rq))
        pdu = await _read_pdu(stream, buf)
    await stream.aclose()
    rj = P.decode_pdu(pdu)
    assert isinstance(rj, P.AAssociateRJ), rj
    assert (rj.result, rj.source, rj.reason) == (P.RJ_PERMANENT, P.RJ_SOURCE_USER, P.RJ_USER_NO_REASON)
