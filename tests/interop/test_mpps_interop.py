"""MPPS against pynetdicom: the agent's SCU (through the queue) to a pynetdicom SCP, and a pynetdicom SCU
to the agent's SCP, which forwards N-CREATE and N-SET in order to a second pynetdicom SCP."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from tests.conftest import free_port, require_pynetdicom, write_profile
from tests.interop.worklist_items import ISO_IR_192_NAME, make_wlmscpfs_db, standard_items

pytestmark = [pytest.mark.trio, pytest.mark.interop]

MPPS = "1.2.840.10008.3.1.2.3.3"


class Recorder:
    """A pynetdicom MPPS SCP that records (operation, uid, data set) in arrival order."""

    def __init__(self, ae_title: str = "RIS") -> None:
        require_pynetdicom()
        from pynetdicom import AE, evt

        self.events: list[tuple[str, str, Dataset]] = []
        self.lock = threading.Lock()
        self.port = free_port()
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(MPPS)

        def on_create(event: Any) -> tuple[int, Dataset]:
            ds = event.attribute_list
            with self.lock:
                self.events.append(("N-CREATE", event.request.AffectedSOPInstanceUID, ds))
            return 0x0000, ds

        def on_set(event: Any) -> tuple[int, Dataset]:
            ds = event.modification_list
            with self.lock:
                self.events.append(("N-SET", event.request.RequestedSOPInstanceUID, ds))
            return 0x0000, ds

        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_N_CREATE, on_create), (evt.EVT_N_SET, on_set)])

    def snapshot(self) -> list[tuple[str, str, Dataset]]:
        with self.lock:
            return list(self.events)

    async def wait_for(self, count: int, timeout: float = 20) -> list[tuple[str, str, Dataset]]:
        with trio.fail_after(timeout):
            while len(self.snapshot()) < count:
                await trio.sleep(0.05)
        return self.snapshot()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def recorders():
    made: list[Recorder] = []

    def make(ae_title: str = "RIS") -> Recorder:
        r = Recorder(ae_title)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


async def test_agent_scu_sends_create_then_set(tmp_path: Path, start_agent, recorders) -> None:
    ris = recorders()
    items = standard_items()
    folder = make_wlmscpfs_db(tmp_path / "wl", "RIS", items)
    profile = write_profile(tmp_path / "agent", f"""
        [peers.ris]
        ae_title = "RIS"
        host = "127.0.0.1"
        port = {ris.port}

        [worklist]
        folder = "{folder}"
        station_ae = "CT01"

        [mpps]
        send_to = ["ris"]
        """)
    agent = await start_agent(profile)
    scu = agent.agent.workflow.mpps_scu
    item = next(i for i in await agent.agent.workflow.worklist.candidates() if i.AccessionNumber == "ACC002")
    uid = await scu.started(item)
    series_uid, image_uid = generate_uid(), generate_uid()
    await scu.ended(uid, "COMPLETED", [{"series_uid": series_uid, "protocol_name": "CHEST",
                                         "images": [("1.2.840.10008.5.1.4.1.1.2", image_uid)]}])
    events = await ris.wait_for(2)
    assert [(op, u) for op, u, _ in events] == [("N-CREATE", uid), ("N-SET", uid)]
    created, modified = events[0][2], events[1][2]
    assert str(created.PatientName) == ISO_IR_192_NAME
    assert created.PatientID == "PACC002"
    assert created.PerformedProcedureStepStatus == "IN PROGRESS"
    assert created.PerformedStationAETitle == "CT01"
    assert created.Modality == "MR"
    step = created.ScheduledStepAttributesSequence[0]
    assert step.AccessionNumber == "ACC002" and step.StudyInstanceUID == item.StudyInstanceUID
    assert step.ScheduledProcedureStepID == "SPSACC002"
    assert "PerformedSeriesSequence" in created and len(created.PerformedSeriesSequence) == 0
    assert modified.PerformedProcedureStepStatus == "COMPLETED"
    assert modified.PerformedProcedureStepEndDate and modified.PerformedProcedureStepEndTime
    series = modified.PerformedSeriesSequence[0]
    assert series.SeriesInstanceUID == series_uid
    assert series.ReferencedImageSequence[0].ReferencedSOPInstanceUID == image_uid
    # the completed step left the agent's worklist
    served = await agent.agent.workflow.worklist.candidates()
    assert "ACC002" not in {i.AccessionNumber for i in served} and len(served) == len(items) - 1


def _pynetdicom_mpps_session(port: int, uid: str, create: Dataset, modify: Dataset) -> list[int]:
    from pynetdicom import AE

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MPPS)
    assoc = ae.associate("127.0.0.1", port, ae_title="AGENT")
    assert assoc.is_established
    try:
        status1, _ = assoc.send_n_create(create, MPPS, uid)
        status2, _ = assoc.send_n_set(modify, MPPS, uid)
        return [int(status1.Status), int(status2.Status)]
    finally:
        assoc.release()


def _create_dataset(name: str = "DOE^JOHN", accession: str = "ACC003") -> Dataset:
    ds = Dataset()
    step = Dataset()
    step.StudyInstanceUID = generate_uid()
    step.AccessionNumber = accession
    step.ScheduledProcedureStepID = f"SPS{accession}"
    step.RequestedProcedureID = f"RP{accession}"
    step.ReferencedStudySequence = Sequence()
    ds.ScheduledStepAttributesSequence = Sequence([step])
    ds.PatientName = name
    ds.PatientID = "X1"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "MODALITY"
    ds.PerformedProcedureStepStartDate = "20260115"
    ds.PerformedProcedureStepStartTime = "101010"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    ds.PerformedSeriesSequence = Sequence()
    return ds


async def test_pynetdicom_scu_to_agent_scp_forwards_in_order(tmp_path: Path, start_agent, recorders) -> None:
    ris = recorders("RIS2")
    profile = write_profile(tmp_path / "agent", f"""
        [peers.ris]
        ae_title = "RIS2"
        host = "127.0.0.1"
        port = {ris.port}

        [mpps]
        serve = true
        forward_to = ["ris"]
        coerce_from_worklist = false
        """)
    agent = await start_agent(profile)
    uid = generate_uid()
    create = _create_dataset()
    modify = Dataset()
    modify.PerformedProcedureStepStatus = "DISCONTINUED"
    modify.PerformedProcedureStepEndDate = "20260115"
    modify.PerformedProcedureStepEndTime = "111111"
    statuses = await trio.to_thread.run_sync(_pynetdicom_mpps_session, agent.port, uid, create, modify)
    assert statuses == [0x0000, 0x0000]
    events = await ris.wait_for(2)
    assert [(op, u) for op, u, _ in events] == [("N-CREATE", uid), ("N-SET", uid)]
    assert events[0][2].PatientName == "DOE^JOHN"
    assert events[0][2].ScheduledStepAttributesSequence[0].AccessionNumber == "ACC003"
    assert events[1][2].PerformedProcedureStepStatus == "DISCONTINUED"
    assert events[1][2].PerformedProcedureStepEndTime == "111111"
    stored = await agent.agent.blocking.run(lambda: agent.agent.mpps_store.get(uid, "remote"))
    assert stored is not None and stored.status == "DISCONTINUED"


async def test_agent_scp_coerces_patient_from_worklist(tmp_path: Path, start_agent, recorders) -> None:
    ris = recorders("RIS2")
    items = standard_items()
    folder = make_wlmscpfs_db(tmp_path / "wl", "RIS", items)
    profile = write_profile(tmp_path / "agent", f"""
        [peers.ris]
        ae_title = "RIS2"
        host = "127.0.0.1"
        port = {ris.port}

        [worklist]
        folder = "{folder}"

        [mpps]
        serve = true
        forward_to = ["ris"]
        """)
    agent = await start_agent(profile)
    target = items[1]  # the ISO_IR 192 patient
    create = _create_dataset(name="WRONG^NAME", accession="ACC002")
    create.ScheduledStepAttributesSequence[0].StudyInstanceUID = target.StudyInstanceUID
    modify = Dataset()
    modify.PerformedProcedureStepStatus = "COMPLETED"
    uid = generate_uid()
    statuses = await trio.to_thread.run_sync(_pynetdicom_mpps_session, agent.port, uid, create, modify)
    assert statuses == [0, 0]
    events = await ris.wait_for(2)
    assert str(events[0][2].PatientName) == ISO_IR_192_NAME
    assert events[0][2].PatientID == "PACC002"
    # COMPLETED: the step is no longer served
    served = await agent.agent.workflow.worklist.candidates()
    assert "ACC002" not in {i.AccessionNumber for i in served}
