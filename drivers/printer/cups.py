"""The `cups` printer driver: each film goes to a CUPS queue as a one-page PDF the film's size.

The film is written as PDF (drivers.printer.encode.encode_pdf: page = film, raster at full page) and
handed to CUPS with the command-line client, `lp -d QUEUE -t TITLE -n COPIES -o media=Custom.WxHmm`
(`-h SERVER` when a server is set), so the host's CUPS does the rest (filters, the device backend).
The job title carries the agent's job id.

Exactly once: the CUPS request id that `lp` prints is recorded with the job id in a journal
(`data_dir/cups-printer.journal`, fsync'ed before submit returns); `lookup(job_id)` answers from the
journal, and for a job the journal lacks (a crash between `lp` and the journal write) asks the
scheduler for the queue's jobs and finds the one whose title carries the job id. The CUPS clients show
neither titles nor how a job ended, so those two questions go to the scheduler over IPP
(drivers.printer.ipp: Get-Jobs, Get-Job-Attributes), on the same server the clients use.

Status (`lpstat -l -p QUEUE` and `lpstat -a QUEUE`): a disabled (stopped) queue -> FAILURE "PRINTER
OFFLINE"; a queue that rejects jobs, or a scheduler that cannot be reached -> FAILURE "PRINTER DOWN";
printer-state-reasons media-empty / media-jam / door-open (cover-open) -> FAILURE SUPPLY EMPTY /
FILM JAM / COVER OPEN; media-low -> WARNING SUPPLY LOW; otherwise (idle, printing) NORMAL.
Job status (IPP job-state, RFC 8011 5.3.7): pending, held or stopped -> PENDING ("QUEUED");
processing -> PRINTING; completed -> DONE; canceled, aborted, or completed with errors -> FAILURE
("PRINTER DOWN"). CUPS forgets only finished jobs, so a job it no longer knows is DONE.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from drivers.base import (
    DriverError, DriverOptionError, Film, PrinterCapabilities, PrinterState, PrinterStatus, PrintJobState,
    PrintJobStatus,
)
from drivers.printer import ipp
from drivers.printer.encode import encode_pdf
from drivers.printer.ipp import IppClient, IppError
from drivers.printer.options import CAPABILITY_KEYS, Options
from drivers.printer.raw import Journal

JOURNAL = "cups-printer.journal"
SPOOL_DIR = "cups-spool"
TITLE_PREFIX = "dicom-agent "
_QUEUE = re.compile(r"[A-Za-z0-9_.-]{1,127}")
_REQUEST = re.compile(r"request id is (\S+)")

# IPP printer-state-reasons (RFC 8011 5.4.12) and the PS3.3 C.13.9.1 terms they mean.
_REASONS: tuple[tuple[str, PrinterState, str], ...] = (
    ("media-empty", PrinterState.FAILURE, "SUPPLY EMPTY"),
    ("media-needed", PrinterState.FAILURE, "SUPPLY EMPTY"),
    ("media-jam", PrinterState.FAILURE, "FILM JAM"),
    ("door-open", PrinterState.FAILURE, "COVER OPEN"),
    ("cover-open", PrinterState.FAILURE, "COVER OPEN"),
    ("offline", PrinterState.FAILURE, "PRINTER OFFLINE"),
    ("media-low", PrinterState.WARNING, "SUPPLY LOW"),
)


class CupsPrinter:
    """The `cups` driver (see the module docstring)."""

    def __init__(
        self, caps: PrinterCapabilities, queue: str, server: str | None, lp_options: tuple[str, ...],
        data_dir: Path, timeout: float,
    ) -> None:
        self.caps = caps
        self.queue = queue
        self.server = server
        self.lp_options = lp_options
        self.spool = data_dir / SPOOL_DIR
        self.journal = Journal(data_dir / JOURNAL)
        self.timeout = timeout
        self.ipp = IppClient(server, timeout)

    def capabilities(self) -> PrinterCapabilities:
        return self.caps

    # ---------------------------------------------------------------- commands

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [args[0], *(["-h", self.server] if self.server else []), *args[1:]]
        # The C locale keeps the messages parsed below in English whatever the host's language.
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=self.timeout, env=env, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DriverError(f"{' '.join(command)}: {exc}") from exc

    def status(self) -> PrinterStatus:
        try:
            printer = self._run("lpstat", "-l", "-p", self.queue)
            accepting = self._run("lpstat", "-a", self.queue)
        except DriverError:
            return PrinterStatus(PrinterState.FAILURE, "PRINTER DOWN")
        if printer.returncode != 0 or not printer.stdout.startswith("printer "):
            return PrinterStatus(PrinterState.FAILURE, "PRINTER DOWN")
        first = printer.stdout.splitlines()[0]
        if " disabled " in first or first.endswith(" disabled"):
            return PrinterStatus(PrinterState.FAILURE, "PRINTER OFFLINE")
        if accepting.returncode != 0 or " not accepting " in accepting.stdout:
            return PrinterStatus(PrinterState.FAILURE, "PRINTER DOWN")
        alerts = _field(printer.stdout, "Alerts")
        for reason, state, info in _REASONS:
            if reason in alerts:
                return PrinterStatus(state, info)
        return PrinterStatus()

    def submit(self, film: Film) -> str:
        done = self.lookup(film.job_id)
        if done is not None:
            return done
        width, height = film.width_mm, film.height_mm
        self.spool.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.spool, prefix="film-", suffix=".pdf") as pdf:
            pdf.write(encode_pdf(film))
            pdf.flush()
            args = [
                "lp", "-d", self.queue, "-t", TITLE_PREFIX + film.job_id, "-n", str(max(1, film.copies)),
                "-o", f"media=Custom.{width:.2f}x{height:.2f}mm",
            ]
            for option in self.lp_options:
                args += ["-o", option]
            done_lp = self._run(*args, "--", pdf.name)
        match = _REQUEST.search(done_lp.stdout)
        if done_lp.returncode != 0 or match is None:
            raise DriverError(f"lp refused film {film.job_id}: {(done_lp.stderr or done_lp.stdout).strip()}")
        ref = match.group(1)
        self.journal.record(film.job_id, ref)
        return ref

    def lookup(self, job_id: str) -> str | None:
        known = self.journal.sent.get(job_id)
        if known is not None:
            return known
        try:
            jobs = self.ipp.jobs(self.queue)
        except IppError as exc:
            # Unknown is not "not printed": the agent must ask again rather than print a second film.
            raise DriverError(f"cannot list the jobs of CUPS queue {self.queue}: {exc}") from exc
        title = [TITLE_PREFIX + job_id]
        try:
            for job in jobs:
                if not job.get("job-id"):
                    continue
                if "job-name" not in job:
                    # Just after a job ends, CUPS may answer Get-Jobs from its in-memory summary, without
                    # the name; Get-Job-Attributes reads the job's full record.
                    job = self.ipp.job(job["job-id"][0]) or {}
                if job.get("job-name") == title:
                    return f"{self.queue}-{job['job-id'][0]}"
        except IppError as exc:
            raise DriverError(f"cannot read the jobs of CUPS queue {self.queue}: {exc}") from exc
        return None

    def job_status(self, ref: str) -> PrintJobStatus:
        number = ref.rpartition("-")[2]
        if not number.isdigit():
            raise DriverError(f"not a CUPS job reference: {ref!r}")
        try:
            job = self.ipp.job(int(number))
        except IppError as exc:
            raise DriverError(f"cannot ask CUPS about job {ref}: {exc}") from exc
        if job is None or not job.get("job-state"):
            return PrintJobStatus(PrintJobState.DONE)
        state = job["job-state"][0]
        reasons = job.get("job-state-reasons", [])
        if state == ipp.PROCESSING:
            return PrintJobStatus(PrintJobState.PRINTING)
        if state in (ipp.CANCELED, ipp.ABORTED) or "job-completed-with-errors" in reasons:
            return PrintJobStatus(PrintJobState.FAILURE, "PRINTER DOWN")
        if state == ipp.COMPLETED:
            return PrintJobStatus(PrintJobState.DONE)
        return PrintJobStatus(PrintJobState.PENDING, "QUEUED")

    def close(self) -> None:
        pass


def _field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.strip().startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def open_driver(options: Mapping[str, object], data_dir: Path) -> CupsPrinter:
    """Factory of `printer.cups`. Options: queue (required: the CUPS printer name), server (a host,
    host:port or a scheduler socket path; default the client's own, usually the local scheduler),
    lp_options (extra `-o` values for lp, e.g. ["MediaType=film"]), timeout (seconds per CUPS
    command, default 30), and the common film_sizes, dpi, min_density, max_density, color, curve."""
    opts = Options(options, CAPABILITY_KEYS | {"queue", "server", "lp_options", "timeout"})
    if not opts.has("queue"):
        raise DriverOptionError("queue", "the name of a CUPS queue (lpstat -p lists them)")
    queue = opts.string("queue", None)
    assert queue is not None
    if not _QUEUE.fullmatch(queue):
        raise DriverOptionError("queue", f"a CUPS queue name (letters, digits, _ . -), not {queue!r}")
    server = opts.string("server", None)
    lp_options = opts.strings("lp_options", ())
    for option in lp_options:
        if option.startswith("-") or any(c.isspace() for c in option):
            raise DriverOptionError("lp_options", f"lp -o values such as \"media=A4\" or \"landscape\", not {option!r}")
    timeout = opts.number("timeout", 30.0, 1.0, 600.0)
    caps = opts.capabilities(model_name="CUPS", printer_name=queue)
    return CupsPrinter(caps, queue, server, lp_options, data_dir, timeout)


__all__ = ["CupsPrinter", "JOURNAL", "open_driver"]

