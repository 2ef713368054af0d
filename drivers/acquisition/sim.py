"""The `sim` acquisition driver: a simulated device for tests, demos and trying a profile.

It performs procedures planned by its options and by commands that `dicom-agent device ...` (or a test)
queues while the agent runs; everything lives in `data_dir/device-sim/`:
- `inbox/`: one JSON file per command, written atomically (a hidden temporary name, then a rename);
  taken in name order every `poll` seconds. `queue_command()` writes one.
- `rejected/`: commands that could not be planned (an image with no open procedure, a start while one
  is open, a key used before), with `ID.reason`; a warning is logged.
- `state.json`: the plan and the progress, replaced atomically (temporary file, fsync, rename):
  `pending` (planned events not yet acknowledged; the first is the one being delivered), `acked` (events
  acknowledged so far), `open` (the procedure the plan leaves open), `commands` (command id -> the
  `acked` count at which all its events are acknowledged), `keys` (procedure keys used), counters.

Commands (JSON objects with `id` and `op`): `start` (optional `procedure`, `worklist`, `patient` {
patient_id, patient_name, birth_date, sex}, `description`, `operator`), `image` (optional `count`), `end`,
`abort` (optional `reason`), `run` (`procedures`, `images`: whole procedures, faults applied).
A command is planned in one state write that also records its id, and only then deleted from the inbox:
after a crash in between it is found again and not planned twice.

Acknowledged on pull (drivers/base.py): an event leaves `pending` only when the consumer asks for the
next one, so after a restart the unacknowledged event comes again, with the same keys and the same
pixels (an image's size, bits and colour are fixed when it is planned; its pixels are a function of them,
the seed and its numbers). Nothing is skipped and nothing is invented.

Options: `procedures` (planned once, when the state is first created; 0), `images` (per procedure; 3),
`size` ("COLUMNSxROWS"; "256x256"), `bits` (8-16; 12), `color` (RGB; false), `worklist` ("first": no
key; "accession:A" or "key:A": key A; "patient:ID": no key and PatientData with ID), `worklist_keys`
(one key per planned procedure, in order; the rest use `worklist`), `unscheduled` (no key and generated
patient data; false), `abort_every` (every Nth planned procedure is aborted half way; 0 = never),
`bad_image_every` (every Nth image the device acquires carries pixels no instance can be made of: a
(rows, columns, 2) array; 0 = never), `seed`
(0), `interval` (seconds between events; 0), `poll` (seconds between inbox scans; 0.2).
Procedure keys are SIM-0001, SIM-0002, ... unless a `start` names one; image keys are "1", "2", ...
The stream never ends by itself: after its plan the device waits for commands.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trio

from drivers.base import (
    DeviceEvent, DeviceStatus, DriverOptionError, ImageAcquired, PatientData, ProcedureEnded, ProcedureStarted,
)
from drivers.printer.encode import sync_directory, write_durably
from drivers.printer.options import Options

log = logging.getLogger("drivers.acquisition.sim")

SIM_DIR = "device-sim"
STATE_FILE = "state.json"
KEY_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
OPS = ("start", "image", "end", "abort", "run")
MAX_IMAGES = 10_000
MAX_PROCEDURES = 10_000
REMEMBERED_COMMANDS = 1000


class CommandError(ValueError):
    """A command that cannot be planned; the message says why."""


@dataclass(frozen=True, slots=True)
class Settings:
    procedures: int
    images: int
    columns: int
    rows: int
    bits: int
    color: bool
    worklist: str
    worklist_keys: tuple[str, ...]
    unscheduled: bool
    abort_every: int
    bad_image_every: int
    seed: int
    interval: float
    poll: float


def parse_options(options: Mapping[str, object]) -> Settings:
    opts = Options(options, ("procedures", "images", "size", "bits", "color", "worklist", "worklist_keys",
                             "unscheduled", "abort_every", "bad_image_every", "seed", "interval", "poll"))
    size = opts.string("size", "256x256") or "256x256"
    m = re.fullmatch(r"(\d{1,5})x(\d{1,5})", size)
    if not m or not (8 <= int(m.group(1)) <= 8192 and 8 <= int(m.group(2)) <= 8192):
        raise DriverOptionError("size", f"COLUMNSxROWS, each 8 to 8192, e.g. \"256x256\", not {size!r}")
    color = opts.boolean("color", False)
    bits = opts.integer("bits", 8 if color else 12, 8, 16)
    if color and bits != 8:
        raise DriverOptionError("bits", "8 when color = true")
    worklist = opts.string("worklist", "first") or "first"
    parse_worklist(worklist, "worklist")
    return Settings(
        procedures=opts.integer("procedures", 0, 0, MAX_PROCEDURES),
        images=opts.integer("images", 3, 0, MAX_IMAGES),
        columns=int(m.group(1)), rows=int(m.group(2)), bits=bits, color=color,
        worklist=worklist, worklist_keys=opts.strings("worklist_keys", ()),
        unscheduled=opts.boolean("unscheduled", False),
        abort_every=opts.integer("abort_every", 0, 0, MAX_PROCEDURES),
        bad_image_every=opts.integer("bad_image_every", 0, 0, 1_000_000),
        seed=opts.integer("seed", 0, 0, 2**31 - 1),
        interval=opts.number("interval", 0.0, 0.0, 3600.0),
        poll=opts.number("poll", 0.2, 0.01, 60.0),
    )


def parse_worklist(text: str, key: str = "worklist") -> tuple[str, dict[str, str] | None]:
    """(worklist_key, patient) of a `worklist` value: first | accession:A | key:A | patient:ID."""
    if text == "first":
        return "", None
    kind, sep, value = text.partition(":")
    if sep and value and kind in ("accession", "key"):
        return value, None
    if sep and value and kind == "patient":
        return "", {"patient_id": value}
    raise DriverOptionError(key, f"first, accession:A, key:A or patient:ID, not {text!r}")


# ------------------------------------------------------------------ the spool (shared with the CLI)


def sim_dir(data_dir: Path) -> Path:
    return data_dir / SIM_DIR


def queue_command(data_dir: Path, command: Mapping[str, Any]) -> str:
    """Put a command in the inbox (atomically and durably); its id, which orders it after every
    command queued before."""
    if command.get("op") not in OPS:
        raise CommandError(f"op must be one of {', '.join(OPS)}")
    inbox = sim_dir(data_dir) / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    cid = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    write_durably(inbox / f"{cid}.json", json.dumps({**command, "id": cid}).encode())
    return cid


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """The sim's state as last written, or None before the driver first ran."""
    try:
        state = json.loads((sim_dir(data_dir) / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    return state if isinstance(state, dict) else None


def spool(data_dir: Path) -> dict[str, list[str]]:
    """Ids of the commands still in the inbox, and of the rejected ones with their reasons."""
    base = sim_dir(data_dir)
    inbox = sorted(p.stem for p in (base / "inbox").glob("*.json")) if (base / "inbox").is_dir() else []
    rejected = []
    if (base / "rejected").is_dir():
        for p in sorted((base / "rejected").glob("*.reason")):
            rejected.append(f"{p.stem}: {p.read_text().strip()}")
    return {"inbox": inbox, "rejected": rejected}


def command_outcome(data_dir: Path, cid: str) -> str:
    """'queued' (in the inbox), 'planned' (taken, events not all acknowledged), 'delivered', 'rejected:
    REASON', or 'unknown'."""
    base = sim_dir(data_dir)
    reason = base / "rejected" / f"{cid}.reason"
    if reason.exists():
        return "rejected: " + reason.read_text().strip()
    state = read_state(data_dir)
    if state is not None and cid in state.get("commands", {}):
        return "delivered" if state["acked"] >= state["commands"][cid] else "planned"
    if (base / "inbox" / f"{cid}.json").exists():
        return "queued"
    return "unknown"


# ------------------------------------------------------------------ planning


def new_state() -> dict[str, Any]:
    return {"version": 1, "seq": 0, "open": None, "pending": [], "acked": 0, "commands": {}, "keys": [],
            "delivered": {"procedures": 0, "images": 0, "ended": 0, "aborted": 0}}


class Planner:
    """Turns commands into planned events on a state dict (pure: no I/O)."""

    def __init__(self, s: Settings) -> None:
        self.s = s

    def apply(self, state: dict[str, Any], command: Mapping[str, Any]) -> None:
        op = command.get("op")
        if op == "start":
            self._start(state, command)
        elif op == "image":
            count = _int(command.get("count", 1), "count", 1, MAX_IMAGES)
            if state["open"] is None:
                raise CommandError("image: no procedure is open (start one first)")
            for _ in range(count):
                self._image(state)
        elif op in ("end", "abort"):
            if state["open"] is None:
                raise CommandError(f"{op}: no procedure is open")
            reason = str(command.get("reason", "aborted at the device" if op == "abort" else ""))
            self._end(state, op == "abort", reason)
        elif op == "run":
            n = _int(command.get("procedures", 1), "procedures", 1, MAX_PROCEDURES)
            m = _int(command.get("images", self.s.images), "images", 0, MAX_IMAGES)
            if n * m > MAX_IMAGES * 10:  # the plan lives in one JSON file, rewritten at every event
                raise CommandError(f"run: {n} x {m} images is more than {MAX_IMAGES * 10} in one command")
            self.plan_run(state, n, m, command)
        else:
            raise CommandError(f"unknown op {op!r} (one of {', '.join(OPS)})")

    def plan_run(self, state: dict[str, Any], n: int, images: int, command: Mapping[str, Any] | None = None) -> None:
        if state["open"] is not None:
            raise CommandError(f"run: procedure {state['open']['procedure']} is still open (end or abort it first)")
        for _ in range(n):
            seq = self._start(state, command or {})
            aborted = self.s.abort_every > 0 and seq % self.s.abort_every == 0
            for _ in range(images // 2 if aborted else images):
                self._image(state)
            reason = f"simulated fault: abort_every = {self.s.abort_every}" if aborted else ""
            self._end(state, aborted, reason)

    def _start(self, state: dict[str, Any], command: Mapping[str, Any]) -> int:
        if state["open"] is not None:
            raise CommandError(f"start: procedure {state['open']['procedure']} is still open (end or abort it first)")
        seq = state["seq"] + 1
        key = str(command.get("procedure") or f"SIM-{seq:04d}")
        n = 1
        while not command.get("procedure") and key in state["keys"]:  # a start named it by hand before
            n += 1
            key = f"SIM-{seq:04d}-{n}"
        if "patient" in command and not isinstance(command["patient"], Mapping):
            raise CommandError("patient must be an object (patient_id, patient_name, birth_date, sex)")
        if not KEY_RE.fullmatch(key):
            raise CommandError(f"procedure key must be 1-64 of A-Z a-z 0-9 . _ -, not {key!r}")
        if key in state["keys"]:
            raise CommandError(f"procedure key {key} was used before (a key names one procedure for ever)")
        # A command's own worklist key or patient data wins; then `unscheduled`; then the options.
        patient: dict[str, str] | None = None
        if command.get("worklist") is not None:
            worklist_key = str(command["worklist"])
        elif command.get("patient"):
            worklist_key = ""
        elif self.s.unscheduled:
            worklist_key, patient = "", self._patient(seq)
        else:
            worklist_key, patient = self._worklist_for(state)
        if isinstance(command.get("patient"), Mapping):
            patient = {k: str(v) for k, v in command["patient"].items()
                       if k in ("patient_id", "patient_name", "birth_date", "sex") and v}
            _check_patient(patient)
        state["seq"] = seq
        state["keys"].append(key)
        state["open"] = {"procedure": key, "seq": seq, "images": 0}
        state["pending"].append({
            "t": "start", "p": key, "wl": worklist_key, "patient": patient or None,
            "desc": str(command.get("description", "")), "op": str(command.get("operator", "")),
            "ts": time.time(),
        })
        return seq

    def _worklist_for(self, state: dict[str, Any]) -> tuple[str, dict[str, str] | None]:
        # worklist_keys are used one per started procedure, in order; then `worklist`.
        used = state.get("worklist_keys_used", 0)
        if used < len(self.s.worklist_keys):
            state["worklist_keys_used"] = used + 1
            return self.s.worklist_keys[used], None
        return parse_worklist(self.s.worklist)

    def _patient(self, seq: int) -> dict[str, str]:
        return {"patient_id": f"SIM{self.s.seed}-{seq:04d}", "patient_name": f"SIMULATED^PATIENT{seq}",
                "birth_date": "19700101", "sex": "O"}

    def _image(self, state: dict[str, Any]) -> None:
        o = state["open"]
        o["images"] += 1
        state["images_planned"] = count = state.get("images_planned", 0) + 1
        state["pending"].append({
            "t": "image", "p": o["procedure"], "i": str(o["images"]), "seq": o["seq"], "n": o["images"],
            "cols": self.s.columns, "rows": self.s.rows, "bits": self.s.bits, "color": self.s.color,
            "seed": self.s.seed, "bad": self.s.bad_image_every > 0 and count % self.s.bad_image_every == 0,
        })

    def _end(self, state: dict[str, Any], aborted: bool, reason: str) -> None:
        state["pending"].append({"t": "end", "p": state["open"]["procedure"], "aborted": aborted, "reason": reason})
        state["open"] = None


def _int(value: object, key: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise CommandError(f"{key} must be an integer from {low} to {high}, not {value!r}")
    return value


def _check_patient(p: Mapping[str, str]) -> None:
    if p.get("sex", "") not in ("", "M", "F", "O"):
        raise CommandError(f"sex must be M, F or O, not {p['sex']!r}")
    if p.get("birth_date") and not re.fullmatch(r"\d{8}", p["birth_date"]):
        raise CommandError(f"birth_date must be YYYYMMDD, not {p['birth_date']!r}")


# ------------------------------------------------------------------ events and pixels


def synthetic_image(seq: int, n: int, cols: int, rows: int, bits: int, color: bool, seed: int) -> np.ndarray:
    """A recognisable image: a diagonal gradient, shifted by the seed and the numbers, with
    "P<procedure> I<image>" drawn large in the top left corner. A pure function of its arguments."""
    from PIL import Image, ImageDraw

    phase = ((seed * 7919 + seq * 104729 + n * 1299709) % 997) / 997.0
    y, x = np.mgrid[0:rows, 0:cols]
    g = ((x / max(cols - 1, 1) + y / max(rows - 1, 1)) / 2 * 0.7 + phase * 0.3) % 1.0
    text = f"P{seq} I{n}"
    left, upper, right, lower = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text)
    label = Image.new("L", (right - left + 2, lower - upper + 2), 0)
    ImageDraw.Draw(label).text((1 - left, 1 - upper), text, fill=255)
    scale = max(1, min(cols * 2 // 3 // label.width, rows // 3 // label.height))
    mask = np.asarray(label.resize((label.width * scale, label.height * scale), Image.Resampling.NEAREST)) > 127
    mask = mask[: rows - 2, : cols - 2]
    if color:
        img = np.stack([g, x / max(cols - 1, 1), np.full_like(g, phase)], axis=-1) * 200
        img = img.astype(np.uint8)
        img[2: 2 + mask.shape[0], 2: 2 + mask.shape[1]][mask] = 255
        return img
    top = (1 << bits) - 1
    out = (g * top * 0.8).astype(np.uint8 if bits == 8 else np.uint16)
    out[2: 2 + mask.shape[0], 2: 2 + mask.shape[1]][mask] = top
    return out


def to_event(spec: Mapping[str, Any]) -> DeviceEvent:
    if spec["t"] == "start":
        p = spec.get("patient")
        return ProcedureStarted(
            procedure_key=spec["p"], worklist_key=spec["wl"], patient=PatientData(**p) if p else None,
            description=spec.get("desc", ""), operator=spec.get("op", ""), timestamp=spec.get("ts"),
        )
    if spec["t"] == "image":
        pixels = synthetic_image(spec["seq"], spec["n"], spec["cols"], spec["rows"], spec["bits"], spec["color"],
                                 spec["seed"])
        if spec.get("bad"):  # the fault `bad_image_every`: two samples per pixel, which no photometric has
            pixels = np.stack([pixels, pixels], axis=-1)
        return ImageAcquired(procedure_key=spec["p"], image_key=spec["i"], pixels=pixels, bits_stored=spec["bits"],
                             photometric="RGB" if spec["color"] else "MONOCHROME2")
    return ProcedureEnded(procedure_key=spec["p"], aborted=spec["aborted"], reason=spec["reason"])


# ------------------------------------------------------------------ the device


class SimDevice:
    """The state on disk and the operations on it (blocking; run in a worker thread)."""

    def __init__(self, settings: Settings, data_dir: Path) -> None:
        self.s = settings
        self.base = sim_dir(data_dir)
        self.planner = Planner(settings)
        self.state: dict[str, Any] = {}

    def open(self) -> None:
        for sub in ("inbox", "rejected"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        path = self.base / STATE_FILE
        if path.exists():
            try:
                self.state = json.loads(path.read_text())
            except ValueError as exc:
                raise OSError(f"{path}: unreadable simulated device state: {exc}") from exc
            return
        self.state = new_state()
        if self.s.procedures:
            self.planner.plan_run(self.state, self.s.procedures, self.s.images)
            self.state["commands"]["profile"] = self.state["acked"] + len(self.state["pending"])
        self._save()

    def _save(self) -> None:
        write_durably(self.base / STATE_FILE, (json.dumps(self.state, indent=0) + "\n").encode())

    def take_commands(self) -> None:
        """Plan every command in the inbox, in order."""
        inbox = self.base / "inbox"
        for path in sorted(inbox.glob("*.json")):
            cid = path.stem
            if cid in self.state["commands"]:  # planned before a crash, not yet deleted
                path.unlink()
                continue
            trial = json.loads(json.dumps(self.state))
            try:
                command = json.loads(path.read_text())
                if not isinstance(command, dict):
                    raise CommandError("a JSON object was expected")
                self.planner.apply(trial, command)
            except (CommandError, ValueError) as exc:
                self._reject(path, str(exc))
                continue
            trial["commands"][cid] = trial["acked"] + len(trial["pending"])
            while len(trial["commands"]) > REMEMBERED_COMMANDS:
                trial["commands"].pop(next(iter(trial["commands"])))
            self.state = trial
            self._save()
            path.unlink()
            log.info("sim: command %s (%s) planned", cid, command.get("op"))
        sync_directory(inbox)

    def _reject(self, path: Path, reason: str) -> None:
        rejected = self.base / "rejected"
        write_durably(rejected / f"{path.stem}.reason", (reason + "\n").encode())
        os.replace(path, rejected / path.name)
        sync_directory(rejected)
        log.warning("sim: command %s rejected: %s", path.stem, reason)

    def current(self) -> Mapping[str, Any] | None:
        return self.state["pending"][0] if self.state["pending"] else None

    def acknowledge(self) -> None:
        spec = self.state["pending"].pop(0)
        self.state["acked"] += 1
        d = self.state["delivered"]
        if spec["t"] == "start":
            d["procedures"] += 1
        elif spec["t"] == "image":
            d["images"] += 1
        else:
            d["aborted" if spec["aborted"] else "ended"] += 1
        self._save()


class SimDriver:
    """The `sim` driver (see the module docstring)."""

    def __init__(self, settings: Settings, data_dir: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self._closed = False

    async def events(self) -> AsyncIterator[DeviceEvent]:
        device = SimDevice(self.settings, self.data_dir)
        limiter = trio.CapacityLimiter(1)
        await trio.to_thread.run_sync(device.open, limiter=limiter)
        yield DeviceStatus(connected=True, info=f"simulated device, state in {device.base}")
        while not self._closed:
            await trio.to_thread.run_sync(device.take_commands, limiter=limiter)
            spec = device.current()
            if spec is None:
                await trio.sleep(self.settings.poll)
                continue
            event = await trio.to_thread.run_sync(to_event, spec, limiter=limiter)
            yield event
            # The consumer asked for the next event: it has recorded this one.
            await trio.to_thread.run_sync(device.acknowledge, limiter=limiter)
            if self.settings.interval:
                await trio.sleep(self.settings.interval)

    async def aclose(self) -> None:
        self._closed = True


def open_driver(options: Mapping[str, object], data_dir: Path) -> SimDriver:
    return SimDriver(parse_options(options), data_dir)


__all__ = ["CommandError", "Planner", "Settings", "SimDriver", "command_outcome", "open_driver",
           "parse_options", "parse_worklist", "queue_command", "read_state", "spool", "synthetic_image"]
