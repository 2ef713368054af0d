"""`dicom-agent find|move|get` against DCMTK's dcmqrscp, filled by storescu with a known archive
(tests/interop/qr_peers.py): one dcmqrscp for the module, many queries against it.

- find: study and patient root, every level, wildcards, a date range, a UID list, ISO_IR 100 and
  ISO_IR 192 names in the answers (decoded intact in the table and in the JSON); the answers are the archive's.
- get: a study lands in the profile's local store (index rows and files, pixel data equal); move to
  ourselves does the same through a temporary listener; move to an AE dcmqrscp does not know is its
  A801, exit 1; C-GET sub-operations of a class we did not propose are not ours to store.
- Bad input: a level the root has not, an unknown key, an unknown peer: exit 2 before any association;
  a closed port: exit 69.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from agent.cli import main
from tests.conftest import free_port, require_tool, write_profile
from tests.interop.qr_peers import POLISH, ROOT, STUDIES, all_images, dcmqrscp, make_archive

pytestmark = pytest.mark.interop


@dataclass
class Archive:
    port: int
    agent_port: int
    files: list[Path]
    work: Path

    def profile(self, name: str) -> str:
        """A fresh agent profile (its own data_dir) whose peer `pacs` is this dcmqrscp."""
        p = write_profile(self.work / name, f"""
            [peers.pacs]
            ae_title = "QRSCP"
            host = "127.0.0.1"
            port = {self.port}
            """, port=self.agent_port)
        return p.source


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    for tool in ("dcmqrscp", "storescu"):
        require_tool(tool)
    work = tmp_path_factory.mktemp("dcmqrscp")
    files = make_archive(work / "files")
    agent_port = free_port()
    with dcmqrscp(work / "qr", files, destinations=[("AGENT", agent_port)]) as port:
        yield Archive(port, agent_port, files, work)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def find_json(capsys: pytest.CaptureFixture[str], profile: str, *args: str) -> list[pydicom.Dataset]:
    code, out, err = run(capsys, "find", "pacs", "--profile", profile, "--json", *args)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["status"] == "0000"
    return [pydicom.Dataset.from_json(m) for m in answer["matches"]]


def stored(profile_source: str) -> dict[str, sqlite3.Row]:
    db = Path(profile_source).parent / "data" / "agent.db"
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return {r["sop_instance_uid"]: r for r in conn.execute("SELECT * FROM instances")}


def test_find_every_level_and_match_kind(archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    profile = archive.profile("find")
    studies = find_json(capsys, profile)
    assert {str(m.StudyInstanceUID) for m in studies} == {s.study_uid for s in STUDIES}
    names = {str(m.PatientID): m.PatientName for m in studies}
    assert str(names["QR-P1"]) == "MÜLLER^JÜRGEN"
    assert str(names["QR-P2"]) == POLISH  # ISO_IR 192: all three component groups intact

    by_name = find_json(capsys, profile, "-k", "PatientName=DOE*")
    assert [str(m.PatientID) for m in by_name] == ["QR-P3"]
    by_date = find_json(capsys, profile, "-k", "StudyDate=20240101-20240611")
    assert {str(m.StudyInstanceUID) for m in by_date} == {f"{ROOT}.2", f"{ROOT}.3"}
    uid_list = find_json(capsys, profile, "-k", f"StudyInstanceUID={ROOT}.1\\{ROOT}.4")
    assert {str(m.StudyInstanceUID) for m in uid_list} == {f"{ROOT}.1", f"{ROOT}.4"}
    # (dcmqrscp 3.6.7 matches no wildcard against an ISO_IR 192 query, not even W*, while DCMTK's own
    # findscu asks it the same: a non-ASCII matching key is checked against pynetdicom instead.)

    series = find_json(capsys, profile, "--level", "series", "-k", f"StudyInstanceUID={ROOT}.4")
    assert sorted(str(m.SeriesInstanceUID) for m in series) == [f"{ROOT}.4.1", f"{ROOT}.4.2"]
    images = find_json(capsys, profile, "--level", "IMAGE", "-k", f"StudyInstanceUID={ROOT}.4",
                       "-k", f"SeriesInstanceUID={ROOT}.4.1")
    assert sorted(str(m.SOPInstanceUID) for m in images) == [f"{ROOT}.4.1.1", f"{ROOT}.4.1.2"]

    patients = find_json(capsys, profile, "--root", "patient")
    assert sorted(str(m.PatientID) for m in patients) == ["QR-P1", "QR-P2", "QR-P3"]
    p_studies = find_json(capsys, profile, "--root", "patient", "--level", "STUDY", "-k", "PatientID=QR-P1")
    assert {str(m.StudyInstanceUID) for m in p_studies} == {f"{ROOT}.1", f"{ROOT}.2"}

    # The table: one row per match, the names readable.
    code, out, err = run(capsys, "find", "pacs", "--profile", profile, "-k", "PatientName", "-k", "PatientID=QR-P2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["PatientName", "PatientID", "StudyInstanceUID"]
    assert POLISH in lines[1] and "QR-P2" in lines[1] and len(lines) == 2
    assert "1 match(es); 0x0000 Success" in err


def test_get_and_move_into_the_local_store(archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    profile = archive.profile("retrieve")
    code, out, err = run(capsys, "get", "pacs", "--profile", profile, "-k", f"StudyInstanceUID={ROOT}.1")
    assert code == 0, err
    assert "get: 2 completed, 0 with warnings, 0 failed" in out
    rows = stored(profile)
    assert set(rows) == {f"{ROOT}.1.1.1", f"{ROOT}.1.1.2"}
    assert rows[f"{ROOT}.1.1.1"]["patient_name"] == "MÜLLER^JÜRGEN"
    assert {r["calling_ae"] for r in rows.values()} == {"QRSCP"}  # the sender, though we called it
    sent = {p.stem: p for p in archive.files}
    for uid, row in rows.items():
        here = pydicom.dcmread(Path(profile).parent / "data" / row["path"])
        assert here.PixelData == pydicom.dcmread(sent[uid]).PixelData

    # C-MOVE to ourselves: a temporary Storage SCP on the profile's port receives into the same store.
    code, out, err = run(capsys, "move", "pacs", "--profile", profile, "-k", f"StudyInstanceUID={ROOT}.3")
    assert code == 0, err
    assert "move to AGENT: 1 completed" in out and "temporary Storage SCP" in err
    assert str(stored(profile)[f"{ROOT}.3.1.1"]["patient_name"]).startswith("Wałęsa^Łucja")

    # Series level through the patient root, both ways.
    code, out, err = run(capsys, "get", "pacs", "--profile", profile, "--root", "patient", "--level", "SERIES",
                         "-k", "PatientID=QR-P3", "-k", f"StudyInstanceUID={ROOT}.4", "-k", f"SeriesInstanceUID={ROOT}.4.1")
    assert code == 0, err
    assert {f"{ROOT}.4.1.1", f"{ROOT}.4.1.2"} <= set(stored(profile))
    assert f"{ROOT}.4.2.1" not in stored(profile)

    # Everything: the store then holds the whole archive, once.
    code, out, err = run(capsys, "move", "pacs", "--profile", profile, "-k", "StudyInstanceUID=" + "\\".join(s.study_uid for s in STUDIES))
    assert code == 0, err
    assert set(stored(profile)) == set(all_images())


def test_refusals_and_bad_input(archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    profile = archive.profile("bad")
    code, out, err = run(capsys, "move", "pacs", "--profile", profile, "--dest", "NOWHERE", "-k", f"StudyInstanceUID={ROOT}.1")
    assert code == 1
    assert "A801" in out and "0 completed" in out
    assert stored(profile) == {} if (Path(profile).parent / "data" / "agent.db").exists() else True

    for argv, expected in [
        (["find", "pacs", "--level", "PATIENT"], "--level PATIENT is not a level of the study root"),
        (["find", "pacs", "-k", "NoSuchKeyword=1"], "neither a DICOM keyword nor a tag"),
        (["find", "pacs", "-k", "7777,7777=1"], "not in the data dictionary"),
        (["find", "pacs", "-k", "PatientName.PatientID=1"], "not a sequence"),
        (["find", "nosuchpeer"], "'nosuchpeer' is not a peer of"),
        (["find", "pacs", "--tls"], "--tls goes with HOST PORT"),
        (["find", "pacs", "--aec", "X"], "--aec goes with HOST PORT"),
        (["get", "pacs"], "give what to retrieve with -k, e.g. -k StudyInstanceUID=UID"),
        (["move", "pacs", "--dest", "OTHER", "--port", "4242", "-k", "StudyInstanceUID=1.2"], "--port is for moves to ourselves"),
        (["get", "pacs", "--sop-class", "1.2.3", "-k", "StudyInstanceUID=1.2"], "not a storage SOP Class"),
    ]:
        code, out, err = run(capsys, *argv, "--profile", profile)
        assert code == 2, (argv, err)
        assert expected in err, (argv, err)

    with pytest.raises(SystemExit) as exit_info:
        main(["find", "pacs", "--profile", profile, "--cancel-after", "0"])
    assert exit_info.value.code == 2
    capsys.readouterr()

    code, out, err = run(capsys, "find", "127.0.0.1", str(free_port()), "--aec", "QRSCP", "--profile", profile)
    assert code == 69 and "cannot connect" in err
