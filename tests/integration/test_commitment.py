"""Storage Commitment, the agent against itself: one agent forwards and asks for commitment, the other is
the archive ([storage] + [commitment]) and reports on the same or on a new association."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from agent.dimse import NActionRQ
from agent.net.client import associate
from agent.net.requests import request
from agent.services.commitment import STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE
from agent.services.dataset import encode
from agent.ul.negotiation import ProposedContext
from pydicom import Dataset
from tests.conftest import free_port, write_profile
from tests.integration.commitment_helpers import T, committed_uids, query, send_images, wait_until
from tests.interop.storage_helpers import make_images


async def two_agents(tmp_path: Path, start_agent, report_on: str, *, batch: str = '"study"', extra: str = ""):
    modality_port = free_port()
    archive = await start_agent(write_profile(tmp_path / "archive", f"""
        [peers.modality]
        ae_title = "MODALITY"
        host = "127.0.0.1"
        port = {modality_port}
        retry_base = "0.2s"
        retry_cap = "1s"

        [storage]

        [commitment]
        report_on = "{report_on}"
        """, ae_title="ARCHIVE"))
    modality = await start_agent(write_profile(tmp_path / "modality", f"""
        [peers.archive]
        ae_title = "ARCHIVE"
        host = "127.0.0.1"
        port = {archive.port}
        retry_base = "0.2s"
        retry_cap = "1s"
        linger = "1s"

        [storage]
        forward_to = ["archive"]
        commit_with = "archive"
        commit_batch = {batch}
        commit_idle = "0.2s"
        commit_timeout = "30s"
        commit_report_wait = "1s"
        {extra}
        """, port=modality_port, ae_title="MODALITY"))
    return modality, archive


@pytest.mark.parametrize("report_on", ["same-association", "new-association"])
async def test_agent_to_agent_commitment(tmp_path: Path, start_agent, report_on: str) -> None:
    modality, archive = await two_agents(tmp_path, start_agent, report_on)
    images = make_images(tmp_path / "images", 6)
    await send_images(modality.port, images, called_ae="MODALITY")
    uids = {u for (u,) in query(modality.data_dir, "SELECT sop_instance_uid FROM instances")}
    assert len(uids) == 6
    await wait_until(lambda: committed_uids(modality.data_dir) == uids, 20, "all six committed")
    # The archive holds them, and its report is recorded as sent.
    assert {u for (u,) in query(archive.data_dir, "SELECT sop_instance_uid FROM instances")} == uids
    # The archive records its report as sent once our N-EVENT-REPORT-RSP is back (just after we committed).
    sent = lambda: query(archive.data_dir, "SELECT calling_ae, state, failed FROM commit_reports")  # noqa: E731
    await wait_until(lambda: sent() == [("MODALITY", "sent", "[]")], 5, "the archive's report marked sent")
    requests = query(modality.data_dir, "SELECT state FROM commit_requests")
    assert requests == [("done",)]
    if report_on == "new-association":
        jobs = lambda: query(archive.data_dir, "SELECT kind, destination, state FROM queue_jobs")  # noqa: E731
        await wait_until(lambda: jobs() == [("commit-report", "modality", "done")], 5, "report job done")


async def test_batches_of_n_instances(tmp_path: Path, start_agent) -> None:
    modality, archive = await two_agents(tmp_path, start_agent, "same-association", batch="4")
    await send_images(modality.port, make_images(tmp_path / "images", 10), called_ae="MODALITY")
    await wait_until(lambda: len(committed_uids(modality.data_dir)) == 10, 20, "all ten committed")
    sizes = sorted(n for (n,) in query(
        modality.data_dir, "SELECT COUNT(*) FROM commit_items GROUP BY transaction_uid"))
    assert sizes == [2, 4, 4]


async def test_archive_reports_missing_and_mismatched_instances(tmp_path: Path, start_agent) -> None:
    """The SCP checks its own store: absent -> 0112, other SOP class -> 0119; on the same association."""
    archive = await start_agent(write_profile(tmp_path / "archive", """
        [storage]
        [commitment]
        report_on = "same-association"
        """, ae_title="ARCHIVE"))
    images = make_images(tmp_path / "images", 2)
    await send_images(archive.port, images, called_ae="ARCHIVE")
    (stored_a, cls), (stored_b, _) = query(archive.data_dir, "SELECT sop_instance_uid, sop_class_uid FROM instances")
    ds = Dataset()
    ds.TransactionUID = "2.25.1234"
    refs = []
    for c, u in [(cls, stored_a), ("1.2.840.10008.5.1.4.1.1.7", stored_b), (cls, "1.2.3.4.5.404")]:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = c, u
        refs.append(item)
    ds.ReferencedSOPSequence = refs
    reports: list[tuple[int, Dataset]] = []

    async def on_report(conn, ctx, msg) -> None:
        from agent.services.dataset import decode
        reports.append((msg.event_type_id, decode(await conn.read_dataset(ctx.id), ctx.transfer_syntax)))
        await conn.send_message(ctx.id, msg.response(0))

    async with associate("127.0.0.1", archive.port, calling_ae="UNKNOWNAE", called_ae="ARCHIVE",
                         proposals=[ProposedContext(STORAGE_COMMITMENT)], timeouts=T) as conn:
        ctx = conn.context_for(STORAGE_COMMITMENT)
        msg = NActionRQ(message_id=conn.next_message_id(), requested_sop_class_uid=STORAGE_COMMITMENT,
                        requested_sop_instance_uid=WELL_KNOWN_INSTANCE, action_type_id=1)
        reply = await request(conn, ctx.id, msg, encode(ds, ctx.transfer_syntax), incoming=on_report)
        assert reply.status == 0
        with trio.fail_after(30):
            while not reports:
                from agent.net.requests import _next_response  # read the report as an incoming request
                with trio.move_on_after(0.2):
                    await _next_response(conn, 0xFFFF, on_report)
    (event_type, report), = reports
    assert event_type == 2 and report.TransactionUID == "2.25.1234"
    assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == [stored_a]
    assert {(i.ReferencedSOPInstanceUID, int(i.FailureReason)) for i in report.FailedSOPSequence} == {
        (stored_b, 0x0119), ("1.2.3.4.5.404", 0x0112)}
    assert "RetrieveAETitle" not in report  # seed S-31


async def test_malformed_action_is_refused_with_a900(tmp_path: Path, start_agent) -> None:
    archive = await start_agent(write_profile(tmp_path / "archive", "[storage]\n[commitment]\n", ae_title="ARCHIVE"))
    ds = Dataset()
    ds.PatientID = "no transaction uid here"
    async with associate("127.0.0.1", archive.port, calling_ae="X", called_ae="ARCHIVE",
                         proposals=[ProposedContext(STORAGE_COMMITMENT)], timeouts=T) as conn:
        ctx = conn.context_for(STORAGE_COMMITMENT)
        msg = NActionRQ(message_id=conn.next_message_id(), requested_sop_class_uid=STORAGE_COMMITMENT,
                        requested_sop_instance_uid=WELL_KNOWN_INSTANCE, action_type_id=1)
        reply = await request(conn, ctx.id, msg, encode(ds, ctx.transfer_syntax))
        assert reply.status == 0xA900 and "Transaction UID" in reply.message.error_comment
        msg2 = NActionRQ(message_id=conn.next_message_id(), requested_sop_class_uid=STORAGE_COMMITMENT,
                         requested_sop_instance_uid=WELL_KNOWN_INSTANCE, action_type_id=7)
        reply = await request(conn, ctx.id, msg2, encode(ds, ctx.transfer_syntax))
        assert reply.status == 0x0123
    assert query(archive.data_dir, "SELECT COUNT(*) FROM commit_reports") == [(0,)]


async def test_retention_deletes_only_committed_instances(tmp_path: Path, start_agent) -> None:
    """Seed S-32: committed instances older than `retention` are deleted; the archive keeps its copies."""
    modality, archive = await two_agents(tmp_path, start_agent, "new-association", extra='retention = "0.5s"')
    images = make_images(tmp_path / "images", 3)
    await send_images(modality.port, images, called_ae="MODALITY")
    uids = {u for (u,) in query(modality.data_dir, "SELECT sop_instance_uid FROM instances")}
    assert len(uids) == 3
    await wait_until(lambda: query(modality.data_dir, "SELECT COUNT(*) FROM instances") == [(0,)], 20,
                     "committed instances deleted after retention")
    assert not [p for p in (modality.data_dir / "objects").rglob("*") if p.is_file()]
    assert query(modality.data_dir, "SELECT COUNT(*) FROM commit_items WHERE state = 'committed'") == [(3,)]
    assert {u for (u,) in query(archive.data_dir, "SELECT sop_instance_uid FROM instances")} == uids
