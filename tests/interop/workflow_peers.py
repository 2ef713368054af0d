"""Real peers and a device side for the end-to-end workflow tests (modality host against RIS and PACS).

- `MppsRis`: a pynetdicom MPPS SCP that behaves like a RIS (0111 for an N-CREATE of an instance it
  already has, 0112 for an N-SET of an unknown one, 0110 once COMPLETED or DISCONTINUED) and records
  every message in arrival order with the status it answered, so a test can count re-sends.
- `start_storescp` / `start_wlmscpfs`: DCMTK as the PACS store and as the RIS worklist.
- `commitment_peer`: a pynetdicom Storage Commitment SCP (another AE than the store) that answers
  "committed" for exactly the instances a storage folder holds (DCMTK storescp's `-od`).
- `PtyLink`: the serial line between a device and the agent as two pseudo-terminal pairs whose master
  ends the test holds and joins (like a null-modem cable), so either side can be killed and restarted
  while the line stays; a filter on each direction can corrupt or drop bytes on the wire.
- `stored_images`: what a storage folder holds, decoded.
"""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import threading
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
from pydicom import Dataset, dcmread

from tests.conftest import free_port, require_pynetdicom, require_tool, wait_listening
from tests.interop.commitment_peer import PynetdicomArchive

MPPS = "1.2.840.10008.3.1.2.3.3"
#: DCMTK enables Nagle unless told otherwise: without this a DCMTK peer stalls 40 ms a message.
PEER_ENV = {**os.environ, "TCP_NODELAY": "1"}


# ------------------------------------------------------------------ RIS: MPPS


@dataclass
class MppsMessage:
    op: str  # "N-CREATE" | "N-SET"
    uid: str
    status: int  # what we answered
    dataset: Dataset


class MppsRis:
    """A pynetdicom MPPS SCP with the state rules of PS3.4 F.7.2 (0111, 0112, 0110)."""

    def __init__(self, ae_title: str = "RIS", on_message: Callable[[], None] | None = None) -> None:
        require_pynetdicom()
        from pynetdicom import AE, evt

        self.on_message = on_message  # called after recording, before answering (a test may kill the SCU)
        self.messages: list[MppsMessage] = []
        self.state: dict[str, str] = {}  # uid -> Performed Procedure Step Status
        self.lock = threading.Lock()
        self.port = free_port()
        self.ae_title = ae_title
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(MPPS)
        handlers = [(evt.EVT_N_CREATE, self._on_create), (evt.EVT_N_SET, self._on_set)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    def _on_create(self, event: Any) -> tuple[int, Dataset | None]:
        ds = event.attribute_list
        uid = str(event.request.AffectedSOPInstanceUID)
        with self.lock:
            status = 0x0111 if uid in self.state else 0x0000
            if status == 0:
                self.state[uid] = str(ds.get("PerformedProcedureStepStatus", ""))
            self.messages.append(MppsMessage("N-CREATE", uid, status, ds))
        if self.on_message is not None:
            self.on_message()
        return status, (ds if status == 0 else None)

    def _on_set(self, event: Any) -> tuple[int | Dataset, Dataset | None]:
        ds = event.modification_list
        uid = str(event.request.RequestedSOPInstanceUID)
        with self.lock:
            if uid not in self.state:
                status = 0x0112
            elif self.state[uid] in ("COMPLETED", "DISCONTINUED"):
                status = 0x0110  # with the Error Comment PS3.4 F.7.2.2.4.2 asks for, below
            else:
                status = 0x0000
                self.state[uid] = str(ds.get("PerformedProcedureStepStatus", self.state[uid]))
            self.messages.append(MppsMessage("N-SET", uid, status, ds))
        if self.on_message is not None:
            self.on_message()
        if status == 0x0110:
            answer = Dataset()
            answer.Status = status
            answer.ErrorComment = "Performed Procedure Step Object may no longer be updated"
            return answer, None
        return status, (ds if status == 0 else None)

    def snapshot(self) -> list[MppsMessage]:
        with self.lock:
            return list(self.messages)

    def final_states(self) -> dict[str, str]:
        with self.lock:
            return dict(self.state)

    def close(self) -> None:
        self.server.shutdown()


def mpps_order_problems(messages: list[MppsMessage]) -> list[str]:
    """What breaks "exactly one successful N-CREATE, before its N-SET" per MPPS instance."""
    problems = []
    created: dict[str, int] = {}
    for m in messages:
        if m.op == "N-CREATE" and m.status == 0:
            created[m.uid] = created.get(m.uid, 0) + 1
        if m.op == "N-SET" and m.uid not in created:
            problems.append(f"N-SET for {m.uid} before any successful N-CREATE (answered {m.status:04X})")
    problems += [f"{n} successful N-CREATEs of {uid}" for uid, n in created.items() if n != 1]
    return problems


# ------------------------------------------------------------------ DCMTK peers


async def start_storescp(nursery: trio.Nursery, out_dir: Path, ae_title: str = "STORESCP") -> int:
    """DCMTK storescp writing `<MODALITY>.<SOP Instance UID>` files into `out_dir`; stopped with the nursery."""
    exe = require_tool("storescp")
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    nursery.start_soon(partial(
        trio.run_process, [exe, "--promiscuous", "+xa", "-aet", ae_title, "-od", str(out_dir), str(port)],
        check=False, env=PEER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    await wait_listening(port, timeout=30)
    return port


async def start_wlmscpfs(nursery: trio.Nursery, dbdir: Path) -> int:
    """DCMTK wlmscpfs over DBDIR/<called AE>/*.wl; stopped with the nursery."""
    exe = require_tool("wlmscpfs")
    port = free_port()
    nursery.start_soon(partial(
        trio.run_process, [exe, "-dfp", str(dbdir), "-csk", str(port)], check=False, env=PEER_ENV,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    await wait_listening(port, timeout=30)
    return port


def storescp_holdings(out_dir: Path) -> set[str]:
    """SOP Instance UIDs of the complete files DCMTK storescp wrote (`<MODALITY>.<UID>`)."""
    return {p.name.split(".", 1)[1] for p in out_dir.iterdir() if "." in p.name and not p.name.startswith(".")}


def commitment_peer(store_dir: Path, work_dir: Path, *, ae_title: str = "COMMITSCP", agent_port: int = 0,
                    report: str = "same") -> PynetdicomArchive:
    """A Storage Commitment SCP (not the store) that commits what DCMTK storescp holds in `store_dir`."""
    require_pynetdicom()
    peer = PynetdicomArchive(work_dir, report=report, agent_port=agent_port, ae_title=ae_title,
                             holdings=lambda: storescp_holdings(store_dir))
    return peer


# ------------------------------------------------------------------ what a store holds


@dataclass(frozen=True)
class StoredImage:
    path: Path
    dataset: Dataset

    @property
    def uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def pixel_digest(self) -> str:
        return hashlib.sha256(bytes(self.dataset.PixelData)).hexdigest()[:16]


def stored_images(folder: Path) -> list[StoredImage]:
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            out.append(StoredImage(p, dcmread(p)))
    return out


# ------------------------------------------------------------------ serial line


Filter = Callable[[bytes], bytes]


@dataclass
class PtyLink:
    """Two pty pairs joined at their masters: the device opens `device_path`, the agent `agent_path`.

    The test process holds all four ends, so neither side closing its port hangs the line up; a
    restarted side finds the same device node. `to_agent` / `to_device` may rewrite each chunk (fault
    injection); `seen_to_agent` / `seen_to_device` count bytes as sent by each side.
    """

    to_agent: Filter | None = None
    to_device: Filter | None = None
    seen_to_agent: int = 0
    seen_to_device: int = 0
    overflowed: int = 0  # bytes lost because the receiving side's input queue was full
    _fds: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._dev_master, dev_slave = os.openpty()
        self._agent_master, agent_slave = os.openpty()
        for fd in (dev_slave, agent_slave):
            tty.setraw(fd)
        for fd in (self._dev_master, self._agent_master):
            os.set_blocking(fd, False)
        self._fds = [self._dev_master, dev_slave, self._agent_master, agent_slave]
        self.device_path = os.ttyname(dev_slave)
        self.agent_path = os.ttyname(agent_slave)
        # One thread per direction, so a fault filter that waits never holds up the other direction.
        self._threads = [
            threading.Thread(target=self._shuttle, args=(self._dev_master, self._agent_master, True), daemon=True),
            threading.Thread(target=self._shuttle, args=(self._agent_master, self._dev_master, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _shuttle(self, src: int, dst: int, to_agent: bool) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([src], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(src, 65536)
            except OSError:
                continue
            if to_agent:
                self.seen_to_agent += len(chunk)
                chunk = self.to_agent(chunk) if self.to_agent else chunk
            else:
                self.seen_to_device += len(chunk)
                chunk = self.to_device(chunk) if self.to_device else chunk
            try:
                written = os.write(dst, chunk) if chunk else 0
            except BlockingIOError:
                written = 0
            # Like a UART whose receiver is not there (killed, restarting): what does not fit is lost.
            self.overflowed += len(chunk) - written

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass


# ------------------------------------------------------------------ the agent's own account


def procedure_summary(data_dir: Path) -> list[tuple[str, str, str, list[tuple[str, str]]]]:
    """(key, state, error, [(image key, image state)]) per procedure: for failure messages."""
    return [(r["procedure_key"], r["state"], r["error"], [(i["image_key"], i["state"]) for i in r["images"]])
            for r in procedure_reports(data_dir)]


def procedure_reports(data_dir: Path) -> list[dict[str, Any]]:
    """What `dicom-agent procedures list --json` shows, read from the agent's database (any process):
    empty until the agent has made its tables."""
    import sqlite3

    from agent.store.procedures import ProcedureStore, procedure_report

    if not (data_dir / "agent.db").exists():
        return []
    conn = sqlite3.connect(data_dir / "agent.db", timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return [procedure_report(conn, row) for row in ProcedureStore(conn).list()]
    except sqlite3.OperationalError:  # no procedures table yet
        return []
    finally:
        conn.close()


async def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 120,
                   show: Callable[[], Any] | None = None) -> Any:
    """Poll `predicate` every 0.1 s until it returns something truthy (returned); fail after `timeout`,
    with what `show()` returns then (the state that did not come right)."""
    try:
        with trio.fail_after(timeout):
            while not (value := predicate()):
                await trio.sleep(0.1)
            return value
    except trio.TooSlowError:
        seen = f"; state: {show()}" if show is not None else ""
        raise AssertionError(f"timed out after {timeout} s waiting for {what}{seen}") from None
