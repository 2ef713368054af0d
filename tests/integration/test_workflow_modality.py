"""The modality workflow in a whole agent, against a second agent acting as RIS (MWL and MPPS SCP) and PACS
(Storage and Storage Commitment SCP) over loopback. The device is a scripted driver: the test hands it
events and sees which ones the workflow has pulled (pulling the next one acknowledges the previous)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence

from agent.app import Agent
from agent.profile import Profile
from agent.services.dataset import EXPLICIT_VR_LE, decode, encode
from agent.store.mpps import PpsStatus
from agent.store.procedures import ProcedureRow, ProcedureState, ProcedureStore
from drivers.base import DeviceEvent, ImageAcquired, PatientData, ProcedureEnded, ProcedureStarted
from tests.conftest import write_profile

pytestmark = pytest.mark.trio
DEADLINE = 60  # generous: a loaded machine


class ScriptedDevice:
    """An acquisition driver whose events the test sends; `pulled` counts the events taken."""

    def __init__(self) -> None:
        self.send, self._recv = trio.open_memory_channel[DeviceEvent](1000)
        self.pulled = 0
        self.closed = False

    async def events(self) -> AsyncIterator[DeviceEvent]:
        async for event in self._recv:
            self.pulled += 1
            yield event

    async def aclose(self) -> None:
        self.closed = True

    async def feed(self, *events: DeviceEvent) -> None:
        for e in events:
            await self.send.send(e)


@dataclass
class Running:
    agent: Agent
    scope: trio.CancelScope
    port: int
    profile: Profile
    device: ScriptedDevice | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        self.scope.cancel()


async def run_agent(nursery: trio.Nursery, profile: Profile, device: ScriptedDevice | None = None) -> Running:
    agent = Agent(profile, device_driver=device)
    scope = trio.CancelScope()

    async def runner(task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await agent.run(task_status=task_status)

    ports = await nursery.start(runner)
    return Running(agent, scope, ports[0], profile, device)


def code(value: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, "LOCAL", meaning
    return c


def worklist_item(accession: str, patient_id: str, study_uid: str) -> Dataset:
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 100"
    item.PatientName = f"PATIENT^{patient_id}"
    item.PatientID = patient_id
    item.PatientBirthDate = "19800202"
    item.PatientSex = "O"
    item.AccessionNumber = accession
    item.StudyInstanceUID = study_uid
    item.RequestedProcedureID = "RP-" + accession
    item.RequestedProcedureDescription = "Requested " + accession
    item.ReferencedStudySequence = Sequence()
    sps = Dataset()
    sps.Modality = "OT"
    sps.ScheduledStationAETitle = "MODALITY"
    sps.ScheduledProcedureStepStartDate = "20260101"
    sps.ScheduledProcedureStepStartTime = "080000"
    sps.ScheduledProcedureStepID = "SPS-" + accession
    sps.ScheduledProcedureStepDescription = "Step " + accession
    sps.ScheduledProtocolCodeSequence = Sequence([code("PROTO", "Protocol A")])
    item.ScheduledProcedureStepSequence = Sequence([sps])
    return item


HOSPITAL = """
[storage]
accept = "all-storage"

[commitment]
report_on = "same-association"

[worklist]
serve = true

[mpps]
serve = true
"""


async def start_hospital(nursery: trio.Nursery, directory: Path, items: list[Dataset]) -> Running:
    profile = write_profile(directory, HOSPITAL, ae_title="HOSPITAL")
    hospital = await run_agent(nursery, profile)
    assert hospital.agent.worklist_store is not None
    for n, item in enumerate(items):
        await trio.to_thread.run_sync(hospital.agent.worklist_store.add_local, f"item{n}.wl", encode(item, EXPLICIT_VR_LE))
    return hospital


def modality_body(hospital_port: int, device: str = "") -> str:
    return f"""
[peers.ris]
ae_title = "HOSPITAL"
host = "127.0.0.1"
port = {hospital_port}
retry_base = "0.2s"
retry_cap = "1s"

[peers.pacs]
ae_title = "HOSPITAL"
host = "127.0.0.1"
port = {hospital_port}
retry_base = "0.2s"
retry_cap = "1s"

[worklist]
source = "ris"
date = "any"
refresh = "1h"
serve = false

[mpps]
send_to = ["ris"]

[storage]
commit_idle = "0.2s"
commit_report_wait = "5s"

[device]
driver = "sim"
send_to = ["pacs"]
commit_with = "pacs"
{device}
"""


async def start_modality(nursery: trio.Nursery, directory: Path, hospital_port: int, device_keys: str = "",
                         scripted: ScriptedDevice | None = None) -> Running:
    profile = write_profile(directory, modality_body(hospital_port, device_keys), ae_title="MODALITY")
    return await run_agent(nursery, profile, scripted or ScriptedDevice())


def procedures_of(running: Running) -> list[ProcedureRow]:
    """A separate connection, as the CLI or the demo would read."""
    conn = sqlite3.connect(str(running.profile.agent.data_dir / "agent.db"))
    try:
        return ProcedureStore(conn).list()
    finally:
        conn.close()


async def wait_state(running: Running, key: str, *states: ProcedureState) -> ProcedureRow:
    with trio.fail_after(DEADLINE):
        while True:
            rows = {r.procedure_key: r for r in await trio.to_thread.run_sync(procedures_of, running)}
            row = rows.get(key)
            if row is not None and row.state in states:
                return row
            await trio.sleep(0.1)


async def wait_pulled(device: ScriptedDevice, n: int) -> None:
    with trio.fail_after(DEADLINE):
        while device.pulled < n:
            await trio.sleep(0.02)


def pacs_instances(hospital: Running) -> list[Dataset]:
    out = []
    for path in sorted((hospital.profile.agent.data_dir / "objects").rglob("*.dcm")):
        out.append(dcmread(path))
    return out


async def ris_final(hospital: Running, uid: str) -> None:
    """Wait until the RIS holds MPPS `uid` as COMPLETED or DISCONTINUED. A procedure is `completed` once
    its images are committed by the PACS; its N-SET goes to the RIS through another destination's
    queue, so on a loaded machine it can arrive a moment after."""
    with trio.fail_after(DEADLINE):
        while not any(u == uid and st is not PpsStatus.IN_PROGRESS for u, st, _ in ris_mpps(hospital)):
            await trio.sleep(0.1)


def ris_mpps(hospital: Running) -> list[tuple[str, PpsStatus, Dataset]]:
    conn = sqlite3.connect(str(hospital.profile.agent.data_dir / "agent.db"))
    try:
        rows = conn.execute("SELECT uid, status, data FROM mpps_instances WHERE origin = 'remote'").fetchall()
    finally:
        conn.close()
    return [(uid, PpsStatus(status), decode(data, eager=True)) for uid, status, data in rows]


def image(key: str, n: int, value: int = 0) -> ImageAcquired:
    pixels = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) + value * 7) % 4096
    return ImageAcquired(procedure_key=key, image_key=str(n), pixels=pixels, bits_stored=12)


# ------------------------------------------------------------------ tests


async def test_scheduled_procedure_is_reported_stored_and_committed(nursery: trio.Nursery, tmp_path: Path) -> None:
    item = worklist_item("ACC100", "PID100", "1.2.826.0.1.3680043.10.100")
    hospital = await start_hospital(nursery, tmp_path / "hospital", [item])
    modality = await start_modality(nursery, tmp_path / "modality", hospital.port, 'station_name = "ROOM1"')
    device = modality.device
    assert device is not None
    await device.feed(ProcedureStarted("P-1", worklist_key="ACC100", operator="TECH^A"),
                      image("P-1", 1), image("P-1", 2, 1), ProcedureEnded("P-1"))
    row = await wait_state(modality, "P-1", ProcedureState.COMPLETED)
    assert row.scheduled and row.accession_number == "ACC100" and row.study_instance_uid == item.StudyInstanceUID
    assert [i.state for i in row.images] == ["stored", "stored"]
    # The PACS holds both images with the worklist's identity, and committed them.
    stored = pacs_instances(hospital)
    assert sorted(ds.SOPInstanceUID for ds in stored) == sorted(i.sop_instance_uid for i in row.images)
    for ds in stored:
        assert (ds.PatientID, ds.AccessionNumber, ds.StudyInstanceUID) == ("PID100", "ACC100", item.StudyInstanceUID)
        assert ds.RequestAttributesSequence[0].ScheduledProcedureStepID == "SPS-ACC100"
        assert ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID == row.mpps_uid
        assert ds.SeriesInstanceUID == row.series_instance_uid
    assert sorted(ds.InstanceNumber for ds in stored) == [1, 2]
    # The RIS saw one MPPS: N-CREATE, then N-SET COMPLETED listing the series and both images.
    await ris_final(hospital, row.mpps_uid)
    assert hospital.agent.workflow is not None and hospital.agent.workflow.mpps_scp is not None
    assert list(hospital.agent.workflow.mpps_scp.received) == [("N-CREATE", row.mpps_uid), ("N-SET", row.mpps_uid)]
    ((uid, status, mpps),) = ris_mpps(hospital)
    assert uid == row.mpps_uid and status is PpsStatus.COMPLETED
    (series,) = mpps.PerformedSeriesSequence
    assert series.SeriesInstanceUID == row.series_instance_uid and series.OperatorsName == "TECH^A"
    assert sorted(r.ReferencedSOPInstanceUID for r in series.ReferencedImageSequence) == sorted(
        ds.SOPInstanceUID for ds in stored)
    assert mpps.ScheduledStepAttributesSequence[0].AccessionNumber == "ACC100"
    assert mpps.PerformedStationName == "ROOM1" and all(ds.StationName == "ROOM1" for ds in stored)
    # The step performed is no longer offered: a second start for the same accession is unscheduled.
    await device.feed(ProcedureStarted("P-1b", worklist_key="ACC100", patient=PatientData("PID100", "X^Y")))
    again = await wait_state(modality, "P-1b", ProcedureState.MPPS_CREATED)
    assert not again.scheduled and again.study_instance_uid != item.StudyInstanceUID


async def test_replayed_events_make_no_second_instance_or_mpps(nursery: trio.Nursery, tmp_path: Path) -> None:
    item = worklist_item("ACC200", "PID200", "1.2.826.0.1.3680043.10.200")
    hospital = await start_hospital(nursery, tmp_path / "hospital", [item])
    modality = await start_modality(nursery, tmp_path / "modality", hospital.port)
    device = modality.device
    assert device is not None
    start = ProcedureStarted("P-2", worklist_key="ACC200")
    await device.feed(start, start, image("P-2", 1), image("P-2", 1), start, image("P-2", 2),
                      ProcedureEnded("P-2"), image("P-2", 2), ProcedureEnded("P-2"))
    row = await wait_state(modality, "P-2", ProcedureState.COMPLETED)
    await wait_pulled(device, 9)
    assert len(row.images) == 2
    assert len(pacs_instances(hospital)) == 2
    await ris_final(hospital, row.mpps_uid)
    assert len(ris_mpps(hospital)) == 1
    assert hospital.agent.workflow is not None and hospital.agent.workflow.mpps_scp is not None
    assert [op for op, _ in hospital.agent.workflow.mpps_scp.received] == ["N-CREATE", "N-SET"]


async def test_abort_discontinues_the_mpps_with_a_coded_reason(nursery: trio.Nursery, tmp_path: Path) -> None:
    item = worklist_item("ACC300", "PID300", "1.2.826.0.1.3680043.10.300")
    hospital = await start_hospital(nursery, tmp_path / "hospital", [item])
    modality = await start_modality(nursery, tmp_path / "modality", hospital.port)
    device = modality.device
    assert device is not None
    await device.feed(ProcedureStarted("P-3", worklist_key="ACC300"), image("P-3", 1),
                      ProcedureEnded("P-3", aborted=True, reason="wrong patient: incorrect worklist entry"))
    row = await wait_state(modality, "P-3", ProcedureState.DISCONTINUED)
    assert row.reason == "wrong patient: incorrect worklist entry"
    with trio.fail_after(DEADLINE):
        while not (found := ris_mpps(hospital)) or found[0][1] is not PpsStatus.DISCONTINUED:
            await trio.sleep(0.1)
    ((_uid, _status, mpps),) = found
    (reason,) = mpps.PerformedProcedureStepDiscontinuationReasonCodeSequence
    assert (reason.CodeValue, reason.CodingSchemeDesignator, reason.CodeMeaning) == (
        "110514", "DCM", "Incorrect worklist entry selected")
    # What was made before the abort is still reported and stored.
    (series,) = mpps.PerformedSeriesSequence
    assert series.ReferencedImageSequence[0].ReferencedSOPInstanceUID == row.images[0].sop_instance_uid
    with trio.fail_after(DEADLINE):
        while len(pacs_instances(hospital)) < 1:
            await trio.sleep(0.1)
    # Images after the end are refused (logged), never stored.
    await device.feed(image("P-3", 9))
    await wait_pulled(device, 4)
    await device.feed(ProcedureStarted("P-3b", worklist_key="nothing", patient=PatientData("X1", "X^Y")))
    await wait_state(modality, "P-3b", ProcedureState.MPPS_CREATED)
    rows = {r.procedure_key: r for r in await trio.to_thread.run_sync(procedures_of, modality)}
    assert len(rows["P-3"].images) == 1


async def test_no_match_is_performed_unscheduled(nursery: trio.Nursery, tmp_path: Path) -> None:
    hospital = await start_hospital(nursery, tmp_path / "hospital", [])
    modality = await start_modality(nursery, tmp_path / "modality", hospital.port)
    device = modality.device
    assert device is not None
    await device.feed(ProcedureStarted("P-4", worklist_key="NO-SUCH", patient=PatientData("DEV-4", "DEVICE^PAT",
                                                                                        "19900101", "M")),
                      image("P-4", 1), ProcedureEnded("P-4"))
    row = await wait_state(modality, "P-4", ProcedureState.COMPLETED)
    assert not row.scheduled and row.accession_number == ""
    (ds,) = pacs_instances(hospital)
    assert (ds.PatientID, ds.PatientName, ds.PatientBirthDate) == ("DEV-4", "DEVICE^PAT", "19900101")
    assert ds.StudyInstanceUID == row.study_instance_uid and ds.AccessionNumber == ""
    await ris_final(hospital, row.mpps_uid)
    ((_uid, status, mpps),) = ris_mpps(hospital)
    step = mpps.ScheduledStepAttributesSequence[0]
    assert status is PpsStatus.COMPLETED and step.StudyInstanceUID == row.study_instance_uid
    assert step.AccessionNumber == "" and mpps.PatientID == "DEV-4"


async def test_unscheduled_without_patient_data_keeps_the_images(nursery: trio.Nursery, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A device that knows no patient (emergency, unidentified): the images are made and sent with empty
    Patient ID and Name (type 2) for later reconciliation, never thrown away."""
    hospital = await start_hospital(nursery, tmp_path / "hospital", [])
    modality = await start_modality(nursery, tmp_path / "modality", hospital.port)
    device = modality.device
    assert device is not None
    await device.feed(ProcedureStarted("P-4b", worklist_key="NO-SUCH"), image("P-4b", 1), ProcedureEnded("P-4b"))
    row = await wait_state(modality, "P-4b", ProcedureState.COMPLETED)
    assert not row.scheduled and row.patient_id == ""
    (ds,) = pacs_instances(hospital)
    assert ds.PatientID == "" and ds.PatientName == "" and ds.StudyInstanceUID == row.study_instance_uid
    assert "NO patient data" in caplog.text


async def test_no_match_is_refused_when_the_profile_says_so(nursery: trio.Nursery, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    hospital = await start_hospital(nursery, tmp_path / "hospital", [])
    modality = await start_modality(nursery, tmp_path / "modality", hospital.port, 'unscheduled = "refuse"')
    device = modality.device
    assert device is not None
    await device.feed(ProcedureStarted("P-5", worklist_key="NO-SUCH", patient=PatientData("DEV-5", "A^B")),
                      image("P-5", 1), ProcedureEnded("P-5"))
    row = await wait_state(modality, "P-5", ProcedureState.FAILED)
    await wait_pulled(device, 3)
    assert "no worklist item matches accession 'NO-SUCH'" in row.error and "refused" in row.error
    assert row.images == () and row.mpps_uid is None
    assert "procedure P-5 failed" in caplog.text
    assert ris_mpps(hospital) == [] and pacs_instances(hospital) == []


async def test_a_bad_image_is_refused_and_the_rest_goes_on(nursery: trio.Nursery, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    item = worklist_item("ACC600", "PID600", "1.2.826.0.1.3680043.10.600")
    hospital = await start_hospital(nursery, tmp_path / "hospital", [item])
    modality = await start_modality(nursery, tmp_path / "modality", hospital.port)
    device = modality.device
    assert device is not None
    bad = ImageAcquired("P-6", "bad", pixels=np.zeros((4, 4), np.float64))
    await device.feed(ProcedureStarted("P-6", worklist_key="ACC600"), bad, image("P-6", 2), ProcedureEnded("P-6"))
    row = await wait_state(modality, "P-6", ProcedureState.COMPLETED)
    assert [(i.image_key, i.state) for i in row.images] == [("bad", "failed"), ("2", "stored")]
    assert "uint8 or uint16" in row.images[0].error
    assert "image P-6/bad not stored" in caplog.text
    assert len(pacs_instances(hospital)) == 1
    await ris_final(hospital, row.mpps_uid)
    ((_uid, _status, mpps),) = ris_mpps(hospital)
    assert len(mpps.PerformedSeriesSequence[0].ReferencedImageSequence) == 1


async def test_a_completed_procedure_is_printed_on_film(nursery: trio.Nursery, tmp_path: Path) -> None:
    item = worklist_item("ACC650", "PID650", "1.2.826.0.1.3680043.10.650")
    films = tmp_path / "films"
    printer = f'\n[print]\nserve = true\ndriver = "file"\npoll_interval = "0.5s"\n[print.options]\ndirectory = "{films}"\ndpi = 50\n'
    profile = write_profile(tmp_path / "hospital", HOSPITAL + printer, ae_title="HOSPITAL")
    hospital = await run_agent(nursery, profile)
    assert hospital.agent.worklist_store is not None
    await trio.to_thread.run_sync(hospital.agent.worklist_store.add_local, "i.wl", encode(item, EXPLICIT_VR_LE))
    keys = 'print_to = "pacs"\nprint_format = "STANDARD\\\\2,1"'
    modality = await start_modality(nursery, tmp_path / "modality", hospital.port, keys)
    assert modality.device is not None
    await modality.device.feed(ProcedureStarted("P-65", worklist_key="ACC650"), image("P-65", 1), image("P-65", 2),
                               ProcedureEnded("P-65"))
    row = await wait_state(modality, "P-65", ProcedureState.COMPLETED)
    assert row.print_job is not None
    with trio.fail_after(DEADLINE):  # one film with both images reaches the printer
        while not [p for p in films.glob("*") if p.suffix == ".png"]:
            await trio.sleep(0.1)
    conn = sqlite3.connect(str(modality.profile.agent.data_dir / "agent.db"))
    try:
        with trio.fail_after(DEADLINE):
            while conn.execute("SELECT state FROM queue_jobs WHERE id = ?", (row.print_job,)).fetchone()[0] != "done":
                await trio.sleep(0.1)
    finally:
        conn.close()


def device_dicom_file(path: Path, *, compressed: bool) -> np.ndarray:
    """A file as a device's own software writes it: its own patient, UIDs and (RLE) pixel data."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    arr = (np.arange(32 * 40, dtype=np.uint16).reshape(32, 40) * 3) % 1024
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # US Image Storage
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.PatientID, ds.PatientName, ds.Modality = "DEVICE-LOCAL", "LOCAL^NAME", "US"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 32, 40, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 10, 9, 0
    ds.PixelData = arr.tobytes()
    if compressed:
        ds.compress(RLELossless, arr)
    ds.save_as(path, enforce_file_format=True)
    return arr


async def test_dicom_files_from_the_device_keep_pixels_and_class_and_take_the_worklist_identity(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    item = worklist_item("ACC660", "PID660", "1.2.826.0.1.3680043.10.660")
    hospital = await start_hospital(nursery, tmp_path / "hospital", [item])
    modality = await start_modality(nursery, tmp_path / "modality", hospital.port)
    assert modality.device is not None
    plain, rle, junk = tmp_path / "plain.dcm", tmp_path / "rle.dcm", tmp_path / "junk.dcm"
    arr = device_dicom_file(plain, compressed=False)
    device_dicom_file(rle, compressed=True)
    junk.write_bytes(b"not a DICOM file at all")
    await modality.device.feed(
        ProcedureStarted("P-66", worklist_key="ACC660"),
        ImageAcquired("P-66", "plain", dicom_file=str(plain)), ImageAcquired("P-66", "rle", dicom_file=str(rle)),
        ImageAcquired("P-66", "junk", dicom_file=str(junk)), ProcedureEnded("P-66"))
    row = await wait_state(modality, "P-66", ProcedureState.COMPLETED)
    assert [(i.image_key, i.state) for i in row.images] == [("plain", "stored"), ("rle", "stored"), ("junk", "failed")]
    assert "not a readable DICOM file" in row.images[2].error
    by_uid = {ds.SOPInstanceUID: ds for ds in pacs_instances(hospital)}
    assert set(by_uid) == {row.images[0].sop_instance_uid, row.images[1].sop_instance_uid}
    for image_row in row.images[:2]:
        ds = by_uid[image_row.sop_instance_uid]
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.6.1" == image_row.sop_class_uid
        assert (ds.PatientID, ds.PatientName, ds.AccessionNumber) == ("PID660", "PATIENT^PID660", "ACC660")
        assert ds.StudyInstanceUID == item.StudyInstanceUID and ds.SeriesInstanceUID == row.series_instance_uid
        assert np.array_equal(ds.pixel_array, arr)
    assert by_uid[row.images[1].sop_instance_uid].file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"  # RLE kept


async def test_an_event_that_cannot_be_recorded_is_retried_and_not_acknowledged(
        nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The disk is below the store's free-space floor: the image cannot be stored, so the next event is
    not pulled (the device keeps the image unacknowledged); once there is room it is stored, once."""
    item = worklist_item("ACC670", "PID670", "1.2.826.0.1.3680043.10.670")
    hospital = await start_hospital(nursery, tmp_path / "hospital", [item])
    profile = write_profile(tmp_path / "modality", modality_body(hospital.port).replace(
        '[storage]\n', '[storage]\nfree_space_floor = "1000TB"\n'), ae_title="MODALITY")
    modality = await run_agent(nursery, profile, ScriptedDevice())
    device = modality.device
    assert device is not None and modality.agent.modality is not None
    modality.agent.modality.retry_delay = 0.2
    await device.feed(ProcedureStarted("P-67", worklist_key="ACC670"), image("P-67", 1), ProcedureEnded("P-67"))
    with trio.fail_after(DEADLINE):
        while "could not record ImageAcquired" not in caplog.text:
            await trio.sleep(0.05)
    await trio.sleep(1)  # several retries
    assert device.pulled == 2  # the end was not taken: the image is still the device's to re-send
    (row,) = await trio.to_thread.run_sync(procedures_of, modality)
    assert [i.state for i in row.images] == ["pending"]
    assert modality.agent.store is not None
    modality.agent.store.free_space_floor = 0  # room again
    row = await wait_state(modality, "P-67", ProcedureState.COMPLETED)
    assert device.pulled == 3 and [i.state for i in row.images] == ["stored"]
    assert len(pacs_instances(hospital)) == 1
