"""The `dicom-agent` command as a user runs it: exit statuses and the messages on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent import __version__
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted((ROOT / "profiles").glob("*.toml"))
DICOM_AGENT = [sys.executable, "-m", "agent"]

EX_UNAVAILABLE = 69
EX_CONFIG = 78


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DICOM_AGENT, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _may_create(folder: Path) -> bool:
    while not folder.exists():
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
def test_check_profile_accepts_shipped_profiles(profile: Path) -> None:
    from agent.profile import load_profile

    data_dir = load_profile(profile).agent.data_dir
    result = cli("check-profile", str(profile))
    if not _may_create(data_dir):
        # /var/lib/dicom-agent/... is systemd's StateDirectory: a user who may not create it is told so.
        assert result.returncode == EX_CONFIG and f"data_dir {data_dir}: permission denied" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{profile}: OK")
    assert "AE title" in result.stdout


def test_shipped_profiles_exist() -> None:
    assert {p.name for p in PROFILES} >= {"default.toml"}


@pytest.mark.parametrize(
    ("body", "key", "expectation"),
    [
        ('[agent]\nport = "notanumber"\n', "agent.port", "an integer from 0 to 65535, got 'notanumber'"),
        ('[agent]\nae_titel = "X"\n', "agent.ae_titel", "did you mean 'ae_title'?"),
        ('[agent]\nartim_timeout = "soon"\n', "agent.artim_timeout", "soon"),
    ],
    ids=["wrong-type", "typo", "bad-duration"],
)
def test_check_profile_rejects_bad_profile(tmp_path: Path, body: str, key: str, expectation: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(body)
    result = cli("check-profile", str(bad))
    assert result.returncode == EX_CONFIG
    assert result.stdout == ""
    assert f"{bad}: {key}: " in result.stderr, result.stderr
    assert expectation in result.stderr
    assert "Traceback" not in result.stderr


def test_check_profile_on_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = cli("check-profile", str(missing))
    assert result.returncode == EX_CONFIG
    assert str(missing) in result.stderr and "No such file" in result.stderr


def test_check_profile_on_invalid_toml(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("[agent\nport = 1\n")
    result = cli("check-profile", str(bad))
    assert result.returncode == EX_CONFIG
    assert str(bad) in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_bad_profile_exits_78_without_listening(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    port = free_port()
    bad.write_text(f'[agent]\nbind = "127.0.0.1"\nport = {port}\nmax_associations = "many"\n')
    result = cli("run", "--profile", str(bad))
    assert result.returncode == EX_CONFIG
    assert f"{bad}: agent.max_associations: " in result.stderr
    assert "Traceback" not in result.stderr


def test_echo_to_closed_port_exits_69(tmp_path: Path) -> None:
    port = free_port()  # bound and released: nobody listens there
    result = cli("echo", "--timeout", "3", "127.0.0.1", str(port))
    assert result.returncode == EX_UNAVAILABLE
    assert result.stderr.startswith(f"dicom-agent: cannot connect to 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"dicom-agent {__version__}"


def test_installed_entry_point_matches_module() -> None:
    """The console script on PATH in the venv is the same program as `python -m agent`."""
    script = Path(sys.executable).parent / "dicom-agent"
    if not script.exists():
        pytest.skip("dicom-agent console script not installed in this environment")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0 and result.stdout.strip() == f"dicom-agent {__version__}"


def test_usage_error_exits_2() -> None:
    result = cli("echo", "127.0.0.1")  # missing PORT
    assert result.returncode == 2
    assert "usage: dicom-agent" in result.stderr
