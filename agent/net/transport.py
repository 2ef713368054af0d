"""TCP transport helpers: every socket gets TCP_NODELAY (docs/architecture.md "hot path"), errors become ours."""

from __future__ import annotations

import os
import socket

import trio

from agent.errors import ConnectionFailed, TimeoutExpired


def set_nodelay(stream: trio.abc.Stream) -> None:
    if isinstance(stream, trio.SocketStream):
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def peer_name(stream: trio.abc.Stream) -> str:
    while not isinstance(stream, trio.SocketStream) and hasattr(stream, "transport_stream"):
        stream = stream.transport_stream  # TLS (agent/net/tls.py): the address is the TCP stream's
    if isinstance(stream, trio.SocketStream):
        try:
            host, port = stream.socket.getpeername()[:2]
            return f"{host}:{port}"
        except OSError:
            return "?"
    return "memory"


def _reason(exc: OSError) -> str:
    """The first concrete cause ("connection refused"), not trio's "all attempts … failed" summary."""
    if isinstance(exc, socket.gaierror):  # name resolution: its own error numbers and texts
        return f"cannot resolve the host name ({exc.strerror or exc})".lower()
    for inner in [*(getattr(exc.__cause__, "exceptions", None) or ()), exc]:
        if isinstance(inner, OSError) and inner.errno and inner.errno > 0:
            return os.strerror(inner.errno).lower()
    return (exc.strerror or str(exc)).lower()


async def open_tcp(host: str, port: int, timeout: float) -> trio.SocketStream:
    """Connect with a deadline; raises ConnectionFailed or TimeoutExpired."""
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError as exc:
        raise TimeoutExpired(f"connecting to {host}:{port} took longer than {timeout:g} s") from exc
    except OSError as exc:
        raise ConnectionFailed(f"cannot connect to {host}:{port}: {_reason(exc)}") from exc
    set_nodelay(stream)
    return stream
