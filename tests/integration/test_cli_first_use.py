"""What a service engineer meets first, run as they run it (`python -m agent ...` in a subprocess):
exit statuses and the one line that says what is wrong, never a traceback.

Covers: a command whose section is missing (78), an unusable data folder or a corrupt database (78 / 73,
in `run` and in `check-profile`), sections this version does not implement (78), relative paths in a
profile (resolved against the profile's folder) and read-only commands that must not create a database,
`worklist add` of a file that is not a worklist item, `queue drop` of half an MPPS, `mpps list --json`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
DICOM_AGENT = [sys.executable, "-m", "agent"]

EX_FAILED = 1
EX_CANTCREAT = 73
EX_CONFIG = 78

HEAD = """
[agent]
ae_title = "FIRSTUSE"
bind = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
"""


def cli(*args: str, cwd: Path = ROOT, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DICOM_AGENT, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, **kw)  # type: ignore[call-overload]


def profile(folder: Path, body: str = "", *, data_dir: str | Path | None = None, port: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "profile.toml"
    path.write_text(HEAD.format(port=port, data_dir=data_dir if data_dir is not None else folder / "data") + body)
    return path


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Error:" not in result.stderr.replace("ProfileError", ""), result.stderr


# --- 13: a command whose section the profile lacks ------------------------------------------------------


@pytest.mark.parametrize("command", [["worklist"], ["worklist", "add", "x.wl"], ["mpps", "list"]],
                         ids=["worklist", "worklist-add", "mpps-list"])
def test_command_without_its_section_is_a_profile_error(tmp_path: Path, command: list[str]) -> None:
    path = profile(tmp_path)
    result = cli(*command, "--profile", str(path))
    assert result.returncode == EX_CONFIG, result.stderr
    section = "[worklist]" if command[0] == "worklist" else "[mpps]"
    assert f"{path}: {section}: " in result.stderr and "no such section" in result.stderr
    no_traceback(result)
    assert not (tmp_path / "data").exists()


# --- 15: a data folder that cannot be used, a corrupt database -------------------------------------------


def test_data_dir_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    data_dir = blocker / "data"
    path = profile(tmp_path, data_dir=data_dir, port=free_port())
    for args in (["check-profile", str(path)], ["run", "--profile", str(path)]):
        result = cli(*args)
        assert result.returncode == EX_CONFIG, (args, result.stderr)
        assert str(data_dir) in result.stderr and "not a folder" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        no_traceback(result)
    assert blocker.read_text() == "not a folder"


def test_corrupt_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db = data_dir / "agent.db"
    garbage = b"this is not an SQLite database, whatever its name says\n" * 200
    db.write_bytes(garbage)
    path = profile(tmp_path, data_dir=data_dir, port=free_port())
    for args in (["check-profile", str(path)], ["run", "--profile", str(path)]):
        result = cli(*args)
        assert result.returncode == EX_CANTCREAT, (args, result.stderr)
        assert str(db) in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        no_traceback(result)
    assert db.read_bytes() == garbage  # nothing written over the operator's evidence


def test_check_profile_creates_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "yet" / "there"
    result = cli("check-profile", str(profile(tmp_path, data_dir=data_dir)))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "not").exists()
    assert f"data in {data_dir}" in result.stdout


def test_check_profile_passes_a_healthy_existing_database(tmp_path: Path) -> None:
    from agent.store.db import open_database
    from agent.store.queue import JobQueue

    data_dir = tmp_path / "data"
    conn = open_database(data_dir / "agent.db")
    JobQueue(conn)
    conn.close()
    result = cli("check-profile", str(profile(tmp_path, data_dir=data_dir)))
    assert result.returncode == 0, result.stderr


def test_data_dir_without_permission(tmp_path: Path) -> None:
    """Run as root without capabilities (setpriv), so the folder's mode bits apply as for any user; a
    non-root test run meets them directly."""
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    data_dir = locked / "data"
    path = profile(tmp_path, data_dir=data_dir, port=free_port())
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permission checks would all pass")
        prefix = [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--"]
    for args in (["check-profile", str(path)], ["run", "--profile", str(path)]):
        result = subprocess.run([*prefix, *DICOM_AGENT, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == EX_CONFIG, (args, result.stderr)
        assert str(data_dir) in result.stderr and "permission denied" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        no_traceback(result)
    assert not data_dir.exists()


# --- 18: relative paths and read-only commands -------------------------------------------------------------


READ_ONLY = [["status"], ["queue", "list"], ["queue", "show", "1"], ["worklist"], ["mpps", "list"]]
SECTIONS = '[worklist]\n[mpps]\n'


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: "-".join(c))
def test_read_only_commands_never_create_a_database(tmp_path: Path, command: list[str]) -> None:
    site = tmp_path / "site"
    path = profile(site, SECTIONS, data_dir="data")  # relative: to the profile's folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = cli(*command, "--profile", str(path), cwd=elsewhere)
    assert result.returncode == EX_FAILED, result.stdout
    db = site / "data" / "agent.db"
    assert f"no database at {db} (has the agent run with this profile?)" in result.stderr
    no_traceback(result)
    assert list(elsewhere.iterdir()) == [] and not (site / "data").exists()


def test_relative_data_dir_is_the_profiles(tmp_path: Path) -> None:
    from agent.store.db import open_database
    from agent.store.queue import JobQueue

    site = tmp_path / "site"
    path = profile(site, data_dir="data")
    conn = open_database(site / "data" / "agent.db")
    JobQueue(conn).enqueue("store", "pacs", {"uid": "1.2.3.4"})
    conn.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = cli("queue", "list", "--json", "--profile", os.path.relpath(path, elsewhere), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert [j["payload"] for j in json.loads(result.stdout)] == [{"uid": "1.2.3.4"}]
    result = cli("status", "--profile", str(path), cwd=elsewhere)
    assert result.returncode == 0 and "pacs" in result.stdout and "queue: empty" not in result.stdout
    assert list(elsewhere.iterdir()) == []


# --- 19: worklist add, queue drop of half an MPPS, mpps list --json --------------------------------------


@pytest.mark.parametrize("content", [b"", b"PATIENT: DOE^JOHN\naccession 42\n"], ids=["empty", "text"])
def test_worklist_add_refuses_a_file_that_is_not_a_worklist_item(tmp_path: Path, content: bytes) -> None:
    path = profile(tmp_path, "[worklist]\n")
    bad = tmp_path / "item.wl"
    bad.write_bytes(content)
    result = cli("worklist", "add", "--profile", str(path), str(bad))
    assert result.returncode == EX_FAILED, result.stdout
    assert str(bad) in result.stderr and "not a DICOM worklist item" in result.stderr
    no_traceback(result)
    listed = cli("worklist", "--json", "--profile", str(path))
    assert listed.returncode in (0, EX_FAILED)
    assert listed.returncode == EX_FAILED or json.loads(listed.stdout)["items"] == []


MPPS = """
[peers.ris]
ae_title = "RIS"
host = "127.0.0.1"
port = 9

[worklist]
[mpps]
send_to = ["ris"]
"""


def _mpps_started(tmp_path: Path) -> tuple[Path, str]:
    path = profile(tmp_path, MPPS)
    started = cli("mpps", "start", "--profile", str(path), "--patient-id", "PID-1", "--patient-name", "DOE^J")
    assert started.returncode == 0, started.stderr
    uid = started.stdout.strip()
    ended = cli("mpps", "end", "--profile", str(path), uid)
    assert ended.returncode == 0, ended.stderr
    return path, uid


def _jobs(path: Path) -> list[dict[str, object]]:
    result = cli("queue", "list", "--json", "--profile", str(path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("which", ["mpps-create", "mpps-set"])
def test_queue_drop_refuses_half_an_mpps_unless_forced(tmp_path: Path, which: str) -> None:
    path, uid = _mpps_started(tmp_path)
    jobs = _jobs(path)
    assert [j["kind"] for j in jobs] == ["mpps-create", "mpps-set"]
    target = next(j for j in jobs if j["kind"] == which)
    result = cli("queue", "drop", "--profile", str(path), str(target["id"]))
    assert result.returncode == EX_FAILED
    other = next(j for j in jobs if j is not target)
    assert f"job {other['id']}" in result.stderr and "--force" in result.stderr, result.stderr
    assert _jobs(path) == jobs  # nothing dropped
    forced = cli("queue", "drop", "--force", "--profile", str(path), str(target["id"]))
    assert forced.returncode == 0, forced.stderr
    assert f"dropped jobs {jobs[0]['id']}, {jobs[1]['id']}" in forced.stdout
    assert _jobs(path) == []


def test_mpps_list_json(tmp_path: Path) -> None:
    path, uid = _mpps_started(tmp_path)
    result = cli("mpps", "list", "--json", "--profile", str(path))
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [(i["uid"], i["status"]) for i in listed] == [(uid, "COMPLETED")]
    assert set(listed[0]) == {"uid", "origin", "status", "created_at", "updated_at", "expires_at"}
    assert isinstance(listed[0]["created_at"], float)


def test_database_written_by_cli_is_an_sqlite_database(tmp_path: Path) -> None:
    """The write commands (mpps start, worklist add) may create the database: the agent reads it later."""
    path, _uid = _mpps_started(tmp_path)
    with sqlite3.connect(tmp_path / "data" / "agent.db") as conn:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"


# --- 14: store: skipped files fail the run; progress on a terminal and in a log --------------------------


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[int]:
    """DCMTK's storescp on a free loopback port, receiving into tmp_path/received."""
    from tests.conftest import require_tool
    from tests.interop.storage_helpers import PEER_ENV

    exe = require_tool("storescp")
    out = tmp_path / "received"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen([exe, "-od", str(out), "-aet", "STORESCP", str(port)], env=PEER_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"storescp exited with {proc.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "storescp did not listen within 30 s"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def images(folder: Path, count: int) -> list[Path]:
    from tests.interop.storage_helpers import make_image

    return [make_image(folder / f"img{i:04}.dcm", rows=8, columns=8, seed=i, instance_number=i + 1)
            for i in range(count)]


def test_store_with_only_missing_files_fails(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file.dcm"
    result = cli("store", "127.0.0.1", str(free_port()), str(missing))
    assert result.returncode == EX_FAILED, (result.stdout, result.stderr)
    assert f"skipped {missing}: no such file or folder" in result.stderr
    assert "skipped 1" in result.stdout
    no_traceback(result)


def test_store_exits_1_when_files_were_skipped(tmp_path: Path, storescp: int) -> None:
    [good] = images(tmp_path / "in", 1)
    text = tmp_path / "in" / "notes.txt"
    text.write_text("not DICOM")
    missing = tmp_path / "gone.dcm"
    result = cli("store", "--aec", "STORESCP", "127.0.0.1", str(storescp), str(tmp_path / "in"), str(missing))
    assert result.returncode == EX_FAILED, (result.stdout, result.stderr)
    assert result.stdout.startswith("sent 1 (0 with warnings), failed 0, skipped 2"), result.stdout
    assert f"skipped {text}: not a DICOM file" in result.stderr and f"skipped {missing}" in result.stderr
    assert len(list((tmp_path / "received").iterdir())) == 1
    no_traceback(result)


def test_store_progress_in_a_log_is_one_line_every_so_many_files(tmp_path: Path, storescp: int) -> None:
    images(tmp_path / "in", 101)
    result = cli("store", "--aec", "STORESCP", "127.0.0.1", str(storescp), str(tmp_path / "in"), timeout=180)
    assert result.returncode == 0, result.stderr
    assert "\\r" not in result.stderr and "\r" not in result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("progress: ")]
    assert "progress: 100/101 files (99%)" in [line.split(",")[0] for line in progress], result.stderr
    assert result.stdout.startswith("sent 101 (0 with warnings), failed 0, skipped 0")


def test_store_progress_on_a_terminal_rewrites_one_line(tmp_path: Path, storescp: int) -> None:
    import pty

    images(tmp_path / "in", 5)
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen([*DICOM_AGENT, "store", "--aec", "STORESCP", "127.0.0.1", str(storescp),
                                 str(tmp_path / "in")], cwd=ROOT, stdout=subprocess.PIPE, stderr=terminal)
        os.close(terminal)
        out, _ = proc.communicate(timeout=120)
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child side closed
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(controller)
    assert proc.returncode == 0, seen
    assert b"\\r" not in seen  # no literal backslash-r
    frames = seen.replace(b"\r\n", b"\n").split(b"\r")
    assert len(frames) >= 5 and b"5/5 files (100%)" in frames[-1], seen
    assert seen.count(b"\n") == 1  # one line rewritten in place, ended once
    assert out.startswith(b"sent 5 (0 with warnings), failed 0, skipped 0")
