"""A command whose standard output is closed by its reader (`dicom-agent conformance | head -1`) ends
with one line on stderr and exit status 1, not a Python traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_closed_stdout_gives_one_line_and_status_1() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write: every write gets EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "agent", "conformance"], cwd=ROOT, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        "dicom-agent conformance: standard output was closed (broken pipe); stopped"], done.stderr
