"""Where the control socket lives (agent/control.py): the data folder's run/ outside systemd, the unit's
runtime folder under it, and where `dicom-agent status` looks for a profile installed by install.sh."""

from __future__ import annotations

import socket
from pathlib import Path

from agent.control import SOCKET_NAME, addressable, ask, socket_path, status_socket_candidates
from tests.conftest import write_profile


def test_socket_path_outside_and_under_systemd(tmp_path: Path) -> None:
    assert socket_path(tmp_path, {}) == tmp_path / "run" / SOCKET_NAME
    # RuntimeDirectory=dicom-agent/%i: systemd sets RUNTIME_DIRECTORY (several folders: ':'-separated).
    assert socket_path(tmp_path, {"RUNTIME_DIRECTORY": "/run/dicom-agent/modality"}) == Path(
        "/run/dicom-agent/modality/control.sock")
    assert socket_path(tmp_path, {"RUNTIME_DIRECTORY": "/run/a:/run/b"}) == Path("/run/a/control.sock")


def test_status_looks_in_the_data_folder_then_in_the_units_runtime_folder(tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "etc", "")
    assert status_socket_candidates(profile) == [
        profile.agent.data_dir / "run" / SOCKET_NAME, Path("/run/dicom-agent/profile/control.sock")]


def test_a_long_socket_path_is_reached_through_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / ("x" * 70) / ("y" * 70)
    folder.mkdir(parents=True)
    path = folder / SOCKET_NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        with addressable(path) as address:
            assert len(address) < 108
            server.bind(address)
        assert path.exists()  # the socket file is where it was asked for, not somewhere shorter
    # Nobody listens on it now: a stale socket, and `ask` says "no agent here", not an error.
    assert ask(path) is None
    assert ask(tmp_path / "missing.sock") is None
