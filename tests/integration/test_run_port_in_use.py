"""`dicom-agent run` on a port another process holds: one line naming the address, exit 69
(EX_UNAVAILABLE: the port may come free, so a service manager may try again), never a traceback.
Run as an operator runs it (`python -m agent run` in a subprocess)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_profile

EX_UNAVAILABLE = 69


def test_a_port_in_use_is_one_line_and_exit_69(tmp_path: Path) -> None:
    with socket.socket() as other:  # another program listening there (no SO_REUSEADDR: like most)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        profile = write_profile(tmp_path, "", port=port)
        result = subprocess.run([sys.executable, "-m", "agent", "run", "--profile", str(profile.source)],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == EX_UNAVAILABLE, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("dicom-agent: ") and f"127.0.0.1:{port}" in lines[-1], result.stderr
    assert "in use" in lines[-1], result.stderr
