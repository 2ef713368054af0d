"""TCP transport helpers: every socket gets TCP_NODELAY (DESIGN.md "hot path"), errors become ours."""

from __future__ import annotations

import socket

import trio

from agent.errors import ConnectionFailed, TimeoutExpired


def set_nodelay(stream: trio.abc.Stream) -> None:
    if isinstance(stream, trio.SocketStream):
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def peer_name(stream: trio.abc.Stream) -> str:
    if isinstance(stream, trio.SocketStream):
        try:
            host, port = stream.socket.getpeername()[:2]
            return f"{host}:{port}"
        except OSError:
            return "?"
    return "memory"


async def open_tcp(host: str, port: int, timeout: float) -> trio.SocketStream:
    """Connect with a deadline; raises ConnectionFailed or TimeoutExpired."""
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError as exc:
        raise TimeoutExpired(f"connecting to {host}:{port} took longer than {timeout:g} s") from exc
    except OSError as exc:
        raise ConnectionFailed(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
    set_nodelay(stream)
    return stream
