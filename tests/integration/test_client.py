"""The requestor side: what an acceptor sends right behind its A-ASSOCIATE-AC is not lost."""

from __future__ import annotations

import trio
import trio.testing

from agent.dimse import CEchoRQ, CommandReceived, encode_message
from agent.net.client import open_association
from agent.net.connection import Timeouts
from agent.ul import pdu as P
from agent.ul.negotiation import ProposedContext, SyntaxSupport, build_accept, negotiate_acceptor

VERIFICATION = "1.2.840.10008.1.1"


async def test_pdata_in_the_same_segment_as_the_ac_reaches_the_caller() -> None:
    ours, theirs = trio.testing.memory_stream_pair()

    async def acceptor() -> None:
        reader = P.PDUReader()
        while (rq := reader.next_pdu()) is None:
            reader.feed(await theirs.receive_some())
        assert isinstance(rq, P.AAssociateRQ)
        result = negotiate_acceptor(rq, lambda uid: SyntaxSupport())
        ac = P.encode_pdu(build_accept(rq, result, max_pdu_receive=16384))
        # A request of the acceptor's own (say an N-EVENT-REPORT; here a C-ECHO) in the same write.
        command = encode_message(CEchoRQ(message_id=7, affected_sop_class_uid=VERIFICATION))
        pdata = P.encode_pdu(P.PDataTF((P.PDV(1, True, True, command),)))
        await theirs.send_all(ac + pdata)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(acceptor)
        with trio.fail_after(30):
            conn = await open_association(
                "memory", 0, calling_ae="AGENT", called_ae="PEER",
                proposals=[ProposedContext(VERIFICATION)], timeouts=Timeouts(), stream=ours,
            )
            assert conn.context_for(VERIFICATION) is not None
            assert conn.peer_max_pdu == 16384
            event = await conn.next_event()
    assert isinstance(event, CommandReceived)
    assert isinstance(event.message, CEchoRQ) and event.message.message_id == 7
