"""The `sim` printer driver: a simulated film printer for tests and demos.

Its state (film supply, jam, cover, offline) lives in `data_dir/sim-printer.json`, written atomically
under a lock (`sim-printer.lock`), so another process (the `dicom-agent printer sim` command, a test)
can change it while the agent runs: `get_state(data_dir)`, `set_state(options, data_dir, supply=...,
jammed=...)`. The file outlives the agent: a restarted agent finds the printer as it was left (still
empty, still jammed). The options `supply` and `supply_low` seed the state only when the file does not
exist yet.

Status, first match wins (PS3.3 C.13.9.1 terms): not online -> FAILURE "PRINTER OFFLINE"; cover open ->
FAILURE "COVER OPEN"; jammed -> FAILURE "FILM JAM"; supply 0 -> FAILURE "SUPPLY EMPTY"; supply <=
supply_low -> WARNING "SUPPLY LOW"; else NORMAL.

submit() raises DriverError while the printer is in FAILURE, and when the supply holds fewer films
than the copies asked (nothing is printed then: a film job is all or nothing). Each accepted film is
written as PNG into data_dir/sim-films like the `file` driver (one file per copy) and takes one film
per copy from the supply; lookup() finds films from those files.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from drivers.base import (
    DriverError, DriverOptionError, Film, PrinterCapabilities, PrinterState, PrinterStatus, PrintJobState,
    PrintJobStatus,
)
from drivers.printer.encode import write_durably
from drivers.printer.file import FilmFolder
from drivers.printer.options import CAPABILITY_KEYS, Options

STATE_FILE = "sim-printer.json"
LOCK_FILE = "sim-printer.lock"
FILMS_DIR = "sim-films"
MAX_SUPPLY = 100_000
DEFAULT_SUPPLY = 100
DEFAULT_SUPPLY_LOW = 10


@dataclass(frozen=True, slots=True)
class SimState:
    """The simulated printer's state. `printed` counts films taken from the supply since creation."""

    supply: int = DEFAULT_SUPPLY
    supply_low: int = DEFAULT_SUPPLY_LOW
    jammed: bool = False
    cover_open: bool = False
    online: bool = True
    printed: int = 0

    def status(self) -> PrinterStatus:
        if not self.online:
            return PrinterStatus(PrinterState.FAILURE, "PRINTER OFFLINE")
        if self.cover_open:
            return PrinterStatus(PrinterState.FAILURE, "COVER OPEN")
        if self.jammed:
            return PrinterStatus(PrinterState.FAILURE, "FILM JAM")
        if self.supply <= 0:
            return PrinterStatus(PrinterState.FAILURE, "SUPPLY EMPTY")
        if self.supply <= self.supply_low:
            return PrinterStatus(PrinterState.WARNING, "SUPPLY LOW")
        return PrinterStatus()


def _check(state: SimState) -> SimState:
    for name, high in (("supply", MAX_SUPPLY), ("supply_low", MAX_SUPPLY), ("printed", 2**62)):
        value = getattr(state, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
            raise DriverOptionError(name, f"an integer from 0 to {high}, not {value!r}")
    for name in ("jammed", "cover_open", "online"):
        if not isinstance(getattr(state, name), bool):
            raise DriverOptionError(name, f"true or false, not {getattr(state, name)!r}")
    return state


@contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK_FILE, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _read(data_dir: Path, initial: SimState) -> SimState:
    path = data_dir / STATE_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return initial
    except (OSError, ValueError) as exc:
        raise DriverError(f"{path}: unreadable simulated printer state: {exc}") from exc
    known = {f.name for f in fields(SimState)}
    if not isinstance(raw, dict):
        raise DriverError(f"{path}: not a JSON object")
    return _check(SimState(**{k: v for k, v in raw.items() if k in known}))


def _write(data_dir: Path, state: SimState) -> None:
    write_durably(data_dir / STATE_FILE, (json.dumps(asdict(state), indent=1) + "\n").encode())


def get_state(data_dir: Path) -> dict[str, object]:
    """The simulated printer's state in `data_dir` as a dict of the SimState fields (the defaults if
    it was never written)."""
    with _locked(data_dir):
        return asdict(_read(data_dir, SimState()))


def set_state(options: Mapping[str, object], data_dir: Path, **changes: object) -> dict[str, object]:
    """Change fields of the state (supply, supply_low, jammed, cover_open, online, printed) and return
    the new state as a dict. A change given as None is no change. `options` are the driver's options
    (they seed a state that was never written). DriverOptionError names a wrong option, field or value;
    the file is then left as it was."""
    seed, _ = _parse(options)
    known = {f.name for f in fields(SimState)}
    for key in changes:
        if key not in known:
            raise DriverOptionError(key, f"a field of the simulated printer: {', '.join(sorted(known))}")
    given = {k: v for k, v in changes.items() if v is not None}
    with _locked(data_dir):
        state = _check(replace(_read(data_dir, seed), **given))  # type: ignore[arg-type]
        _write(data_dir, state)
        return asdict(state)


class SimPrinter:
    """The `sim` driver (see the module docstring)."""

    def __init__(self, data_dir: Path, caps: PrinterCapabilities) -> None:
        self.data_dir = data_dir
        self.folder = FilmFolder(data_dir / FILMS_DIR, "png", caps)

    def capabilities(self) -> PrinterCapabilities:
        return self.folder.caps

    def status(self) -> PrinterStatus:
        with _locked(self.data_dir):
            return _read(self.data_dir, SimState()).status()

    def submit(self, film: Film) -> str:
        copies = max(1, film.copies)
        with _locked(self.data_dir):
            state = _read(self.data_dir, SimState())
            current = state.status()
            if current.state is PrinterState.FAILURE:
                raise DriverError(f"simulated printer: {current.info}")
            if state.supply < copies:
                raise DriverError(f"simulated printer: {copies} copies asked, {state.supply} films left")
            ref = self.folder.write(film)
            _write(self.data_dir, replace(state, supply=state.supply - copies, printed=state.printed + copies))
        return ref

    def lookup(self, job_id: str) -> str | None:
        return self.folder.lookup(job_id)

    def job_status(self, ref: str) -> PrintJobStatus:
        if (self.folder.directory / ref).is_file():
            return PrintJobStatus(PrintJobState.DONE)
        return PrintJobStatus(PrintJobState.FAILURE, "UNKNOWN")

    def close(self) -> None:
        pass


def _parse(options: Mapping[str, object]) -> tuple[SimState, PrinterCapabilities]:
    opts = Options(options, CAPABILITY_KEYS | {"supply", "supply_low"})
    supply = opts.integer("supply", DEFAULT_SUPPLY, 0, MAX_SUPPLY)
    supply_low = opts.integer("supply_low", DEFAULT_SUPPLY_LOW, 0, MAX_SUPPLY)
    caps = opts.capabilities(model_name="simulated film printer", drive_bits=(8, 16))
    return SimState(supply=supply, supply_low=supply_low), caps


def open_driver(options: Mapping[str, object], data_dir: Path) -> SimPrinter:
    """Factory of `printer.sim`. Options: supply (films loaded when the state file is first made,
    default 100), supply_low (WARNING at or below this many, default 10), and the common film_sizes,
    dpi, min_density, max_density, color, drive_bits (8 or 16), curve."""
    seed, caps = _parse(options)
    with _locked(data_dir):
        if not (data_dir / STATE_FILE).exists():
            _write(data_dir, seed)
    return SimPrinter(data_dir, caps)


__all__ = ["FILMS_DIR", "STATE_FILE", "SimPrinter", "SimState", "get_state", "open_driver", "set_state"]
