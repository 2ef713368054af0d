"""C-MOVE while another process holds the database's write lock (a `dicom-agent` command, a backup):
the sub-operations cannot be queued, and the requester hears C002 "Unable to process at this time"
(seed C-MOVE status table; agent/services/query/scp.py), not A702: nothing was queued or sent, the
association stays usable, and the same C-MOVE asked again once the lock is gone moves every instance.
DCMTK's movescu, asking while the lock is held, sees the same C002.

The agent's SQLite busy timeout (30 s) is shortened to 0.3 s on its own connection so that the test
does not wait half a minute; the lock is a real one, taken by a second connection to the same file.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
import trio
from pydicom import Dataset

from tests.conftest import free_port, require_pynetdicom, require_tool
from tests.interop.qr_peers import ROOT, archive_agent

pytestmark = pytest.mark.interop

STUDY = f"{ROOT}.4"  # three instances


def _session(agent_port: int, dest_port: int, db: Path, movescu: str) -> dict[str, object]:
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as SMOVE

    received: list[str] = []

    def on_store(event: object) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))  # type: ignore[attr-defined]
        return 0x0000

    dest = AE(ae_title="BUSYDEST")
    dest.supported_contexts = AllStoragePresentationContexts
    server = dest.start_server(("127.0.0.1", dest_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    identifier = Dataset()
    identifier.QueryRetrieveLevel, identifier.StudyInstanceUID = "STUDY", STUDY
    out: dict[str, object] = {}
    try:
        ae = AE(ae_title="PYNSCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        ae.add_requested_context(SMOVE)
        assoc = ae.associate("127.0.0.1", agent_port, ae_title="AGENT")
        assert assoc.is_established
        try:
            lock = sqlite3.connect(db, isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")  # the write lock, as another process would hold it
            try:
                out["busy"] = [r[0] for r in assoc.send_c_move(identifier, "BUSYDEST", SMOVE)]
                dcmtk = subprocess.run(
                    [movescu, "-d", "-S", "-aec", "AGENT", "-aem", "BUSYDEST", "-k", "QueryRetrieveLevel=STUDY",
                     "-k", f"StudyInstanceUID={STUDY}", "127.0.0.1", str(agent_port)],
                    capture_output=True, text=True, timeout=60)
                out["movescu"] = dcmtk.stdout + dcmtk.stderr
                out["jobs_while_busy"] = lock.execute(
                    "SELECT COUNT(*) FROM queue_jobs WHERE kind = 'move-store'").fetchone()[0]
                out["received_while_busy"] = list(received)
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            out["again"] = [r[0] for r in assoc.send_c_move(identifier, "BUSYDEST", SMOVE)]
        finally:
            assoc.release()
        out["received"] = sorted(received)
    finally:
        server.shutdown()
    return out


async def test_move_while_the_database_is_locked_answers_c002_and_the_retry_moves(
    tmp_path: Path, start_agent  # type: ignore[no-untyped-def]
) -> None:
    require_pynetdicom()
    movescu = require_tool("movescu")
    dest_port = free_port()
    running = await archive_agent(start_agent, tmp_path, "busydest", "BUSYDEST", dest_port)
    agent = running.agent
    await trio.to_thread.run_sync(agent.blocking.call,  # type: ignore[attr-defined]
                                  lambda: agent.db.execute("PRAGMA busy_timeout = 300"))  # type: ignore[attr-defined]
    with trio.fail_after(120):
        got = await trio.to_thread.run_sync(_session, running.port, dest_port, running.data_dir / "agent.db",
                                           movescu)

    busy = got["busy"]
    assert [r.Status for r in busy] == [0xC002], busy  # no pending response: nothing was queued
    assert "retry later" in str(busy[0].ErrorComment)  # type: ignore[index]
    assert "DIMSE Status                  : 0xc002" in str(got["movescu"]), got["movescu"]  # DCMTK's movescu
    assert got["jobs_while_busy"] == 0 and got["received_while_busy"] == []
    final = got["again"][-1]  # type: ignore[index]
    assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 3, 0)
    assert got["received"] == [f"{STUDY}.1.1", f"{STUDY}.1.2", f"{STUDY}.2.1"]
