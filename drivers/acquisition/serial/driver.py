"""The `acquisition.serial` driver: a device on a serial line or a USB serial port, speaking PROTOCOL.md.

The agent is the receiver (the computer system of ASTM E1381); the device sends. One task runs the
link: read what the port has, feed the link, write its answer, fire its timers. Events of a message
are handed out one by one; the link ACKs the message's last frame only when the consumer asks for the
event after the message's last one (it recorded them all), so a crash before that makes the device
send the message again (delivery at least once; procedure_key / image_key make a replay harmless).
A message that does not parse is refused with NAK on its last frame and logged; nothing of it is kept.
When the port fails (device unplugged, pty closed) the driver reports DeviceStatus(connected=False),
drops any partial message, and opens the port again with backoff (0.5 s doubling to 5 s), finding a
USB device by VID:PID again, since its device path may change.
"""

from __future__ import annotations

import logging
from collections import deque
from contextlib import aclosing
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import trio

from drivers.base import DeviceEvent, DeviceStatus, DriverError

from .link import FrameRejected, Link, MessageDiscarded, MessageReceived
from .message import MessageError, parse_message
from .transport import Port, PortOptions

log = logging.getLogger("drivers.acquisition.serial")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 5.0


class SerialDriver:
    """AcquisitionDriver over a serial port. `events()` may be iterated once at a time."""

    def __init__(self, options: PortOptions, *, receiver_timeout: float = 30.0) -> None:
        self.options = options
        self._receiver_timeout = receiver_timeout
        self._closed = False
        self._scope: trio.CancelScope | None = None
        self.port: Port | None = None  # the open port, for tests and status

    async def aclose(self) -> None:
        self._closed = True
        if self._scope is not None:
            self._scope.cancel()
        if self.port is not None:
            self.port.close()
            self.port = None

    async def events(self) -> AsyncIterator[DeviceEvent]:
        backoff = BACKOFF_FIRST
        reported: bool | None = None
        while not self._closed:
            try:  # opening a tty or listing USB devices may block: not on the event loop
                self.port = await trio.to_thread.run_sync(Port, self.options)
            except DriverError as exc:
                if reported is not False:
                    log.warning("serial device not available: %s", exc)
                    reported = False
                    yield DeviceStatus(False, str(exc))
                await self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if self._closed:  # aclose() came while the port was opening
                self.port.close()
                self.port = None
                return
            log.info("serial device connected on %s", self.port.name)
            reported, backoff = True, BACKOFF_FIRST
            yield DeviceStatus(True, self.port.name)
            try:
                async with aclosing(self._session(self.port)) as session:
                    async for event in session:
                        yield event
            except DriverError as exc:
                log.warning("serial device lost: %s", exc)
                reported = False
                if not self._closed:
                    yield DeviceStatus(False, str(exc))
            finally:
                if self.port is not None:
                    self.port.close()
                    self.port = None
            if not self._closed:
                await self._pause(backoff)

    async def _pause(self, seconds: float) -> None:
        with trio.CancelScope() as self._scope:
            await trio.sleep(seconds)
        self._scope = None

    async def _session(self, port: Port) -> AsyncIterator[DeviceEvent]:
        link = Link(priority=False, receiver_timeout=self._receiver_timeout)
        ready: deque[DeviceEvent] = deque()
        rejected: bytes | None = None  # the last refused message, logged once for its retransmissions
        while not self._closed:
            if ready:
                event = ready.popleft()
                yield event
                if not ready:  # the consumer recorded the message's last event: ACK it
                    link.accept(trio.current_time())
                    await port.send_all(link.data_to_send())
                continue
            deadline = link.next_deadline()
            deadline = trio.current_time() + 1.0 if deadline is None else min(deadline, trio.current_time() + 1.0)
            data = b""
            with trio.CancelScope() as self._scope:
                data = await port.receive_some(deadline)
            self._scope = None
            now = trio.current_time()
            for item in link.receive_data(data, now) if data else link.tick(now):
                if isinstance(item, MessageReceived):
                    try:
                        device_id, events = parse_message(item.text)
                    except MessageError as exc:
                        if item.text != rejected:
                            log.error("serial device: message refused (NAK): %s", exc)
                        rejected = item.text
                        link.reject(now)
                        continue
                    if not events:  # a message with no event (H, L only) is acknowledged at once
                        link.accept(now)
                    log.debug("serial message from %s: %d event(s)", device_id, len(events))
                    ready.extend(events)
                elif isinstance(item, MessageDiscarded):
                    log.warning("serial device: partial message discarded (%s, %d bytes)", item.reason, item.received)
                elif isinstance(item, FrameRejected):
                    log.info("serial device: frame refused (NAK): %s", item.reason)
            out = link.data_to_send()
            if out:
                await port.send_all(out)


def open_driver(options: Mapping[str, object], data_dir: Path) -> SerialDriver:
    """Factory for the `acquisition.serial` entry point; validates options, opens nothing yet."""
    return SerialDriver(PortOptions.from_mapping(options))


__all__ = ["SerialDriver", "open_driver"]
