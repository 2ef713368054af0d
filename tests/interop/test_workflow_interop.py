"""The modality workflow end to end against real peers: DCMTK wlmscpfs as the RIS worklist, a pynetdicom
MPPS SCP as the RIS's MPPS, DCMTK storescp as the PACS store and a pynetdicom Storage Commitment SCP (a
second AE that commits exactly what storescp holds) as the PACS's commitment service.

A simulated device performs procedures against worklist items by accession number. What the peers must
see (PS3.17 Annex J, PS3.4 F and J): the worklist item fetched; per procedure one MPPS N-CREATE IN
PROGRESS, then an N-SET COMPLETED whose Performed Series Sequence lists the series and every instance
made; every image at the PACS carrying the item's patient, accession number, Study Instance UID and
Request Attributes Sequence, and a reference to its MPPS; every instance committed. Bad input: a
worklist key that matches nothing (unscheduled, or refused per profile), folder files that are not
images or not in a taken format (rejected with a clear log line, nothing half made), and an MPPS N-SET
repeated after a crash that the RIS answers 0110.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import free_port, require_pynetdicom, write_profile
from tests.interop.workflow_peers import (
    MppsRis,
    commitment_peer,
    mpps_order_problems,
    procedure_reports,
    procedure_summary,
    start_storescp,
    start_wlmscpfs,
    stored_images,
    storescp_holdings,
    wait_for,
)
from tests.interop.worklist_items import ISO_IR_100_NAME, make_item, make_wlmscpfs_db

pytestmark = [pytest.mark.trio, pytest.mark.interop]

SC = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage, the workflow's default


def worklist() -> list[Any]:
    """The RIS's items (the same UIDs on every call)."""
    study = "1.2.826.0.1.3680043.8.498.7710."
    return [
        make_item("ACC101", ISO_IR_100_NAME, charset="ISO_IR 100", patient_id="PID101", modality="OT",
                  study_uid=study + "101"),
        make_item("ACC102", "DOE^JOHN", patient_id="PID102", modality="OT", study_uid=study + "102"),
        make_item("ACC103", "ROE^RICHARD", patient_id="PID103", modality="OT", station="OTHER",
                  study_uid=study + "103"),
    ]


class Site:
    """The real peers of one test: RIS (wlmscpfs + MPPS SCP) and PACS (storescp + commitment SCP)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.store_dir = tmp_path / "storescp"
        self.mpps = MppsRis("RISMPPS")
        self.commit = commitment_peer(self.store_dir, tmp_path / "commitscp", ae_title="COMMITSCP")

    async def start(self, nursery: trio.Nursery, items: list[Any]) -> None:
        make_wlmscpfs_db(self.tmp / "wldb", "RIS", items)
        self.wl_port = await start_wlmscpfs(nursery, self.tmp / "wldb")
        self.store_port = await start_storescp(nursery, self.store_dir, "STORESCP")
        self.commit_port = free_port()
        self.commit.start(self.commit_port)

    def close(self) -> None:
        self.mpps.close()
        if hasattr(self.commit, "server"):
            self.commit.stop()

    def profile(self, device: str, *, directory: str = "agent") -> Any:
        return write_profile(self.tmp / directory, f"""
            [peers.ris]
            ae_title = "RIS"
            host = "127.0.0.1"
            port = {self.wl_port}

            [peers.rismpps]
            ae_title = "RISMPPS"
            host = "127.0.0.1"
            port = {self.mpps.port}
            retry_base = "0.2s"
            retry_cap = "1s"

            [peers.pacs]
            ae_title = "STORESCP"
            host = "127.0.0.1"
            port = {self.store_port}
            retry_base = "0.2s"
            retry_cap = "1s"
            linger = "0.5s"

            [peers.commit]
            ae_title = "COMMITSCP"
            host = "127.0.0.1"
            port = {self.commit_port}
            retry_base = "0.2s"
            retry_cap = "1s"

            [storage]
            commit_idle = "0.5s"

            [worklist]
            source = "ris"
            station_ae = "AGENT"
            date = "any"
            refresh = "1h"

            [mpps]
            send_to = ["rismpps"]

            {device}
            """)


@pytest.fixture
async def site(tmp_path: Path, nursery: trio.Nursery):  # type: ignore[no-untyped-def]
    require_pynetdicom()
    s = Site(tmp_path)
    try:
        await s.start(nursery, worklist())
        yield s
    finally:
        s.close()


def sim_device(keys: list[str], *, images: int, unscheduled: str = "allow", abort_every: int = 0) -> str:
    """The simulated device: one procedure per worklist key, `images` 64x64 images each; every
    `abort_every`-th procedure aborted half way."""
    quoted = ", ".join(f'"{k}"' for k in keys)
    options = (f'procedures = {len(keys)}, images = {images}, size = "64x64", bits = 8, interval = 0.0, '
               f'abort_every = {abort_every}')
    return f"""
            [device]
            driver = "sim"
            options = {{ {options}, worklist_keys = [{quoted}] }}
            select = "accession"
            unscheduled = "{unscheduled}"
            send_to = ["pacs"]
            commit_with = "commit"
            """


def completed_reports(data: Path, n: int) -> list[dict[str, Any]] | None:
    """The procedure reports once `n` procedures are completed."""
    rows = [r for r in procedure_reports(data) if r["state"] == "completed"]
    return rows if len(rows) == n else None


def by_uid(folder: Path) -> dict[str, Any]:
    return {img.uid: img.dataset for img in stored_images(folder)}


async def final_n_sets(site: Site, reports: list[dict[str, Any]]) -> None:
    """Wait until the RIS holds a successful N-SET for each procedure. A procedure is `completed` once
    its images are committed, and its N-SET goes to another peer through its own queue, so the RIS may
    hear it a moment later (on a loaded machine, seconds later)."""
    uids = {r["mpps_uid"] for r in reports}
    await wait_for(lambda: uids <= {m.uid for m in site.mpps.snapshot() if m.op == "N-SET" and m.status == 0},
                   "the N-SET of every procedure at the RIS", show=lambda: site.mpps.snapshot())


async def test_worklist_to_committed_against_real_peers(site: Site, start_agent) -> None:
    items = {str(i.AccessionNumber): i for i in worklist()}
    profile = site.profile(sim_device(["ACC101", "ACC102"], images=3))
    agent = await start_agent(profile)
    data = agent.data_dir

    done = await wait_for(lambda: completed_reports(data, 2), "2 procedures completed",
                          show=lambda: procedure_summary(data))
    # the worklist item was fetched from wlmscpfs and selected by accession number
    assert (await agent.agent.workflow.worklist.fetch_state()).fetched_at is not None
    assert {r["accession_number"] for r in done} == {"ACC101", "ACC102"}
    assert all(r["scheduled"] for r in done), done

    # MPPS: for each procedure exactly one N-CREATE IN PROGRESS, then N-SET COMPLETED, in that order
    await final_n_sets(site, done)
    messages = site.mpps.snapshot()
    assert mpps_order_problems(messages) == []
    held = by_uid(site.store_dir)
    for r in done:
        item = items[r["accession_number"]]
        ops = [m for m in messages if m.uid == r["mpps_uid"] and m.status == 0]
        assert [m.op for m in ops] == ["N-CREATE", "N-SET"], [(m.op, m.status) for m in messages]
        created, completed = ops[0].dataset, ops[1].dataset
        assert created.PerformedProcedureStepStatus == "IN PROGRESS"
        assert created.PatientID == item.PatientID and str(created.PatientName) == str(item.PatientName)
        step = created.ScheduledStepAttributesSequence[0]
        assert step.AccessionNumber == item.AccessionNumber
        assert step.StudyInstanceUID == item.StudyInstanceUID
        assert step.ScheduledProcedureStepID == item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
        assert completed.PerformedProcedureStepStatus == "COMPLETED"
        series = completed.PerformedSeriesSequence
        assert [s.SeriesInstanceUID for s in series] == [r["series_instance_uid"]]
        listed = {(x.ReferencedSOPClassUID, x.ReferencedSOPInstanceUID) for x in series[0].ReferencedImageSequence}
        made = {(i["sop_class_uid"], i["sop_instance_uid"]) for i in r["images"]}
        assert len(made) == 3 and listed == made

        # every image at storescp, with the worklist's patient, study and request attributes (Annex J)
        for image in r["images"]:
            assert image["state"] == "stored" and image["committed"] is True, image
            ds = held[image["sop_instance_uid"]]
            assert ds.SOPClassUID == SC
            assert str(ds.PatientName) == str(item.PatientName) and ds.PatientID == item.PatientID
            assert ds.AccessionNumber == item.AccessionNumber
            assert ds.StudyInstanceUID == item.StudyInstanceUID
            assert ds.SeriesInstanceUID == r["series_instance_uid"]
            request = ds.RequestAttributesSequence[0]
            sps = item.ScheduledProcedureStepSequence[0]
            assert request.RequestedProcedureID == item.RequestedProcedureID
            assert request.ScheduledProcedureStepID == sps.ScheduledProcedureStepID
            assert request.ScheduledProcedureStepDescription == sps.ScheduledProcedureStepDescription
            pps = ds.ReferencedPerformedProcedureStepSequence[0]
            assert pps.ReferencedSOPInstanceUID == r["mpps_uid"]
            assert pps.ReferencedSOPClassUID == "1.2.840.10008.3.1.2.3.3"
    # nothing at the PACS that the agent does not account for, and the commitment peer (not storescp)
    # committed it
    assert set(held) == {i["sop_instance_uid"] for r in done for i in r["images"]}
    assert site.commit.actions and all(t == 1 for _, t in site.commit.reports_sent)
    # the performed items are no longer offered by the agent's own worklist
    offered = {str(i.AccessionNumber) for i in await agent.agent.workflow.worklist.candidates()}
    assert not offered & {"ACC101", "ACC102"}


def folder_device(watch: Path, unscheduled: str = "allow") -> str:
    return f"""
            [device]
            driver = "folder"
            options = {{ path = "{watch}", poll = 0.2 }}
            select = "accession"
            unscheduled = "{unscheduled}"
            send_to = ["pacs"]
            commit_with = "commit"
            """


def drop_image(watch: Path, name: str, sidecar: dict[str, str], *, data: bytes | None = None,
               fmt: str = "PNG") -> str:
    """A device writing one image into the watch folder: the data file first (under a hidden name, then
    renamed), its sidecar last. `data` replaces the image with these bytes. Returns the file's name."""
    import numpy as np
    from PIL import Image

    final = f"{name}.{fmt.lower()}"
    if data is None:
        pixels = (np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)
        Image.fromarray(pixels).save(watch / f".{final}", format=fmt)
        (watch / f".{final}").rename(watch / final)
    else:
        (watch / final).write_bytes(data)
    (watch / f"{name}.json").write_text(json.dumps(sidecar))
    return final


async def test_serial_device_to_committed_against_real_peers(site: Site, start_agent, tmp_path: Path) -> None:
    """The same loop with the serial driver: the device simulator on a pseudo-terminal line."""
    import subprocess
    import sys

    from tests.interop.workflow_peers import PtyLink

    items = {str(i.AccessionNumber): i for i in worklist()}
    link = PtyLink()
    agent = await start_agent(site.profile(f"""
            [device]
            driver = "serial"
            options = {{ port = "{link.agent_path}" }}
            select = "accession"
            unscheduled = "refuse"
            send_to = ["pacs"]
            commit_with = "commit"
            """))
    device = await trio.lowlevel.open_process(
        [sys.executable, "-m", "drivers.acquisition.serial.device", "--port", link.device_path,
         "--procedures", "2", "--images", "2", "--size", "64x64", "--bits", "12", "--worklist-keys", "ACC101,ACC102",
         "--reply-timeout", "3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        done = await wait_for(lambda: completed_reports(agent.data_dir, 2), "2 procedures completed",
                              show=lambda: procedure_summary(agent.data_dir))
        with trio.fail_after(30):
            await device.wait()
        assert device.returncode == 0
    finally:
        if device.returncode is None:
            device.kill()
        link.close()
    await final_n_sets(site, done)
    assert mpps_order_problems(site.mpps.snapshot()) == []
    held = by_uid(site.store_dir)
    assert set(held) == {i["sop_instance_uid"] for r in done for i in r["images"]} and len(held) == 4
    for r in done:
        item = items[r["accession_number"]]
        assert all(i["committed"] for i in r["images"])
        for image in r["images"]:
            ds = held[image["sop_instance_uid"]]
            assert ds.PatientID == item.PatientID and ds.StudyInstanceUID == item.StudyInstanceUID
            assert ds.BitsStored == 12 and ds.Rows == 64 and ds.Columns == 64


async def test_device_abort_is_reported_discontinued(site: Site, start_agent) -> None:
    """The device aborts its second procedure half way: MPPS N-SET DISCONTINUED with a coded reason (PS3.3
    C.4.14, CID 9300) and the images made so far in the Performed Series Sequence; those images are still
    stored and committed."""
    agent = await start_agent(site.profile(sim_device(["ACC101", "ACC102"], images=4, abort_every=2)))

    def settled() -> list[dict[str, Any]] | None:
        rows = procedure_reports(agent.data_dir)
        done = sorted(r["state"] for r in rows) == ["completed", "discontinued"]
        return rows if done and all(i["committed"] for r in rows for i in r["images"]) else None

    rows = await wait_for(settled, "one procedure completed, one discontinued, all committed",
                          show=lambda: procedure_summary(agent.data_dir))
    (stopped,) = [r for r in rows if r["state"] == "discontinued"]
    assert stopped["accession_number"] == "ACC102" and len(stopped["images"]) == 2
    await wait_for(lambda: [m for m in site.mpps.snapshot() if m.uid == stopped["mpps_uid"] and m.op == "N-SET"],
                   "the N-SET DISCONTINUED")
    ops = [m for m in site.mpps.snapshot() if m.uid == stopped["mpps_uid"] and m.status == 0]
    assert [m.op for m in ops] == ["N-CREATE", "N-SET"]
    final = ops[1].dataset
    assert final.PerformedProcedureStepStatus == "DISCONTINUED"
    code = final.PerformedProcedureStepDiscontinuationReasonCodeSequence[0]
    assert code.CodingSchemeDesignator == "DCM" and code.CodeValue == "110501"  # "Equipment failure"
    (series,) = final.PerformedSeriesSequence
    listed = {x.ReferencedSOPInstanceUID for x in series.ReferencedImageSequence}
    assert listed == {i["sop_instance_uid"] for i in stopped["images"]}
    assert listed <= storescp_holdings(site.store_dir)


async def test_no_matching_item_is_performed_unscheduled(site: Site, start_agent, tmp_path: Path) -> None:
    """A worklist key that matches nothing, with the device's own patient data: performed unscheduled
    (PS3.4 F.7.2.1): a new study, the device's patient, no accession; MPPS and images say so."""
    watch = tmp_path / "watch"
    watch.mkdir()
    agent = await start_agent(site.profile(folder_device(watch)))
    patient = {"patient_id": "DEV-7", "patient_name": "DEVICE^PAT", "birth_date": "19800202", "sex": "F"}
    for n in ("1", "2"):
        drop_image(watch, f"img{n}", {"procedure": "U1", "image": n, "worklist": "NOSUCHACC", **patient})
    (watch / "U1.end").write_text("status=completed\n")
    (r,) = await wait_for(lambda: completed_reports(agent.data_dir, 1), "the unscheduled procedure completed",
                          show=lambda: procedure_summary(agent.data_dir))
    assert r["scheduled"] is False and not r["accession_number"]
    assert r["study_instance_uid"] not in {str(i.StudyInstanceUID) for i in worklist()}
    held = by_uid(site.store_dir)
    assert set(held) == {i["sop_instance_uid"] for i in r["images"]} and len(held) == 2
    for ds in held.values():
        assert ds.StudyInstanceUID == r["study_instance_uid"]
        assert not ds.get("AccessionNumber")
        assert ds.PatientID == "DEV-7" and str(ds.PatientName) == "DEVICE^PAT"
        assert ds.PatientBirthDate == "19800202" and ds.PatientSex == "F"
    await final_n_sets(site, [r])
    (created, completed) = [m for m in site.mpps.snapshot() if m.status == 0]
    assert created.op == "N-CREATE" and completed.op == "N-SET"
    assert created.dataset.PatientID == "DEV-7"
    step = created.dataset.ScheduledStepAttributesSequence[0]
    assert step.StudyInstanceUID == r["study_instance_uid"] and not step.get("AccessionNumber")
    assert completed.dataset.PerformedProcedureStepStatus == "COMPLETED"
    assert all(i["committed"] for i in r["images"])


async def test_no_matching_item_refused_by_profile(site: Site, start_agent, caplog) -> None:
    caplog.set_level(logging.INFO)
    profile = site.profile(sim_device(["NOSUCHACC", "ACC102"], images=2, unscheduled="refuse"))
    agent = await start_agent(profile)
    rows = await wait_for(lambda: (lambda rs: rs if len(rs) == 2 and {r["state"] for r in rs} == {
        "failed", "completed"} else None)(procedure_reports(agent.data_dir)), "one refused, one completed",
        show=lambda: procedure_summary(agent.data_dir))
    failed = next(r for r in rows if r["state"] == "failed")
    ok = next(r for r in rows if r["state"] == "completed")
    assert failed["error"] and "NOSUCHACC" in failed["error"], failed
    assert failed["images"] == [] or all(i["state"] != "stored" for i in failed["images"])
    assert any("NOSUCHACC" in rec.getMessage() and rec.levelno >= logging.WARNING for rec in caplog.records)
    # nothing half made: no MPPS and no instance for the refused procedure, the next one unharmed
    await final_n_sets(site, [ok])
    assert {m.uid for m in site.mpps.snapshot()} == {ok["mpps_uid"]}
    assert storescp_holdings(site.store_dir) == {i["sop_instance_uid"] for i in ok["images"]}


async def test_folder_files_that_are_not_images_are_rejected(site: Site, start_agent, caplog, tmp_path: Path) -> None:
    """A watch folder with, for ACC102, one good PNG, one `.png` that is not an image and one BMP (an
    image in a format the device side does not take): the bad two are moved to rejected/ with a warning
    naming them; the procedure completes with the good image alone; nothing of the bad ones reaches the
    PACS, the MPPS or stays pending."""
    caplog.set_level(logging.INFO)
    watch = tmp_path / "watch"
    watch.mkdir()
    agent = await start_agent(site.profile(folder_device(watch)))
    drop_image(watch, "good", {"procedure": "P1", "image": "1", "worklist": "ACC102"})
    drop_image(watch, "bad", {"procedure": "P1", "image": "2", "worklist": "ACC102"},
               data=b"this is not a PNG, just some text\n")
    drop_image(watch, "odd", {"procedure": "P1", "image": "3", "worklist": "ACC102"}, fmt="BMP")

    def warned(name: str) -> bool:
        return any(name in rec.getMessage() and rec.levelno >= logging.WARNING for rec in caplog.records)

    await wait_for(lambda: warned("bad.png") and warned("odd.bmp"), "warnings naming bad.png and odd.bmp",
                   show=lambda: [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING])
    (watch / "P1.end").write_text("status=completed\n")
    (r,) = await wait_for(lambda: completed_reports(agent.data_dir, 1), "P1 completed",
                          show=lambda: procedure_summary(agent.data_dir))
    for name in ("bad.png", "odd.bmp"):
        assert (watch / "rejected" / name).exists() and not (watch / name).exists()
    assert "BMP" in next(rec.getMessage() for rec in caplog.records if "odd.bmp" in rec.getMessage())
    assert r["accession_number"] == "ACC102"
    assert [(i["image_key"], i["state"]) for i in r["images"]] == [("1", "stored")]
    assert storescp_holdings(site.store_dir) == {r["images"][0]["sop_instance_uid"]}
    await final_n_sets(site, [r])
    (completed,) = [m for m in site.mpps.snapshot() if m.op == "N-SET" and m.status == 0]
    (series,) = completed.dataset.PerformedSeriesSequence
    listed = [x.ReferencedSOPInstanceUID for x in series.ReferencedImageSequence]
    assert listed == [r["images"][0]["sop_instance_uid"]]


async def test_repeated_final_n_set_answered_0110_is_not_retried(tmp_path: Path, start_agent) -> None:
    """After a crash the agent may send its N-SET COMPLETED again although the RIS applied it (the
    agent died before the response). A RIS answers 0110, "may no longer be updated" (PS3.4 F.7.2.2.4.2):
    the instance is final there, so the job ends; it is not retried (it could never succeed)."""
    import sqlite3

    from pydicom.uid import generate_uid

    ris = MppsRis("RIS")
    try:
        folder = make_wlmscpfs_db(tmp_path / "wl", "RIS", worklist())
        profile = write_profile(tmp_path / "agent", f"""
            [peers.ris]
            ae_title = "RIS"
            host = "127.0.0.1"
            port = {ris.port}
            retry_base = "0.1s"
            retry_cap = "0.2s"

            [worklist]
            folder = "{folder}"
            station_ae = "AGENT"
            date = "any"

            [mpps]
            send_to = ["ris"]
            """)
        agent = await start_agent(profile)
        scu = agent.agent.workflow.mpps_scu
        item = next(i for i in await agent.agent.workflow.worklist.candidates() if i.AccessionNumber == "ACC102")
        uid = await scu.started(item)
        await wait_for(lambda: ris.final_states().get(uid) == "IN PROGRESS", "the N-CREATE at the RIS")
        with ris.lock:  # the N-SET of the agent's previous life was applied; its answer was lost
            ris.state[uid] = "COMPLETED"
        await scu.ended(uid, "COMPLETED", [{"series_uid": generate_uid(), "protocol_name": "X",
                                            "images": [(SC, generate_uid())]}])

        def set_jobs() -> list[tuple[str, int]]:
            conn = sqlite3.connect(agent.data_dir / "agent.db", timeout=30)
            try:
                return conn.execute("SELECT state, attempts FROM queue_jobs WHERE kind = 'mpps-set'").fetchall()
            finally:
                conn.close()

        await wait_for(lambda: [s for s, _ in set_jobs()] == ["done"], "the N-SET job ended", timeout=30,
                       show=set_jobs)
        await trio.sleep(1)  # five retry intervals: a job that had not really ended would send again
        assert [(m.op, m.status) for m in ris.snapshot()] == [("N-CREATE", 0), ("N-SET", 0x0110)]
    finally:
        ris.close()
