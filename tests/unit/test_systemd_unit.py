"""The systemd template unit: the directives operators and the agent rely on, `systemd-analyze verify`
clean, and `systemd-analyze security --offline=yes` at an exposure of 2.0 or lower.

systemd-analyze is part of Debian's systemd package; without it these tests skip on a workstation and
fail under CI (CI set), where `.ci/run` installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "dicom-agent@.service"
EXEC = "/opt/dicom-agent/bin/dicom-agent"
MAX_EXPOSURE = 2.0


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing (Debian package systemd); CI must check the unit")
        pytest.skip("systemd-analyze is not installed")
    return tool


def _unit_copy(tmp_path: Path) -> Path:
    """The unit as an instance file whose ExecStart= exists here (the venv is not installed on this
    machine); every other line unchanged."""
    unit = tmp_path / "dicom-agent@test.service"
    unit.write_text(UNIT.read_text().replace(EXEC, shutil.which("true") or "/bin/true"))
    return unit


def _directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_has_the_required_directives() -> None:
    d = _directives()
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": f"{EXEC} run --profile /etc/dicom-agent/%i.toml",  # the venv install.sh makes
        # README: `systemctl reload` re-reads the TLS files and [security]; the agent does that on SIGHUP.
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "RestartPreventExitStatus": "73 78",  # what `run` exits with for a bad profile/data_dir, a damaged db
        "Restart": "on-failure",
        "StateDirectory": "dicom-agent/%i",
        "ConfigurationDirectory": "dicom-agent",
        "RuntimeDirectory": "dicom-agent/%i",  # the control socket of `dicom-agent status`
        "User": "dicom-agent",
        "SupplementaryGroups": "dialout lp",
        "UMask": "0027",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",  # DICOM, CUPS socket, control socket
        "DevicePolicy": "closed",
    }
    for key, value in expected.items():
        assert d.get(key) == [value], (key, d.get(key))
    assert "TimeoutStartSec" in d
    # Serial ports must stay reachable: no PrivateDevices=, and the tty groups in the allow-list.
    assert "PrivateDevices" not in d and "PrivateUsers" not in d  # either would cut off dialout/lp devices
    allowed = {v.split()[0] for v in d["DeviceAllow"]}
    assert {"char-ttyS", "char-ttyUSB", "char-ttyACM"} <= allowed
    # Documentation= names files that install.sh installs (tests/integration/test_install.py checks
    # they are there after an install).
    docs = d["Documentation"][0].split()
    assert docs and all(u.startswith("file:/opt/dicom-agent/share/doc/") for u in docs)


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = _analyze()
    unit = _unit_copy(tmp_path)
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    complaints = [line for line in result.stderr.splitlines() if unit.name in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []


def test_unit_security_exposure_is_at_most_2(tmp_path: Path) -> None:
    tool = _analyze()
    unit = _unit_copy(tmp_path)
    result = subprocess.run([tool, "security", "--offline=yes", unit.name], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout
