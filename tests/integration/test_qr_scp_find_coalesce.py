"""The Q/R SCP's C-FIND pending responses are coalesced into few network writes: the first match is
written on its own (a user sees it at once), the rest in batches, the final response flushes what is
left. The agent runs in-process; its socket writes are counted at the connection's single write
function, so what is observed is what goes to the kernel, per connection."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset

from agent.dimse import CFindRQ, encode_message
from agent.net.client import associate
from agent.net.connection import DicomConnection, Timeouts
from agent.net.requests import responses
from agent.services.dataset import EXPLICIT_VR_LE, encode
from agent.services.query.models import STUDY_ROOT_FIND
from agent.ul.negotiation import ProposedContext
from tests.conftest import write_profile
from tests.integration.test_qr_scp_find_cancel import fill

pytestmark = pytest.mark.trio

STUDIES = 100


async def test_a_100_match_c_find_arrives_in_few_writes_the_first_match_alone(  # type: ignore[no-untyped-def]
        tmp_path: Path, start_agent, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[tuple[DicomConnection, bytes]] = []  # (connection, the bytes of the write)
    original = DicomConnection._send_parts

    async def counting(self: DicomConnection, parts: list[bytes | memoryview]) -> int:
        writes.append((self, b"".join(parts)))
        return await original(self, parts)

    monkeypatch.setattr(DicomConnection, "_send_parts", counting)
    agent = await start_agent(write_profile(tmp_path, "[storage]\n\n[query]\n"))
    fill(agent.data_dir, STUDIES)
    identifier = Dataset()
    identifier.QueryRetrieveLevel, identifier.StudyInstanceUID, identifier.PatientName = "STUDY", "", "DOE*"
    async with associate("127.0.0.1", agent.port, calling_ae="SCU", called_ae="AGENT",
                         proposals=[ProposedContext(STUDY_ROOT_FIND, (EXPLICIT_VR_LE,))], timeouts=Timeouts()) as conn:
        ctx = conn.context_for(STUDY_ROOT_FIND)
        assert ctx is not None
        rq = CFindRQ(message_id=conn.next_message_id(), affected_sop_class_uid=STUDY_ROOT_FIND)
        writes.clear()
        replies = [reply.status async for reply in responses(conn, ctx.id, rq, encode(identifier, EXPLICIT_VR_LE))]
        server = [data for c, data in writes if c is not conn]
    assert replies == [0xFF00] * STUDIES + [0x0000]
    # Before coalescing: one write per response (101). Now: the first alone, batches of 32, the final.
    assert len(server) <= 8, [pdus(data) for data in server]
    # The first write holds exactly one pending response: its command PDU and its data set PDU, so
    # the first match is not held back for the batch.
    assert pdus(server[0]) == [(0x04, 0b11), (0x04, 0b10)]
    # The pending responses' command set, encoded once per query, is byte for byte the one the
    # message encoder makes for a pending C-FIND-RSP to this request.
    commands = [value for data in server for value in command_sets(data)]
    pending = encode_message(rq.response(0xFF00, has_dataset=True))
    assert commands[:-1] == [pending] * STUDIES
    assert commands[-1] == encode_message(rq.response(0x0000))


def command_sets(data: bytes) -> list[bytes]:
    """The command sets in `data` (P-DATA-TF PDUs, one PDV each, commands unfragmented)."""
    out, at = [], 0
    while at < len(data):
        length = int.from_bytes(data[at + 2:at + 6], "big")
        if data[at] == 0x04 and data[at + 11] & 1:
            out.append(data[at + 12:at + 6 + length])
        at += 6 + length
    return out


def pdus(data: bytes) -> list[tuple[int, int]]:
    """The PDUs in `data`: (PDU type, message control header of its first PDV)."""
    out, at = [], 0
    while at < len(data):
        length = int.from_bytes(data[at + 2:at + 6], "big")
        out.append((data[at], data[at + 11] if data[at] == 0x04 else 0))
        at += 6 + length
    return out


async def test_repeated_and_interleaved_queries_each_get_their_own_answers(  # type: ignore[no-untyped-def]
        tmp_path: Path, start_agent) -> None:
    """A C-FIND's pending responses share one command set, encoded once per query, and a repeated
    identifier reuses its plan: neither may leak into another query. Three queries on one association
    (the same identifier twice around another one): every response answers its own request's Message
    ID, and the repeated query's answers are the same data sets as the first time."""
    from agent.services.dataset import decode

    agent = await start_agent(write_profile(tmp_path, "[storage]\n\n[query]\n"))
    fill(agent.data_dir, STUDIES)

    def query(name: str) -> bytes:
        identifier = Dataset()
        identifier.QueryRetrieveLevel, identifier.StudyInstanceUID, identifier.PatientName = "STUDY", "", name
        identifier.PatientID = ""
        return encode(identifier, EXPLICIT_VR_LE)

    async with associate("127.0.0.1", agent.port, calling_ae="SCU", called_ae="AGENT",
                         proposals=[ProposedContext(STUDY_ROOT_FIND, (EXPLICIT_VR_LE,))], timeouts=Timeouts()) as conn:
        ctx = conn.context_for(STUDY_ROOT_FIND)
        assert ctx is not None
        runs = []
        for name in ("DOE^1*", "DOE^2*", "DOE^1*"):
            rq = CFindRQ(message_id=conn.next_message_id(), affected_sop_class_uid=STUDY_ROOT_FIND)
            replies = [reply async for reply in responses(conn, ctx.id, rq, query(name))]
            assert {r.message.message_id_being_responded_to for r in replies} == {rq.message_id}  # type: ignore[attr-defined]
            assert [r.message.status for r in replies] == [0xFF00] * 11 + [0x0000]  # type: ignore[attr-defined]
            runs.append(sorted(str(decode(r.dataset).PatientID) for r in replies[:-1] if r.dataset is not None))
    assert runs[0] == runs[2] == sorted(["P1"] + [f"P{n}" for n in range(10, 20)])
    assert runs[1] == sorted(["P2"] + [f"P{n}" for n in range(20, 30)])
