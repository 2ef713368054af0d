"""A private CUPS scheduler for tests: `cupsd -f` with its own configuration, spool and socket.

Usage (any test file):

    from tests.integration.cups_server import CupsServer, cups_pdf_outputs

    with CupsServer.start() as cups:          # fails/skips via require_tool when cupsd is absent
        cups.add_pdf_queue("FILM")            # a queue whose backend is cups-pdf
        options = {"queue": "FILM", "server": cups.socket}   # the cups driver's options
        ...                                   # cups.run("lpstat", "-p", "FILM") runs a client against it

The scheduler listens on a Unix socket only (no TCP port, nothing shared with a system CUPS) and is
stopped by its PID when the block ends. cups-pdf is Debian's `printer-driver-cups-pdf`: it writes each
job as a PDF into the `Out` folder of /etc/cups/cups-pdf.conf (`${HOME}/PDF` of the submitting user);
`cups_pdf_outputs(text)` lists the PDFs there whose names contain `text` (cups-pdf builds the name
from the job title).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import require_tool

CUPS_PDF_PPD = "lsb/usr/cups-pdf/CUPS-PDF_opt.ppd"
START_DEADLINE = 60.0


class CupsServer:
    def __init__(self, root: Path, process: subprocess.Popen[bytes]) -> None:
        self.root = root
        self.socket = str(root / "cups.sock")
        self.process = process

    @classmethod
    @contextmanager
    def start(cls) -> Iterator[CupsServer]:
        cupsd = require_tool("cupsd")
        for tool in ("lp", "lpstat", "lpadmin"):
            require_tool(tool)
        # Not under pytest's tmp_path: that is mode 0700, and CUPS filters run as user lp and must
        # reach TempDir. A short path also keeps the socket name under the 108-byte limit.
        root = Path(tempfile.mkdtemp(prefix="cupsd-"))
        root.chmod(0o755)
        for sub in ("conf", "spool", "cache", "state", "log"):
            (root / sub).mkdir()
        (root / "tmp").mkdir(mode=0o1777)
        (root / "tmp").chmod(0o1777)
        (root / "conf" / "cupsd.conf").write_text(
            f"LogLevel debug\nListen {root / 'cups.sock'}\nBrowsing No\nWebInterface No\nDefaultAuthType None\n"
            "<Location />\n  Order allow,deny\n  Allow all\n</Location>\n"
            "<Policy default>\n  <Limit All>\n    Order deny,allow\n  </Limit>\n</Policy>\n"
        )
        (root / "conf" / "cups-files.conf").write_text(
            f"ServerRoot {root / 'conf'}\nRequestRoot {root / 'spool'}\nCacheDir {root / 'cache'}\n"
            f"StateDir {root / 'state'}\nTempDir {root / 'tmp'}\nErrorLog {root / 'log' / 'error_log'}\n"
            f"AccessLog {root / 'log' / 'access_log'}\nPageLog {root / 'log' / 'page_log'}\n"
            f"Printcap {root / 'printcap'}\nSystemGroup root\n"
        )
        log = open(root / "log" / "stdout", "wb")
        process = subprocess.Popen(
            [cupsd, "-f", "-c", str(root / "conf" / "cupsd.conf"), "-s", str(root / "conf" / "cups-files.conf")],
            stdout=log, stderr=subprocess.STDOUT,
        )
        server = cls(root, process)
        try:
            server._wait_ready()
            yield server
        finally:
            server._stop()
            log.close()
            shutil.rmtree(root, ignore_errors=True)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"cupsd exited with {self.process.returncode}: {self.log()}")
            done = self.run("lpstat", "-r", check=False)
            if "scheduler is running" in done.stdout and "not" not in done.stdout:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"cupsd did not answer within {START_DEADLINE:g} s: {self.log()}")
            time.sleep(0.1)

    def _stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a CUPS client (lp, lpstat, lpadmin, cupsenable ...) against this scheduler."""
        env = {**os.environ, "CUPS_SERVER": self.socket, "LC_ALL": "C", "LANG": "C"}
        done = subprocess.run([tool, *args], capture_output=True, text=True, env=env, timeout=60, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)}: {done.returncode} {done.stderr}")
        return done

    def add_pdf_queue(self, name: str) -> None:
        """A queue printing to cups-pdf (lpadmin warns that PPD drivers are deprecated: harmless)."""
        self.run("lpadmin", "-p", name, "-E", "-v", "cups-pdf:/", "-m", CUPS_PDF_PPD)

    def log(self) -> str:
        parts = []
        for name in ("stdout", "error_log"):
            path = self.root / "log" / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


def cups_pdf_out_dir() -> Path:
    """Where cups-pdf writes the current user's jobs: `Out` of /etc/cups/cups-pdf.conf."""
    home = pwd.getpwuid(os.getuid()).pw_dir
    out = "${HOME}/PDF"
    try:
        for line in Path("/etc/cups/cups-pdf.conf").read_text().splitlines():
            if re.match(r"\s*Out\s", line):
                out = line.split(None, 1)[1].strip()
    except OSError:
        pass
    return Path(out.replace("${HOME}", home))


def cups_pdf_outputs(text: str) -> list[Path]:
    directory = cups_pdf_out_dir()
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if text in p.name and p.suffix == ".pdf")


def pdf_media_box(data: bytes) -> tuple[float, float]:
    """Width and height in points of the first /MediaBox of a PDF (uncompressed page dictionary)."""
    match = re.search(rb"/MediaBox\s*\[\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s*\]", data)
    if match is None:
        raise AssertionError("no /MediaBox in the PDF")
    x0, y0, x1, y1 = (float(v) for v in match.groups())
    return x1 - x0, y1 - y0


__all__ = ["CupsServer", "cups_pdf_out_dir", "cups_pdf_outputs", "pdf_media_box"]
