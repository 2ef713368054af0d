"""The `raw` printer driver: a PostScript page description sent to a device node or a serial port.

Each film becomes one Level 2 PostScript job (drivers.printer.encode.encode_postscript): a page the
film's physical size, the raster drawn with `image`, `/NumCopies` for copies. It goes to
- `device`: a device node (a parallel or USB printer such as /dev/usb/lp0, a terminal line); a
  terminal is put in raw mode first so every byte passes unchanged; or
- `port`: a serial port by name (/dev/ttyUSB0) or a pyserial URL (`loop://`, `rfc2217://host:port`,
  `socket://host:9100` for a printer's raw TCP port), with `baudrate`, `rtscts`, `xonxoff`. A serial
  port stays open between jobs (opening one may toggle DTR and reset the device); a `socket://`
  connection is closed after each job, because such printers take the end of the connection as the
  end of the job.

Exactly once: a raw device cannot say what it has printed, so every film sent is recorded in a journal
(`data_dir/raw-printer.journal`, one JSON line per job, fsync'ed before submit returns) and
`lookup(job_id)` answers from it; submit of a film already in the journal sends nothing. The one window
left is a crash after the last byte went out and before the journal line reached the disk: that film
is sent again (a second film rather than none).

Status: FAILURE "PRINTER OFFLINE" when the device or port cannot be opened, NORMAL otherwise.
Job status: DONE once the device took every byte (it cannot report more).
"""

from __future__ import annotations

import json
import os
import select
import termios
import threading
import time
import tty
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import serial

from drivers.base import (
    DriverError, DriverOptionError, Film, PrinterCapabilities, PrinterState, PrinterStatus, PrintJobState,
    PrintJobStatus,
)
from drivers.printer.encode import encode_postscript, safe_name
from drivers.printer.options import CAPABILITY_KEYS, Options

JOURNAL = "raw-printer.journal"
CHUNK = 64 * 1024


class Journal:
    """Job ids already sent, one JSON line each; a torn last line (crash while appending) is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sent: dict[str, str] = {}
        try:
            lines = path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                entry = json.loads(line)
                self.sent[str(entry["job"])] = str(entry["ref"])
            except (ValueError, KeyError, TypeError):
                continue

    def record(self, job_id: str, ref: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"job": job_id, "ref": ref, "at": time.time()}) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # A torn line from an earlier crash would otherwise glue onto this one.
            if os.fstat(fd).st_size and not self._ends_with_newline():
                line = "\n" + line
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.sent[job_id] = ref

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"


class RawPrinter:
    """The `raw` driver (see the module docstring). `port` is the open pyserial port, or None."""

    def __init__(
        self, caps: PrinterCapabilities, journal: Journal, *, device: str | None, url: str | None,
        serial_options: dict[str, Any], write_timeout: float,
    ) -> None:
        self.caps = caps
        self.journal = journal
        self.device = device
        self.url = url
        self.serial_options = serial_options
        self.write_timeout = write_timeout
        self.port: serial.SerialBase | None = None
        # The agent may ask for status from one thread while another submits: one user of the line at a time.
        self._lock = threading.Lock()

    def capabilities(self) -> PrinterCapabilities:
        return self.caps

    def status(self) -> PrinterStatus:
        with self._lock:
            return self._status()

    def _status(self) -> PrinterStatus:
        try:
            if self.device is not None:
                os.close(os.open(self.device, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_APPEND))
            else:
                self._open_port()
                if self._per_job():
                    self._close_port()
        except (OSError, serial.SerialException, ValueError):
            self._close_port()
            return PrinterStatus(PrinterState.FAILURE, "PRINTER OFFLINE")
        return PrinterStatus()

    def submit(self, film: Film) -> str:
        with self._lock:
            return self._submit(film)

    def _submit(self, film: Film) -> str:
        done = self.journal.sent.get(film.job_id)
        if done is not None:
            return done
        data = encode_postscript(film, film.label or film.job_id)
        try:
            if self.device is not None:
                self._write_device(data)
            else:
                port = self._open_port()
                port.write(data)
                port.flush()
                if self._per_job():
                    self._close_port()
        except (OSError, serial.SerialException, ValueError) as exc:
            self._close_port()
            raise DriverError(f"cannot send film {film.job_id} to {self.device or self.url}: {exc}") from exc
        ref = "raw-" + safe_name(film.job_id)
        self.journal.record(film.job_id, ref)
        return ref

    def lookup(self, job_id: str) -> str | None:
        return self.journal.sent.get(job_id)

    def job_status(self, ref: str) -> PrintJobStatus:
        return PrintJobStatus(PrintJobState.DONE)

    def close(self) -> None:
        with self._lock:
            self._close_port()

    # ---------------------------------------------------------------- transport

    def _per_job(self) -> bool:
        return bool(self.url and self.url.startswith("socket://"))

    def _open_port(self) -> serial.SerialBase:
        if self.port is None:
            assert self.url is not None
            self.port = serial.serial_for_url(self.url, write_timeout=self.write_timeout, **self.serial_options)
        return self.port

    def _close_port(self) -> None:
        port, self.port = self.port, None
        if port is not None:
            try:
                port.close()
            except (OSError, serial.SerialException):
                pass

    def _write_device(self, data: bytes) -> None:
        """Write all of `data` to the device node within `write_timeout` (a printer that stops taking
        data must not hold the caller's thread forever)."""
        assert self.device is not None
        fd = os.open(self.device, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_APPEND)
        try:
            if os.isatty(fd):
                tty.setraw(fd)  # no CR insertion, no special characters: the bytes arrive as sent
            deadline = time.monotonic() + self.write_timeout
            view = memoryview(data)
            while view:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DriverError(f"{self.device}: the device took no data for {self.write_timeout:g} s")
                _, ready, _ = select.select([], [fd], [], left)
                if not ready:
                    continue
                try:
                    written = os.write(fd, view[:CHUNK])
                except BlockingIOError:
                    continue
                view = view[written:]
            if os.isatty(fd):
                termios.tcdrain(fd)
        finally:
            os.close(fd)


def open_driver(options: Mapping[str, object], data_dir: Path) -> RawPrinter:
    """Factory of `printer.raw`. Options: device (a device node path) or port (a serial port name or
    pyserial URL), exactly one; baudrate (default 9600), rtscts, xonxoff (default false),
    write_timeout (seconds, default 60); and the common film_sizes, dpi, min_density, max_density,
    color, curve (drive_bits 8)."""
    opts = Options(options, CAPABILITY_KEYS | {"device", "port", "baudrate", "rtscts", "xonxoff", "write_timeout"})
    device = opts.string("device", None)
    url = opts.string("port", None)
    if (device is None) == (url is None):
        raise DriverOptionError("device" if device is not None else "port", "exactly one of device or port")
    serial_keys = ("baudrate", "rtscts", "xonxoff")
    if device is not None:
        for key in serial_keys:
            if opts.has(key):
                raise DriverOptionError(key, "only with port (a serial port), not with device")
    baudrate = opts.integer("baudrate", 9600, 50, 4_000_000)
    serial_options: dict[str, Any] = {
        "baudrate": baudrate, "rtscts": opts.boolean("rtscts", False), "xonxoff": opts.boolean("xonxoff", False),
    }
    write_timeout = opts.number("write_timeout", 60.0, 0.1, 3600.0)
    if url is not None and "://" not in url and not url.startswith("/"):
        raise DriverOptionError("port", f"a serial port path (/dev/ttyS0) or a URL such as loop:// or socket://host:port, not {url!r}")
    if url is not None and "://" in url:
        try:
            serial.serial_for_url(url, do_not_open=True)
        except (ValueError, serial.SerialException) as exc:
            raise DriverOptionError("port", f"a pyserial URL it knows ({exc})") from exc
    caps = opts.capabilities(model_name="PostScript (raw)", printer_name=device or url or "raw")
    return RawPrinter(
        caps, Journal(data_dir / JOURNAL), device=device, url=url, serial_options=serial_options,
        write_timeout=write_timeout,
    )


__all__ = ["JOURNAL", "Journal", "RawPrinter", "open_driver"]
