"""The serial acquisition driver over pseudo-terminals and pyserial's loop://, against the device simulator."""

from __future__ import annotations

import os
import random
import re
import select
import subprocess
import sys
import time
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import trio

from drivers.acquisition.serial import device as sim
from drivers.acquisition.serial.driver import SerialDriver, open_driver
from drivers.acquisition.serial.link import ACK, ENQ, EOT, NAK, encode_frame, split_message
from drivers.acquisition.serial.message import encode_message, parse_message
from drivers.acquisition.serial.transport import PortOptions
from drivers.base import (
    AcquisitionDriver, DeviceStatus, DriverOptionError, ImageAcquired, ProcedureEnded, ProcedureStarted, open_device,
)

DEADLINE = 120  # seconds: generous, for a loaded machine


# ------------------------------------------------------------------ options


@pytest.mark.parametrize("options, key", [
    ({"port": "/dev/ttyS0", "speed": 9600}, "speed"),
    ({}, "port"),
    ({"port": "/dev/ttyS0", "url": "loop://"}, "port"),
    ({"port": ""}, "port"),
    ({"port": "/dev/ttyS0", "baudrate": 12345}, "baudrate"),
    ({"port": "/dev/ttyS0", "baudrate": "9600"}, "baudrate"),
    ({"port": "/dev/ttyS0", "bytesize": 9}, "bytesize"),
    ({"port": "/dev/ttyS0", "parity": "X"}, "parity"),
    ({"port": "/dev/ttyS0", "stopbits": 3}, "stopbits"),
    ({"usb": "0403-6001"}, "usb"),
    ({"usb": "04030:6001"}, "usb"),
])
def test_bad_options_name_the_key(options: dict, key: str, tmp_path: Path) -> None:
    with pytest.raises(DriverOptionError) as info:
        open_driver(options, tmp_path)
    assert info.value.key == key


def test_good_options_and_the_entry_point(tmp_path: Path) -> None:
    options = PortOptions.from_mapping({"usb": "0403:6001", "baudrate": 115200, "parity": "even", "stopbits": 2, "bytesize": 7})
    assert (options.usb, options.baudrate, options.parity, options.stopbits, options.bytesize) == ((0x0403, 0x6001), 115200, "E", 2, 7)
    driver = open_device("serial", {"url": "loop://"}, tmp_path)
    assert isinstance(driver, AcquisitionDriver) and isinstance(driver, SerialDriver)


# ------------------------------------------------------------------ helpers


class Pty:
    """A pseudo-terminal pair in raw mode: the driver opens `path`, the device side uses `master`."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty()
    yield p
    p.close()


def expected_events(messages: list[tuple[str, sim.MessageSource]]) -> list[object]:
    return [e for _, m in messages for e in parse_message(m())[1]]


def same(a: object, b: object) -> bool:
    if isinstance(a, ImageAcquired) and isinstance(b, ImageAcquired):
        return (a.procedure_key, a.image_key, a.bits_stored) == (b.procedure_key, b.image_key, b.bits_stored) and \
            np.array_equal(a.pixels, b.pixels) and a.pixels.dtype == b.pixels.dtype
    return a == b


async def collect(events: AsyncIterator[object], count: int) -> list[object]:
    """The next `count` device events (DeviceStatus left out)."""
    out: list[object] = []
    async for event in events:
        if not isinstance(event, DeviceStatus):
            out.append(event)
            if len(out) == count:
                break
    return out


class ManualDevice:
    """A hand-driven sender on the device side of a pty: blocking, run it in a thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def reply(self, timeout: float = 30.0) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        return os.read(self.fd, 1) if ready else b""

    def send(self, data: bytes, expect_reply: bool = True) -> bytes:
        os.write(self.fd, data)
        return self.reply() if expect_reply else b""


async def device_then_stop(device_side: Callable[[], None], nursery: trio.Nursery) -> None:
    """Run the blocking device side in a thread; once it is done, stop waiting for more events."""
    await trio.to_thread.run_sync(device_side)
    nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ over a pty, against the simulator


@pytest.mark.parametrize("size, faults", [
    # a dropped frame costs the whole message (the sender's timer, then from the start): not on 2,900 frames
    (512, dict(corrupt=0.03, noise=0.05, reply_timeout=15.0)),
    (16, dict(corrupt=0.1, drop=0.1, noise=0.1, reply_timeout=2.0)),
    # the device reboots in the middle of a frame: its new ENQ drops the partial message at once
    (128, dict(restart=0.7, corrupt=0.02, reply_timeout=15.0)),
])
async def test_simulated_device_over_a_pty_with_line_faults(pty: Pty, size: int, faults: dict) -> None:
    messages = sim.planned_messages(procedures=2, images=2, rows=size, columns=size, bits=16, seed=5)
    expected = expected_events(messages)
    progress = sim.Progress(None, "t")
    timeout = faults.pop("reply_timeout")
    device = sim.Simulator(pty.master, messages, progress, reply_timeout=timeout, retry_delay=0.2,
                           faults=sim.Faults(**faults, rng=random.Random(1)), log=lambda s: None)
    driver = open_driver({"port": pty.path, "baudrate": 115200}, Path("."))
    got: list[object] = []
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def run_device() -> None:
                await trio.to_thread.run_sync(device.run, time.monotonic() + DEADLINE)
                done.set()

            nursery.start_soon(run_device)
            events = driver.events()
            first = await events.__anext__()
            assert first == DeviceStatus(True, pty.path)
            async for event in events:
                # one event per message here: it is acknowledged only when we ask for the next one
                assert progress.acked == len(got)
                got.append(event)
                if len(got) == len(expected):
                    break
            await events.aclose()  # no pull after the last one: its ACK was never sent
            assert progress.acked == len(expected) - 1
            await driver.aclose()
            device.stop()
    assert len(got) == len(expected) and all(same(a, b) for a, b in zip(got, expected))
    assert got[2].pixels.shape == (size, size)  # type: ignore[attr-defined]


async def test_every_message_acknowledged_after_the_consumer_pulls(pty: Pty) -> None:
    messages = sim.planned_messages(procedures=1, images=1, rows=8, columns=8, measurements=2, abort_every=1)
    progress = sim.Progress(None, "t")
    device = sim.Simulator(pty.master, messages, progress, reply_timeout=5.0, retry_delay=0.2, log=lambda s: None)
    driver = open_driver({"port": pty.path}, Path("."))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            result: list[bool] = []

            async def run_device() -> None:
                result.append(await trio.to_thread.run_sync(device.run, time.monotonic() + DEADLINE))

            nursery.start_soon(run_device)
            events = driver.events()
            got = await collect(events, 5)  # start, image, 2 measurements + end (one message)
            assert isinstance(got[-1], ProcedureEnded) and got[-1].aborted and got[-1].reason == "simulated fault"
            assert progress.acked == 2
            with trio.move_on_after(DEADLINE) as pulling:  # pulling once more sends the ACK; the device then finishes

                async def stop_pulling_when_done() -> None:
                    while not result:
                        await trio.sleep(0.05)
                    pulling.cancel()

                nursery.start_soon(stop_pulling_when_done)
                async for _ in events:
                    pass
    await driver.aclose()
    assert result == [True] and progress.acked == 3


async def test_device_restarted_mid_message_the_image_arrives_once_and_whole(pty: Pty) -> None:
    messages = sim.planned_messages(procedures=1, images=1, rows=256, columns=256, bits=12, seed=9)
    image_text = messages[1][1]()
    frames = split_message(image_text)
    manual = ManualDevice(pty.master)

    def half_a_message() -> None:
        assert manual.send(bytes([ENQ])) == bytes([ACK])
        for n, text in enumerate(frames[:5], 1):
            assert manual.send(encode_frame(n, text, False)) == bytes([ACK])
        os.write(pty.master, encode_frame(6, frames[5], False)[:100])  # the power goes mid-frame

    progress = sim.Progress(None, "t")
    device = sim.Simulator(pty.master, messages, progress, reply_timeout=15.0, retry_delay=0.2, log=lambda s: None)
    driver = open_driver({"port": pty.path}, Path("."))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            events = driver.events()
            assert (await events.__anext__()).connected  # type: ignore[union-attr]

            async def device_side() -> None:
                await trio.to_thread.run_sync(half_a_message)
                await trio.to_thread.run_sync(device.run, time.monotonic() + DEADLINE)  # rebooted: from the start

            nursery.start_soon(device_side)
            got = await collect(events, 3)
            device.stop()
    await driver.aclose()
    expected = expected_events(messages)
    assert all(same(a, b) for a, b in zip(got, expected, strict=True))


async def test_device_silent_mid_message_is_discarded_and_nothing_half_kept(pty: Pty) -> None:
    whole = encode_message("D", [ProcedureStarted("WHOLE")])
    partial_text = encode_message("D", [ProcedureStarted("PARTIAL", description="x" * 600)])
    frames = split_message(partial_text)
    manual = ManualDevice(pty.master)

    def device_side() -> None:
        assert manual.send(bytes([ENQ])) == bytes([ACK])
        assert manual.send(encode_frame(1, frames[0], False)) == bytes([ACK])
        time.sleep(1.0)  # the device goes silent, longer than the receiver's timer (0.3 s here)
        assert manual.send(encode_frame(2, frames[1], False), expect_reply=False) == b""
        assert manual.reply(timeout=1.0) == b""  # the receiver is neutral again: the late frame is noise
        os.write(pty.master, bytes([EOT]))
        assert manual.send(bytes([ENQ])) == bytes([ACK])
        [only] = split_message(whole)
        assert manual.send(encode_frame(1, only, True)) == bytes([ACK])
        os.write(pty.master, bytes([EOT]))

    driver = SerialDriver(PortOptions.from_mapping({"port": pty.path}), receiver_timeout=0.3)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            events = driver.events()
            assert (await events.__anext__()).connected  # type: ignore[union-attr]
            nursery.start_soon(device_then_stop, device_side, nursery)
            [event] = await collect(events, 1)
            assert event == ProcedureStarted("WHOLE")
            await events.__anext__()  # pull once more: the WHOLE message is ACKed, the device side completes
    await driver.aclose()


async def test_loop_url_without_a_file_descriptor(tmp_path: Path) -> None:
    driver = open_driver({"url": "loop://"}, tmp_path)
    text = encode_message("LOOP", [ProcedureStarted("P-LOOP", "ACC")])
    with trio.fail_after(DEADLINE):
        events = driver.events()
        assert (await events.__anext__()).connected  # type: ignore[union-attr]
        port = driver.port
        assert port is not None
        # our own replies come back too (it is a loop): the receiver ignores them as line noise
        port.serial.write(bytes([ENQ]) + b"\x99noise" + encode_frame(1, text, True) + bytes([EOT]))
        [event] = await collect(events, 1)
        assert event == ProcedureStarted("P-LOOP", "ACC")
        await events.aclose()
    await driver.aclose()


# ------------------------------------------------------------------ unplug, replug


async def test_reconnects_when_the_device_goes_away_and_comes_back(tmp_path: Path) -> None:
    link = tmp_path / "ttyDEVICE"
    first = Pty()
    link.symlink_to(first.path)
    driver = open_driver({"port": str(link)}, tmp_path)
    second: Pty | None = None
    try:
        with trio.fail_after(DEADLINE):
            events = driver.events()
            assert await events.__anext__() == DeviceStatus(True, str(link))
            first.close()  # unplugged
            lost = await events.__anext__()
            assert isinstance(lost, DeviceStatus) and not lost.connected
            second = Pty()
            os.unlink(link)
            link.symlink_to(second.path)  # plugged back, under another device node
            assert await events.__anext__() == DeviceStatus(True, str(link))
            messages = sim.planned_messages(procedures=1, images=0, rows=1, columns=1)
            device = sim.Simulator(second.master, messages, sim.Progress(None, "t"), reply_timeout=5.0, log=lambda s: None)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, device.run, time.monotonic() + DEADLINE)
                got = await collect(events, 2)
                device.stop()
            assert [type(e) for e in got] == [ProcedureStarted, ProcedureEnded]
            await events.aclose()
    finally:
        await driver.aclose()
        if second:
            second.close()


async def test_usb_vid_pid_is_found_again_after_a_replug(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from drivers.acquisition.serial import transport

    present: list[SimpleNamespace] = []
    monkeypatch.setattr(transport.serial.tools.list_ports, "comports", lambda: list(present))
    monkeypatch.setattr("drivers.acquisition.serial.driver.BACKOFF_MAX", 0.2)
    driver = open_driver({"usb": "0403:6001"}, tmp_path)
    first, second = Pty(), Pty()
    try:
        with trio.fail_after(DEADLINE):
            events = driver.events()
            absent = await events.__anext__()
            assert absent == DeviceStatus(False, "no USB serial port 0403:6001 is present")
            present[:] = [SimpleNamespace(device="/dev/nothing", vid=0x1234, pid=0x6001),
                          SimpleNamespace(device=first.path, vid=0x0403, pid=0x6001)]
            assert await events.__anext__() == DeviceStatus(True, first.path)
            present.clear()
            first.close()
            assert not (await events.__anext__()).connected  # type: ignore[union-attr]
            present[:] = [SimpleNamespace(device=second.path, vid=0x0403, pid=0x6001)]
            assert await events.__anext__() == DeviceStatus(True, second.path)
            await events.aclose()
    finally:
        await driver.aclose()
        second.close()


# ------------------------------------------------------------------ the simulator command, killed and restarted


async def test_simulator_command_killed_mid_run_every_message_arrives_whole(pty: Pty, tmp_path: Path) -> None:
    state = tmp_path / "device.json"
    args = ["--fd", str(pty.master), "--state", str(state), "--procedures", "2", "--images", "3", "--size", "128x96",
            "--bits", "16", "--seed", "3", "--reply-timeout", "2", "--retry-delay", "0.2"]
    command = [sys.executable, "-m", "drivers.acquisition.serial.device", *args]
    plan = sim.planned_messages(procedures=2, images=3, rows=96, columns=128, bits=16, seed=3)
    expected = expected_events(plan)
    driver = open_driver({"port": pty.path}, tmp_path)
    got: list[object] = []
    rnd = random.Random(11)
    acknowledged = re.compile(rb"(?m)^acknowledged \d+/")

    async def start() -> trio.Process:
        return await trio.lowlevel.open_process(command, pass_fds=[pty.master], stderr=subprocess.PIPE)

    async def kill_after_an_ack(process: trio.Process) -> None:
        buffer = b""
        assert process.stderr is not None
        async for chunk in process.stderr:
            buffer += chunk
            if acknowledged.search(buffer):
                await trio.sleep(rnd.random() * 0.02)  # somewhere in the next message
                process.kill()
                return

    async def consume() -> None:
        async for event in driver.events():
            if not isinstance(event, DeviceStatus):
                got.append(event)

    with trio.fail_after(DEADLINE * 2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            for _ in range(3):
                process = await start()
                await kill_after_an_ack(process)
                await process.wait()
                assert process.returncode == -9
            final = await start()
            assert final.stderr is not None
            async for _ in final.stderr:
                pass
            assert await final.wait() == 0  # every message acknowledged, so recorded: nothing left to re-send
            nursery.cancel_scope.cancel()
    await driver.aclose()
    # at least once, and whole: a message is repeated only right after itself (its ACK was not sent in time)
    unique = [e for i, e in enumerate(got) if i == 0 or not same(e, got[i - 1])]
    assert len(unique) == len(expected) and all(same(a, b) for a, b in zip(unique, expected))


async def test_aclose_from_another_task_ends_the_event_stream_quietly(pty: Pty) -> None:
    driver = open_driver({"port": pty.path}, Path("."))
    seen: list[object] = []
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            connected = trio.Event()

            async def consume() -> None:
                async for event in driver.events():
                    seen.append(event)
                    connected.set()

            nursery.start_soon(consume)
            await connected.wait()
            await driver.aclose()  # the consumer is blocked reading the port: it must end, without an error
    assert seen == [DeviceStatus(True, pty.path)]


async def test_a_message_that_does_not_parse_is_refused_with_nak_and_nothing_is_kept(pty: Pty) -> None:
    bad = b"H|D|1\rI|P|1|2|2|8|MONOCHROME2|||4|00000000\rD|AAECAw==\rL|N"  # wrong CRC-32
    good = encode_message("D", [ProcedureStarted("GOOD")])
    manual = ManualDevice(pty.master)
    replies: list[bytes] = []

    def device_side() -> None:
        assert manual.send(bytes([ENQ])) == bytes([ACK])
        [frame] = [encode_frame(1, t, True) for t in split_message(bad)]
        for _ in range(6):
            replies.append(manual.send(frame))
        os.write(pty.master, bytes([EOT]))  # six refusals: the device aborts
        assert manual.send(bytes([ENQ])) == bytes([ACK])
        assert manual.send(encode_frame(1, good, True)) == bytes([ACK])
        os.write(pty.master, bytes([EOT]))

    driver = open_driver({"port": pty.path}, Path("."))
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            events = driver.events()
            assert (await events.__anext__()).connected  # type: ignore[union-attr]
            nursery.start_soon(device_then_stop, device_side, nursery)
            [event] = await collect(events, 1)
            assert event == ProcedureStarted("GOOD")
            await events.__anext__()  # the ACK of GOOD goes out on this pull; the device side completes
    await driver.aclose()
    assert replies == [bytes([NAK])] * 6


async def test_simulator_command_reports_naks_and_matches_planned_events(pty: Pty, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "drivers.acquisition.serial.device", "--fd", str(pty.master), "--procedures", "1",
               "--images", "2", "--size", "64x32", "--bits", "12", "--seed", "5", "--corrupt", "0.3", "--fault-seed", "2"]
    driver = open_driver({"port": pty.path}, tmp_path)
    got: list[object] = []

    async def consume() -> None:
        async for event in driver.events():
            if not isinstance(event, DeviceStatus):
                got.append(event)

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            result = await trio.run_process(command, pass_fds=[pty.master], capture_stderr=True, check=False)
            nursery.cancel_scope.cancel()
    await driver.aclose()
    assert result.returncode == 0
    log = result.stderr.decode()
    assert "NAK for frame" in log and "acknowledged 4/4" in log and "all messages acknowledged" in log
    expected = sim.planned_events(procedures=1, images=2, size="64x32", bits=12, seed=5)
    assert expected[1].pixels.shape == (32, 64)  # type: ignore[attr-defined]
    assert len(got) == len(expected) and all(same(a, b) for a, b in zip(got, expected))
