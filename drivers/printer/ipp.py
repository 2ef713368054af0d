"""Just enough IPP (RFC 8010 encoding, RFC 8011 operations) to ask a CUPS scheduler about jobs.

The CUPS command-line clients show neither a job's title nor how it ended (`lpstat` lists a canceled
job like a completed one), and the `cups` driver needs both: the title to find a job it submitted
before a crash, the final state to tell DONE from FAILURE. Get-Jobs and Get-Job-Attributes over HTTP
to the scheduler (its Unix socket or host:port) give them.

Only the operations and value types used here are encoded; everything else in a response is skipped.
"""

from __future__ import annotations

import getpass
import http.client
import os
import socket
import struct
from collections.abc import Iterable
from typing import Any

# RFC 8010 3.5 delimiter and value tags.
OPERATION_GROUP, JOB_GROUP, END = 0x01, 0x02, 0x03
INTEGER, ENUM = 0x21, 0x23
NAME, KEYWORD, URI, CHARSET, LANGUAGE = 0x42, 0x44, 0x45, 0x47, 0x48
GET_JOBS, GET_JOB_ATTRIBUTES = 0x000A, 0x0009
NOT_FOUND = 0x0406  # client-error-not-found, RFC 8011 B.1.4.5

# RFC 8011 5.3.7 job-state.
PENDING, HELD, PROCESSING, STOPPED, CANCELED, ABORTED, COMPLETED = 3, 4, 5, 6, 7, 8, 9


class IppError(Exception):
    pass


def _attr(tag: int, name: str, values: Iterable[str | int]) -> bytes:
    out = b""
    for i, value in enumerate(values):
        raw = struct.pack(">i", value) if isinstance(value, int) else value.encode()
        key = name.encode() if i == 0 else b""  # additional values carry an empty name (RFC 8010 3.1.5)
        out += struct.pack(">bh", tag, len(key)) + key + struct.pack(">h", len(raw)) + raw
    return out


def encode_request(operation: int, request_id: int, attributes: list[tuple[int, str, list[str | int]]]) -> bytes:
    body = struct.pack(">bbhi", 2, 0, operation, request_id) + bytes([OPERATION_GROUP])
    body += _attr(CHARSET, "attributes-charset", ["utf-8"]) + _attr(LANGUAGE, "attributes-natural-language", ["en"])
    for tag, name, values in attributes:
        body += _attr(tag, name, values)
    return body + bytes([END])


def decode_response(data: bytes) -> tuple[int, list[dict[str, list[Any]]]]:
    """(status-code, [job groups as {name: [values]}]); IppError for a malformed response."""
    try:
        return _decode(data)
    except struct.error as exc:
        raise IppError(f"malformed IPP response: {exc}") from exc


def _decode(data: bytes) -> tuple[int, list[dict[str, list[Any]]]]:
    if len(data) < 9:
        raise IppError("short IPP response")
    status = struct.unpack(">h", data[2:4])[0]
    groups: list[dict[str, list[Any]]] = []
    current: dict[str, list[Any]] | None = None
    last = ""
    pos = 8
    while pos < len(data):
        tag = data[pos]
        pos += 1
        if tag == END:
            break
        if tag < 0x10:  # a new attribute group
            current = {} if tag == JOB_GROUP else None
            if current is not None:
                groups.append(current)
            continue
        if pos + 2 > len(data):
            raise IppError("truncated IPP attribute")
        (name_len,) = struct.unpack(">h", data[pos : pos + 2])
        name = data[pos + 2 : pos + 2 + name_len].decode("utf-8", "replace")
        pos += 2 + name_len
        (value_len,) = struct.unpack(">h", data[pos : pos + 2])
        raw = data[pos + 2 : pos + 2 + value_len]
        pos += 2 + value_len
        name = name or last
        last = name
        if current is None:
            continue
        value: Any = struct.unpack(">i", raw)[0] if tag in (INTEGER, ENUM) and value_len == 4 else raw.decode("utf-8", "replace")
        current.setdefault(name, []).append(value)
    return status, groups


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


def default_server() -> str:
    """The scheduler the CUPS clients would use: $CUPS_SERVER, else the local socket, else localhost."""
    server = os.environ.get("CUPS_SERVER")
    if server:
        return server
    for path in ("/run/cups/cups.sock", "/var/run/cups/cups.sock"):
        if os.path.exists(path):
            return path
    return "localhost"


class IppClient:
    def __init__(self, server: str | None, timeout: float) -> None:
        self.server = server or default_server()
        self.timeout = timeout
        self.user = getpass.getuser()  # job-name is private to the job's owner (CUPS JobPrivateValues)
        self._request_id = 0

    def _connection(self) -> http.client.HTTPConnection:
        if self.server.startswith("/"):
            return _UnixConnection(self.server, self.timeout)
        host, _, port = self.server.partition(":")
        return http.client.HTTPConnection(host, int(port or 631), timeout=self.timeout)

    def call(self, operation: int, path: str, attributes: list[tuple[int, str, list[str | int]]]) -> list[dict[str, list[Any]]]:
        self._request_id += 1
        body = encode_request(operation, self._request_id, [(NAME, "requesting-user-name", [self.user]), *attributes])
        conn = self._connection()
        try:
            conn.request("POST", path, body, {"Content-Type": "application/ipp"})
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise IppError(f"{self.server}: {exc}") from exc
        finally:
            conn.close()
        if response.status != 200:
            raise IppError(f"{self.server}: HTTP {response.status}")
        status, groups = decode_response(data)
        if status == NOT_FOUND:
            return []
        if status >= 0x0400:
            raise IppError(f"{self.server}: IPP status 0x{status:04x}")
        return groups

    def jobs(self, queue: str) -> list[dict[str, list[Any]]]:
        """Every job of `queue` the scheduler remembers, with job-id, job-name, job-state."""
        return self.call(GET_JOBS, f"/printers/{queue}", [
            (URI, "printer-uri", [f"ipp://localhost/printers/{queue}"]),
            (KEYWORD, "which-jobs", ["all"]),
            (KEYWORD, "requested-attributes", ["job-id", "job-name", "job-state", "job-state-reasons"]),
        ])

    def job(self, job_id: int) -> dict[str, list[Any]] | None:
        groups = self.call(GET_JOB_ATTRIBUTES, "/jobs", [
            (URI, "job-uri", [f"ipp://localhost/jobs/{job_id}"]),
            (KEYWORD, "requested-attributes", ["job-id", "job-name", "job-state", "job-state-reasons"]),
        ])
        return groups[0] if groups else None


__all__ = ["IppClient", "IppError", "decode_response", "default_server", "encode_request"]
