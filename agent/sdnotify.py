"""A dependency-free sd_notify(3) client for `Type=notify` units.

Invariants:
- Without $NOTIFY_SOCKET (not run by systemd, or NotifyAccess denies us) every call is a no-op that
  returns False; notification never raises, so it can never take the agent down.
- One small datagram per call, sent blocking: the message is a few bytes and the socket is local.
- A leading '@' in $NOTIFY_SOCKET names a Linux abstract socket (the '@' becomes a NUL byte).
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify", "ready", "status", "stopping", "watchdog", "watchdog_interval"]


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1\\nSTATUS=...") to the service manager; True if it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(state.encode("utf-8"))
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC, or None if the watchdog is off.

    $WATCHDOG_PID, when set, must be our PID: the variable may have been inherited from a parent that
    systemd actually watches (sd_watchdog_enabled(3)).
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000 / 2


def ready(status_text: str | None = None) -> bool:
    """Listeners bound and queue recovered: READY=1 (with an optional STATUS=)."""
    return notify("READY=1" + (f"\nSTATUS={status_text}" if status_text else ""))


def stopping() -> bool:
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Free-form one-line status shown by `systemctl status` (newlines would end the field)."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def enabled() -> bool:
    """True when running under a service manager that listens for notifications."""
    return bool(os.environ.get("NOTIFY_SOCKET"))
