"""One MWL answer per Scheduled Procedure Step when the same step reaches the agent from two sources
(the RIS cache and the worklist folder), asked over the wire by DCMTK findscu -W. The freshest copy
wins: here the RIS answered after the folder file was written, so the RIS's version is served.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio
from pydicom import dcmread

from agent.services.dataset import EXPLICIT_VR_LE, encode
from agent.store.db import open_database
from agent.store.worklist import WorklistStore
from tests.conftest import require_tool, write_profile
from tests.interop.worklist_items import make_item, write_wl

pytestmark = pytest.mark.interop


async def findscu(tool: str, port: int, out: Path) -> list:
    out.mkdir(parents=True, exist_ok=True)
    args = [tool, "-W", "-aec", "AGENT", "-aet", "CONSOLE", "-k", "PatientName", "-k", "AccessionNumber",
            "-k", "StudyInstanceUID", "-k", "RequestedProcedureID",
            "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
            "-X", "-od", str(out), "127.0.0.1", str(port)]
    done = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


async def test_a_step_from_the_ris_cache_and_the_folder_is_answered_once(tmp_path: Path, start_agent) -> None:
    tool = require_tool("findscu")
    folder = tmp_path / "wl"
    study = "1.2.826.0.1.3680043.8.498.7001"
    both_folder = make_item("ACC1", "FOLDER^OLD", study_uid=study, sps_id="SPS1")
    both_ris = make_item("ACC1", "RIS^FRESH", study_uid=study, sps_id="SPS1")
    other_step = make_item("ACC1", "FOLDER^STEP2", study_uid=study, sps_id="SPS2")  # same request, next step
    only_folder = make_item("ACC2", "FOLDER^ONLY")
    for name, item in (("a.wl", both_folder), ("b.wl", other_step), ("c.wl", only_folder)):
        path = write_wl(folder / name, item)
        os.utime(path, (time.time() - 3600, time.time() - 3600))  # written an hour before the RIS answered
    profile = write_profile(tmp_path / "agent", f'[worklist]\nfolder = "{folder}"\n')
    # The RIS cache as a refresh leaves it (the agent's MWL SCU fills the same table).
    db = open_database(profile.agent.data_dir / "agent.db")
    WorklistStore(db).replace_cache("ris", [encode(both_ris, EXPLICIT_VR_LE)])
    db.close()
    agent = await start_agent(profile)

    found = await findscu(tool, agent.port, tmp_path / "rsp")
    steps = sorted((str(d.StudyInstanceUID), str(d.RequestedProcedureID),
                    str(d.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID), str(d.PatientName))
                   for d in found)
    assert len(found) == 3, steps
    assert (study, "RPACC1", "SPS1", "RIS^FRESH") in steps  # the fresher copy, once
    assert (study, "RPACC1", "SPS2", "FOLDER^STEP2") in steps  # another step of the same request stays
    assert sum(1 for s in steps if s[3] == "FOLDER^ONLY") == 1
