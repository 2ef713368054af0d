"""What `[query]` turns off, as pynetdicom's findscu, movescu and getscu programs see it (issue 12: the
profile keys under `[query]`; tests/unit/test_query_profile.py checks only their parsing).

`models = ["study"], operations = ["find"], relational = false`: Study Root C-FIND answers; Patient Root,
C-MOVE and C-GET are not accepted; `--relational-query` is declined (A900, as a hierarchical query).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_pynetdicom, require_tool, write_profile
from tests.interop.qr_peers import ROOT, make_archive
from tests.interop.storage_helpers import run
from tests.interop.test_qr_scp_pynetdicom_apps import pynetdicom_app, uids

pytestmark = pytest.mark.interop


async def test_what_the_query_section_turns_off(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    """`[query] models = ["study"]`, `operations = ["find"]`, `relational = false`: Patient Root and
    C-MOVE / C-GET are not offered (their contexts rejected), relational queries are declined."""
    require_pynetdicom()
    storescu = require_tool("storescu")
    running = await start_agent(write_profile(tmp_path / "agent", """
        [storage]

        [query]
        models = ["study"]
        operations = ["find"]
        relational = false
        """, agent_extra='dimse_timeout = "30s"'))
    port = str(running.port)
    files = make_archive(tmp_path / "files")
    rc, out = await run([storescu, "-aec", "AGENT", "127.0.0.1", port, *map(str, files)], 120)
    assert rc == 0, out
    net = ["-aec", "AGENT", "127.0.0.1", port]

    rc, out = await pynetdicom_app("findscu", "-S", "-w", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=",
                                   *net, cwd=tmp_path / "study-root")
    assert rc == 0, out
    assert len(uids(tmp_path / "study-root", "StudyInstanceUID", "rsp*.dcm")) == 4
    # The association is accepted with every context rejected (PS3.8 allows it); pynetdicom's programs
    # then fail with a traceback and wait for their network timeout (-tn) before they abort.
    rc, out = await pynetdicom_app("findscu", "-P", "-w", "-tn", "2", "-k", "QueryRetrieveLevel=PATIENT",
                                   "-k", "PatientID=", *net, cwd=tmp_path / "patient-root")
    assert uids(tmp_path / "patient-root", "PatientID", "rsp*.dcm") == []
    assert "No presentation context for 'Patient Root" in out, out  # no C-FIND could be sent at all
    for app in ("movescu", "getscu"):
        rc, out = await pynetdicom_app(app, "-S", "-tn", "2", "-k", "QueryRetrieveLevel=STUDY",
                                       "-k", f"StudyInstanceUID={ROOT}.1", *net, cwd=tmp_path / app)
        assert "SCP Result" not in out and rc != 0, (app, out)
    rc, out = await pynetdicom_app("findscu", "-S", "-w", "--relational-query", "-k", "QueryRetrieveLevel=IMAGE",
                                   "-k", "PatientName=DOE*", "-k", "SOPInstanceUID=", *net, cwd=tmp_path / "relational")
    assert "Find SCP Result: 0xA900 (Failure)" in out, out
    assert uids(tmp_path / "relational", "SOPInstanceUID", "rsp*.dcm") == []
