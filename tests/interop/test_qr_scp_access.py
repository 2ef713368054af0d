"""Who may query and retrieve, per calling AE (`[[security.access]]`, service "query"), as DCMTK's findscu,
movescu and getscu see it against the agent's Q/R SCP (issue 12: access control per profile).

- VIEWER may query: findscu finds the studies, movescu --port pulls a series to itself, getscu gets
  one on its own association (the storage contexts getscu offers with the SCP role belong to "query":
  VIEWER may not store, yet its C-GET sub-operations are performed).
- SENDER may store but not query: its Q/R contexts are rejected (user rejection), nothing comes back.
- STRANGER has no rule: the association is rejected, calling AE title not recognized.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from tests.conftest import free_port, require_tool, write_profile
from tests.interop.qr_peers import ROOT, make_archive
from tests.interop.storage_helpers import index_count, run

pytestmark = pytest.mark.interop


def _received(directory: Path) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in directory.rglob("*") if p.is_file()}


async def test_query_and_retrieve_allowed_per_calling_ae(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    findscu, movescu, getscu = require_tool("findscu"), require_tool("movescu"), require_tool("getscu")
    storescu = require_tool("storescu")
    viewer_port = free_port()
    running = await start_agent(write_profile(tmp_path / "agent", f"""
        [peers.viewer]
        ae_title = "VIEWER"
        host = "127.0.0.1"
        port = {viewer_port}

        [storage]

        [query]

        [[security.access]]
        calling_ae = "SENDER"
        services = ["verification", "store"]

        [[security.access]]
        calling_ae = "VIEWER"
        services = ["verification", "query"]
        """, agent_extra='dimse_timeout = "30s"'))
    port = str(running.port)
    files = make_archive(tmp_path / "files")
    rc, out = await run([storescu, "-aet", "SENDER", "-aec", "AGENT", "127.0.0.1", port, *map(str, files)], 120)
    assert rc == 0, out
    assert index_count(running.data_dir) == len(files)

    # FIND: VIEWER gets the four studies; SENDER's FIND context is rejected; STRANGER is not let in.
    study_keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"]
    out_dir = tmp_path / "find-viewer"
    out_dir.mkdir()
    rc, out = await run([findscu, "-S", "-aet", "VIEWER", "-aec", "AGENT", "-X", "-od", str(out_dir), *study_keys,
                         "127.0.0.1", port], 60)
    assert rc == 0, out
    assert sorted(str(dcmread(p).StudyInstanceUID) for p in out_dir.glob("rsp*.dcm")) == [
        f"{ROOT}.{n}" for n in (1, 2, 3, 4)]
    out_dir = tmp_path / "find-sender"
    out_dir.mkdir()
    rc, out = await run([findscu, "-S", "-d", "-aet", "SENDER", "-aec", "AGENT", "-X", "-od", str(out_dir),
                         *study_keys, "127.0.0.1", port], 60)
    assert rc != 0 and "(User Rejection)" in out, out
    assert list(out_dir.iterdir()) == []
    rc, out = await run([findscu, "-S", "-aet", "STRANGER", "-aec", "AGENT", *study_keys, "127.0.0.1", port], 60)
    assert rc != 0 and "Calling AE Title Not Recognized" in out, out

    # MOVE: to VIEWER's own port (movescu --port); SENDER may not ask for it.
    series = ["-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={ROOT}.4",
              "-k", f"SeriesInstanceUID={ROOT}.4.1"]
    for caller in ("SENDER", "VIEWER"):
        out_dir = tmp_path / f"move-{caller}"
        out_dir.mkdir()
        rc, out = await run([movescu, "-S", "-d", "-aet", caller, "-aec", "AGENT", "-aem", "VIEWER", "--port",
                             str(viewer_port), "-od", str(out_dir), *series, "127.0.0.1", port], 120)
        if caller == "SENDER":
            assert rc != 0 and "(User Rejection)" in out, out
            assert _received(out_dir) == set()
        else:
            assert rc == 0, out
            assert _received(out_dir) == {f"{ROOT}.4.1.1", f"{ROOT}.4.1.2"}

    # GET: VIEWER's storage contexts (SCP role) are accepted for its C-GET though it may not store.
    for caller in ("SENDER", "VIEWER"):
        out_dir = tmp_path / f"get-{caller}"
        out_dir.mkdir()
        rc, out = await run([getscu, "-S", "-d", "-aet", caller, "-aec", "AGENT", "-od", str(out_dir),
                             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ROOT}.1",
                             "127.0.0.1", port], 120)
        if caller == "SENDER":
            assert rc != 0 and "(User Rejection)" in out, out
            assert _received(out_dir) == set()
        else:
            assert rc == 0, out
            assert _received(out_dir) == {f"{ROOT}.1.1.1", f"{ROOT}.1.1.2"}
    assert index_count(running.data_dir) == len(files)  # nothing a retrieve did stored anything here
