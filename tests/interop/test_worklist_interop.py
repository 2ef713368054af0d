"""The agent's MWL SCP and DCMTK wlmscpfs serve the same .wl items: DCMTK findscu gets the same answers
from both; the agent's MWL SCU fills its cache from wlmscpfs and the CLI prints the names intact."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pydicom
import pytest
import trio

from tests.conftest import free_port, require_tool, wait_listening, write_profile
from tests.interop.worklist_items import (
    ISO_IR_100_NAME,
    ISO_IR_192_NAME,
    make_wlmscpfs_db,
    standard_items,
)

pytestmark = [pytest.mark.trio, pytest.mark.interop]

ENV = {**os.environ, "TCP_NODELAY": "1"}


async def findscu(port: int, aec: str, keys: list[str], out: Path) -> tuple[list[pydicom.Dataset], str]:
    """DCMTK findscu -W; the responses (decoded by pydicom from the extracted files) and its log."""
    require_tool("findscu")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    args = ["findscu", "-v", "-W", "-X", "-od", str(out), "-aec", aec, "-aet", "CONSOLE", "127.0.0.1", str(port)]
    for k in keys:
        args += ["-k", k]
    result = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False, env=ENV)
    log = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0, log
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))], log


async def start_wlmscpfs(nursery: trio.Nursery, dbdir: Path) -> int:
    exe = require_tool("wlmscpfs")
    port = free_port()
    nursery.start_soon(partial(
        trio.run_process, [exe, "-dfp", str(dbdir), "-csk", str(port)], check=False, env=ENV,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    await wait_listening(port)
    return port  # killed when the test's nursery is cancelled


def answers(responses: list[pydicom.Dataset]) -> set[tuple[str, str]]:
    return {(str(r.get("AccessionNumber", "")), str(r.get("PatientName", ""))) for r in responses}


QUERIES = {
    "modality CT": ["ScheduledProcedureStepSequence[0].Modality=CT"],
    "date range": ["ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20260115-20260116"],
    "open range from": ["ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20260117-"],
    "open range to": ["ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=-20260115"],
    "date + modality": ["ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20260115-20260120",
                        "ScheduledProcedureStepSequence[0].Modality=CT"],
    "station": ["ScheduledProcedureStepSequence[0].ScheduledStationAETitle=AGENT"],
    "name wildcard": ["PatientName=DOE*"],
    "name ? wildcard": ["PatientName=M?LLER*"],
    "name W*": ["PatientName=W*"],
    "patient id": ["PatientID=PACC004"],
    "everything": [],
}


async def test_agent_and_wlmscpfs_agree(tmp_path: Path, nursery: trio.Nursery, start_agent) -> None:
    items = standard_items()
    folder = make_wlmscpfs_db(tmp_path / "wldb", "RIS", items)
    wl_port = await start_wlmscpfs(nursery, tmp_path / "wldb")
    profile = write_profile(tmp_path / "agent", f'[worklist]\nfolder = "{folder}"\n')
    agent = await start_agent(profile)
    base = ["AccessionNumber", "PatientName", "PatientID", "ScheduledProcedureStepSequence[0].Modality"]
    for label, keys in QUERIES.items():
        ours, _ = await findscu(agent.port, "AGENT", base + keys, tmp_path / "a")
        theirs, _ = await findscu(wl_port, "RIS", base + keys, tmp_path / "b")
        assert answers(ours) == answers(theirs), label
        assert ours, label  # every query above matches something
    # the names survive in both character sets, with the item's own Specific Character Set
    everything, _ = await findscu(agent.port, "AGENT", base, tmp_path / "a")
    by_accession = {str(r.AccessionNumber): r for r in everything}
    assert str(by_accession["ACC001"].PatientName) == ISO_IR_100_NAME
    assert by_accession["ACC001"].SpecificCharacterSet == "ISO_IR 100"
    assert str(by_accession["ACC002"].PatientName) == ISO_IR_192_NAME
    assert by_accession["ACC002"].SpecificCharacterSet == "ISO_IR 192"


async def test_agent_matches_non_ascii_keys(tmp_path: Path, start_agent) -> None:
    folder = make_wlmscpfs_db(tmp_path / "wldb", "RIS", standard_items())
    agent = await start_agent(write_profile(tmp_path / "agent", f'[worklist]\nfolder = "{folder}"\n'))
    hits, _ = await findscu(agent.port, "AGENT", ["SpecificCharacterSet=ISO_IR 192", "PatientName=Wałęsa*",
                                                  "AccessionNumber"], tmp_path / "a")
    assert answers(hits) == {("ACC002", ISO_IR_192_NAME)}
    hits, _ = await findscu(agent.port, "AGENT", ["SpecificCharacterSet=ISO_IR 192", "PatientName=*=山田*",
                                                  "AccessionNumber"], tmp_path / "a")
    assert answers(hits) == {("ACC002", ISO_IR_192_NAME)}
    hits, _ = await findscu(agent.port, "AGENT", ["SpecificCharacterSet=ISO_IR 192", "PatientName=MÜLLER^JÜRGEN",
                                                  "AccessionNumber"], tmp_path / "a")
    assert answers(hits) == {("ACC001", ISO_IR_100_NAME)}


async def test_agent_refuses_bad_identifiers_and_stays_usable(tmp_path: Path, start_agent) -> None:
    folder = make_wlmscpfs_db(tmp_path / "wldb", "RIS", standard_items())
    agent = await start_agent(write_profile(tmp_path / "agent", f'[worklist]\nfolder = "{folder}"\n'))
    _, log = await findscu(agent.port, "AGENT", [
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=2026-0115", "AccessionNumber"],
        tmp_path / "a")
    assert "DataSetDoesNotMatchSOPClass" in log  # DCMTK's name for A900
    _, log = await findscu(agent.port, "AGENT", ["SpecificCharacterSet=ISO_IR 999", "AccessionNumber"], tmp_path / "a")
    assert "UnableToProcess" in log, log  # C001
    hits, _ = await findscu(agent.port, "AGENT", ["AccessionNumber=ACC003"], tmp_path / "a")
    assert answers(hits) == {("ACC003", "")}


async def test_mwl_scu_fills_cache_from_wlmscpfs(tmp_path: Path, nursery: trio.Nursery, start_agent) -> None:
    make_wlmscpfs_db(tmp_path / "wldb", "RIS", standard_items())
    wl_port = await start_wlmscpfs(nursery, tmp_path / "wldb")
    profile = write_profile(tmp_path / "agent", f"""
        [peers.ris]
        ae_title = "RIS"
        host = "127.0.0.1"
        port = {wl_port}

        [worklist]
        source = "ris"
        station_ae = "AGENT"
        date = "any"
        refresh = "1h"
        """)
    agent = await start_agent(profile)
    service = agent.agent.workflow.worklist
    with trio.fail_after(15):
        while (await service.fetch_state()).fetched_at is None:
            await trio.sleep(0.05)
    # the agent's own MWL SCP serves the cache: the items scheduled for station AGENT only
    served, _ = await findscu(agent.port, "AGENT", ["AccessionNumber", "PatientName"], tmp_path / "a")
    assert {a for a, _n in answers(served)} == {"ACC001", "ACC002", "ACC003", "ACC004"}
    result = await trio.run_process(
        [sys.executable, "-m", "agent", "worklist", "--profile", str(profile.source)],
        capture_stdout=True, capture_stderr=True, check=False)
    out = result.stdout.decode("utf-8")
    assert result.returncode == 0, result.stderr
    first, *rows = out.splitlines()
    assert "fresh" in first and "ris" in first
    assert ISO_IR_100_NAME in out and ISO_IR_192_NAME in out and "DOE^JANE" in out
    assert "MUSTERMANN" not in out  # scheduled for another station
