"""Whatever umask `dicom-agent` is started with, what it creates is owner/group only: here the print
spool (images copied for a queued film), which no explicit chmod covers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port, write_profile
from tests.interop.print_helpers import gradient8, write_image


def test_print_spool_is_owner_and_group_only_under_a_loose_umask(tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "agent", f"""
        [peers.film]
        ae_title = "PRINTER"
        host = "127.0.0.1"
        port = {free_port()}

        [print]
        printer = "film"
        """)
    image = write_image(tmp_path / "a.dcm", gradient8())
    r = subprocess.run(
        [sys.executable, "-m", "agent", "print", "--profile", profile.source, "--queue-only", str(image)],
        capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o022),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    spool = profile.agent.data_dir / "print-spool"
    made = [spool, *spool.rglob("*")]
    assert len(made) >= 3  # the spool, the job's folder, its image
    for path in made:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o027 == 0, f"{path} is {mode:o}"
