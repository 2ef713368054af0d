"""A device-side simulator for the serial protocol (drivers/acquisition/PROTOCOL.md), library and command.

    python -m drivers.acquisition.serial.device (--port PATH | --pty LINK | --fd N)
        [--script FILE | --procedures N --images M --size 256x256 [--bits 16]] [--seed S]
        [--state FILE] [--reply-timeout 15] [--retry-delay 1] [--corrupt P] [--drop P] [--noise P] [--restart P]

It plays the instrument of ASTM E1381: it sends each message (procedure start, one per image,
procedure end) and moves to the next only once the receiver ACKed its last frame. Its progress (how
many messages were acknowledged) is written to `--state` atomically and fsynced after each ACK, so
after a restart of the simulator or of the agent the first unacknowledged message is sent again, with
the same procedure and image keys. It exits 0 once every message is acknowledged.

Ports: `--port PATH` opens a tty; `--pty LINK` creates a pseudo-terminal pair, keeps it, and points
the symlink LINK at the other end for the agent; `--fd N` uses an inherited descriptor (for example
the master of a pair a test made with os.openpty()).
Faults, per frame sent, with `--fault-seed`: `--corrupt` (wrong checksum), `--drop` (not sent at all),
`--noise` (random bytes before the frame; never EOT or ENQ, which would rightly end the session);
per message, `--restart` (the device reboots once in the middle of a frame and sends the message again
from ENQ, as after a power cut).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import random
import select
import sys
import threading
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drivers.base import DeviceEvent, ImageAcquired, Measurement, PatientData, ProcedureEnded, ProcedureStarted

from .link import ENQ, EOT, MAX_REFUSALS, STX, FrameRefused, Link, MessageSent, SendAborted, split_message
from .message import encode_message, parse_message

MessageSource = Callable[[], bytes]


# ------------------------------------------------------------------ what to send


def planned_messages(*, procedures: int, images: int, rows: int, columns: int, bits: int = 16, seed: int = 0,
                     device_id: str = "SIM", worklist_keys: Sequence[str] = (), measurements: int = 0,
                     abort_every: int = 0) -> list[tuple[str, MessageSource]]:
    """(label, encoder) for each message of a generated run; the same arguments give the same bytes."""
    out: list[tuple[str, MessageSource]] = []
    for p in range(procedures):
        key = f"{device_id}-{seed}-{p + 1:04d}"
        wl = worklist_keys[p] if p < len(worklist_keys) else ""
        patient = None if wl else PatientData(f"{device_id}-PAT-{p + 1:04d}", f"SIM^PATIENT{p + 1}", "19700101", "O")
        start = ProcedureStarted(key, wl, patient, "Simulated procedure", "OPERATOR", 1_700_000_000.0 + p)
        out.append((f"{key} start", _encoder(device_id, [start])))
        for i in range(images):
            def image(p: int = p, i: int = i, key: str = key) -> bytes:
                rng = np.random.default_rng([seed, p, i])
                pixels = rng.integers(0, 1 << bits, size=(rows, columns), dtype=np.uint16 if bits > 8 else np.uint8)
                return encode_message(device_id, [ImageAcquired(key, str(i + 1), pixels, bits, "MONOCHROME2",
                                                                pixel_spacing_mm=(0.5, 0.5))])
            out.append((f"{key} image {i + 1}", image))
        ended: list[DeviceEvent] = [Measurement(key, f"MEAS{m + 1}", str(m + 1), "mm") for m in range(measurements)]
        aborted = bool(abort_every) and (p + 1) % abort_every == 0
        ended.append(ProcedureEnded(key, aborted, "simulated fault" if aborted else ""))
        out.append((f"{key} end", _encoder(device_id, ended)))
    return out


def planned_events(*, procedures: int, images: int, size: str = "256x256", bits: int = 16, seed: int = 0,
                   device_id: str = "SIM", worklist_keys: Sequence[str] = (), measurements: int = 0,
                   abort_every: int = 0) -> list[DeviceEvent]:
    """The events a receiver gets from the command run with the same options (names as on the command line,
    `size` as COLUMNSxROWS), in order: for tests that compare what was stored with what was sent."""
    columns, rows = parse_size(size)
    messages = planned_messages(procedures=procedures, images=images, rows=rows, columns=columns, bits=bits,
                                seed=seed, device_id=device_id, worklist_keys=worklist_keys,
                                measurements=measurements, abort_every=abort_every)
    return [event for _, encode in messages for event in parse_message(encode())[1]]


def parse_size(size: str) -> tuple[int, int]:
    """'256x128' -> (columns 256, rows 128); ValueError otherwise."""
    columns, rows = (int(v) for v in size.lower().split("x"))
    if columns < 1 or rows < 1:
        raise ValueError(size)
    return columns, rows


def scripted_messages(script: dict) -> list[tuple[str, MessageSource]]:
    """Messages from a JSON script (format in PROTOCOL.md, "The simulator")."""
    device_id = str(script.get("device_id", "SIM"))
    out: list[tuple[str, MessageSource]] = []
    for proc in script["procedures"]:
        key = str(proc["procedure_key"])
        patient = PatientData(**proc["patient"]) if proc.get("patient") else None
        start = ProcedureStarted(key, str(proc.get("worklist_key", "")), patient, str(proc.get("description", "")),
                                 str(proc.get("operator", "")), proc.get("timestamp"))
        out.append((f"{key} start", _encoder(device_id, [start])))
        for n, img in enumerate(proc.get("images", ())):
            bits = int(img.get("bits", 8))
            rng = np.random.default_rng([n, len(key)])
            pixels = rng.integers(0, 1 << bits, size=(int(img["rows"]), int(img["columns"])),
                                  dtype=np.uint16 if bits > 8 else np.uint8)
            event = ImageAcquired(key, str(img.get("image_key", n + 1)), pixels, bits,
                                  attributes=tuple((str(k), str(v)) for k, v in img.get("attributes", {}).items()))
            out.append((f"{key} image {event.image_key}", _encoder(device_id, [event])))
        ended: list[DeviceEvent] = [Measurement(key, str(m["name"]), str(m["value"]), str(m.get("unit", "")))
                                    for m in proc.get("measurements", ())]
        reason = proc.get("aborted")
        ended.append(ProcedureEnded(key, reason is not None, str(reason or "")))
        out.append((f"{key} end", _encoder(device_id, ended)))
    return out


def _encoder(device_id: str, events: list[DeviceEvent]) -> MessageSource:
    return lambda: encode_message(device_id, events)


# ------------------------------------------------------------------ progress


@dataclass
class Progress:
    """How many messages of the plan `plan` the receiver acknowledged; durable in `path` (if any)."""

    path: Path | None
    plan: str
    acked: int = 0

    @classmethod
    def load(cls, path: Path | None, plan: str) -> Progress:
        if path is None or not path.exists():
            return cls(path, plan)
        data = json.loads(path.read_text())
        if data.get("plan") != plan:
            raise SystemExit(f"{path}: this state file belongs to another run (other arguments or script)")
        return cls(path, plan, int(data["acked"]))

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"plan": self.plan, "acked": self.acked}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# ------------------------------------------------------------------ the device


@dataclass
class Faults:
    corrupt: float = 0.0
    drop: float = 0.0
    noise: float = 0.0
    restart: float = 0.0  # per message: the device reboots once in the middle of it
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def restart_at(self, frames: int) -> int | None:
        """The frame (1-based) of a message of `frames` frames during which the device reboots, or None."""
        if self.restart and self.rng.random() < self.restart:
            return self.rng.randint(1, frames)
        return None

    def apply(self, chunk: bytes) -> bytes:
        """What actually goes on the line for `chunk` (one frame, or control characters)."""
        if not chunk or chunk[0] != STX:
            return chunk
        out = b""
        if self.noise and self.rng.random() < self.noise:
            allowed = [b for b in range(256) if b not in (ENQ, EOT)]
            out += bytes(self.rng.choice(allowed) for _ in range(self.rng.randint(1, 16)))
        if self.drop and self.rng.random() < self.drop:
            return out
        if self.corrupt and self.rng.random() < self.corrupt:
            c1 = chunk[-4]
            chunk = chunk[:-4] + bytes([0x30 if c1 != 0x30 else 0x31]) + chunk[-3:]
        return out + chunk


class Simulator:
    """Sends `messages` over the descriptor `fd` until each is acknowledged; `log` gets progress lines."""

    def __init__(self, fd: int, messages: list[tuple[str, MessageSource]], progress: Progress, *,
                 reply_timeout: float = 15.0, retry_delay: float = 1.0, faults: Faults | None = None,
                 log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> None:
        self.fd = fd
        self.messages = messages
        self.progress = progress
        self.faults = faults or Faults()
        self.log = log
        self._timers = (reply_timeout, retry_delay)
        self.link = Link(priority=True, sender_timeout=reply_timeout, retry_delay=retry_delay)
        self._stop = threading.Event()
        os.set_blocking(fd, False)

    def stop(self) -> None:
        """Make `run` return False soon (from another thread)."""
        self._stop.set()

    def run(self, until: float | None = None) -> bool:
        """True once every message is acknowledged; False if `until` (time.monotonic) came first."""
        link, pending = self.link, bytearray()
        frames_sent, reboot_at = 0, None

        def queue_next(now: float) -> None:
            nonlocal frames_sent, reboot_at
            text = self.messages[self.progress.acked][1]()
            link.send_message(text, self.progress.acked, now)
            frames_sent, reboot_at = 0, self.faults.restart_at(len(split_message(text)))

        if self.progress.acked < len(self.messages):
            queue_next(time.monotonic())
        while self.progress.acked < len(self.messages):
            now = time.monotonic()
            if (until is not None and now >= until) or self._stop.is_set():
                return False
            out = link.data_to_send()
            if out[:1] == bytes([STX]):
                frames_sent += 1
                if frames_sent == reboot_at:  # the power goes in the middle of this frame
                    pending += out[: len(out) // 2]
                    self.log(f"restarting in the middle of frame {frames_sent}: {self.messages[self.progress.acked][0]}")
                    link = self.link = Link(priority=True, sender_timeout=self._timers[0], retry_delay=self._timers[1])
                    link.send_message(self.messages[self.progress.acked][1](), self.progress.acked, now)
                    reboot_at = None
                    continue
            if out:
                pending += self.faults.apply(out)
            deadline = link.next_deadline()
            wait = 0.2 if deadline is None else max(0.0, min(deadline - now, 0.2))
            readable, writable, _ = select.select([self.fd], [self.fd] if pending else [], [], wait)
            if writable:
                try:
                    del pending[: os.write(self.fd, pending)]
                except BlockingIOError:
                    pass
                except OSError as exc:  # EIO: nobody at the other end; the bytes are lost as on a dead line
                    if exc.errno != errno.EIO:
                        raise
                    pending.clear()
                    time.sleep(0.1)
            data = b""
            if readable:
                try:
                    data = os.read(self.fd, 4096)
                except BlockingIOError:
                    pass
                except OSError as exc:  # EIO: no one has the other end of the pty open (agent down)
                    if exc.errno != errno.EIO:
                        raise
                    time.sleep(0.1)
            now = time.monotonic()
            for event in link.receive_data(data, now) if data else link.tick(now):
                if isinstance(event, MessageSent):
                    self.progress.acked += 1
                    self.progress.save()
                    self.log(f"acknowledged {self.progress.acked}/{len(self.messages)}: {self.messages[event.tag][0]}")  # type: ignore[index]
                    if self.progress.acked < len(self.messages):
                        queue_next(now)
                elif isinstance(event, FrameRefused):
                    self.log(f"NAK for frame {event.number} ({event.count} of {MAX_REFUSALS}): {self.messages[self.progress.acked][0]}")
                elif isinstance(event, SendAborted):
                    self.log(f"not acknowledged ({event.reason}); EOT sent, sending it again: {self.messages[event.tag][0]}")  # type: ignore[index]
        out = link.data_to_send()  # the final EOT
        pending += out
        end = time.monotonic() + 2.0
        while pending and time.monotonic() < end:
            try:
                del pending[: os.write(self.fd, pending)]
            except (BlockingIOError, OSError):
                time.sleep(0.01)
        return True


def open_port(args: argparse.Namespace) -> tuple[int, list[int]]:
    """The descriptor to talk on, and descriptors to keep open meanwhile."""
    if args.fd is not None:
        return args.fd, []
    if args.pty:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: the link is 8-bit clean
        tty.setraw(master)
        link = Path(args.pty)
        tmp = link.with_name(link.name + ".tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, link)
        return master, [slave]  # holding the slave keeps reads on the master from failing with EIO
    fd = os.open(args.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    if os.isatty(fd):
        tty.setraw(fd)
    return fd, []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drivers.acquisition.serial.device", description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="a tty device path")
    where.add_argument("--pty", help="create a pty pair; symlink LINK -> the agent's end")
    where.add_argument("--fd", type=int, help="an inherited descriptor")
    parser.add_argument("--script", type=Path, help="JSON script of procedures (see PROTOCOL.md)")
    parser.add_argument("--procedures", type=int, default=1)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--size", default="256x256", help="COLUMNSxROWS")
    parser.add_argument("--bits", type=int, default=16, choices=range(1, 17), metavar="1..16")
    parser.add_argument("--measurements", type=int, default=0, help="measurements per procedure")
    parser.add_argument("--abort-every", type=int, default=0, help="every Nth procedure ends aborted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device-id", default="SIM")
    parser.add_argument("--worklist-keys", default="", help="comma-separated, one per procedure in order")
    parser.add_argument("--state", type=Path, help="progress file (re-sends the unacknowledged message on restart)")
    parser.add_argument("--reply-timeout", type=float, default=15.0, help="the sender's timer (standard: 15 s)")
    parser.add_argument("--retry-delay", type=float, default=1.0, help="pause before sending again after an abort")
    parser.add_argument("--corrupt", type=float, default=0.0)
    parser.add_argument("--drop", type=float, default=0.0)
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--restart", type=float, default=0.0, help="per message: reboot once mid-message")
    parser.add_argument("--fault-seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.script:
        raw = args.script.read_bytes()
        messages = scripted_messages(json.loads(raw))
        plan = "script:" + hashlib.sha256(raw).hexdigest()
    else:
        try:
            columns, rows = parse_size(args.size)
        except ValueError:
            parser.error(f"--size {args.size!r}: expected COLUMNSxROWS, e.g. 256x256")
        keys = [k for k in args.worklist_keys.split(",")] if args.worklist_keys else []
        spec = dict(procedures=args.procedures, images=args.images, rows=rows, columns=columns, bits=args.bits,
                    seed=args.seed, device_id=args.device_id, worklist_keys=keys, measurements=args.measurements,
                    abort_every=args.abort_every)
        messages = planned_messages(**spec)  # type: ignore[arg-type]
        plan = "plan:" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    progress = Progress.load(args.state, plan)
    fd, keep = open_port(args)
    faults = Faults(args.corrupt, args.drop, args.noise, args.restart, random.Random(args.fault_seed))
    sim = Simulator(fd, messages, progress, reply_timeout=args.reply_timeout, retry_delay=args.retry_delay,
                    faults=faults)
    print(f"device {args.device_id}: {len(messages)} messages, {progress.acked} already acknowledged", file=sys.stderr, flush=True)
    sim.run()
    print("all messages acknowledged", file=sys.stderr, flush=True)
    del keep
    return 0


if __name__ == "__main__":
    sys.exit(main())
