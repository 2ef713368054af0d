"""The `file` printer driver: each film becomes a PNG, TIFF or PDF file at its true physical size.

This is the embedded default: a film printer whose output is a folder (for a viewer, an archive or a
print server that picks files up).

Exactly once: a film's file name is made from its job id, and the file appears under that name only
complete (temporary name, fsync, rename, directory fsync); `lookup(job_id)` finds it after a crash.
Copies: one file per copy, `JOB.png` for a single copy and `JOB-c1of3.png` ... `JOB-c3of3.png` for
three, so a consumer that prints each file prints the requested number of copies; `lookup` answers
only when every copy is there (a crash in the middle rewrites the same names: no copy doubles).

Status: FAILURE "PRINTER DOWN" when the folder cannot be created or written; FAILURE "SUPPLY EMPTY"
when the disk has no room for one more film of the largest configured size; WARNING "SUPPLY LOW"
when it has room for fewer than ten.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from drivers.base import (
    DriverError, Film, PrinterCapabilities, PrinterState, PrinterStatus, PrintJobState,
    PrintJobStatus,
)
from drivers.printer.encode import ENCODERS, SUFFIXES, safe_name, write_durably
from drivers.printer.options import CAPABILITY_KEYS, FILM_SIZES_MM, Options

LOW_SUPPLY_FILMS = 10


class FilmFolder:
    """Films as files in one folder, named from their job ids (shared with the `sim` driver)."""

    def __init__(self, directory: Path, fmt: str, caps: PrinterCapabilities) -> None:
        self.directory = directory
        self.format = fmt
        self.caps = caps

    def names(self, job_id: str, copies: int) -> list[str]:
        stem, suffix = safe_name(job_id), SUFFIXES[self.format]
        if copies <= 1:
            return [stem + suffix]
        return [f"{stem}-c{k}of{copies}{suffix}" for k in range(1, copies + 1)]

    def write(self, film: Film) -> str:
        """Write every copy of `film`; return the reference (the first copy's file name)."""
        data = ENCODERS[self.format](film)
        names = self.names(film.job_id, film.copies)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for name in names:
                write_durably(self.directory / name, data)
        except OSError as exc:
            raise DriverError(f"cannot write film {film.job_id} to {self.directory}: {exc.strerror or exc}") from exc
        return names[0]

    def lookup(self, job_id: str) -> str | None:
        stem, suffix = safe_name(job_id), SUFFIXES[self.format]
        if (self.directory / (stem + suffix)).is_file():
            return stem + suffix
        pattern = re.compile(re.escape(stem) + r"-c(\d+)of(\d+)" + re.escape(suffix))
        found: dict[int, set[int]] = {}
        try:
            entries = os.listdir(self.directory)
        except OSError:
            return None
        for entry in entries:
            match = pattern.fullmatch(entry)
            if match:
                found.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
        for copies, seen in found.items():
            if seen == set(range(1, copies + 1)):
                return self.names(job_id, copies)[0]
        return None

    def film_bytes(self) -> int:
        """Raw size of the largest configured film: what one more film needs on disk at most."""
        width, height = max(FILM_SIZES_MM[s] for s in self.caps.film_sizes)
        dots = (width / 25.4 * self.caps.dpi) * (height / 25.4 * self.caps.dpi)
        return int(dots * (3 if self.caps.color else 1) * (2 if self.caps.drive_bits > 8 else 1))

    def status(self) -> PrinterStatus:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # os.access says yes to root whatever the mode; a real create says what the printer would meet.
            with tempfile.TemporaryFile(dir=self.directory):
                pass
            stat = os.statvfs(self.directory)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return PrinterStatus(PrinterState.FAILURE, "SUPPLY EMPTY")
            return PrinterStatus(PrinterState.FAILURE, "PRINTER DOWN")
        return supply_status(stat.f_bavail * stat.f_frsize, self.film_bytes())


def supply_status(free_bytes: int, film_bytes: int) -> PrinterStatus:
    """Disk space seen as film supply: none left for one film is SUPPLY EMPTY, for fewer than
    LOW_SUPPLY_FILMS films SUPPLY LOW (PS3.3 C.13.9.1 terms)."""
    if free_bytes < film_bytes:
        return PrinterStatus(PrinterState.FAILURE, "SUPPLY EMPTY")
    if free_bytes < film_bytes * LOW_SUPPLY_FILMS:
        return PrinterStatus(PrinterState.WARNING, "SUPPLY LOW")
    return PrinterStatus()


class FilePrinter:
    """The `file` driver (see the module docstring)."""

    def __init__(self, folder: FilmFolder) -> None:
        self.folder = folder

    def capabilities(self) -> PrinterCapabilities:
        return self.folder.caps

    def status(self) -> PrinterStatus:
        return self.folder.status()

    def submit(self, film: Film) -> str:
        return self.folder.write(film)

    def lookup(self, job_id: str) -> str | None:
        return self.folder.lookup(job_id)

    def job_status(self, ref: str) -> PrintJobStatus:
        # The film is complete on disk when submit returns; a consumer may since have taken the file away.
        return PrintJobStatus(PrintJobState.DONE)

    def close(self) -> None:
        pass


def open_driver(options: Mapping[str, object], data_dir: Path) -> FilePrinter:
    """Factory of `printer.file`. Options: directory (default data_dir/films; relative to data_dir),
    format (png | tiff | pdf, default png), and the common film_sizes, dpi, min_density, max_density,
    color, drive_bits (8, or 16 for grayscale), curve."""
    opts = Options(options, CAPABILITY_KEYS | {"directory", "format"})
    directory = opts.path("directory", data_dir / "films", data_dir)
    fmt = opts.string("format", "png", choices=("png", "tiff", "pdf"))
    assert fmt is not None
    caps = opts.capabilities(model_name=f"file ({fmt.upper()})", drive_bits=(8, 16))
    return FilePrinter(FilmFolder(directory, fmt, caps))


__all__ = ["FilePrinter", "FilmFolder", "open_driver", "supply_status"]
