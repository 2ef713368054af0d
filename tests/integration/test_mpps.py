"""MPPS SCU and SCP against the agent itself: refused requests with the PS3.4 F statuses, and N-CREATE /
N-SET waiting in the queue while the peer is down, going out in order when it returns, across a restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from agent.dimse import NCreateRQ, NSetRQ
from agent.net.client import associate
from agent.net.connection import DicomConnection, Timeouts
from agent.net.requests import request
from agent.services.dataset import encode
from agent.services.mpps import MPPS_SOP_CLASS, NO_LONGER_UPDATABLE, create_attributes
from agent.store.queue import JobState
from agent.ul.negotiation import ProposedContext
from tests.conftest import free_port, write_profile

pytestmark = pytest.mark.trio
TIMEOUTS = Timeouts(artim=5, dimse=10, idle=30, connect=5)


def connect(port: int):
    return associate("127.0.0.1", port, calling_ae="MODALITY", called_ae="AGENT",
                     proposals=[ProposedContext(MPPS_SOP_CLASS)], timeouts=TIMEOUTS)


async def n_create(conn: DicomConnection, uid: str, ds: Dataset):
    ctx = conn.context_for(MPPS_SOP_CLASS)
    assert ctx is not None
    rq = NCreateRQ(message_id=conn.next_message_id(), affected_sop_class_uid=MPPS_SOP_CLASS,
                   affected_sop_instance_uid=uid)
    return (await request(conn, ctx.id, rq, encode(ds, ctx.transfer_syntax))).message


async def n_set(conn: DicomConnection, uid: str, ds: Dataset):
    ctx = conn.context_for(MPPS_SOP_CLASS)
    assert ctx is not None
    rq = NSetRQ(message_id=conn.next_message_id(), requested_sop_class_uid=MPPS_SOP_CLASS,
                requested_sop_instance_uid=uid)
    return (await request(conn, ctx.id, rq, encode(ds, ctx.transfer_syntax))).message


#: A sequence of undefined length whose item header promises 8 bytes and ends after 2.
MALFORMED = b"\x40\x00\x70\x02SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\x08\x00\x00\x00ab"


def unscheduled() -> Dataset:
    return create_attributes(None, station_ae="CT01", modality="CT",
                             patient={"PatientName": "DOE^JOHN", "PatientID": "P1"})


def status_only(value: str) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = value
    return ds


async def test_scp_statuses(tmp_path: Path, start_agent) -> None:
    agent = await start_agent(write_profile(tmp_path / "agent", "[mpps]\nserve = true\n"))
    async with connect(agent.port) as conn:
        # N-SET of an unknown instance: 0112
        assert (await n_set(conn, generate_uid(), status_only("COMPLETED"))).status == 0x0112
        # N-CREATE that is not IN PROGRESS: 0106
        completed = unscheduled()
        completed.PerformedProcedureStepStatus = "COMPLETED"
        assert (await n_create(conn, generate_uid(), completed)).status == 0x0106
        # a missing type 1 attribute: 0120; an empty one: 0121
        missing = unscheduled()
        del missing.PerformedStationAETitle
        rsp = await n_create(conn, generate_uid(), missing)
        assert rsp.status == 0x0120 and rsp.attribute_identifier_list == (0x00400241,)
        empty = unscheduled()
        empty.Modality = ""
        assert (await n_create(conn, generate_uid(), empty)).status == 0x0121
        # the normal life: created, a duplicate refused, completed, then frozen
        uid = generate_uid()
        rsp = await n_create(conn, uid, unscheduled())
        assert rsp.status == 0x0000 and rsp.affected_sop_instance_uid == uid
        assert (await n_create(conn, uid, unscheduled())).status == 0x0111
        assert (await n_set(conn, uid, status_only("BOGUS"))).status == 0x0106
        assert (await n_set(conn, uid, status_only("IN PROGRESS"))).status == 0x0000
        assert (await n_set(conn, uid, status_only("COMPLETED"))).status == 0x0000
        rsp = await n_set(conn, uid, status_only("DISCONTINUED"))
        assert rsp.status == 0x0110 and rsp.error_comment == NO_LONGER_UPDATABLE
        # a data set that cannot be decoded: A900 (seed S-25), association still usable
        ctx = conn.context_for(MPPS_SOP_CLASS)
        rq = NCreateRQ(message_id=conn.next_message_id(), affected_sop_class_uid=MPPS_SOP_CLASS,
                       affected_sop_instance_uid=generate_uid())
        assert (await request(conn, ctx.id, rq, MALFORMED)).status == 0xA900
        assert (await n_create(conn, generate_uid(), unscheduled())).status == 0x0000
    stored = await agent.agent.blocking.run(lambda: agent.agent.mpps_store.get(uid, "remote"))
    assert stored is not None and stored.status == "COMPLETED"


async def _jobs(agent, state: JobState | None = None):
    queue = agent.agent.queue
    return await agent.agent.blocking.run(lambda: queue.list(states=[state] if state else None))


async def test_queue_waits_for_peer_across_restart(tmp_path: Path, start_agent) -> None:
    peer_port = free_port()
    profile = write_profile(tmp_path / "modality", f"""
        [peers.ris]
        ae_title = "RIS"
        host = "127.0.0.1"
        port = {peer_port}
        retry_base = "0.2s"
        retry_cap = "0.5s"

        [mpps]
        send_to = ["ris"]
        """)
    first = await start_agent(profile)
    scu = first.agent.workflow.mpps_scu
    uid = await scu.started(None, patient={"PatientName": "DOE^JANE", "PatientID": "P2"}, modality="US")
    await scu.ended(uid, "DISCONTINUED")
    with trio.fail_after(30):  # the N-CREATE has been tried and failed; the N-SET waits behind it
        while not any(j.attempts > 0 for j in await _jobs(first)):
            await trio.sleep(0.02)
    assert {j.kind for j in await _jobs(first, JobState.DONE)} == set()
    first.cancel_scope.cancel()
    # the CLI queues a second procedure while the agent is down
    out = await trio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "agent", "mpps", "start", "--profile", str(profile.source), "--patient-id", "P3",
         "--patient-name", "ROE^RICHARD"], capture_output=True, text=True, check=False))
    assert out.returncode == 0, out.stderr
    uid2 = out.stdout.strip()
    out = await trio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "agent", "mpps", "end", "--profile", str(profile.source), uid2],
        capture_output=True, text=True, check=False))
    assert out.returncode == 0, out.stderr
    # restart on the same data, then the peer (an agent with the MPPS SCP) comes up
    second = await start_agent(profile)
    peer = await start_agent(write_profile(tmp_path / "ris", "[mpps]\nserve = true\n", port=peer_port, ae_title="RIS"))
    received = peer.agent.workflow.mpps_scp.received
    with trio.fail_after(20):
        while len(received) < 4:
            await trio.sleep(0.05)
    assert [r for r in received if r[1] == uid] == [("N-CREATE", uid), ("N-SET", uid)]
    assert [r for r in received if r[1] == uid2] == [("N-CREATE", uid2), ("N-SET", uid2)]
    done = await _jobs(second, JobState.DONE)
    assert len(done) == 4
    stored = await peer.agent.blocking.run(lambda: peer.agent.mpps_store.get(uid, "remote"))
    assert stored is not None and stored.status == "DISCONTINUED"


async def test_repeated_create_counts_as_created(tmp_path: Path, start_agent) -> None:
    """A retried N-CREATE answered 0111 (the peer already has it) completes the job."""
    peer = await start_agent(write_profile(tmp_path / "ris", "[mpps]\nserve = true\n", ae_title="RIS"))
    profile = write_profile(tmp_path / "modality", f"""
        [peers.ris]
        ae_title = "RIS"
        host = "127.0.0.1"
        port = {peer.port}

        [mpps]
        send_to = ["ris"]
        """)
    agent = await start_agent(profile)
    scu = agent.agent.workflow.mpps_scu
    uid = await scu.started(None, patient={"PatientName": "X^Y", "PatientID": "P4"})
    with trio.fail_after(30):
        while len(await _jobs(agent, JobState.DONE)) < 1:
            await trio.sleep(0.02)
    # as if the response had been lost: the same N-CREATE job again
    queue = agent.agent.queue
    job = (await _jobs(agent, JobState.DONE))[0]
    await agent.agent.blocking.run(lambda: queue.enqueue(job.kind, job.destination, job.payload, group_key=job.group_key))
    agent.agent.outbound.wake("ris")
    with trio.fail_after(30):
        while len(await _jobs(agent, JobState.DONE)) < 2:
            await trio.sleep(0.02)
    assert await _jobs(agent, JobState.DEAD) == []
    assert list(peer.agent.workflow.mpps_scp.received) == [("N-CREATE", uid)]


async def test_the_scp_keeps_a_bounded_list_of_recent_operations(tmp_path: Path, start_agent, monkeypatch) -> None:
    from agent.services import mpps

    monkeypatch.setattr(mpps, "RECEIVED_KEPT", 3)
    agent = await start_agent(write_profile(tmp_path / "ris", "[mpps]\nserve = true\n"))
    uids = [generate_uid() for _ in range(5)]
    async with connect(agent.port) as conn:
        for uid in uids:
            assert (await n_create(conn, uid, unscheduled())).status == 0
    assert list(agent.agent.workflow.mpps_scp.received) == [("N-CREATE", u) for u in uids[-3:]]
