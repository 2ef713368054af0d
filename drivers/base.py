"""The contract between the agent and hardware drivers.

Invariants:
- A driver imports only this module, the standard library, numpy, Pillow and pyserial; never `agent`.
  It receives plain values (a raster with its physical size, a status request) and returns plain values;
  it never sees a DICOM data set or a socket.
- Drivers are registered under the entry point group `dicom_agent.drivers` with names `printer.NAME`
  and `acquisition.NAME`. The entry point names a factory `(options, data_dir) -> driver`.
  The profile chooses a driver by NAME; an unknown name is a profile error.
- A factory validates its options and raises `DriverOptionError(key, expected)` naming the option key
  (relative to the profile's `[print.options]` table); the agent adds the file and section.
- Every method may block (a device node, a CUPS call): the agent calls drivers from a worker thread.
- Exactly once: the agent records that it is about to submit a film (by `Film.job_id`) before it calls
  `submit`, and the returned reference after. After a crash in between, it asks `lookup(job_id)`: a
  driver that already accepted that film returns its reference, so the film is not printed twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

ENTRY_POINT_GROUP = "dicom_agent.drivers"


class DriverError(Exception):
    """A driver could not do what was asked (device gone, spooler refused, I/O error)."""


class DriverOptionError(DriverError):
    """A driver option is wrong: `key` is the option's name, `expected` says what was expected."""

    def __init__(self, key: str, expected: str) -> None:
        super().__init__(f"{key}: {expected}")
        self.key = key
        self.expected = expected


# ------------------------------------------------------------------ printers


#: Film Size ID (2010,0050) defined terms, PS3.3 C.13.8, as (width mm, height mm) in portrait: what
#: the SCP accepts and what a driver may declare.
FILM_SIZES_MM: dict[str, tuple[float, float]] = {
    "8INX10IN": (203.2, 254.0),
    "8_5INX11IN": (215.9, 279.4),
    "10INX12IN": (254.0, 304.8),
    "10INX14IN": (254.0, 355.6),
    "11INX14IN": (279.4, 355.6),
    "11INX17IN": (279.4, 431.8),
    "14INX14IN": (355.6, 355.6),
    "14INX17IN": (355.6, 431.8),
    "24CMX24CM": (240.0, 240.0),
    "24CMX30CM": (240.0, 300.0),
    "A4": (210.0, 297.0),
    "A3": (297.0, 420.0),
}


class PrinterState(StrEnum):
    """Printer Status (2110,0010), PS3.3 C.13.9."""

    NORMAL = "NORMAL"
    WARNING = "WARNING"
    FAILURE = "FAILURE"


@dataclass(frozen=True, slots=True)
class PrinterStatus:
    """Printer Status and Printer Status Info (2110,0020): a PS3.3 C.13.9.1 defined term such as
    NORMAL, SUPPLY EMPTY, SUPPLY LOW, FILM JAM, COVER OPEN, PRINTER OFFLINE, PRINTER DOWN."""

    state: PrinterState = PrinterState.NORMAL
    info: str = "NORMAL"


class PrintJobState(StrEnum):
    """Execution Status (2100,0020) of a job the driver accepted, PS3.3 C.13.8."""

    PENDING = "PENDING"
    PRINTING = "PRINTING"
    DONE = "DONE"
    FAILURE = "FAILURE"


@dataclass(frozen=True, slots=True)
class PrintJobStatus:
    state: PrintJobState
    info: str = "NORMAL"  # Execution Status Info (2100,0030), PS3.3 C.13.9.1 defined terms


@dataclass(frozen=True, slots=True)
class PrinterCapabilities:
    """What the device can do. Densities are in hundredths of optical density, as in PS3.3.

    `characteristic_curve` maps optical density to the device's drive level: pairs
    `(density in OD, drive level)`, sorted by density ascending; the renderer interpolates linearly
    between them. Drive levels run from 0 to `2**drive_bits - 1`.
    """

    film_sizes: tuple[str, ...] = ("14INX17IN",)
    dpi: int = 300
    min_density: int = 20
    max_density: int = 300
    color: bool = False
    drive_bits: int = 8
    characteristic_curve: tuple[tuple[float, int], ...] = ()
    medium_types: tuple[str, ...] = ("BLUE FILM", "CLEAR FILM", "PAPER")
    film_destinations: tuple[str, ...] = ("MAGAZINE", "PROCESSOR")
    printer_name: str = "dicom-agent"
    manufacturer: str = "dicom-agent"
    model_name: str = ""

    def curve(self) -> tuple[tuple[float, int], ...]:
        """The characteristic curve, or the default: transmittance linear in drive level."""
        return self.characteristic_curve or transmittance_curve(
            self.min_density / 100.0, self.max_density / 100.0, self.drive_bits
        )


def transmittance_curve(d_min: float, d_max: float, bits: int = 8, points: int = 64) -> tuple[tuple[float, int], ...]:
    """A curve for an ideal device whose drive level is proportional to transmittance (10**-D):
    drive level top at `d_min`, 0 at `d_max`."""
    return _curve(d_min, d_max, bits, points, lambda relative: relative)


def screen_curve(d_min: float, d_max: float, bits: int = 8, points: int = 256) -> tuple[tuple[float, int], ...]:
    """A curve for film written as an image file (PNG, TIFF, PDF, PostScript): the drive level is the
    sRGB encoding (IEC 61966-2-1) of the film's relative transmittance, so a screen or an office
    printer, which decode 8-bit values with that gamma, shows the film as it looks on a light box
    (luminance proportional to 10**-D). With `transmittance_curve` such a file looks nearly black: most
    of a film's densities transmit under 10% of the light. The default of the printer drivers here."""

    def srgb(linear: float) -> float:
        return 12.92 * linear if linear <= 0.0031308 else 1.055 * linear ** (1 / 2.4) - 0.055

    return _curve(d_min, d_max, bits, points, srgb)


def _curve(d_min: float, d_max: float, bits: int, points: int, encode: Callable[[float], float]) -> tuple[tuple[float, int], ...]:
    top = (1 << bits) - 1
    t_min, t_max = 10.0 ** -d_max, 10.0 ** -d_min
    out = []
    for i in range(points):
        d = d_min + (d_max - d_min) * i / (points - 1)
        out.append((d, round(top * encode((10.0 ** -d - t_min) / (t_max - t_min)))))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Film:
    """One rendered film, ready for the device.

    `pixels` is a numpy array of drive levels: (rows, columns) for grayscale, (rows, columns, 3) for
    RGB, dtype uint8 or uint16 per `PrinterCapabilities.drive_bits`; it is already laid out in the
    film's orientation at `dpi`, so `width_mm`/`height_mm` are its physical size.
    """

    job_id: str  # the agent's print job id: unique, stable across restarts
    pixels: Any  # numpy.ndarray
    width_mm: float
    height_mm: float
    dpi: int
    copies: int = 1
    film_size_id: str = "14INX17IN"
    medium_type: str = ""
    film_destination: str = ""
    label: str = ""  # Film Session Label, for job titles
    priority: str = "MED"


@runtime_checkable
class PrinterDriver(Protocol):
    """A film, paper or thermal printer."""

    def capabilities(self) -> PrinterCapabilities: ...

    def status(self) -> PrinterStatus: ...

    def submit(self, film: Film) -> str:
        """Hand the film to the device; return the driver's own job reference. Raises DriverError."""
        ...

    def lookup(self, job_id: str) -> str | None:
        """The reference of a film this driver already accepted for `job_id`, or None."""
        ...

    def job_status(self, ref: str) -> PrintJobStatus: ...

    def close(self) -> None: ...


PrinterFactory = Callable[[Mapping[str, object], Path], PrinterDriver]


# ------------------------------------------------------------------ registry


def driver_names(kind: str) -> list[str]:
    """Names of the installed drivers of `kind` ('printer', 'acquisition'), sorted."""
    prefix = kind + "."
    return sorted(ep.name[len(prefix):] for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name.startswith(prefix))


def load_factory(kind: str, name: str) -> Callable[..., Any]:
    """The factory of driver `kind.name`; KeyError when no such driver is installed."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == f"{kind}.{name}":
            return ep.load()  # type: ignore[no-any-return]
    raise KeyError(name)


def open_printer(name: str, options: Mapping[str, object], data_dir: Path) -> PrinterDriver:
    """Build printer driver `name` with its options. KeyError: unknown name; DriverOptionError: bad option."""
    driver = load_factory("printer", name)(options, data_dir)
    return driver  # type: ignore[no-any-return]


# ------------------------------------------------------------------ acquisition devices
#
# An acquisition driver is an async stream of device events (drivers of this kind may use trio).
# Delivery is at least once, acknowledged on pull: the driver acknowledges an event to the device (the
# ACK of a message's last frame, moving a watch-folder file aside, ...) only when its consumer asks for
# the next event, and the consumer asks only after it has recorded the previous one durably. After a
# crash the device (or the folder) delivers the unacknowledged event again; `procedure_key` and
# `image_key` make every event idempotent, so a replay never makes a second procedure or instance.


@dataclass(frozen=True, slots=True)
class PatientData:
    """Patient data the device itself knows (the unscheduled case, PS3.4 F.7.2.1)."""

    patient_id: str = ""
    patient_name: str = ""  # DICOM PN form: FAMILY^GIVEN
    birth_date: str = ""  # YYYYMMDD
    sex: str = ""  # M | F | O


@dataclass(frozen=True, slots=True)
class ProcedureStarted:
    procedure_key: str  # the device's id of this procedure: unique per device, the same when re-sent
    worklist_key: str = ""  # what the device knows of the scheduled item (accession number, patient ID, ...)
    patient: PatientData | None = None
    description: str = ""
    operator: str = ""
    timestamp: float | None = None  # time.time() at the device, when it says


@dataclass(frozen=True, slots=True)
class ImageAcquired:
    """One image. Either `pixels` (numpy: (rows, columns) uint8/uint16 grayscale with `bits_stored`
    bits, or (rows, columns, 3) uint8 RGB) or `dicom_file`, a complete DICOM file the device wrote."""

    procedure_key: str
    image_key: str  # unique within the procedure, the same when re-sent
    pixels: Any = None
    bits_stored: int = 8
    photometric: str = "MONOCHROME2"  # MONOCHROME2 | MONOCHROME1 | RGB
    dicom_file: str | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    attributes: tuple[tuple[str, str], ...] = ()  # extra attributes as (DICOM keyword, value)


@dataclass(frozen=True, slots=True)
class Measurement:
    procedure_key: str
    name: str
    value: str
    unit: str = ""


@dataclass(frozen=True, slots=True)
class ProcedureEnded:
    procedure_key: str
    aborted: bool = False
    reason: str = ""  # why the device aborted (DISCONTINUED), free text


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    connected: bool
    info: str = ""


DeviceEvent = ProcedureStarted | ImageAcquired | Measurement | ProcedureEnded | DeviceStatus


@runtime_checkable
class AcquisitionDriver(Protocol):
    """An acquisition device: `async for event in driver.events(): record(event)`."""

    def events(self) -> AsyncIterator[DeviceEvent]: ...

    async def aclose(self) -> None: ...


def open_device(name: str, options: Mapping[str, object], data_dir: Path) -> AcquisitionDriver:
    """Build acquisition driver `name`. KeyError: unknown name; DriverOptionError: bad option.

    An acquisition factory only validates its options and builds the driver: it opens no port, creates
    no file or folder and starts nothing (that waits for `events()`), so `dicom-agent check-profile` can
    build one just to check a profile's options."""
    driver = load_factory("acquisition", name)(options, data_dir)
    return driver  # type: ignore[no-any-return]


__all__ = [
    "ENTRY_POINT_GROUP", "FILM_SIZES_MM", "DriverError", "DriverOptionError", "Film", "PrintJobState", "PrintJobStatus",
    "PrinterCapabilities", "PrinterDriver", "PrinterFactory", "PrinterState", "PrinterStatus",
    "driver_names", "load_factory", "open_printer", "screen_curve", "transmittance_curve",
    "AcquisitionDriver", "DeviceEvent", "DeviceStatus", "ImageAcquired", "Measurement", "PatientData",
    "ProcedureEnded", "ProcedureStarted", "open_device",
]
