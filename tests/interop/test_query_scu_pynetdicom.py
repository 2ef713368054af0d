"""`dicom-agent find|move|get` and the Q/R SCU against pynetdicom's Q/R SCP (an in-test AE with FIND,
MOVE and GET handlers over the archive of tests/interop/qr_peers.py): one server for the module.

- find: the identifier the peer decodes is the one asked for, in ISO_IR 192 when a key is not ASCII
  (Polish and a Latin-1 name as wildcards both match); the answers' names come back intact.
- get and move (to ourselves, through a temporary listener) fill the local store.
- C-CANCEL: `find --cancel-after 1`, a C-GET cancelled after its first sub-operation, and Ctrl-C during
  `dicom-agent get` (exit 130) end with the peer's FE00 and the counts so far; the peer saw the cancel;
  the instance already stored stays.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import trio

from agent.cli import main
from tests.conftest import free_port, require_pynetdicom, write_profile
from tests.interop.qr_peers import POLISH, ROOT, STUDIES, PynetdicomQR, make_archive

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PynetdicomQR]:
    require_pynetdicom()
    work = tmp_path_factory.mktemp("pynqr")
    agent_port = free_port()
    qr = PynetdicomQR(make_archive(work / "files"), destinations={"AGENT": ("127.0.0.1", agent_port)})
    qr.agent_port = agent_port  # type: ignore[attr-defined]
    qr.work = work  # type: ignore[attr-defined]
    qr.start()
    yield qr
    qr.stop()


def profile_for(peer: PynetdicomQR, name: str) -> str:
    p = write_profile(peer.work / name, f"""  # type: ignore[attr-defined]
        [peers.pacs]
        ae_title = "PYNQR"
        host = "127.0.0.1"
        port = {peer.port}
        """, port=peer.agent_port)  # type: ignore[attr-defined]
    return p.source


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def stored(profile: str) -> dict[str, sqlite3.Row]:
    with sqlite3.connect(Path(profile).parent / "data" / "agent.db") as conn:
        conn.row_factory = sqlite3.Row
        return {r["sop_instance_uid"]: r for r in conn.execute("SELECT * FROM instances")}


def test_find_with_character_sets(peer: PynetdicomQR, capsys: pytest.CaptureFixture[str]) -> None:
    profile = profile_for(peer, "find")
    code, out, err = run(capsys, "find", "pacs", "--profile", profile, "--json", "-k", "PatientName=Wałęsa*")
    assert code == 0, err
    kind, identifier = peer.requests[-1]
    assert kind == "find" and identifier.SpecificCharacterSet == "ISO_IR 192"
    assert str(identifier.PatientName) == "Wałęsa*" and identifier.QueryRetrieveLevel == "STUDY"
    assert "StudyInstanceUID" in identifier and "ModalitiesInStudy" in identifier  # default return keys
    matches = [pydicom.Dataset.from_json(m) for m in json.loads(out)["matches"]]
    assert [(str(m.PatientID), str(m.PatientName)) for m in matches] == [("QR-P2", POLISH)]

    code, out, err = run(capsys, "find", "pacs", "--profile", profile, "-k", "PatientName=MÜLLER*", "-k", "StudyDate")
    assert code == 0, err
    assert peer.requests[-1][1].SpecificCharacterSet == "ISO_IR 192"
    rows = out.splitlines()[1:]
    assert out.splitlines()[0].split() == ["StudyDate", "PatientName", "StudyInstanceUID"]  # keys asked for
    assert sorted(r.split()[:2] for r in rows) == [["20230105", "MÜLLER^JÜRGEN"], ["20240310", "MÜLLER^JÜRGEN"]]

    code, out, err = run(capsys, "find", "pacs", "--profile", profile, "--root", "patient", "--json")
    assert code == 0, err
    assert peer.requests[-1][1].QueryRetrieveLevel == "PATIENT"
    assert "SpecificCharacterSet" not in peer.requests[-1][1]  # all ASCII: the default repertoire
    assert len(json.loads(out)["matches"]) == 3


def test_get_and_move(peer: PynetdicomQR, capsys: pytest.CaptureFixture[str]) -> None:
    profile = profile_for(peer, "retrieve")
    code, out, err = run(capsys, "get", "pacs", "--profile", profile, "-k", f"StudyInstanceUID={ROOT}.4")
    assert code == 0, err
    assert "get: 3 completed, 0 with warnings, 0 failed" in out
    assert set(stored(profile)) == {f"{ROOT}.4.1.1", f"{ROOT}.4.1.2", f"{ROOT}.4.2.1"}
    code, out, err = run(capsys, "move", "pacs", "--profile", profile, "-k", f"StudyInstanceUID={ROOT}.2")
    assert code == 0, err
    assert "move to AGENT: 1 completed" in out
    assert stored(profile)[f"{ROOT}.2.1.1"]["patient_name"] == "MÜLLER^JÜRGEN"
    code, out, err = run(capsys, "move", "pacs", "--profile", profile, "--dest", "UNKNOWN", "-k", f"StudyInstanceUID={ROOT}.1")
    assert code == 1 and "A801" in out


def test_cancel(peer: PynetdicomQR, capsys: pytest.CaptureFixture[str]) -> None:
    profile = profile_for(peer, "cancel")
    peer.hold_after_first = True
    try:
        peer.cancelled.clear()
        code, out, err = run(capsys, "find", "pacs", "--profile", profile, "--json", "--cancel-after", "1")
        assert code == 0, err
        answer = json.loads(out)
        assert answer["status"] == "FE00" and answer["cancelled"] and len(answer["matches"]) == 1
        assert peer.cancelled.is_set()

        peer.cancelled.clear()
        outcome = trio.run(_get_cancelled_after_first, profile, peer.port)
        assert outcome.status == 0xFE00 and outcome.cancel_sent
        assert outcome.completed == 1 and outcome.stored == 1
        assert peer.cancelled.is_set()
        assert len(stored(profile)) == 1  # the sub-operation answered before the cancel is kept
    finally:
        peer.hold_after_first = False


async def _get_cancelled_after_first(profile_path: str, port: int):  # type: ignore[no-untyped-def]
    from agent.net.client import associate
    from agent.net.connection import Timeouts
    from agent.profile import load_profile
    from agent.services.blocking import Blocking
    from agent.services.query import scu
    from agent.services.query.models import STUDY_ROOT
    from agent.services.storage import StorageSCP
    from agent.store.db import open_database
    from agent.store.instances import InstanceStore

    profile = load_profile(profile_path)
    data_dir = profile.agent.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    store = InstanceStore(data_dir, open_database(data_dir / "agent.db"))
    scp = StorageSCP(store, Blocking())
    cancel = trio.Event()

    def progress(o: scu.RetrieveOutcome) -> None:
        if o.completed >= 1:
            cancel.set()

    identifier = pydicom.Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = "\\".join(s.study_uid for s in STUDIES)
    async with associate("127.0.0.1", port, calling_ae="AGENT", called_ae="PYNQR",
                         proposals=scu.proposals("study", ["get"]), timeouts=Timeouts(dimse=30)) as conn:
        return await scu.get(conn, STUDY_ROOT.get, identifier, store=scp.handle, on_progress=progress, cancel=cancel)


def test_ctrl_c_cancels_a_get(peer: PynetdicomQR, tmp_path: Path) -> None:
    """Ctrl-C during `dicom-agent get`: one C-CANCEL, the peer's FE00 with the counts, exit 130; what was
    stored before stays."""
    import os
    import signal
    import subprocess
    import sys
    import time

    profile = profile_for(peer, "ctrl-c")
    peer.hold_after_first = True
    peer.cancelled.clear()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "get", "pacs", "--profile", profile,
             "-k", "StudyInstanceUID=" + "\\".join(s.study_uid for s in STUDIES)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        db = Path(profile).parent / "data" / "agent.db"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the first sub-operation is stored; the peer holds the rest
            try:
                if db.exists() and len(stored(profile)) == 1:
                    break
            except sqlite3.OperationalError:  # the command is still creating its tables
                pass
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        peer.hold_after_first = False
    assert proc.returncode == 130, (out, err)
    assert "interrupted: C-CANCEL sent" in err
    assert "get: 1 completed" in out and "FE00" in out and "(cancelled)" in out
    assert peer.cancelled.is_set()
    assert len(stored(profile)) == 1
