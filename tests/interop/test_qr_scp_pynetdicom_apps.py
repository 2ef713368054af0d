"""pynetdicom's own command-line findscu, movescu and getscu (`python -m pynetdicom ...`) against the agent's
Q/R SCP (issue 12: "pynetdicom's findscu/movescu/getscu against the agent"; the other tests drive
pynetdicom's AE from Python, these are the programs a user runs).

- findscu, study root and patient root, with a wildcard, a date range and a UID list; with
  `--relational-query`, an IMAGE-level query by patient name alone is answered (relational, PS3.4 C.5.1.1).
- movescu with its own Storage SCP (`--store --store-port --store-aet`) as the destination receives
  the series.
- getscu writes the study's instances into its output folder; Patient Root getscu (PATIENT level) and
  movescu (STUDY level) too.

What `[query]` turns off, seen by the same programs: tests/interop/test_qr_scp_profile_off.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio
from pydicom import dcmread

from tests.conftest import free_port, require_pynetdicom, require_tool, write_profile
from tests.interop.qr_peers import ROOT, make_archive
from tests.interop.storage_helpers import PEER_ENV, index_count, run

pytestmark = pytest.mark.interop


async def pynetdicom_app(app: str, *args: str, cwd: Path) -> tuple[int, str]:
    cwd.mkdir(parents=True, exist_ok=True)
    with trio.fail_after(120):
        proc = await trio.run_process([sys.executable, "-m", "pynetdicom", app, *args], cwd=cwd, check=False,
                                      capture_stdout=True, capture_stderr=True, env=PEER_ENV)
    return proc.returncode, proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def uids(directory: Path, keyword: str, pattern: str = "*") -> list[str]:
    return sorted(str(dcmread(p, force=True).get(keyword, "")) for p in directory.glob(pattern) if p.is_file())


async def test_pynetdicom_findscu_movescu_getscu(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    require_pynetdicom()
    storescu = require_tool("storescu")
    store_port = free_port()
    running = await start_agent(write_profile(tmp_path / "agent", f"""
        [peers.movescu]
        ae_title = "MOVESCU"
        host = "127.0.0.1"
        port = {store_port}

        [storage]

        [query]
        """, agent_extra='dimse_timeout = "30s"'))
    port = str(running.port)
    files = make_archive(tmp_path / "files")
    rc, out = await run([storescu, "-aec", "AGENT", "127.0.0.1", port, *map(str, files)], 120)
    assert rc == 0, out
    assert index_count(running.data_dir) == len(files)
    net = ["-aec", "AGENT", "127.0.0.1", port]

    # findscu -w writes each match as rsp000001.dcm, ... in its working folder.
    cases = [
        ("-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID=", "PatientName=DOE*"], "StudyInstanceUID",
         [f"{ROOT}.4"]),
        ("-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID=", "StudyDate=20240101-20240611"],
         "StudyInstanceUID", [f"{ROOT}.2", f"{ROOT}.3"]),
        ("-S", ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={ROOT}.4", "SeriesInstanceUID=", "Modality=CT"],
         "SeriesInstanceUID", [f"{ROOT}.4.1", f"{ROOT}.4.2"]),
        ("-P", ["QueryRetrieveLevel=PATIENT", "PatientID=", "PatientName="], "PatientID", ["QR-P1", "QR-P2", "QR-P3"]),
        ("-P", ["QueryRetrieveLevel=STUDY", "PatientID=QR-P1", f"StudyInstanceUID={ROOT}.1\\{ROOT}.4"],
         "StudyInstanceUID", [f"{ROOT}.1"]),
    ]
    for n, (root, keys, unique, want) in enumerate(cases):
        rc, out = await pynetdicom_app("findscu", root, "-w", *[a for k in keys for a in ("-k", k)], *net,
                                       cwd=tmp_path / f"find{n}")
        assert rc == 0, out
        assert uids(tmp_path / f"find{n}", unique, "rsp*.dcm") == want, (keys, out)

    image_by_name = ["-k", "QueryRetrieveLevel=IMAGE", "-k", "PatientName=DOE*", "-k", "SOPInstanceUID="]
    rc, out = await pynetdicom_app("findscu", "-S", "-w", *image_by_name, *net, cwd=tmp_path / "hierarchical")
    assert "Find SCP Result: 0xA900 (Failure)" in out, out  # hierarchical: no upper unique keys
    assert uids(tmp_path / "hierarchical", "SOPInstanceUID", "rsp*.dcm") == []
    rc, out = await pynetdicom_app("findscu", "-S", "-w", "--relational-query", *image_by_name, *net,
                                   cwd=tmp_path / "relational")
    assert rc == 0, out
    assert uids(tmp_path / "relational", "SOPInstanceUID", "rsp*.dcm") == [
        f"{ROOT}.4.1.1", f"{ROOT}.4.1.2", f"{ROOT}.4.2.1"]

    moved = tmp_path / "moved"
    rc, out = await pynetdicom_app(
        "movescu", "-S", "--store", "--store-port", str(store_port), "--store-aet", "MOVESCU", "-aem", "MOVESCU",
        "-od", str(moved), "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={ROOT}.4",
        "-k", f"SeriesInstanceUID={ROOT}.4.1", *net, cwd=tmp_path / "move")
    assert rc == 0, out
    assert uids(moved, "SOPInstanceUID") == [f"{ROOT}.4.1.1", f"{ROOT}.4.1.2"], out

    got = tmp_path / "got"
    rc, out = await pynetdicom_app("getscu", "-S", "-od", str(got), "-k", "QueryRetrieveLevel=STUDY",
                                   "-k", f"StudyInstanceUID={ROOT}.1", *net, cwd=tmp_path / "get")
    assert rc == 0, out
    assert uids(got, "SOPInstanceUID") == [f"{ROOT}.1.1.1", f"{ROOT}.1.1.2"], out
    assert os.listdir(tmp_path / "get") == []  # -od: nothing written elsewhere

    # Patient Root: a patient's whole history by C-GET at the PATIENT level, one study by C-MOVE.
    got = tmp_path / "got-patient"
    rc, out = await pynetdicom_app("getscu", "-P", "-od", str(got), "-k", "QueryRetrieveLevel=PATIENT",
                                   "-k", "PatientID=QR-P1", *net, cwd=tmp_path / "get-patient")
    assert rc == 0, out
    assert uids(got, "SOPInstanceUID") == [f"{ROOT}.1.1.1", f"{ROOT}.1.1.2", f"{ROOT}.2.1.1"], out
    moved = tmp_path / "moved-patient"
    rc, out = await pynetdicom_app(
        "movescu", "-P", "--store", "--store-port", str(store_port), "--store-aet", "MOVESCU", "-aem", "MOVESCU",
        "-od", str(moved), "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=QR-P3",
        "-k", f"StudyInstanceUID={ROOT}.4", *net, cwd=tmp_path / "move-patient")
    assert rc == 0, out
    assert uids(moved, "SOPInstanceUID") == [f"{ROOT}.4.1.1", f"{ROOT}.4.1.2", f"{ROOT}.4.2.1"], out

