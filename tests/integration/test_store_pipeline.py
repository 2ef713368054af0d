"""`send_files`: the Storage SCU's pipelined loop (the next file is read while the peer works on the
current one) sends every file whole and in order, reports a file it cannot send without stopping,
and uses what it read ahead only for the file it was read for.

The peer is hand-written from the codec over a memory stream, so that it can refuse one SOP class
and check each data set byte for byte against the file it came from.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio
import trio.testing
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from agent.dimse import CStoreRQ, decode_command, encode_message
from agent.net.client import open_association
from agent.net.connection import Timeouts
from agent.services.storage_scu import proposals_for, scan, send_files
from agent.store.dicomfile import read_meta
from agent.ul import pdu as P
from agent.ul.negotiation import SyntaxSupport, build_accept, negotiate_acceptor


def _write(path: Path, sop_class: str, size: int) -> None:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "PIPE^LINE"
    ds.BitsAllocated = 8
    ds.PixelData = os.urandom(size)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


async def test_every_file_whole_in_order_and_a_refused_one_reported(tmp_path: Path) -> None:
    # Sizes around the read block (1 MiB) and the PDU size; the MR file's class is refused.
    plan = [(CTImageStorage, 10), (CTImageStorage, 3 * 1024 * 1024 + 5), (MRImageStorage, 1000),
            (CTImageStorage, 1024 * 1024), (CTImageStorage, 0), (CTImageStorage, 70_000)]
    for i, (sop, size) in enumerate(plan):
        _write(tmp_path / f"f{i}.dcm", sop, size)
    items = scan([tmp_path]).items
    assert [i.path.name for i in items] == [f"f{i}.dcm" for i in range(len(plan))]
    expected = {i.meta.sop_instance_uid: i.path.read_bytes()[i.meta.dataset_offset:] for i in items}
    ours, theirs = trio.testing.memory_stream_pair()
    received: list[tuple[str, bytes]] = []

    async def peer() -> None:
        reader = P.PDUReader()

        async def pdu() -> P.PDU | None:
            while (p := reader.next_pdu()) is None:
                data = await theirs.receive_some(65536)
                if not data:
                    return None
                reader.feed(data)
            return p

        rq = await pdu()
        assert isinstance(rq, P.AAssociateRQ)
        result = negotiate_acceptor(rq, lambda uid: SyntaxSupport() if uid == CTImageStorage else None)
        await theirs.send_all(P.encode_pdu(build_accept(rq, result, max_pdu_receive=16384)))
        command: CStoreRQ | None = None
        data = bytearray()
        while (p := await pdu()) is not None:
            if isinstance(p, P.AReleaseRQ):
                await theirs.send_all(P.encode_pdu(P.AReleaseRP()))
                return
            assert isinstance(p, P.PDataTF)
            for pdv in p.pdvs:
                if pdv.is_command:
                    msg = decode_command(bytes(pdv.data))
                    assert isinstance(msg, CStoreRQ)
                    command, data = msg, bytearray()
                    continue
                data += pdv.data
                if pdv.is_last:
                    assert command is not None
                    received.append((command.affected_sop_instance_uid, bytes(data)))
                    rsp = encode_message(command.response(0x0000))
                    await theirs.send_all(P.encode_pdu(P.PDataTF((P.PDV(pdv.context_id, True, True, rsp),))))

    outcomes = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer)
        with trio.fail_after(60):
            conn = await open_association(
                "memory", 0, calling_ae="AGENT", called_ae="PEER", proposals=proposals_for(items)[0],
                timeouts=Timeouts(), stream=ours,
            )
            async for item, reply, error in send_files(conn, items):
                outcomes.append((item.path.name, None if reply is None else reply.status, error))
            await conn.release()
    mr = items[2]
    assert [(name, status) for name, status, _ in outcomes] == [
        ("f0.dcm", 0), ("f1.dcm", 0), ("f2.dcm", None), ("f3.dcm", 0), ("f4.dcm", 0), ("f5.dcm", 0)]
    assert "accepted no presentation context" in (outcomes[2][2] or "")
    # Every other file arrived whole, in order, each with its own bytes (never a neighbour's read-ahead).
    assert [uid for uid, _ in received] == [i.meta.sop_instance_uid for i in items if i is not mr]
    for uid, data in received:
        assert data == expected[uid]
    assert read_meta(mr.path).sop_instance_uid not in dict(received)
