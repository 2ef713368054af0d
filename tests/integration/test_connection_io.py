"""DicomConnection's byte path, on a real TCP socket (recv_into / sendmsg) and on any other trio
stream (receive_some / send_all, as under TLS): the same data both ways, PDUs within the peer's
Maximum Length, and the live-view counters (bytes each way, the message in flight) telling the truth.

The peer is hand-written from the PDU codec so that it can cut its writes anywhere and check every
PDU it is sent; one association per stream kind carries a large data set each way.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from agent.dimse import CommandReceived, CStoreRQ, DataSetFragment, MessageComplete, decode_command, encode_message
from agent.net.client import open_association
from agent.net.connection import Timeouts
from agent.ul import pdu as P
from agent.ul.negotiation import ProposedContext, SyntaxSupport, build_accept, negotiate_acceptor

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
PEER_MAX_PDU = 16384  # what the peer accepts: our sends must be cut to it
BIG_PDV = 200_000  # what the peer sends: larger than the direct-receive threshold
INCOMING = os.urandom(3 * BIG_PDV + 12345)  # the data set the peer sends us
OUTGOING = os.urandom(2_500_000 + 7)  # the data set we send from a file (several read blocks)
SIZES = (1, 5, 6, 7, 1000, 65536, 200_011, 300_000)  # the peer's write sizes, in turn


class Peer:
    """The acceptor's side, written PDU by PDU; records what it received."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.reader = P.PDUReader()
        self.received_bytes = 0
        self.sent_bytes = 0

    async def pdu(self) -> P.PDU:
        while (pdu := self.reader.next_pdu()) is None:
            data = await self.stream.receive_some(65536)
            assert data, "our side closed early"
            self.received_bytes += len(data)
            self.reader.feed(data)
        return pdu

    async def send(self, data: bytes) -> None:
        # Cut anywhere: PDU headers split across writes, several PDUs in one write.
        i = k = 0
        while i < len(data):
            n = SIZES[k % len(SIZES)]
            await self.stream.send_all(data[i : i + n])
            i, k = i + n, k + 1
        self.sent_bytes += len(data)


async def _exchange(ours: trio.abc.Stream | None, theirs_factory, port: int, tmp_path: Path, check_mid_send: bool) -> None:
    source = tmp_path / "outgoing.bin"
    source.write_bytes(b"HEADER" + OUTGOING)
    seen_mid_send: list[tuple[str, int, int | None]] = []
    receiving_mid: list[int] = []
    conn_box: list = []

    async def peer_side(stream: trio.abc.Stream) -> None:
        peer = Peer(stream)
        rq = await peer.pdu()
        assert isinstance(rq, P.AAssociateRQ)
        result = negotiate_acceptor(rq, lambda uid: SyntaxSupport())
        await peer.send(P.encode_pdu(build_accept(rq, result, max_pdu_receive=PEER_MAX_PDU)))
        # A C-STORE-RQ to us, its data set in large PDUs.
        command = encode_message(CStoreRQ(message_id=1, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2.3"))
        wire = P.encode_pdu(P.PDataTF((P.PDV(1, True, True, command),)))
        for start in range(0, len(INCOMING), BIG_PDV):
            chunk = INCOMING[start : start + BIG_PDV]
            wire += P.encode_pdu(P.PDataTF((P.PDV(1, False, start + BIG_PDV >= len(INCOMING), chunk),)))
        await peer.send(wire)
        # Then ours to it, from the file: every PDU within its Maximum Length, the data intact.
        got = bytearray()
        command_seen = False
        while True:
            pdu = await peer.pdu()
            assert isinstance(pdu, P.PDataTF)
            assert sum(6 + len(p.data) for p in pdu.pdvs) <= PEER_MAX_PDU
            for pdv in pdu.pdvs:
                if pdv.is_command:
                    msg = decode_command(bytes(pdv.data))
                    assert isinstance(msg, CStoreRQ) and msg.affected_sop_instance_uid == "4.5.6"
                    command_seen = True
                    continue
                got += pdv.data
                if check_mid_send and not seen_mid_send and conn_box:
                    sending = conn_box[0].sending
                    seen_mid_send.append((sending.command, sending.dataset_bytes, sending.dataset_total))
            if pdu.pdvs[-1].is_last and not pdu.pdvs[-1].is_command:
                break
        assert command_seen and bytes(got) == OUTGOING
        # Release, answered by hand.
        assert isinstance(await peer.pdu(), P.AReleaseRQ)
        await peer.send(P.encode_pdu(P.AReleaseRP()))
        peer_counts.append((peer.sent_bytes, peer.received_bytes))

    peer_counts: list[tuple[int, int]] = []
    async with trio.open_nursery() as nursery:
        if ours is None:
            listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]

            async def accept_one() -> None:
                stream = await listeners[0].accept()
                await peer_side(stream)
                await stream.aclose()

            nursery.start_soon(accept_one)
        else:
            nursery.start_soon(peer_side, theirs_factory())
        with trio.fail_after(30):
            conn = await open_association(
                "127.0.0.1", port, calling_ae="AGENT", called_ae="PEER",
                proposals=[ProposedContext(CT, (EXPLICIT,))], timeouts=Timeouts(), stream=ours,
            )
            conn_box.append(conn)
            assert conn.bytes_received > 0 and conn.bytes_sent > 0  # the RQ and the AC
            assert conn.receiving is None and conn.sending is None
            event = await conn.next_event()
            assert isinstance(event, CommandReceived)
            assert (conn.receiving.command, conn.receiving.sop_class, conn.receiving.dataset_bytes) == ("C-STORE-RQ", CT, 0)
            received = bytearray()
            while not isinstance(event := await conn.next_event(), MessageComplete):
                assert isinstance(event, DataSetFragment)
                received += event.data
                # Counted as the PDUs are parsed (ahead of the events read): never behind them, and
                # None once the message is complete on the wire.
                if conn.receiving is not None:
                    assert conn.receiving.dataset_bytes >= len(received)
                    receiving_mid.append(conn.receiving.dataset_bytes)
            assert bytes(received) == INCOMING and conn.receiving is None
            ctx = conn.context_for(CT)
            rq = CStoreRQ(message_id=2, affected_sop_class_uid=CT, affected_sop_instance_uid="4.5.6")
            with open(source, "rb") as f:
                await conn.send_message_from_file(ctx.id, rq, f, 6, len(OUTGOING))
            assert conn.sending is None
            await conn.release()
    sent, received_by_peer = peer_counts[0]
    assert conn.bytes_received == sent and conn.bytes_sent == received_by_peer
    if check_mid_send:  # lockstep: our reads follow the peer's writes, the message is seen mid-way
        assert receiving_mid and 0 < receiving_mid[0] < len(INCOMING)
        assert seen_mid_send and seen_mid_send[0][0] == "C-STORE-RQ"
        assert 0 < seen_mid_send[0][1] < len(OUTGOING) and seen_mid_send[0][2] == len(OUTGOING)


async def test_tcp_socket_path(tmp_path: Path) -> None:
    """A plain TCP stream: recv_into (large PDUs straight into their own buffer) and sendmsg."""
    await _exchange(None, None, 0, tmp_path, check_mid_send=False)


async def test_any_other_stream_path_and_the_message_in_flight(tmp_path: Path) -> None:
    """A stream that is not a socket (TLS is one): receive_some / send_all. The lockstep pair makes
    each write wait for the peer's reads, so the message being sent can be seen mid-way."""
    ours, theirs = trio.testing.lockstep_stream_pair()
    await _exchange(ours, lambda: theirs, 0, tmp_path, check_mid_send=True)


@pytest.mark.parametrize("size", [0, 1, PEER_MAX_PDU - 6, PEER_MAX_PDU - 5, 1024 * 1024 + 3])
async def test_file_sizes_around_pdu_and_block_edges(tmp_path: Path, size: int) -> None:
    """Data sets of every awkward length reach the peer whole, over a memory stream."""
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    ours, theirs = trio.testing.memory_stream_pair()
    got = bytearray()

    async def peer_side() -> None:
        peer = Peer(theirs)
        rq = await peer.pdu()
        result = negotiate_acceptor(rq, lambda uid: SyntaxSupport())
        await peer.send(P.encode_pdu(build_accept(rq, result, max_pdu_receive=PEER_MAX_PDU)))
        while True:
            pdu = await peer.pdu()
            last = pdu.pdvs[-1]
            for pdv in pdu.pdvs:
                if not pdv.is_command:
                    got.extend(pdv.data)
            if last.is_last and not last.is_command:
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer_side)
        with trio.fail_after(30):
            conn = await open_association(
                "memory", 0, calling_ae="AGENT", called_ae="PEER",
                proposals=[ProposedContext(CT, (EXPLICIT,))], timeouts=Timeouts(), stream=ours,
            )
            rq = CStoreRQ(message_id=1, affected_sop_class_uid=CT, affected_sop_instance_uid="1.2")
            with open(path, "rb") as f:
                await conn.send_message_from_file(conn.context_for(CT).id, rq, f, 0, size)
    assert bytes(got) == data
