"""sd_notify: the datagrams a real service manager socket receives, and the watchdog interval."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import sdnotify


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's notification socket."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_notify_sends_the_state(manager: socket.socket) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=queue 0") is True
    assert received(manager) == "READY=1\nSTATUS=queue 0"


def test_helpers_send_their_messages(manager: socket.socket) -> None:
    assert sdnotify.ready()
    assert received(manager) == "READY=1"
    assert sdnotify.ready("listening on 11112")
    assert received(manager) == "READY=1\nSTATUS=listening on 11112"
    assert sdnotify.status("pacs: 3 queued\nris: 0")
    assert received(manager) == "STATUS=pacs: 3 queued ris: 0"
    assert sdnotify.watchdog()
    assert received(manager) == "WATCHDOG=1"
    assert sdnotify.stopping()
    assert received(manager) == "STOPPING=1"


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"dicom-agent-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("WATCHDOG=1")
        assert received(sock) == "WATCHDOG=1"


def test_unset_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False


def test_unreachable_socket_returns_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert sdnotify.notify("READY=1") is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 15.0
    monkeypatch.delenv("WATCHDOG_PID")
    assert sdnotify.watchdog_interval() == 15.0  # no PID given: the watchdog is ours


@pytest.mark.parametrize(("usec", "pid"), [(None, None), ("abc", None), ("0", None), ("30000000", "1")])
def test_watchdog_off(monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert sdnotify.watchdog_interval() is None
