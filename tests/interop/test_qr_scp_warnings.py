"""Sub-operations answered with a warning, as a C-MOVE or C-GET requester sees them (issue 12: "pending
responses with remaining/completed/failed/warning counts"; PS3.4 C.4.2.1.4 / C.4.3.1.4: Number of Warning
Sub-operations counts the C-STORE sub-operations that got a warning status, and the final status is
B000 when any sub-operation failed or got a warning).

A pynetdicom Storage SCP (the C-MOVE destination) and pynetdicom's C-GET requester both answer every
C-STORE with B007 (data set does not match SOP class: stored anyway, a warning). The study moved or got
has three instances: the final response must say 0 completed, 3 warning, 0 failed, B000.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio
from pydicom import Dataset

from tests.conftest import free_port, require_pynetdicom
from tests.interop.qr_peers import ROOT, archive_agent

pytestmark = pytest.mark.interop

WARNING = 0xB007
STUDY = f"{ROOT}.4"  # three instances


def _identifier() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel, ds.StudyInstanceUID = "STUDY", STUDY
    return ds


def _finals(agent_port: int, dest_port: int) -> dict[str, tuple[Dataset, list[str]]]:
    """(final response, SOP Instance UIDs the C-STORE handler saw) of a C-MOVE to a warning destination
    and of a C-GET whose requester answers warnings."""
    from pynetdicom import AE, AllStoragePresentationContexts, StoragePresentationContexts, build_role, evt
    from pynetdicom.sop_class import (
        StudyRootQueryRetrieveInformationModelGet as SGET,
        StudyRootQueryRetrieveInformationModelMove as SMOVE,
    )

    seen: dict[str, list[str]] = {"move": [], "get": []}

    def warn(kind: str):  # type: ignore[no-untyped-def]
        def handler(event: object) -> int:
            seen[kind].append(str(event.request.AffectedSOPInstanceUID))  # type: ignore[attr-defined]
            return WARNING
        return handler

    dest = AE(ae_title="WARNDEST")
    dest.supported_contexts = AllStoragePresentationContexts
    server = dest.start_server(("127.0.0.1", dest_port), block=False,
                               evt_handlers=[(evt.EVT_C_STORE, warn("move"))])
    out: dict[str, tuple[Dataset, list[str]]] = {}
    try:
        ae = AE(ae_title="PYNSCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        ae.add_requested_context(SMOVE)
        ae.add_requested_context(SGET)
        for cx in StoragePresentationContexts[:100]:
            ae.add_requested_context(cx.abstract_syntax)
        roles = [build_role(cx.abstract_syntax, scp_role=True) for cx in StoragePresentationContexts[:100]]
        assoc = ae.associate("127.0.0.1", agent_port, ae_title="AGENT", ext_neg=roles,
                             evt_handlers=[(evt.EVT_C_STORE, warn("get"))])
        assert assoc.is_established
        try:
            out["move"] = (list(assoc.send_c_move(_identifier(), "WARNDEST", SMOVE))[-1][0], seen["move"])
            out["get"] = (list(assoc.send_c_get(_identifier(), SGET))[-1][0], seen["get"])
        finally:
            assoc.release()
    finally:
        server.shutdown()
    return out


async def test_warnings_of_sub_operations_are_counted_and_end_in_b000(
    tmp_path: Path, start_agent  # type: ignore[no-untyped-def]
) -> None:
    require_pynetdicom()
    dest_port = free_port()
    running = await archive_agent(start_agent, tmp_path, "warndest", "WARNDEST", dest_port,
                                  agent_extra='dimse_timeout = "30s"')
    with trio.fail_after(120):
        finals = await trio.to_thread.run_sync(_finals, running.port, dest_port)
    want = [f"{STUDY}.1.1", f"{STUDY}.1.2", f"{STUDY}.2.1"]
    problems = []
    for kind, (final, stored) in finals.items():
        assert sorted(stored) == want, kind  # every sub-operation was performed (a warning is not a failure)
        got = (hex(final.Status), final.NumberOfCompletedSuboperations, final.NumberOfWarningSuboperations,
               final.NumberOfFailedSuboperations)
        if got != (hex(0xB000), 0, 3, 0):
            problems.append(f"C-{kind.upper()}: final (status, completed, warning, failed) = {got}")
    assert problems == []
    # The warning is kept with each sub-operation's queue job, where an operator sees it.
    proc = await trio.run_process([sys.executable, "-m", "agent", "queue", "list", "--all", "--json", "--profile",
                                   str(running.profile.source)], capture_stdout=True, check=True)
    jobs = json.loads(proc.stdout)
    assert [(j["kind"], j["state"], j["warning"][:4]) for j in jobs] == [("move-store", "done", "B007")] * 3
