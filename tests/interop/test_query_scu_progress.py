"""`dicom-agent get` and `move` show their progress and a summary (issue 12: "into the local store, with
progress and a summary"), as a user at a terminal sees them: the command runs with its stderr on a
pseudo-terminal, against DCMTK's dcmqrscp holding the archive of tests/interop/qr_peers.py.

On a terminal the progress is one line rewritten in place (carriage return, `N/M sub-operations (...)`),
ending at the whole count; the summary goes to stdout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, require_tool, write_profile
from tests.interop.qr_peers import ROOT, dcmqrscp, make_archive

pytestmark = pytest.mark.interop


def on_a_terminal(argv: list[str]) -> tuple[int, str, str]:
    """Run `dicom-agent ARGV` with stderr on a pty; (exit status, stdout, what the terminal showed)."""
    primary, secondary = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "agent", *argv], stdout=subprocess.PIPE, stderr=secondary,
                            stdin=subprocess.DEVNULL)
    os.close(secondary)
    shown = bytearray()
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, f"no exit within 120 s: {shown.decode(errors='replace')}"
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: every writer of the terminal is gone
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    out = proc.stdout.read().decode()  # type: ignore[union-attr]
    return proc.wait(timeout=60), out, shown.decode(errors="replace")


def test_get_and_move_show_progress_then_a_summary(tmp_path: Path) -> None:
    for tool in ("dcmqrscp", "storescu"):
        require_tool(tool)
    files = make_archive(tmp_path / "files")
    agent_port = free_port()
    with dcmqrscp(tmp_path / "qr", files, destinations=[("AGENT", agent_port)], index_first=True) as port:
        profile = write_profile(tmp_path / "client", f"""
            [peers.pacs]
            ae_title = "QRSCP"
            host = "127.0.0.1"
            port = {port}
            """, port=agent_port).source
        code, out, shown = on_a_terminal(["get", "pacs", "--profile", profile, "-k", f"StudyInstanceUID={ROOT}.4"])
        assert code == 0, (out, shown)
        lines = re.findall(r"\r  (\d+)/(\d+) sub-operations \((\d+) completed, 0 warning, 0 failed\)", shown)
        assert lines and lines[-1] == ("3", "3", "3"), shown
        assert [int(done) for done, _, _ in lines] == sorted(int(done) for done, _, _ in lines)  # only forward
        assert "get: 3 completed, 0 with warnings, 0 failed" in out

        code, out, shown = on_a_terminal(["move", "pacs", "--profile", profile, "-k", f"StudyInstanceUID={ROOT}.1"])
        assert code == 0, (out, shown)
        lines = re.findall(r"\r  (\d+)/(\d+) sub-operations", shown)
        assert lines and lines[-1] == ("2", "2"), shown
        assert "move to AGENT: 2 completed" in out
