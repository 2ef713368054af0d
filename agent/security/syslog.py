"""Sending audit messages to an audit repository as syslog (RFC 5424) over UDP (RFC 5426) or TLS (RFC 5425).

Invariants:
- One audit message per syslog message: `<85>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM XML`.
  PRI 85 = facility 10 (security/authorization) * 8 + severity 5 (notice), as IHE ATNA (ITI-20) uses;
  MSGID "IHE+RFC-3881" says the body is an RFC 3881-derived audit message; no structured data ("-");
  the body is UTF-8 with its BOM (RFC 5424 6.4).
- UDP: one datagram per message (RFC 5426 3.1). UDP has no acknowledgement: a datagram sent while the
  repository is down is lost unless the kernel reports the refusal in time (ICMP port unreachable on a
  connected socket, which we use: checked after each send and once after the last). Use TLS where
  every message must arrive.
- TLS: octet-counting framing, `LEN SP MSG` (RFC 5425 4.3), TLS 1.2 or later, the repository's
  certificate checked against the configured CA and host; a client certificate when configured
  (mutual authentication, RFC 5425 5.1). A batch counts as sent once its bytes were handed to TLS
  and the connection closed cleanly.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import trio

PRI = 10 * 8 + 5
MSGID = "IHE+RFC-3881"
BOM = "\ufeff".encode()
UDP_MAX = 65507  # largest IPv4 UDP payload

Transport = Literal["udp", "tls"]


class SyslogError(OSError):
    """The repository could not be reached or refused the messages (transient: retried)."""


@dataclass(frozen=True, slots=True)
class Repository:
    host: str
    port: int
    transport: Transport = "udp"
    ca: Path | None = None  # TLS: CA bundle to verify the repository (system store when None)
    certificate: Path | None = None  # TLS: our client certificate and key (optional)
    key: Path | None = None
    server_name: str | None = None  # TLS: name to check in its certificate (default: host)


def format_message(xml: str, *, at: datetime, hostname: str, app_name: str = "dicom-agent",
                   procid: int | None = None) -> bytes:
    """The RFC 5424 message for one audit message (`at` is timezone-aware)."""
    header = " ".join((
        f"<{PRI}>1",
        at.isoformat(timespec="milliseconds"),
        _field(hostname, 255),
        _field(app_name, 48),
        _field(str(procid if procid is not None else os.getpid()), 128),
        MSGID,
        "-",
    ))
    return header.encode("ascii") + b" " + BOM + xml.encode("utf-8")


def octet_counted(messages: Sequence[bytes]) -> bytes:
    """RFC 5425 4.3 framing: `MSG-LEN SP SYSLOG-MSG`, concatenated."""
    return b"".join(b"%d " % len(m) + m for m in messages)


def client_context(repo: Repository) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(repo.ca) if repo.ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if repo.certificate is not None:
        ctx.load_cert_chain(str(repo.certificate), str(repo.key) if repo.key else None)
    return ctx


async def send(repo: Repository, messages: Sequence[bytes], *, timeout: float = 30.0,
               context: ssl.SSLContext | None = None) -> None:
    """Send `messages` (already formatted) to the repository; SyslogError when it cannot be done."""
    try:
        with trio.fail_after(timeout):
            if repo.transport == "udp":
                await _send_udp(repo, messages)
            else:
                await _send_tls(repo, messages, context or client_context(repo))
    except trio.TooSlowError:
        raise SyslogError(f"audit repository {repo.host}:{repo.port} did not take the messages within {timeout:g} s") from None
    except (OSError, ssl.SSLError, trio.BrokenResourceError) as exc:
        if isinstance(exc, SyslogError):
            raise
        raise SyslogError(f"audit repository {repo.host}:{repo.port} ({repo.transport}): {exc}") from None


async def _send_udp(repo: Repository, messages: Sequence[bytes]) -> None:
    infos = await trio.socket.getaddrinfo(repo.host, repo.port, type=socket.SOCK_DGRAM)
    family, type_, proto, _, address = infos[0]
    with trio.socket.socket(family, type_, proto) as sock:
        await sock.connect(address)  # connected: an ICMP refusal shows as ECONNREFUSED on the next send
        for m in messages:
            await sock.send(m[:UDP_MAX])
        # A refusal of the last datagram that already came back (at once on loopback) is pending here.
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))


async def _send_tls(repo: Repository, messages: Sequence[bytes], context: ssl.SSLContext) -> None:
    tcp = await trio.open_tcp_stream(repo.host, repo.port)
    stream = trio.SSLStream(tcp, context, server_hostname=repo.server_name or repo.host, https_compatible=True)
    try:
        await stream.do_handshake()
        await stream.send_all(octet_counted(messages))
    finally:
        with trio.move_on_after(2) as scope:
            scope.shield = True
            await stream.aclose()


def _field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most `limit` characters, "-" when empty."""
    clean = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


__all__ = ["Repository", "SyslogError", "client_context", "format_message", "octet_counted", "send"]
