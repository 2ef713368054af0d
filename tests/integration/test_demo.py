"""`dicom-agent demo` as a user runs it: the whole loop in one process, checked from what it leaves behind
(the PACS's files, the printer's films, the RIS's MPPS instances) and from what it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
from PIL import Image

from agent.demo import shipped_modality_profile

ROOT = Path(__file__).resolve().parents[2]
DICOM_AGENT = [sys.executable, "-m", "agent"]


def demo(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DICOM_AGENT, "demo", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_demo_performs_every_procedure_end_to_end(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    # A generous deadline: CI has two loaded cores, and the demo itself gives up after --timeout.
    result = demo("--procedures", "2", "--images", "2", "--dir", str(folder), "--timeout", "300")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "worklist: 2 item(s) fetched from the RIS" in out
    for acc in ("DEMO0001", "DEMO0002"):
        assert f"procedure {acc} " in out and f"image 2/2 committed by the PACS" in out
    assert "every step completed" in out
    assert "procedures performed:    2/2" in out
    assert "instances committed:     4/4" in out
    assert "films printed:           2/2" in out

    # The PACS holds every image with the patient, accession and study of the item it was performed for.
    items = {}
    for name, data in _rows(folder / "hospital" / "agent.db", "SELECT name, data FROM worklist_local"):
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(bytes(data)), force=True)
        items[str(ds.AccessionNumber)] = ds
    assert sorted(items) == ["DEMO0001", "DEMO0002"]
    stored = [pydicom.dcmread(p) for p in (folder / "hospital" / "objects").rglob("*.dcm")]
    assert len(stored) == 4
    assert len({ds.SOPInstanceUID for ds in stored}) == 4
    for ds in stored:
        item = items[str(ds.AccessionNumber)]
        assert (ds.PatientID, str(ds.PatientName), ds.StudyInstanceUID) == (
            item.PatientID, str(item.PatientName), item.StudyInstanceUID)
    assert sorted(str(ds.AccessionNumber) for ds in stored) == ["DEMO0001", "DEMO0001", "DEMO0002", "DEMO0002"]

    # One film per procedure, a real image file.
    films = sorted((folder / "hospital" / "films").glob("*.png"))
    assert len(films) == 2
    for film in films:
        with Image.open(film) as im:
            assert im.width > 100 and im.height > 100

    # The RIS (asked with the CLI, as a user would) holds both steps COMPLETED.
    listed = subprocess.run([*DICOM_AGENT, "mpps", "list", "--json", "--profile", str(folder / "hospital.toml")],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    steps = json.loads(listed.stdout)
    assert [s["status"] for s in steps] == ["COMPLETED", "COMPLETED"]
    # ... and the modality's procedures, with the command the summary names.
    assert f"dicom-agent procedures list --profile {folder / 'modality.toml'}" in out
    listed = subprocess.run([*DICOM_AGENT, "procedures", "list", "--json", "--profile", str(folder / "modality.toml")],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    procedures = json.loads(listed.stdout)
    assert sorted((p["accession_number"], p["state"]) for p in procedures) == [
        ("DEMO0001", "completed"), ("DEMO0002", "completed")]


def test_demo_that_cannot_finish_in_time_says_what_is_missing(tmp_path: Path) -> None:
    result = demo("--procedures", "1", "--images", "1", "--dir", str(tmp_path / "d"), "--timeout", "0.01",
                  timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NOT COMPLETE" in result.stdout
    assert "procedure DEMO0001:" in result.stdout  # the summary names what did not complete
    assert "it did not complete within 0.01 s" in result.stderr


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_text("keep me")
    result = demo("--dir", str(tmp_path), timeout=120)
    assert result.returncode == 78
    assert "was not made by `dicom-agent demo`" in result.stderr
    assert mine.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_shipped_demo_profile_is_what_the_demo_writes() -> None:
    assert (ROOT / "profiles" / "demo.toml").read_text() == shipped_modality_profile()


def _rows(db: Path, sql: str) -> list[tuple]:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_demo_films_hold_every_image_at_its_own_size(tmp_path: Path) -> None:
    # Ten images make a 4x3 film: the printer's resolution must give each box room for a 256x256 image,
    # or the Print SCP demagnifies it and warns (B604) once per image on the user's terminal.
    result = demo("--procedures", "1", "--images", "10", "--dir", str(tmp_path / "d"), "--timeout", "300")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demagnified" not in result.stderr
    assert "films printed:           1/1" in result.stdout
