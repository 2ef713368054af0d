"""The serial link under faults, through the whole agent: the device simulator (a subprocess) talks over
a pseudo-terminal line the test holds (PtyLink) to an agent whose `[device]` is the serial driver.

Faults: the simulator's own (frames with a wrong checksum, frames not sent, noise between frames, a
reboot in the middle of a frame), bytes corrupted and acknowledgements lost on the wire (the test's
line filter), and the device killed in the middle of a message and started again from its saved
progress. Whatever happens on the line, each
message arrives once and whole (every planned image is in the agent's store once, pixel for pixel), or
the device is told (NAK, or EOT ending the transfer) and sends it again; nothing half is kept (no
procedure or image the device did not finish sending, no image in a failed state).

The link layer's own cases (each timer, contention, frame numbers) are unit-tested with the driver in
tests/unit/test_serial_*.py; these tests check what the agent keeps.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from tests.conftest import write_profile
from tests.interop.workflow_peers import PtyLink, procedure_reports, procedure_summary, wait_for

pytestmark = pytest.mark.trio

STX, ACK, NAK = b"\x02", b"\x06", b"\x15"
SIM = [sys.executable, "-m", "drivers.acquisition.serial.device"]






class Device:
    """The simulator on the device end of `link`, restartable with the same plan and saved progress."""

    def __init__(self, tmp: Path, link: PtyLink, args: list[str]) -> None:
        self.args = [*SIM, "--port", link.device_path, "--state", str(tmp / "device-state.json"),
                     "--reply-timeout", "3", "--retry-delay", "0.2", *args]
        self.log_path = tmp / "device.log"
        self.proc: trio.Process | None = None

    async def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = await trio.lowlevel.open_process(self.args, stdout=log, stderr=subprocess.STDOUT)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def finished(self, timeout: float = 120) -> None:
        assert self.proc is not None
        with trio.fail_after(timeout):
            await self.proc.wait()
        assert self.proc.returncode == 0, f"simulator exited {self.proc.returncode}: {self.log()}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def agent_profile(tmp: Path, link: PtyLink) -> Any:
    return write_profile(tmp / "agent", f"""
        [device]
        driver = "serial"
        options = {{ port = "{link.agent_path}" }}
        unscheduled = "allow"
        send_to = []
        """)


def completed_count(agent: Any) -> int:
    return sum(r["state"] == "completed" for r in procedure_reports(agent.data_dir))


def stored_pixels(agent: Any) -> dict[tuple[str, str], str]:
    """(procedure key, image key) -> digest of the pixel data the agent stored for it."""
    from pydicom import dcmread

    out = {}
    for r in procedure_reports(agent.data_dir):
        for image in r["images"]:
            with agent.agent.store.open_for_read(image["sop_instance_uid"]) as f:
                ds = dcmread(f)
            out[(r["procedure_key"], image["image_key"])] = hashlib.sha256(ds.pixel_array.tobytes()).hexdigest()
    return out


def planned_pixels(plan: dict[str, Any]) -> dict[tuple[str, str], str]:
    """What the simulator means to send for `plan` (the same arguments give the same bytes), decoded."""
    from drivers.acquisition.serial.device import planned_messages
    from drivers.acquisition.serial.message import parse_message
    from drivers.base import ImageAcquired

    columns, rows = (int(x) for x in plan["size"].split("x"))
    out = {}
    for _label, encode in planned_messages(procedures=plan["procedures"], images=plan["images"], rows=rows,
                                           columns=columns, bits=plan["bits"], seed=plan["seed"]):
        for event in parse_message(encode())[1]:
            if isinstance(event, ImageAcquired):
                out[(event.procedure_key, event.image_key)] = hashlib.sha256(
                    np.ascontiguousarray(event.pixels).tobytes()).hexdigest()
    return out


def check_whole(agent: Any, plan: dict[tuple[str, str], str]) -> None:
    rows = procedure_reports(agent.data_dir)
    states = {(r["procedure_key"], r["state"]) for r in rows}
    assert {s for _, s in states} == {"completed"}, states
    images = [(r["procedure_key"], i["image_key"], i["state"]) for r in rows for i in r["images"]]
    assert all(s == "stored" for *_, s in images), images
    assert agent.agent.store.count() == len(plan) == len(images)
    assert stored_pixels(agent) == plan


#: 32x32 12-bit images: about a dozen frames per image message. A lost frame makes the device time
#: out and abort the whole message (EOT), so per-frame fault rates stay low enough for a message to
#: get through in a few attempts.
PLAN = {"procedures": 2, "images": 3, "size": "32x32", "bits": 12, "seed": 5}


def plan_args(plan: dict[str, Any]) -> list[str]:
    return [x for k, v in plan.items() for x in (f"--{k}", str(v))]


class Replies:
    """Counts the link replies the agent sends to the device (ACK, NAK, EOT pass unchanged)."""

    def __init__(self, then: Callable[[bytes], bytes] | None = None) -> None:
        self.naks = self.acks = 0
        self.then = then

    def __call__(self, chunk: bytes) -> bytes:
        self.naks += chunk.count(NAK)
        self.acks += chunk.count(ACK)
        return self.then(chunk) if self.then else chunk


async def test_bad_checksums_lost_frames_and_noise_from_the_device(tmp_path: Path, start_agent, caplog) -> None:
    replies = Replies()
    link = PtyLink(to_device=replies)
    device = Device(tmp_path, link, [*plan_args(PLAN), "--corrupt", "0.1", "--drop", "0.03", "--noise", "0.1",
                                     "--restart", "0.1", "--fault-seed", "11"])
    try:
        agent = await start_agent(agent_profile(tmp_path, link))
        await device.start()
        await device.finished()
        await wait_for(lambda: completed_count(agent) == PLAN["procedures"], "every procedure completed",
                       show=lambda: procedure_summary(agent.data_dir))
        check_whole(agent, planned_pixels(PLAN))
    finally:
        link.close()
    # the device was told: a frame with a bad checksum was answered NAK (and sent again); a lost frame
    # left the device without a reply, so it ended the transfer (EOT) and the agent dropped the part
    # a device that rebooted in the middle of a frame started the message again from ENQ
    assert replies.naks > 0
    assert "not acknowledged" in device.log() and "restarting in the middle" in device.log()
    assert any("partial message discarded" in rec.getMessage() for rec in caplog.records)


class CorruptSomeFrames:
    """Flip one byte after the STX of some chunks that carry a frame: the checksum no longer matches
    (or the frame's end is lost), so the receiver must not keep it; the sender is told (NAK) or times
    out and ends the transfer."""

    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng, self.rate, self.count = rng, rate, 0

    def __call__(self, chunk: bytes) -> bytes:
        i = chunk.find(STX)
        if i >= 0 and len(chunk) > i + 4 and self.rng.random() < self.rate:
            j = self.rng.randrange(i + 2, len(chunk) - 2)
            chunk = chunk[:j] + bytes([chunk[j] ^ 0x20]) + chunk[j + 1:]
            self.count += 1
        return chunk


class LoseSomeAcks:
    """Drop some ACKs from the agent: the device hears nothing, times out and sends again, so the agent
    sees a frame or a whole message a second time and must not keep it twice (ASTM E1381 6.5.5)."""

    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng, self.rate, self.count = rng, rate, 0

    def __call__(self, chunk: bytes) -> bytes:
        if ACK in chunk and self.rng.random() < self.rate:
            self.count += 1
            return chunk.replace(ACK, b"", 1)
        return chunk


async def test_corrupted_bytes_and_lost_acks_on_the_wire(tmp_path: Path, start_agent) -> None:
    rng = random.Random(23)
    corrupt, lose = CorruptSomeFrames(rng, 0.2), LoseSomeAcks(rng, 0.03)
    link = PtyLink(to_agent=corrupt, to_device=lose)
    device = Device(tmp_path, link, plan_args(PLAN))
    try:
        agent = await start_agent(agent_profile(tmp_path, link))
        await device.start()
        await device.finished(timeout=180)
        await wait_for(lambda: completed_count(agent) == PLAN["procedures"], "every procedure completed",
                       show=lambda: procedure_summary(agent.data_dir))
        check_whole(agent, planned_pixels(PLAN))
    finally:
        link.close()
    assert corrupt.count > 0 and lose.count > 0, (corrupt.count, lose.count)
    assert "not acknowledged" in device.log()


async def test_device_restarted_mid_message(tmp_path: Path, start_agent, caplog) -> None:
    """Kill the device three times while a message is on the line (after some of its frames went
    through) and start it again: the agent keeps no part of the broken message; the re-sent message
    arrives once."""
    plan = {**PLAN, "size": "128x128"}  # several frames per image message, so "mid-message" exists
    plan_digests = planned_pixels(plan)
    link = PtyLink()
    device = Device(tmp_path, link, plan_args(plan))
    try:
        agent = await start_agent(agent_profile(tmp_path, link))
        for n in range(3):
            await device.start()
            start = link.seen_to_agent
            await wait_for(lambda: link.seen_to_agent > start + 3000 * (n + 1), "frames on the line")
            await device.kill()
            # what the agent keeps once it has settled: only whole images (a message it had complete
            # may still be on its way from 'pending' to 'stored' when the device died)
            await wait_for(lambda: all(i["state"] == "stored" for r in procedure_reports(agent.data_dir)
                                       for i in r["images"]), "no image left pending",
                           show=lambda: procedure_summary(agent.data_dir))
            kept = stored_pixels(agent)
            assert kept.items() <= plan_digests.items(), "an image differs from what the device sent"
        await device.start()
        await device.finished()
        await wait_for(lambda: completed_count(agent) == plan["procedures"], "every procedure completed",
                       show=lambda: procedure_summary(agent.data_dir))
        check_whole(agent, plan_digests)
    finally:
        link.close()
    assert any("partial message discarded" in rec.getMessage() for rec in caplog.records)
