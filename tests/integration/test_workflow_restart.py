"""A stopped agent's procedures resume from their recorded step in a new Agent on the same data_dir; the
device re-sends what it had not seen acknowledged, and nothing is made twice."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from agent.store.procedures import ProcedureState
from agent.workflow.modality import ModalityWorkflow
from drivers.base import PatientData, ProcedureEnded, ProcedureStarted
from tests.conftest import free_port, write_profile
from tests.integration.test_workflow_modality import (
    HOSPITAL, ScriptedDevice, image, pacs_instances, procedures_of, ris_mpps, run_agent,
    start_hospital, start_modality, wait_state, worklist_item,
)

pytestmark = pytest.mark.trio
DEADLINE = 60


async def wait_image_stored(running, key: str, image_key: str) -> str:  # type: ignore[no-untyped-def]
    with trio.fail_after(DEADLINE):
        while True:
            for row in await trio.to_thread.run_sync(procedures_of, running):
                for i in row.images:
                    if row.procedure_key == key and i.image_key == image_key and i.state == "stored":
                        return i.sop_instance_uid
            await trio.sleep(0.05)


async def test_stopped_mid_procedure_resumes_with_the_same_uids(nursery: trio.Nursery, tmp_path: Path) -> None:
    item = worklist_item("ACC700", "PID700", "1.2.826.0.1.3680043.10.700")
    hospital = await start_hospital(nursery, tmp_path / "hospital", [item])
    first = await start_modality(nursery, tmp_path / "modality", hospital.port)
    assert first.device is not None
    await first.device.feed(ProcedureStarted("P-7", worklist_key="ACC700"), image("P-7", 1))
    uid1 = await wait_image_stored(first, "P-7", "1")
    first.stop()  # image 1 was never acknowledged: the device sends it again to the next agent
    await trio.sleep(0)

    second = await start_modality(nursery, tmp_path / "modality", hospital.port)
    assert second.device is not None
    await second.device.feed(ProcedureStarted("P-7", worklist_key="ACC700"), image("P-7", 1), image("P-7", 2),
                             ProcedureEnded("P-7"))
    row = await wait_state(second, "P-7", ProcedureState.COMPLETED)
    assert [i.sop_instance_uid for i in row.images][0] == uid1 and len(row.images) == 2
    assert sorted(ds.SOPInstanceUID for ds in pacs_instances(hospital)) == sorted(i.sop_instance_uid for i in row.images)
    ((uid, _status, mpps),) = ris_mpps(hospital)
    assert uid == row.mpps_uid
    assert len(mpps.PerformedSeriesSequence[0].ReferencedImageSequence) == 2


@pytest.mark.parametrize("step", ["_mpps_start", "_finish"])
async def test_a_step_interrupted_is_taken_after_restart(nursery: trio.Nursery, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    """The agent dies between two transitions (selected -> mpps-created, or acquired -> stored): the new
    agent takes the missing step at start-up, once."""
    item = worklist_item("ACC800", "PID800", "1.2.826.0.1.3680043.10.800")
    hospital = await start_hospital(nursery, tmp_path / "hospital", [item])

    def interrupted(*args: object, **kw: object) -> None:
        raise OSError("simulated power cut between transitions")

    monkeypatch.setattr(ModalityWorkflow, step, interrupted)
    first = await start_modality(nursery, tmp_path / "modality", hospital.port)
    assert first.device is not None
    events = [ProcedureStarted("P-8", worklist_key="ACC800"), image("P-8", 1), ProcedureEnded("P-8")]
    await first.device.feed(*events)
    stuck = ProcedureState.SELECTED if step == "_mpps_start" else ProcedureState.ACQUIRED
    await wait_state(first, "P-8", stuck)
    first.stop()
    monkeypatch.undo()
    await trio.sleep(0)

    second = await start_modality(nursery, tmp_path / "modality", hospital.port)
    assert second.device is not None
    # The device re-sends from its first unacknowledged event (the one whose recording failed).
    await second.device.feed(*events[0 if step == "_mpps_start" else 2:])
    if step == "_mpps_start":
        await second.device.feed(*events[1:])
    row = await wait_state(second, "P-8", ProcedureState.COMPLETED)
    assert len(row.images) == 1
    assert len(pacs_instances(hospital)) == 1
    assert hospital.agent.workflow is not None and hospital.agent.workflow.mpps_scp is not None
    assert list(hospital.agent.workflow.mpps_scp.received) == [("N-CREATE", row.mpps_uid), ("N-SET", row.mpps_uid)]


async def test_work_queued_while_the_peers_were_down_goes_out_after_restart(nursery: trio.Nursery,
                                                                            tmp_path: Path) -> None:
    port = free_port()
    first = await start_modality(nursery, tmp_path / "modality", port)  # nobody listens there yet
    assert first.device is not None
    # The RIS is down: no worklist item, so the procedure is performed unscheduled.
    await first.device.feed(ProcedureStarted("P-10", worklist_key="X", patient=PatientData("D10", "D^TEN")),
                            image("P-10", 1), image("P-10", 2), ProcedureEnded("P-10"))
    await wait_state(first, "P-10", ProcedureState.STORED)  # reported and stored locally; commitment waits
    first.stop()
    await trio.sleep(0)

    profile = write_profile(tmp_path / "hospital", HOSPITAL, ae_title="HOSPITAL", port=port)
    hospital = await run_agent(nursery, profile)
    second = await run_agent(nursery, first.profile, ScriptedDevice())
    row = await wait_state(second, "P-10", ProcedureState.COMPLETED)
    assert len(pacs_instances(hospital)) == 2
    assert hospital.agent.workflow is not None and hospital.agent.workflow.mpps_scp is not None
    assert list(hospital.agent.workflow.mpps_scp.received) == [("N-CREATE", row.mpps_uid), ("N-SET", row.mpps_uid)]


async def test_a_silent_ris_does_not_hold_a_procedure_start(nursery: trio.Nursery, tmp_path: Path) -> None:
    """The RIS accepts the connection and never answers: the start is decided on the cached worklist
    within a few seconds (a device re-sends an unacknowledged start after 15 s; waiting for the RIS's
    own timeouts would make every re-sent start wait again)."""
    silent = trio.socket.socket()
    await silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[trio.socket.SocketType] = []

    async def accept_and_hold() -> None:
        with silent:  # closed when the test's nursery is cancelled at its end
            while True:
                conn, _ = await silent.accept()
                held.append(conn)

    nursery.start_soon(accept_and_hold)
    port = silent.getsockname()[1]
    slow = 'artim_timeout = "300s"\ndimse_timeout = "300s"\nconnect_timeout = "300s"\n'
    from tests.integration.test_workflow_modality import modality_body

    profile = write_profile(tmp_path / "modality", modality_body(port), ae_title="MODALITY", agent_extra=slow)
    modality = await run_agent(nursery, profile, ScriptedDevice())
    assert modality.device is not None
    await modality.device.feed(ProcedureStarted("P-11", worklist_key="ACC-NEW", patient=PatientData("D11", "D^E")))
    # Decided in about REFRESH_WAIT (5 s); the agent's own timeouts would take 25 s or more.
    with trio.fail_after(20):
        row = await wait_state(modality, "P-11", ProcedureState.MPPS_CREATED)
    assert not row.scheduled
