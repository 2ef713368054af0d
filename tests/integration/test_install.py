"""systemd/install.sh and systemd/uninstall.sh into a scratch root (--root): the files a device gets,
their modes, the profile made from a shipped one, idempotence, and what stays after uninstall.

--no-venv keeps the test fast (no pip install): the installed `dicom-agent` then runs this Python,
which already imports the project; the virtual-environment path is the same script's other branch.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "systemd" / "install.sh"
UNINSTALL = ROOT / "systemd" / "uninstall.sh"


def run(script: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=120,
                          check=False, env=env)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("root")
    result = run(INSTALL, "--root", str(root), "--no-venv", "--python", sys.executable, "modality")
    assert result.returncode == 0, result.stdout + result.stderr
    return root, result


def test_install_lays_out_the_files(installed: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, result = installed
    unit = root / "etc/systemd/system/dicom-agent@.service"
    assert unit.read_text() == (ROOT / "systemd/dicom-agent@.service").read_text()
    assert mode(unit) == 0o644
    # Documentation= of the unit names installed files.
    for line in unit.read_text().splitlines():
        if line.startswith("Documentation="):
            for url in line.split("=", 1)[1].split():
                assert (root / url.removeprefix("file:/")).is_file(), url
    # The program the unit's ExecStart= runs, and it works.
    exe = root / "opt/dicom-agent/bin/dicom-agent"
    assert os.access(exe, os.X_OK)
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == 0 and version.stdout.startswith("dicom-agent "), version.stderr
    # The profile: from the shipped one, data_dir in the unit's StateDirectory, group-readable only.
    etc = root / "etc/dicom-agent"
    profile_file = etc / "modality.toml"
    assert mode(etc) == 0o750 and mode(profile_file) == 0o640
    profile = load_profile(profile_file)
    shipped = load_profile(ROOT / "profiles/modality.toml")
    assert profile.agent.data_dir == Path("/var/lib/dicom-agent/modality")
    assert profile.agent.ae_title == shipped.agent.ae_title and profile.peers == shipped.peers
    data = root / "var/lib/dicom-agent/modality"
    assert data.is_dir() and mode(data) == 0o750
    # Host changes are only announced under a scratch root, in order.
    would = [line.split("would run: ", 1)[1] for line in result.stdout.splitlines() if "would run: " in line]
    assert would[0] == "groupadd --system dicom-agent"
    assert would[1].startswith("useradd --system --gid dicom-agent")
    assert "chown dicom-agent:dicom-agent /var/lib/dicom-agent/modality" in would
    assert would[-2:] == ["systemctl daemon-reload", "systemctl enable dicom-agent@modality.service"]
    assert result.stderr == ""


def test_install_again_keeps_the_profile_and_data(installed: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = installed
    profile_file = root / "etc/dicom-agent/modality.toml"
    edited = profile_file.read_text() + "\n# site edit\n"
    profile_file.write_text(edited)
    (root / "var/lib/dicom-agent/modality/agent.db").write_bytes(b"kept")
    again = run(INSTALL, "--root", str(root), "--no-venv", "--python", sys.executable, "modality")
    assert again.returncode == 0, again.stderr
    assert "exists: kept as it is" in again.stdout
    assert profile_file.read_text() == edited
    assert (root / "var/lib/dicom-agent/modality/agent.db").read_bytes() == b"kept"
    # A second instance from another shipped profile, in the same root, via DESTDIR.
    env = {**os.environ, "DESTDIR": str(root)}
    other = run(INSTALL, "--no-venv", "--python", sys.executable, "--profile", "film-printer", "--no-enable",
                "printer1", env=env)
    assert other.returncode == 0, other.stderr
    assert load_profile(root / "etc/dicom-agent/printer1.toml").agent.data_dir == Path("/var/lib/dicom-agent/printer1")
    assert "would run: systemctl enable" not in other.stdout


def test_install_refuses_bad_arguments_clearly(tmp_path: Path) -> None:
    bad_name = run(INSTALL, "--root", str(tmp_path), "../etc")
    assert bad_name.returncode == 2 and "NAME must be" in bad_name.stderr
    no_profile = run(INSTALL, "--root", str(tmp_path), "--no-venv", "--python", sys.executable,
                     "--profile", "nonesuch", "x")
    assert no_profile.returncode == 1 and "no profile nonesuch" in no_profile.stderr
    unknown = run(INSTALL, "--root", str(tmp_path), "--frobnicate", "x")
    assert unknown.returncode == 2 and "unknown option --frobnicate" in unknown.stderr
    assert not (tmp_path / "etc").exists()  # nothing laid out when refused


def test_uninstall_keeps_profiles_and_data_unless_purged(tmp_path: Path) -> None:
    assert run(INSTALL, "--root", str(tmp_path), "--no-venv", "--python", sys.executable, "archive").returncode == 0
    result = run(UNINSTALL, "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "would run: systemctl disable --now dicom-agent@archive.service" in result.stdout
    assert not (tmp_path / "opt/dicom-agent").exists()
    assert not (tmp_path / "etc/systemd/system/dicom-agent@.service").exists()
    assert (tmp_path / "etc/dicom-agent/archive.toml").is_file()
    assert (tmp_path / "var/lib/dicom-agent/archive").is_dir()
    assert run(UNINSTALL, "--root", str(tmp_path)).returncode == 0  # again: nothing left, no error
    purged = run(UNINSTALL, "--root", str(tmp_path), "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not (tmp_path / "etc/dicom-agent").exists() and not (tmp_path / "var/lib/dicom-agent").exists()
    assert "would run: userdel dicom-agent" in purged.stdout
