"""The `folder` acquisition driver: a watch folder the device's own software writes into.

The folder (option `path`) receives, per image, a data file and a sidecar with the same stem:
- the data file: a DICOM Part 10 file (128-byte preamble then "DICM", PS3.10 7.1), or a PNG, JPEG or
  TIFF image (one frame; 8-bit or 16-bit grayscale, or RGB; palette, RGBA and CMYK images become RGB);
- the sidecar `NAME.json` (a JSON object) or `NAME.txt` (`key=value` lines, `#` comments), NAME being
  the data file's name without its last extension ("IMG1.png": "IMG1.json") or its whole name
  ("1.2.3.4", a UID: "1.2.3.4.json"; "IMG1.png.json" works too), with:
  `procedure` (required: the device's procedure key, 1-64 of A-Z a-z 0-9 . _ -), `image` (the image key,
  default NAME), `worklist` (the worklist key), `patient_id`, `patient_name` (FAMILY^GIVEN),
  `birth_date` (YYYYMMDD), `sex` (M/F/O), `description`, `operator`, `bits` (bits stored of a 16-bit
  image, 9-16, default 16), `pixel_spacing` ("ROW\\COL" in mm). Any other key is refused.
- A procedure starts with its first image: the driver yields ProcedureStarted (worklist and patient data
  from that image's sidecar; later sidecars' are ignored), then ImageAcquired. It ends with an end marker
  `PROCEDURE.end` (empty, or `status=completed|aborted` and `reason=TEXT` lines; JSON works too), or,
  when the option `quiet` is above 0, after `quiet` seconds without a new file of that procedure
  (ended as completed). An end marker waits while a data file that may belong to it is still pending.

When a file is complete: names starting with "." or ending in ".part" are ignored (a device may write
under such a name and rename), and a data file is taken only once it has its sidecar and both kept the
same size and modification time across two scans (`poll` seconds apart). A device should write the
sidecar last.

Exactly once, acknowledged on pull (drivers/base.py): the event for a file is yielded while the file is
still in the folder; the file moves to `done/PROCEDURE/` only when the consumer asks for the next event.
After a crash the file is still there and is yielded again with the same keys. The done folder is also
the driver's memory: `done/PROCEDURE/` exists once the procedure was started, and `done/PROCEDURE/
PROCEDURE.end` once it ended, so nothing else is kept. An ImageAcquired's `dicom_file` names the file in
the watch folder: it is valid until the next pull.

Bad input loses nothing and makes nothing half: a data file that is neither DICOM nor a readable image,
a bad sidecar, an image for a procedure that already ended, an end marker of a procedure with no image,
and a data file or sidecar alone for `orphan` seconds are moved to `rejected/` with `NAME.reason`
(what was wrong) and a warning in the log.

Options: `path` (required; relative to the agent's data_dir), `poll` (seconds, 1), `quiet` (seconds, 0 =
only end markers end a procedure), `orphan` (seconds, 300), `done`, `rejected` (folders, default
`done` and `rejected` inside the watch folder; relative to it; on the same file system, since a rename
is what makes taking a file atomic).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trio

from drivers.base import (
    DeviceEvent, DeviceStatus, DriverError, DriverOptionError, ImageAcquired, PatientData, ProcedureEnded,
    ProcedureStarted,
)
from drivers.printer.encode import sync_directory, write_durably
from drivers.printer.options import Options

log = logging.getLogger("drivers.acquisition.folder")

KEY_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
SIDECAR_SUFFIXES = (".json", ".txt")
END_SUFFIX = ".end"
SIDECAR_KEYS = frozenset({
    "procedure", "image", "worklist", "patient_id", "patient_name", "birth_date", "sex", "description",
    "operator", "bits", "pixel_spacing",
})
IMAGE_FORMATS = ("PNG", "JPEG", "TIFF")


class Rejected(Exception):
    """A file (with its sidecar) that cannot be taken; the message is the reason."""


@dataclass(frozen=True, slots=True)
class Settings:
    path: Path
    poll: float
    quiet: float
    orphan: float
    done: Path
    rejected: Path


def parse_options(options: Mapping[str, object], data_dir: Path) -> Settings:
    opts = Options(options, ("path", "poll", "quiet", "orphan", "done", "rejected"))
    if not opts.has("path"):
        raise DriverOptionError("path", "the watch folder (a path; relative to the agent's data_dir)")
    path = opts.path("path", data_dir, data_dir)
    return Settings(
        path=path,
        poll=opts.number("poll", 1.0, 0.01, 3600.0),
        quiet=opts.number("quiet", 0.0, 0.0, 7 * 86400.0),
        orphan=opts.number("orphan", 300.0, 0.0, 7 * 86400.0),
        done=opts.path("done", path / "done", path),
        rejected=opts.path("rejected", path / "rejected", path),
    )


# ------------------------------------------------------------------ sidecars and data files


def parse_sidecar(path: Path) -> dict[str, str]:
    """The sidecar's keys (see the module docstring); Rejected with the reason when it is bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Rejected(f"sidecar {path.name} is unreadable: {exc}") from exc
    values = _parse_pairs(path.name, text)
    for key in values:
        if key not in SIDECAR_KEYS:
            raise Rejected(f"sidecar {path.name}: unknown key {key!r} (known: {', '.join(sorted(SIDECAR_KEYS))})")
    if "procedure" not in values:
        raise Rejected(f"sidecar {path.name}: no 'procedure' key (the device's procedure key)")
    for key in ("procedure", "image"):
        if key in values and not KEY_RE.fullmatch(values[key]):
            raise Rejected(f"sidecar {path.name}: {key} must be 1-64 of A-Z a-z 0-9 . _ -, not {values[key]!r}")
    if values.get("sex", "") not in ("", "M", "F", "O"):
        raise Rejected(f"sidecar {path.name}: sex must be M, F or O, not {values['sex']!r}")
    if values.get("birth_date", "") and not re.fullmatch(r"\d{8}", values["birth_date"]):
        raise Rejected(f"sidecar {path.name}: birth_date must be YYYYMMDD, not {values['birth_date']!r}")
    if "bits" in values and not (values["bits"].isdigit() and 9 <= int(values["bits"]) <= 16):
        raise Rejected(f"sidecar {path.name}: bits must be 9 to 16, not {values['bits']!r}")
    if "pixel_spacing" in values:
        _spacing(path.name, values["pixel_spacing"])
    return values


def _parse_pairs(name: str, text: str) -> dict[str, str]:
    if name.endswith(".json") or text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise Rejected(f"{name} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise Rejected(f"{name}: a JSON object was expected")
        out: dict[str, str] = {}
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise Rejected(f"{name}: {key} must be a string or a number")
            out[str(key)] = str(value).strip()
        return out
    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise Rejected(f"{name} line {number}: 'key=value' expected, got {line!r}")
        out[key.strip()] = value.strip()
    return out


def _spacing(name: str, text: str) -> tuple[float, float]:
    parts = text.replace(",", "\\").split("\\")
    try:
        row, col = (float(p) for p in parts)
    except ValueError:
        raise Rejected(f"sidecar {name}: pixel_spacing must be 'ROW\\COL' in mm, not {text!r}") from None
    if not (row > 0 and col > 0):
        raise Rejected(f"sidecar {name}: pixel_spacing must be positive, not {text!r}")
    return row, col


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: a 128-byte preamble, then the prefix "DICM" (PS3.10 7.1)."""
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def decode_image(path: Path, bits: int | None = None) -> tuple[np.ndarray, int, str]:
    """(pixels, bits_stored, photometric) of a PNG, JPEG or TIFF file; Rejected when it is not one or
    cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.format not in IMAGE_FORMATS:
                raise Rejected(f"{path.name}: {img.format} images are not taken (PNG, JPEG, TIFF or DICOM)")
            if getattr(img, "n_frames", 1) != 1:
                raise Rejected(f"{path.name}: {img.n_frames} frames; one image per file")
            img.load()
            mode = img.mode
            if mode in ("1", "L", "LA"):
                return np.asarray(img.convert("L"), dtype=np.uint8).copy(), 8, "MONOCHROME2"
            if mode.startswith("I;16") or mode in ("I", "F"):
                a = np.asarray(img)
                if a.dtype.kind == "f" or a.min() < 0 or a.max() > 0xFFFF:
                    raise Rejected(f"{path.name}: pixel values outside 0..65535 (mode {mode})")
                stored = bits or 16
                if int(a.max()) >= 1 << stored:
                    raise Rejected(f"{path.name}: pixel value {int(a.max())} needs more than bits = {stored}")
                return a.astype(np.uint16), stored, "MONOCHROME2"
            if mode in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                return np.asarray(img.convert("RGB"), dtype=np.uint8).copy(), 8, "RGB"
            raise Rejected(f"{path.name}: image mode {mode} is not taken (grayscale or RGB)")
    except UnidentifiedImageError:
        raise Rejected(f"{path.name}: neither a DICOM file nor a PNG, JPEG or TIFF image") from None
    except Image.DecompressionBombError as exc:
        raise Rejected(f"{path.name}: too large: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise Rejected(f"{path.name}: cannot be decoded: {exc}") from None


# ------------------------------------------------------------------ the folder's state


@dataclass(frozen=True, slots=True)
class Pending:
    """What the next event is, and what its acknowledgement does."""

    event: DeviceEvent
    kind: str  # "start" | "image" | "end" | "quiet-end" | "status"
    files: tuple[Path, ...] = ()  # moved to done/PROCEDURE/ on acknowledgement, in this order


class WatchFolder:
    """One scan at a time, run in a worker thread. Keeps the previous scan's signatures (size, mtime)
    to tell a complete file from one being written."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.previous: dict[str, tuple[int, int]] = {}
        self.first_seen: dict[str, float] = {}
        self.connected: bool | None = None

    # -- paths

    def proc_dir(self, key: str) -> Path:
        return self.s.done / key

    def started(self, key: str) -> bool:
        return self.proc_dir(key).is_dir()

    def ended(self, key: str) -> bool:
        return (self.proc_dir(key) / (key + END_SUFFIX)).exists()

    # -- one scan

    def next_event(self) -> Pending | None:
        """The next event to yield, or None when nothing is ready. Rejects bad files on the way."""
        status = self._status()
        if status is not None:
            return status
        if not self.connected:
            return None
        try:
            return self._scan()
        except OSError as exc:
            # The folder went away (an unmounted share) or cannot be read: a device status, not a crash;
            # the next scans look again.
            if not self.s.path.is_dir() or isinstance(exc, PermissionError):
                self.connected = False
                self.previous = {}
                log.warning("folder: %s", exc)
                return Pending(DeviceStatus(connected=False, info=f"watch folder {self.s.path}: {exc}"), "status")
            raise

    def _scan(self) -> Pending | None:
        now = time.time()
        current: dict[str, tuple[int, int]] = {}
        for entry in os.scandir(self.s.path):
            name = entry.name
            if name.startswith(".") or name.endswith((".part", ".reason")):
                continue
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except FileNotFoundError:
                continue
            current[name] = (st.st_size, st.st_mtime_ns)
        stable = {n for n, sig in current.items() if self.previous.get(n) == sig}
        self.previous = current
        for name in current:
            self.first_seen.setdefault(name, now)
        for name in list(self.first_seen):
            if name not in current:
                del self.first_seen[name]

        sidecars: dict[str, str] = {}
        for n in sorted(current):
            if n.endswith(SIDECAR_SUFFIXES):
                stem = n.rsplit(".", 1)[0]
                if stem in sidecars and {n, sidecars[stem]} <= stable:
                    self._reject((sidecars.pop(stem), n), f"{stem}: two sidecars ({stem}.json and {stem}.txt)")
                    continue
                sidecars[stem] = n
        ends = sorted(n for n in current if n.endswith(END_SUFFIX))
        data = sorted((n for n in current if not n.endswith(SIDECAR_SUFFIXES + (END_SUFFIX,))),
                      key=lambda n: (current[n][1], n))
        # A data file's sidecar is NAME.json (its whole name) or, failing that, STEM.json (its name up to
        # the last dot): "IMG1.png" -> "IMG1.png.json" or "IMG1.json"; "1.2.3.4" (a UID) -> "1.2.3.4.json".
        owner = {n: n if n in sidecars else _stem(n) for n in data}
        users: dict[str, list[str]] = {}
        for n in data:
            users.setdefault(owner[n], []).append(n)

        blocking: set[str | None] = set()  # procedure keys (None: unknown) with data still pending
        for name in data:
            stem = owner[name]
            side = sidecars.get(stem)
            if len(users[stem]) > 1:
                if {name, side} <= stable | {None}:
                    self._reject((name,), f"{name}: {len(users[stem])} files share the sidecar {stem}.json/.txt")
                    continue
                blocking.add(None)
                continue
            if side is None:
                if name in stable and now - self.first_seen[name] >= self.s.orphan:
                    self._reject((name,), f"{name}: no sidecar ({stem}.json or {stem}.txt) after {self.s.orphan:g} s")
                    continue
                blocking.add(None)
                continue
            if name not in stable or side not in stable:
                blocking.add(self._peek_key(side))
                continue
            try:
                return self._image(name, side)
            except Rejected as exc:
                self._reject((name, side), str(exc))
                continue

        for stem, side in sorted(sidecars.items()):
            if stem in users or side not in stable:
                continue
            # A sidecar alone: the second half of an acknowledged move (its data file is in done/), or
            # an orphan once `orphan` seconds passed.
            key = self._peek_key(side)
            if key is not None and any(p.stem == stem or p.name == stem for p in self._done_data(key)):
                self._move(key, (self.s.path / side,))
                continue
            if now - self.first_seen[side] >= self.s.orphan:
                self._reject((side,), f"{side}: a sidecar with no data file named {stem}.* after {self.s.orphan:g} s")

        for name in ends:
            key = name[: -len(END_SUFFIX)]
            if name not in stable or key in blocking or None in blocking:
                continue
            try:
                return self._end(name, key)
            except Rejected as exc:
                self._reject((name,), str(exc))

        if self.s.quiet > 0:
            return self._quiet_end(now, blocking)
        return None

    def _status(self) -> Pending | None:
        ok = self.s.path.is_dir()
        if ok == self.connected:
            return None
        self.connected = ok
        self.previous = {}
        info = f"watching {self.s.path}" if ok else f"watch folder {self.s.path} is missing"
        (log.info if ok else log.warning)("folder: %s", info)
        return Pending(DeviceStatus(connected=ok, info=info), "status")

    def _peek_key(self, side: str) -> str | None:
        try:
            return parse_sidecar(self.s.path / side)["procedure"]
        except Rejected:
            return None

    def _done_data(self, key: str) -> list[Path]:
        d = self.proc_dir(key)
        return [p for p in d.iterdir() if not p.name.endswith(SIDECAR_SUFFIXES + (END_SUFFIX,))] if d.is_dir() else []

    def _image(self, name: str, side: str) -> Pending:
        path, side_path = self.s.path / name, self.s.path / side
        values = parse_sidecar(side_path)
        key = values["procedure"]
        if self.ended(key):
            raise Rejected(f"{name}: procedure {key} already ended ({self.proc_dir(key) / (key + END_SUFFIX)})")
        if (self.proc_dir(key) / name).exists():
            raise Rejected(f"{name}: a file of this name was already taken for procedure {key}")
        image_key = values.get("image", side.rsplit(".", 1)[0])  # default: the sidecar's NAME
        spacing = _spacing(side, values["pixel_spacing"]) if "pixel_spacing" in values else None
        if is_dicom_file(path):
            image = ImageAcquired(procedure_key=key, image_key=image_key, dicom_file=str(path),
                                  pixel_spacing_mm=spacing)
        else:
            bits = int(values["bits"]) if "bits" in values else None
            pixels, stored, photometric = decode_image(path, bits)
            image = ImageAcquired(procedure_key=key, image_key=image_key, pixels=pixels, bits_stored=stored,
                                  photometric=photometric, pixel_spacing_mm=spacing)
        # The file is checked before its procedure starts: a bad first file starts nothing.
        if not self.started(key):
            patient = None
            if any(values.get(k) for k in ("patient_id", "patient_name", "birth_date", "sex")):
                patient = PatientData(
                    patient_id=values.get("patient_id", ""), patient_name=values.get("patient_name", ""),
                    birth_date=values.get("birth_date", ""), sex=values.get("sex", ""),
                )
            event = ProcedureStarted(
                procedure_key=key, worklist_key=values.get("worklist", ""), patient=patient,
                description=values.get("description", ""), operator=values.get("operator", ""),
                timestamp=path.stat().st_mtime,
            )
            return Pending(event, "start")
        return Pending(image, "image", (path, side_path))

    def _end(self, name: str, key: str) -> Pending:
        if not KEY_RE.fullmatch(key):
            raise Rejected(f"{name}: not a procedure key (1-64 of A-Z a-z 0-9 . _ -)")
        path = self.s.path / name
        try:
            values = _parse_pairs(name, path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise Rejected(f"{name} is unreadable: {exc}") from exc
        unknown = set(values) - {"status", "reason"}
        if unknown:
            raise Rejected(f"{name}: unknown key(s) {', '.join(sorted(unknown))} (status, reason)")
        status = values.get("status", "completed").lower()
        if status not in ("completed", "aborted"):
            raise Rejected(f"{name}: status must be completed or aborted, not {values['status']!r}")
        if self.ended(key):
            raise Rejected(f"{name}: procedure {key} already ended")
        if not self.started(key):
            raise Rejected(f"{name}: procedure {key} has no image in this folder "
                           "(a procedure starts with its first image)")
        event = ProcedureEnded(procedure_key=key, aborted=status == "aborted", reason=values.get("reason", ""))
        return Pending(event, "end", (path,))

    def _quiet_end(self, now: float, blocking: set[str | None]) -> Pending | None:
        if None in blocking or not self.s.done.is_dir():
            return None
        for entry in sorted(os.scandir(self.s.done), key=lambda e: e.name):
            key = entry.name
            if not entry.is_dir() or key in blocking or not KEY_RE.fullmatch(key) or self.ended(key):
                continue
            if now - entry.stat().st_mtime >= self.s.quiet:
                return Pending(ProcedureEnded(procedure_key=key), "quiet-end")
        return None

    # -- acknowledgement and rejection

    def acknowledge(self, item: Pending) -> None:
        """The consumer recorded `item.event`: make it not come again."""
        if item.kind == "start":
            key = item.event.procedure_key  # type: ignore[union-attr]
            self.s.done.mkdir(parents=True, exist_ok=True)
            self.proc_dir(key).mkdir(exist_ok=True)
            sync_directory(self.s.done)
        elif item.kind in ("image", "end"):
            self._move(item.event.procedure_key, item.files)  # type: ignore[union-attr]
        elif item.kind == "quiet-end":
            key = item.event.procedure_key  # type: ignore[union-attr]
            text = f"status=completed\nreason=no new file for {self.s.quiet:g} s (quiet period)\n"
            write_durably(self.proc_dir(key) / (key + END_SUFFIX), text.encode())

    def _move(self, key: str, files: tuple[Path, ...]) -> None:
        # Data file first, sidecar second: a crash in between leaves a sidecar whose data file is in
        # done/, which the next scan recognises and finishes moving.
        target = self.proc_dir(key)
        target.mkdir(parents=True, exist_ok=True)
        for path in files:
            _rename(path, target / path.name)
        sync_directory(target)
        sync_directory(self.s.path)

    def _reject(self, names: tuple[str, ...], reason: str) -> None:
        self.s.rejected.mkdir(parents=True, exist_ok=True)
        first = _free_name(self.s.rejected, names[0])
        write_durably(self.s.rejected / (first + ".reason"), (reason + "\n").encode())
        for i, name in enumerate(names):
            target = first if i == 0 else _free_name(self.s.rejected, name)
            try:
                _rename(self.s.path / name, self.s.rejected / target)
            except FileNotFoundError:
                pass
            self.previous.pop(name, None)
        sync_directory(self.s.rejected)
        sync_directory(self.s.path)
        log.warning("folder: rejected %s: %s (moved to %s)", ", ".join(names), reason, self.s.rejected)


def _rename(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise DriverError(f"{target.parent} must be on the same file system as the watch folder "
                              f"(a rename is what makes taking a file atomic)") from exc
        raise


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def _free_name(folder: Path, name: str) -> str:
    if not (folder / name).exists() and not (folder / (name + ".reason")).exists():
        return name
    n = 2
    while (folder / f"{name}.{n}").exists() or (folder / f"{name}.{n}.reason").exists():
        n += 1
    return f"{name}.{n}"


# ------------------------------------------------------------------ the driver


class FolderDriver:
    """The `folder` driver (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._closed = False

    async def events(self) -> AsyncIterator[DeviceEvent]:
        folder = WatchFolder(self.settings)
        limiter = trio.CapacityLimiter(1)
        while not self._closed:
            item = await trio.to_thread.run_sync(folder.next_event, limiter=limiter)
            if item is None:
                await trio.sleep(self.settings.poll)
                continue
            yield item.event
            # The consumer asked for the next event: it has recorded this one.
            await trio.to_thread.run_sync(folder.acknowledge, item, limiter=limiter)

    async def aclose(self) -> None:
        self._closed = True


def open_driver(options: Mapping[str, object], data_dir: Path) -> FolderDriver:
    return FolderDriver(parse_options(options, data_dir))


__all__ = ["FolderDriver", "Rejected", "Settings", "decode_image", "is_dicom_file", "open_driver",
           "parse_options", "parse_sidecar"]
