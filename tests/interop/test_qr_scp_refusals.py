"""The Q/R SCP's refusals that the interop tests do not reach, as pynetdicom's SCU sees them (issue 12,
statuses of the seed's C-MOVE table and PS3.4 C.4.2.1.5 / C.4.3.1.4):

- C-MOVE and C-GET at a level the model has not: C001 naming Query/Retrieve Level (0008,0052); C-GET
  with a wildcard for the unique key: A900 naming it.
- The index cannot be read (its `instances` and `qr_studies` tables are away, as in a damaged
  database): C-FIND A700, C-MOVE and C-GET A701 (unable to calculate the number of matches), each
  with an Error Comment, nothing sent; once the tables are back, a C-GET of the same study succeeds
  on the same association.
- The sub-operations cannot be queued (the queue's table is away): C-MOVE A702, nothing sent.

The agent runs in this process; pynetdicom runs in a worker thread. The tables are renamed by a second
SQLite connection, as another process could, and renamed back at once.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
import trio
from pydicom import Dataset

from tests.conftest import free_port, require_pynetdicom
from tests.interop.qr_peers import ROOT, archive_agent, identifier, offending_tags

pytestmark = [pytest.mark.trio, pytest.mark.interop,
              pytest.mark.filterwarnings("ignore:Invalid value for VR UI")]  # the wildcard UID below


@contextlib.contextmanager
def _tables_away(db: Path, *tables: str):  # type: ignore[no-untyped-def]
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        for table in tables:
            conn.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
        try:
            yield
        finally:
            for table in tables:
                conn.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
    finally:
        conn.close()


def _session(port: int, db: Path, received: list[str]) -> dict[str, object]:
    """Every request of the test on one association (plus one for C-GET with role selection); what
    the peer saw, keyed by case."""
    from pynetdicom import AE, StoragePresentationContexts, build_role, evt
    from pynetdicom.sop_class import (
        StudyRootQueryRetrieveInformationModelFind as SFIND,
        StudyRootQueryRetrieveInformationModelGet as SGET,
        StudyRootQueryRetrieveInformationModelMove as SMOVE,
    )

    seen: dict[str, object] = {}
    ae = AE(ae_title="PYNSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for uid in (SFIND, SMOVE, SGET):
        ae.add_requested_context(uid)
    for cx in StoragePresentationContexts[:100]:
        ae.add_requested_context(cx.abstract_syntax)
    roles = [build_role(cx.abstract_syntax, scp_role=True) for cx in StoragePresentationContexts[:100]]

    def on_store(event: object) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))  # type: ignore[attr-defined]
        return 0x0000

    assoc = ae.associate("127.0.0.1", port, ae_title="AGENT", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        def last(replies: object) -> tuple[Dataset, Dataset | None]:
            replies = list(replies)  # type: ignore[call-overload]
            assert replies and replies[-1][0] is not None and "Status" in replies[-1][0], "no response"
            return replies[-1]

        study = dict(QueryRetrieveLevel="STUDY", StudyInstanceUID=f"{ROOT}.4")
        seen["move-level"] = last(assoc.send_c_move(identifier(QueryRetrieveLevel="FRAME",
                                                                StudyInstanceUID=f"{ROOT}.4"), "PYNSCU", SMOVE))[0]
        seen["get-level"] = last(assoc.send_c_get(identifier(QueryRetrieveLevel="FRAME",
                                                              StudyInstanceUID=f"{ROOT}.4"), SGET))[0]
        seen["get-wildcard"] = last(assoc.send_c_get(identifier(QueryRetrieveLevel="STUDY",
                                                                 StudyInstanceUID="1.2*"), SGET))[0]
        with _tables_away(db, "instances", "qr_studies"):  # study-level C-FIND reads the summary
            seen["find-unreadable"] = last(assoc.send_c_find(identifier(**study, PatientName=""), SFIND))[0]
            seen["move-unreadable"] = last(assoc.send_c_move(identifier(**study), "PYNSCU", SMOVE))[0]
            seen["get-unreadable"] = last(assoc.send_c_get(identifier(**study), SGET))[0]
        seen["received-while-unreadable"] = list(received)
        with _tables_away(db, "queue_jobs"):
            seen["move-unqueued"] = last(assoc.send_c_move(identifier(**study), "PYNSCU", SMOVE))[0]
        seen["get-again"] = last(assoc.send_c_get(identifier(**study), SGET))[0]
    finally:
        assoc.release()
    return seen


async def test_level_wildcard_unreadable_index_and_unqueueable_moves(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    require_pynetdicom()
    running = await archive_agent(start_agent, tmp_path, "scu", "PYNSCU", free_port(),
                                  agent_extra='dimse_timeout = "30s"')

    received: list[str] = []
    with trio.fail_after(180):
        seen = await trio.to_thread.run_sync(_session, running.port, running.data_dir / "agent.db", received)

    for case in ("move-level", "get-level"):
        status = seen[case]
        assert (status.Status, offending_tags(status.OffendingElement)) == (  # type: ignore[attr-defined]
            0xC001, [0x00080052]), case
    status = seen["get-wildcard"]
    assert (status.Status, offending_tags(status.OffendingElement)) == (0xA900, [0x0020000D])  # type: ignore[attr-defined]

    for case, code in (("find-unreadable", 0xA700), ("move-unreadable", 0xA701), ("get-unreadable", 0xA701)):
        status = seen[case]
        assert status.Status == code, (case, hex(status.Status))  # type: ignore[attr-defined]
        assert "index unreadable" in str(status.ErrorComment), case  # type: ignore[attr-defined]
    assert seen["received-while-unreadable"] == []

    status = seen["move-unqueued"]
    assert status.Status == 0xA702 and "cannot queue" in str(status.ErrorComment)  # type: ignore[attr-defined]
    # The association survived all of it: a C-GET of the same study now delivers its three instances.
    status = seen["get-again"]
    assert (status.Status, status.NumberOfCompletedSuboperations) == (0x0000, 3)  # type: ignore[attr-defined]
    assert sorted(received) == [f"{ROOT}.4.1.1", f"{ROOT}.4.1.2", f"{ROOT}.4.2.1"]
