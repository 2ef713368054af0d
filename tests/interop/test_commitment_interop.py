"""Storage Commitment against pynetdicom, both roles, both report paths.

Requester: the agent forwards to a pynetdicom archive (Storage SCP + Storage Commitment SCP in one AE,
tests/interop/commitment_peer.py) whose commitment answers come from the files it really wrote; it
reports on the same association, on a new one with role selection (itself as SCP), or on a new one with
no role selection. Performer: a pynetdicom SCU sends N-ACTION to the agent as archive and gets the report
on the same association or, on a new association, at a pynetdicom SCP that accepts the SCP role offer.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio
from pydicom import Dataset

from tests.conftest import free_port, require_pynetdicom, write_profile
from tests.integration.commitment_helpers import committed_uids, query, send_images, wait_until
from tests.interop.storage_helpers import make_images, wait_listening

pytestmark = pytest.mark.interop
SC = "1.2.840.10008.1.20.1"
WELL_KNOWN = "1.2.840.10008.1.20.1.1"


async def modality_and_archive(tmp_path: Path, start_agent, nursery, **archive_kw):
    require_pynetdicom()
    from tests.interop.commitment_peer import PynetdicomArchive

    agent_port, archive_port = free_port(), free_port()
    archive = PynetdicomArchive(tmp_path / "archive", agent_port=agent_port, agent_ae="MODALITY", **archive_kw)
    archive.start(archive_port)
    await wait_listening(archive_port)
    timeout = archive_kw.get("silent_first") and "1s" or "30s"
    modality = await start_agent(write_profile(tmp_path / "modality", f"""
        [peers.pacs]
        ae_title = "PYARCHIVE"
        host = "127.0.0.1"
        port = {archive_port}
        retry_base = "0.2s"
        retry_cap = "0.5s"
        linger = "1s"

        [storage]
        forward_to = ["pacs"]
        commit_with = "pacs"
        commit_idle = "0.2s"
        commit_timeout = "{timeout}"
        commit_report_wait = "1s"
        """, port=agent_port, ae_title="MODALITY"))
    return modality, archive


@pytest.mark.parametrize("report", ["same", "new", "new-no-role"])
async def test_requester_against_pynetdicom_archive(tmp_path: Path, start_agent, nursery, report: str) -> None:
    modality, archive = await modality_and_archive(tmp_path, start_agent, nursery, report=report)
    try:
        await send_images(modality.port, make_images(tmp_path / "images", 5), called_ae="MODALITY")
        uids = {u for (u,) in query(modality.data_dir, "SELECT sop_instance_uid FROM instances")}
        await wait_until(lambda: committed_uids(modality.data_dir) == uids, 20, "all committed")
        assert archive.holds() == uids
        assert len(archive.actions) == 1
        # pynetdicom records the report once our N-EVENT-REPORT-RSP is back, after we marked the commit.
        await wait_until(lambda: archive.report_statuses == [0], 5, "N-EVENT-REPORT-RSP 0000")
        assert archive.reports_sent == [(archive.actions[0], 1)]
        assert query(modality.data_dir, "SELECT transaction_uid, state FROM commit_requests") == [
            (archive.actions[0], "done")]
        assert archive.actions[0].startswith("2.25.")
    finally:
        archive.stop()


async def test_no_report_by_deadline_is_requested_again(tmp_path: Path, start_agent, nursery) -> None:
    modality, archive = await modality_and_archive(tmp_path, start_agent, nursery, report="new", silent_first=1)
    try:
        await send_images(modality.port, make_images(tmp_path / "images", 3), called_ae="MODALITY")
        await wait_until(lambda: len(committed_uids(modality.data_dir)) == 3, 20, "committed after re-request")
        first, *later = archive.actions
        assert later and first not in later  # re-requested under a new Transaction UID
        states = dict(query(modality.data_dir, "SELECT transaction_uid, state FROM commit_requests"))
        assert states[first] == "expired" and states[later[-1]] == "done" and set(states) == set(archive.actions)
    finally:
        archive.stop()


async def test_failed_instances_are_stored_again_and_requested_again(tmp_path: Path, start_agent, nursery) -> None:
    modality, archive = await modality_and_archive(tmp_path, start_agent, nursery, report="same", fail_first=1)
    try:
        await send_images(modality.port, make_images(tmp_path / "images", 3), called_ae="MODALITY")
        await wait_until(lambda: len(committed_uids(modality.data_dir)) == 3, 20, "committed after failure")
        await wait_until(lambda: len(archive.reports_sent) == 2, 5, "both reports recorded")
        assert len(archive.actions) == 2 and [e for _, e in archive.reports_sent] == [2, 1]
        assert sorted(archive.seen_stores.values()) == [2, 2, 2]  # each C-STORE repeated once
        reasons = query(modality.data_dir, "SELECT failure_reason FROM commit_items WHERE state = 'failed'")
        assert reasons == [(0x0110,)] * 3
    finally:
        archive.stop()


# ----------------------------------------------------------------- the agent as commitment SCP


async def archive_agent(tmp_path: Path, start_agent, report_on: str, modality_port: int):
    agent = await start_agent(write_profile(tmp_path / "agent", f"""
        [peers.modality]
        ae_title = "PYMOD"
        host = "127.0.0.1"
        port = {modality_port}
        retry_base = "0.2s"
        retry_cap = "0.5s"

        [storage]
        [commitment]
        report_on = "{report_on}"
        """, ae_title="ARCHIVE"))
    return agent


@pytest.mark.parametrize("report_on", ["same-association", "new-association"])
async def test_scp_against_pynetdicom_requester(tmp_path: Path, start_agent, report_on: str) -> None:
    require_pynetdicom()
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StorageCommitmentPushModel

    modality_port = free_port()
    agent = await archive_agent(tmp_path, start_agent, report_on, modality_port)
    images = make_images(tmp_path / "images", 2)
    await send_images(agent.port, images, called_ae="ARCHIVE")
    stored = query(agent.data_dir, "SELECT sop_class_uid, sop_instance_uid FROM instances")
    reports: list[tuple[int, Dataset, str]] = []
    got = threading.Event()

    def on_report(event):  # type: ignore[no-untyped-def]
        reports.append((event.event_type, event.event_information, event.assoc.remote["ae_title"]))
        got.set()
        return 0x0000, None  # docs/peers.md: (status, dataset), not a bare status

    server = None
    if report_on == "new-association":
        listen = AE(ae_title="PYMOD")
        listen.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        server = listen.start_server(("127.0.0.1", modality_port), block=False,
                                     evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    ds = Dataset()
    ds.TransactionUID = "2.25.4242"
    ds.ReferencedSOPSequence = []
    for cls, uid in [*stored, (stored[0][0], "1.2.3.999")]:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = cls, uid
        ds.ReferencedSOPSequence.append(item)

    def requester() -> int:
        ae = AE(ae_title="PYMOD")
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", agent.port, ae_title="ARCHIVE",
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
        assert assoc.is_established
        status, _ = assoc.send_n_action(ds, 1, StorageCommitmentPushModel, WELL_KNOWN)
        if report_on == "same-association":
            got.wait(60)  # a deadline, not an expectation: released early, the report goes elsewhere
        assoc.release()
        return int(status.Status)

    try:
        assert await trio.to_thread.run_sync(requester) == 0
        await wait_until(got.is_set, 30, "the report")
        (event_type, info, sender), = reports
        assert event_type == 2 and info.TransactionUID == "2.25.4242" and sender.strip() == "ARCHIVE"
        assert {i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence} == {u for _, u in stored}
        assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in info.FailedSOPSequence] == [("1.2.3.999", 0x0112)]
        await wait_until(lambda: query(agent.data_dir, "SELECT state FROM commit_reports") == [("sent",)], 30,
                         "report marked sent")
    finally:
        if server is not None:
            server.shutdown()
