"""The serial port under trio: options, finding a USB device by VID:PID, reading without blocking the loop.

A port with a file descriptor (a tty, a USB CDC-ACM or USB-serial adapter, a pseudo-terminal) is put in
non-blocking mode and read when trio says it is readable. A pyserial URL without a descriptor
(`loop://`, `socket://`) is read in a worker thread with a short read timeout, so a read never outlives
its caller by more than that timeout and no byte is lost to a cancelled thread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import serial
import serial.tools.list_ports
import trio

from drivers.base import DriverError, DriverOptionError

_PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD,
             "M": serial.PARITY_MARK, "S": serial.PARITY_SPACE}
_KNOWN = ("port", "usb", "url", "baudrate", "bytesize", "parity", "stopbits")
THREAD_READ_TIMEOUT = 0.05


@dataclass(frozen=True, slots=True)
class PortOptions:
    """Where the device is (exactly one of port, usb, url) and how the line is set."""

    port: str = ""
    usb: tuple[int, int] | None = None
    url: str = ""
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1

    @classmethod
    def from_mapping(cls, options: Mapping[str, object]) -> PortOptions:
        """Validate driver options; DriverOptionError names the key."""
        for key in options:
            if key not in _KNOWN:
                close = [k for k in _KNOWN if k[:2] == str(key)[:2]]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise DriverOptionError(str(key), f"not an option of the serial driver{hint}; known: {', '.join(_KNOWN)}")
        where = [k for k in ("port", "usb", "url") if k in options]
        if len(where) != 1:
            raise DriverOptionError("port", "exactly one of port (a device path), usb (\"VID:PID\") or url (a pyserial URL)")
        values: dict[str, Any] = {}
        for key in ("port", "url"):
            if key in options:
                if not isinstance(options[key], str) or not options[key]:
                    raise DriverOptionError(key, "a non-empty string")
                values[key] = options[key]
        if "usb" in options:
            values["usb"] = parse_vid_pid(options["usb"])
        if "baudrate" in options:
            rate = options["baudrate"]
            if not isinstance(rate, int) or isinstance(rate, bool) or rate not in serial.Serial.BAUDRATES:
                raise DriverOptionError("baudrate", f"one of {', '.join(map(str, serial.Serial.BAUDRATES[1:]))}")
            values["baudrate"] = rate
        if "bytesize" in options:
            if options["bytesize"] not in (5, 6, 7, 8) or isinstance(options["bytesize"], bool):
                raise DriverOptionError("bytesize", "5, 6, 7 or 8")
            values["bytesize"] = options["bytesize"]
        if "parity" in options:
            parity = options["parity"]
            if not isinstance(parity, str) or parity.upper()[:1] not in _PARITIES or len(parity) not in (1, 4, 5):
                raise DriverOptionError("parity", "N, E, O, M or S (none, even, odd, mark, space)")
            values["parity"] = parity.upper()[0]
        if "stopbits" in options:
            if options["stopbits"] not in (1, 1.5, 2) or isinstance(options["stopbits"], bool):
                raise DriverOptionError("stopbits", "1, 1.5 or 2")
            values["stopbits"] = options["stopbits"]
        return cls(**values)

    def describe(self) -> str:
        if self.usb:
            return "usb %04X:%04X" % self.usb
        return self.port or self.url


def parse_vid_pid(value: object) -> tuple[int, int]:
    """'0403:6001' -> (0x0403, 0x6001)."""
    try:
        assert isinstance(value, str)
        vid, pid = value.split(":")
        assert len(vid) == 4 and len(pid) == 4
        return int(vid, 16), int(pid, 16)
    except (AssertionError, ValueError):
        raise DriverOptionError("usb", 'a USB id "VID:PID" in hex, e.g. "0403:6001"') from None


def find_usb_port(vid: int, pid: int) -> str | None:
    """The device path of the first port whose USB VID:PID matches (it may change after a replug)."""
    for info in sorted(serial.tools.list_ports.comports(), key=lambda i: i.device):
        if info.vid == vid and info.pid == pid:
            return str(info.device)
    return None


class Port:
    """An open port; `receive_some` returns b'' at its deadline, raises DriverError when the device is gone."""

    def __init__(self, options: PortOptions) -> None:
        self.options = options
        if options.usb:
            path = find_usb_port(*options.usb)
            if path is None:
                raise DriverError("no USB serial port %04X:%04X is present" % options.usb)
        else:
            path = options.port or options.url
        self.name = path
        try:
            self._serial = serial.serial_for_url(
                path, baudrate=options.baudrate, bytesize=options.bytesize, parity=_PARITIES[options.parity],
                stopbits=options.stopbits, timeout=THREAD_READ_TIMEOUT, write_timeout=None,
            )
        except (OSError, serial.SerialException, ValueError) as exc:
            raise DriverError(f"cannot open {path}: {exc}") from exc
        try:
            self._fd: int | None = self._serial.fileno()
        except (AttributeError, serial.SerialException, OSError, NotImplementedError):
            self._fd = None
        if self._fd is not None:
            os.set_blocking(self._fd, False)
        self._closed = False

    @property
    def serial(self) -> serial.SerialBase:
        """The pyserial object (tests write into a `loop://` port through it)."""
        return self._serial

    async def receive_some(self, deadline: float) -> bytes:
        if self._fd is None:
            while trio.current_time() < deadline:
                data = await trio.to_thread.run_sync(self._read_thread)
                if data:
                    return data
            return b""
        with trio.move_on_at(deadline):
            while True:
                try:
                    await trio.lowlevel.wait_readable(self._fd)
                except trio.ClosedResourceError:
                    raise DriverError(f"{self.name}: closed") from None
                try:
                    data = os.read(self._fd, 65536)
                except BlockingIOError:
                    continue
                except OSError as exc:  # EIO: the pty's other end or the USB device went away
                    raise DriverError(f"{self.name}: {exc.strerror or exc}") from exc
                if not data:
                    raise DriverError(f"{self.name}: end of file (device gone)")
                return data
        return b""

    def _read_thread(self) -> bytes:
        try:
            data = self._serial.read(1)
            if data and self._serial.in_waiting:
                data += self._serial.read(self._serial.in_waiting)
            return bytes(data)
        except (OSError, serial.SerialException) as exc:
            raise DriverError(f"{self.name}: {exc}") from exc

    async def send_all(self, data: bytes) -> None:
        if self._fd is None:
            try:
                await trio.to_thread.run_sync(self._serial.write, data)
            except (OSError, serial.SerialException) as exc:
                raise DriverError(f"{self.name}: {exc}") from exc
            return
        view = memoryview(data)
        while view:
            try:
                sent = os.write(self._fd, view)
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_writable(self._fd)
                except trio.ClosedResourceError:
                    raise DriverError(f"{self.name}: closed") from None
                continue
            except OSError as exc:
                raise DriverError(f"{self.name}: {exc.strerror or exc}") from exc
            view = view[sent:]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._fd is not None:
            try:
                trio.lowlevel.notify_closing(self._fd)
            except RuntimeError:  # not inside trio: nobody can be waiting on it
                pass
        try:
            self._serial.close()
        except (OSError, serial.SerialException):
            pass


__all__ = ["Port", "PortOptions", "find_usb_port", "parse_vid_pid"]
