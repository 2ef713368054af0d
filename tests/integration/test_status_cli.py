"""`dicom-agent status` beyond the transfer (tests/interop/test_status_interop.py has that): every
stored part of the document from a database a modality-and-printer agent left behind (worklist
freshness, MPPS and procedures in progress, printer, queue with its next retry), in JSON and text;
a data folder too deep for an AF_UNIX address; a second agent on the same data folder, which must not
take the first one's socket; refusals.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from agent.status import StoredStatus
from agent.store.db import DB_FILENAME, open_database
from agent.store.mpps import PpsStatus
from agent.store.procedures import ProcedureState
from tests.conftest import write_profile

FULL = """
[peers.ris]
ae_title = "RIS"
host = "127.0.0.1"
port = 1
[peers.pacs]
ae_title = "PACS"
host = "127.0.0.1"
port = 1
[worklist]
source = "ris"
[mpps]
send_to = ["ris"]
[storage]
[device]
driver = "sim"
send_to = ["pacs"]
[device.options]
procedures = 1
[print]
serve = true
driver = "file"
"""


async def cli(*args: str) -> tuple[int, str, str]:
    with trio.fail_after(120):
        done = await trio.run_process([sys.executable, "-m", "agent", *args], capture_stdout=True,
                                      capture_stderr=True, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def status_json(profile: Any) -> dict[str, Any]:
    rc, out, err = await cli("status", "--profile", str(profile.source), "--json")
    assert rc == 0, err
    return json.loads(out)


async def test_the_stored_half_from_the_database(tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "m", FULL)
    db = open_database(profile.agent.data_dir / DB_FILENAME)
    stored = StoredStatus(profile, db)  # makes the tables an agent with these sections makes
    now = time.time()
    stored.worklist.replace_cache("ris", [b"x", b"y"], at=now - 120)
    stored.worklist.record_failure("ris", "connection refused", at=now - 10)
    stored.mpps.create("1.2.3.1", "MODALITY_A", PpsStatus.IN_PROGRESS, b"")
    stored.mpps.create("1.2.3.2", "MODALITY_A", PpsStatus.COMPLETED, b"")
    stored.procedures.insert(procedure_key="P1", state=ProcedureState.ACQUIRING, scheduled=False, item=None,
                             patient={}, accession_number="ACC1", study_instance_uid=None,
                             series_instance_uid=None, mpps_uid=None, pps_id="1", started_at=now - 60)
    stored.procedures.insert(procedure_key="P0", state=ProcedureState.COMPLETED, scheduled=False, item=None,
                             patient={}, study_instance_uid=None, series_instance_uid=None, mpps_uid=None,
                             pps_id="0", started_at=now - 600)
    stored.print_jobs.record_printer_status("FAILURE", "SUPPLY EMPTY")
    job = stored.queue.enqueue("store", "pacs", {"uid": "1.2.3.9"})
    db.execute("UPDATE queue_jobs SET next_attempt_at = ? WHERE id = ?", (now + 300, job))  # backing off
    db.close()

    doc = await status_json(profile)
    assert doc["source"] == "database" and doc["agent"] is None and doc["device"] is None
    w = doc["worklist"]
    assert (w["source"], w["items"], w["last_error"]) == ("ris", 2, "connection refused")
    assert 115 < w["age"] < 300 and w["last_attempt_at"] > w["last_success_at"]
    assert [m["uid"] for m in doc["mpps"]["in_progress"]] == ["1.2.3.1"]
    assert [(p["procedure_key"], p["state"], p["accession_number"]) for p in doc["procedures"]["open"]] == [
        ("P1", "acquiring", "ACC1")]
    assert doc["procedures"]["counts"] == {"acquiring": 1, "completed": 1}
    assert (doc["printer"]["status"], doc["printer"]["info"]) == ("FAILURE", "SUPPLY EMPTY")
    pacs = doc["queue"]["destinations"]["pacs"]
    assert pacs["pending"] == 1 and 250 < pacs["next_attempt_at"] - time.time() <= 300
    assert doc["queue"]["depth"] == 1

    rc, text, err = await cli("status", "--profile", str(profile.source))
    assert rc == 0 and err == "", err
    assert text.startswith("agent not running (no control socket at ")
    assert re.search(r"worklist from ris: last successful query 2\.\dm ago \(2 items\); "
                     r"last attempt failed: connection refused", text), text
    assert "MPPS in progress: 1" in text and "P1 acquiring accession ACC1" in text
    assert "printer: FAILURE (SUPPLY EMPTY)" in text
    assert re.search(r"\npacs +1 +0 +0 +0 .* in [45]\.\dm ", text), text  # the next try in about 5 minutes


async def test_deep_data_folder_and_a_second_agent(tmp_path: Path, start_agent, caplog: pytest.LogCaptureFixture) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)  # the socket path is far beyond AF_UNIX's 107 bytes
    profile = write_profile(deep, "[storage]\n")
    control = profile.agent.data_dir / "run" / "control.sock"
    assert len(str(control)) > 108
    first = await start_agent(profile)
    doc = await status_json(profile)
    assert doc["source"] == "agent" and doc["agent"]["ports"] == [first.port]
    # A second agent on the same data folder runs, without a socket: the first keeps answering.
    with caplog.at_level(logging.ERROR, logger="agent.control"):
        second = await start_agent(profile)
    assert any("another agent answers there" in r.getMessage() for r in caplog.records)
    assert second.port != first.port
    assert (await status_json(profile))["agent"]["ports"] == [first.port]
    rc, out, err = await cli("status", "--profile", str(profile.source), "--interval", "0")
    assert rc == 2 and "seconds from 0.1 to 3600" in err


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to act as another user")
async def test_a_user_who_cannot_open_the_database_is_told_why() -> None:
    # Outside pytest's folders (mode 0700): the other user must reach the profile.
    with tempfile.TemporaryDirectory(prefix="status-") as scratch:
        os.chmod(scratch, 0o755)
        profile = write_profile(Path(scratch), "[storage]\n")
        # Readable by the other user whatever this process's umask (an in-process `main()` sets 0027):
        # only the database may be what it cannot open.
        os.chmod(profile.source, 0o644)
        open_database(profile.agent.data_dir / DB_FILENAME).close()  # root's, 0640 in a 0750 folder
        with trio.fail_after(120):
            done = await trio.run_process(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "agent",
                 "status", "--profile", str(profile.source)], capture_stdout=True, capture_stderr=True, check=False)
    err = done.stderr.decode()
    assert done.returncode == 1 and "cannot be opened as this user" in err and "damaged" not in err, err


async def test_a_failing_status_read_is_answered_and_the_socket_serves_on(
        tmp_path: Path, start_agent, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = write_profile(tmp_path / "a", "[storage]\n")
    running = await start_agent(profile)
    calls = []
    real = StoredStatus.read

    def flaky(self: StoredStatus) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return real(self)

    monkeypatch.setattr(StoredStatus, "read", flaky)
    rc, out, err = await cli("status", "--profile", str(profile.source), "--json")
    # The agent answered with its error; status says so and reads the database itself instead.
    assert rc == 0 and "status failed: database is locked" in err, err
    assert json.loads(out)["source"] == "database"
    doc = await status_json(profile)
    assert doc["source"] == "agent" and doc["agent"]["ports"] == [running.port]
