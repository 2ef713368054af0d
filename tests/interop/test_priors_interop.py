"""Priors: a procedure that starts on the modality fetches the patient's earlier studies from the PACS into
the local store, through the queue (`[device] priors_from`, agent/workflow/priors.py).

- C-MOVE from a pynetdicom Q/R SCP: the two earlier studies of patient QR-P1 arrive through our Storage
  SCP; the procedure's own study (at the PACS too) is not fetched; another patient's are not either.
- C-GET from dcmqrscp that is DOWN when the procedure starts: the procedure goes on and completes
  without it; once dcmqrscp is up, the queued job retries and the prior (only the most recent one,
  priors_max = 1) lands in the store.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import trio

from agent.app import Agent
from agent.store.procedures import ProcedureState, ProcedureStore
from drivers.base import DeviceEvent, ImageAcquired, PatientData, ProcedureEnded, ProcedureStarted
from tests.conftest import free_port, require_pynetdicom, require_tool, write_profile
from tests.interop.qr_peers import ROOT, PynetdicomQR, dcmqrscp, make_archive

pytestmark = [pytest.mark.trio, pytest.mark.interop]
DEADLINE = 60
COMPLETED = ProcedureState.COMPLETED.value


class Device:
    """A scripted acquisition driver: the test sends the events."""

    def __init__(self) -> None:
        self.send, self._recv = trio.open_memory_channel[DeviceEvent](100)

    async def events(self) -> AsyncIterator[DeviceEvent]:
        async for event in self._recv:
            yield event

    async def aclose(self) -> None:
        pass


def body(pacs_port: int, device_keys: str) -> str:
    return f"""
[peers.pacs]
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs_port}
retry_base = "0.2s"
retry_cap = "1s"

[storage]

[device]
driver = "sim"
{device_keys}
"""


def local(data_dir: Path) -> tuple[set[str], dict[str, str]]:
    with contextlib.closing(sqlite3.connect(data_dir / "agent.db")) as conn:
        uids = {r[0] for r in conn.execute("SELECT sop_instance_uid FROM instances")}
        states = {p.procedure_key: p.state.value for p in ProcedureStore(conn).list()}
    return uids, states


async def wait_local(data_dir: Path, predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(DEADLINE):
        while True:
            uids, states = await trio.to_thread.run_sync(local, data_dir)
            if predicate(uids, states):
                return
            await trio.sleep(0.1)
    raise AssertionError(what)


async def run_procedure(device: Device, key: str, patient_id: str) -> None:
    await device.send.send(ProcedureStarted(procedure_key=key, patient=PatientData(patient_id=patient_id,
                                                                                   patient_name="TEST^PRIORS")))
    pixels = np.zeros((16, 16), dtype=np.uint16)
    await device.send.send(ImageAcquired(procedure_key=key, image_key="1", pixels=pixels, bits_stored=12))
    await device.send.send(ProcedureEnded(procedure_key=key))


async def start(nursery: trio.Nursery, profile, device: Device) -> Agent:  # type: ignore[no-untyped-def]
    agent = Agent(profile, device_driver=device)
    await nursery.start(agent.run)
    return agent


async def test_priors_by_move_from_pynetdicom(tmp_path: Path, nursery: trio.Nursery) -> None:
    require_pynetdicom()
    port = free_port()
    pacs = PynetdicomQR(make_archive(tmp_path / "archive"), ae_title="PACS",
                        destinations={"MODALITY": ("127.0.0.1", port)})
    pacs.start()
    try:
        profile = write_profile(tmp_path / "modality", body(pacs.port, 'priors_from = "pacs"'),
                                ae_title="MODALITY", port=port)
        device = Device()
        await start(nursery, profile, device)
        await run_procedure(device, "P1", "QR-P1")
        wanted = {f"{ROOT}.1.1.1", f"{ROOT}.1.1.2", f"{ROOT}.2.1.1"}  # both earlier studies of QR-P1
        await wait_local(profile.agent.data_dir, lambda uids, states: wanted <= uids and states.get("P1") == COMPLETED,
                         "the priors of QR-P1 in the store and the procedure completed")
        uids, _ = await trio.to_thread.run_sync(local, profile.agent.data_dir)
        assert not any(u.startswith((f"{ROOT}.3.", f"{ROOT}.4.")) for u in uids)  # other patients' studies
        finds = [ident for kind, ident in pacs.requests if kind == "find"]
        assert [str(i.PatientID) for i in finds] == ["QR-P1"] and finds[0].QueryRetrieveLevel == "STUDY"
        assert sum(kind == "move" for kind, _ in pacs.requests) == 2
    finally:
        pacs.stop()


async def test_priors_by_get_wait_for_a_pacs_that_is_down(tmp_path: Path, nursery: trio.Nursery) -> None:
    for tool in ("dcmqrscp", "storescu"):
        require_tool(tool)
    files = make_archive(tmp_path / "archive")
    pacs_port = free_port()
    profile = write_profile(tmp_path / "modality", body(pacs_port, 'priors_from = "pacs"\npriors_retrieve = "get"\n'
                                                        "priors_max = 1"), ae_title="MODALITY")
    device = Device()
    await start(nursery, profile, device)
    await run_procedure(device, "P1", "QR-P1")
    # The PACS is down: the procedure does not wait for it.
    await wait_local(profile.agent.data_dir, lambda uids, states: states.get("P1") == COMPLETED,
                     "the procedure completed while the PACS is down")
    with contextlib.ExitStack() as stack:
        await trio.to_thread.run_sync(lambda: stack.enter_context(
            dcmqrscp(tmp_path / "qr", files, ae_title="PACS", port=pacs_port, index_first=True)))
        await wait_local(profile.agent.data_dir, lambda uids, states: f"{ROOT}.2.1.1" in uids,
                         "the most recent prior of QR-P1 in the store")
        uids, _ = await trio.to_thread.run_sync(local, profile.agent.data_dir)
        assert not any(u.startswith(f"{ROOT}.1.") for u in uids)  # priors_max = 1: the older one stays away
        await trio.to_thread.run_sync(stack.close)
