"""`dicom-agent print` and `dicom-agent printer …` as a user runs them: exit statuses, messages, and what
ends up in the durable queue."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, write_profile
from tests.interop.print_helpers import gradient8, write_image


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def setup(tmp_path: Path):
    port = free_port()  # nothing listens there: the printer is down
    profile = write_profile(tmp_path / "agent", f"""
        [peers.film]
        ae_title = "PRINTER"
        host = "127.0.0.1"
        port = {port}

        [print]
        printer = "film"
        """)
    image = write_image(tmp_path / "a.dcm", gradient8())
    return profile, image


def _jobs(profile) -> list[dict]:
    if not (profile.agent.data_dir / "agent.db").exists():
        return []
    r = cli("queue", "list", "--profile", profile.source, "--json")
    assert r.returncode == 0, r.stderr
    return [j for j in json.loads(r.stdout) if j["kind"] == "print"]


@pytest.mark.parametrize(("option", "message"), [
    (["--format", "STANDARD\\2x2"], "unknown display format"),
    (["--format", "GRID\\2,2"], "unknown display format"),
    (["--film-size", "15INX15IN"], "unknown film size"),
    (["--orientation", "SIDEWAYS"], "unknown film orientation"),
    (["--copies", "0"], "number of copies must be 1-99"),
    (["--medium", "PARCHMENT"], "unknown medium type"),
    (["--border-density", "GREY"], "border density must be BLACK or WHITE"),
    (["--printer", "nosuch"], "is not a peer"),
])
def test_bad_options_exit_2_and_queue_nothing(setup, option: list[str], message: str) -> None:
    profile, image = setup
    r = cli("print", "--profile", profile.source, *option, str(image))
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert _jobs(profile) == []


def test_not_an_image_exits_65_and_queues_nothing(setup, tmp_path: Path) -> None:
    profile, _ = setup
    junk = tmp_path / "notes.txt"
    junk.write_text("not DICOM")
    r = cli("print", "--profile", profile.source, str(junk))
    assert r.returncode == 65, r.stdout + r.stderr
    assert "notes.txt" in r.stderr
    assert _jobs(profile) == []


def test_printer_down_exits_75_and_the_job_stays_queued(setup) -> None:
    profile, image = setup
    r = cli("print", "--profile", profile.source, "--format", "STANDARD\\1,1", str(image))
    assert r.returncode == 75, r.stdout + r.stderr
    assert "stays queued" in r.stderr and "connection refused" in r.stderr.lower()
    (job,) = _jobs(profile)
    assert job["state"] == "pending" and job["destination"] == "film" and job["attempts"] == 1
    spooled = profile.agent.data_dir / job["payload"]["spool"] / job["payload"]["files"][0]
    assert spooled.read_bytes() == image.read_bytes()


def test_queue_only_and_no_printer(setup, tmp_path: Path) -> None:
    profile, image = setup
    r = cli("print", "--profile", profile.source, "--queue-only", "--json", str(image))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "queued"
    (job,) = _jobs(profile)
    assert job["state"] == "pending" and job["attempts"] == 0
    bare = write_profile(tmp_path / "bare", "")
    r = cli("print", "--profile", bare.source, str(image))
    assert r.returncode == 2 and "no printer" in r.stderr


def test_printer_sim_status_jobs_retry(tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "host", """
        [print]
        serve = true
        driver = "sim"
        """)
    r = cli("printer", "sim", "--profile", profile.source, "--supply", "0", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["info"] == "SUPPLY EMPTY"
    r = cli("printer", "status", "--profile", profile.source, "--json")
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert (status["driver"], status["status"], status["info"]) == ("sim", "FAILURE", "SUPPLY EMPTY")
    r = cli("printer", "sim", "--profile", profile.source, "--supply", "50", "--jam")
    assert r.returncode == 0 and "FILM JAM" in r.stdout
    r = cli("printer", "sim", "--profile", profile.source, "--clear")
    assert r.returncode == 0 and "NORMAL" in r.stdout
    r = cli("printer", "status", "--profile", profile.source)
    assert r.returncode == 0 and "printer driver sim: NORMAL" in r.stdout
    r = cli("printer", "jobs", "--profile", profile.source)
    assert r.returncode == 0 and "no print jobs" in r.stdout
    r = cli("printer", "retry", "--profile", profile.source, "1.2.3")
    assert r.returncode == 1 and r.stderr


def test_printer_sim_needs_the_sim_driver(setup) -> None:
    profile, _ = setup
    r = cli("printer", "sim", "--profile", profile.source, "--jam")
    assert r.returncode == 2 and 'driver = "sim"' in r.stderr


def test_images_of_a_dropped_job_are_removed_by_a_later_print(setup) -> None:
    import os

    profile, image = setup
    r = cli("print", "--profile", profile.source, "--queue-only", str(image))
    assert r.returncode == 0, r.stderr
    (job,) = _jobs(profile)
    spool = profile.agent.data_dir / job["payload"]["spool"]
    assert spool.is_dir()
    r = cli("queue", "drop", "--profile", profile.source, str(job["id"]))
    assert r.returncode == 0, r.stderr
    r = cli("print", "--profile", profile.source, "--queue-only", str(image))
    assert spool.is_dir()  # young: it could belong to a request being queued right now
    old = spool.stat().st_mtime - 7200
    os.utime(spool, (old, old))
    r = cli("print", "--profile", profile.source, "--queue-only", str(image))
    assert r.returncode == 0, r.stderr
    assert not spool.exists()
    assert len(_jobs(profile)) == 2 and all((profile.agent.data_dir / j["payload"]["spool"]).is_dir() for j in _jobs(profile))


def test_printer_jobs_and_retry_of_a_failed_job(tmp_path: Path) -> None:
    from agent.store.db import DB_FILENAME, open_database
    from agent.store.printjobs import PrintJobStore

    profile = write_profile(tmp_path / "host", """
        [print]
        serve = true
        driver = "sim"
        """)
    profile.agent.data_dir.mkdir(parents=True)
    store = PrintJobStore(open_database(profile.agent.data_dir / DB_FILENAME))
    store.add("1.2.3.1", "films/1.npy", film_box_uid="1.2.3.2", session_uid="1.2.3.3", calling_ae="CT01", copies=2)
    store.mark_failed("1.2.3.1", "FILM JAM", "the printer jammed")
    store.add("1.2.3.4", "films/2.npy", film_box_uid="1.2.3.5", session_uid="1.2.3.3", calling_ae="CT01")
    r = cli("printer", "jobs", "--profile", profile.source, "--state", "failed")
    assert r.returncode == 0, r.stderr
    assert "1.2.3.1" in r.stdout and "FILM JAM / the printer jammed" in r.stdout and "1.2.3.4" not in r.stdout
    r = cli("printer", "retry", "--profile", profile.source, "1.2.3.4")
    assert r.returncode == 1 and "only a failed job" in r.stderr
    r = cli("printer", "retry", "--profile", profile.source, "1.2.3.1", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "pending"
    assert store.get("1.2.3.1").state == "pending"  # type: ignore[union-attr]
    r = cli("printer", "status", "--profile", profile.source, "--json")
    assert json.loads(r.stdout)["jobs"] == {"pending": 2}
