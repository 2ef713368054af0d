"""The record format carried by the link layer (drivers/acquisition/PROTOCOL.md is the reference).

A message is UTF-8 text: records separated by CR, each a record type letter and fields separated by
`|`, components by `^` (in the style of ASTM E1394). The first record is `H`, the last `L`; in between
any of `P S I D M E`, each (but P and D) giving one device event, in order:

    H|device id|protocol version            P|patient id|FAMILY^GIVEN|YYYYMMDD|sex
    S|procedure key|worklist key|description|operator|YYYYMMDDHHMMSS (UTC)
    I|procedure key|image key|rows|columns|bits stored|photometric|row^column spacing mm|
      Keyword=value^...|payload bytes|CRC-32 (8 hex digits)      followed by one or more
    D|base64 of the pixel payload (RFC 4648, standard alphabet, padded)
    M|procedure key|name|value|unit         E|procedure key|C or A|reason        L|N

Escapes inside a field: `&F&` = `|`, `&S&` = `^`, `&R&` = CR, `&E&` = `&`.
Pixels: row by row; 8-bit samples as bytes, 9..16-bit samples as 16-bit little-endian words; RGB is
3 bytes per pixel (R, G, B). Base64 because a frame cannot carry control characters (ASTM E1381 6.6.2).

Invariant: `parse` returns every event of a message or raises `MessageError`; never a part.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import time
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from drivers.base import (
    DeviceEvent, ImageAcquired, Measurement, PatientData, ProcedureEnded, ProcedureStarted,
)

PROTOCOL_VERSION = "1"
PHOTOMETRICS = ("MONOCHROME2", "MONOCHROME1", "RGB")
_ESCAPES = (("&", "&E&"), ("|", "&F&"), ("^", "&S&"), ("\r", "&R&"))
_FIELDS = {"H": 2, "P": 4, "S": 5, "I": 10, "D": 1, "M": 4, "E": 3, "L": 1}


class MessageError(ValueError):
    """A message that does not follow PROTOCOL.md; the text says which record and field."""


def escape(value: str) -> str:
    for raw, esc in _ESCAPES:
        value = value.replace(raw, esc)
    if any(ord(c) < 0x20 for c in value):
        raise MessageError(f"control character in field value {value!r}")
    return value


def unescape(value: str) -> str:
    out, i = [], 0
    table = {esc: raw for raw, esc in _ESCAPES}
    while i < len(value):
        if value[i] == "&":
            seq = value[i : i + 3]
            if seq not in table:
                raise MessageError(f"unknown escape {value[i:i + 3]!r}")
            out.append(table[seq])
            i += 3
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


# ------------------------------------------------------------------ encoding (the device side)


def _record(kind: str, *fields: str) -> str:
    return "|".join((kind, *fields))


def _components(values: Iterable[str]) -> str:
    return "^".join(escape(v) for v in values)


def encode_message(device_id: str, events: Sequence[DeviceEvent]) -> bytes:
    """One message carrying `events` (ProcedureStarted, ImageAcquired with pixels, Measurement,
    ProcedureEnded), framed by H and L records."""
    records = [_record("H", escape(device_id), PROTOCOL_VERSION)]
    for event in events:
        records.extend(_encode_event(event))
    records.append("L|N")
    return "\r".join(records).encode("utf-8")


def _encode_event(event: DeviceEvent) -> list[str]:
    if isinstance(event, ProcedureStarted):
        out = []
        if event.patient is not None:
            p = event.patient
            out.append(_record("P", escape(p.patient_id), _components(p.patient_name.split("^")),
                               escape(p.birth_date), escape(p.sex)))
        stamp = "" if event.timestamp is None else time.strftime("%Y%m%d%H%M%S", time.gmtime(event.timestamp))
        out.append(_record("S", escape(event.procedure_key), escape(event.worklist_key),
                           escape(event.description), escape(event.operator), stamp))
        return out
    if isinstance(event, ImageAcquired):
        if event.pixels is None:
            raise MessageError("an image on the serial link carries pixels, not a file")
        payload = pixel_bytes(event.pixels, event.bits_stored, event.photometric)
        rows, cols = event.pixels.shape[:2]
        spacing = "" if event.pixel_spacing_mm is None else "%s^%s" % event.pixel_spacing_mm
        attrs = "^".join(escape(f"{k}={v}") for k, v in event.attributes)
        head = _record("I", escape(event.procedure_key), escape(event.image_key), str(rows), str(cols),
                       str(event.bits_stored), event.photometric, spacing, attrs, str(len(payload)),
                       "%08X" % zlib.crc32(payload))
        return [head, "D|" + base64.b64encode(payload).decode("ascii")]
    if isinstance(event, Measurement):
        return [_record("M", escape(event.procedure_key), escape(event.name), escape(event.value),
                        escape(event.unit))]
    if isinstance(event, ProcedureEnded):
        return [_record("E", escape(event.procedure_key), "A" if event.aborted else "C", escape(event.reason))]
    raise MessageError(f"{type(event).__name__} is not sent over the serial link")


def pixel_bytes(pixels: Any, bits_stored: int, photometric: str) -> bytes:
    """The payload of an image: see the module docstring for the layout."""
    arr = np.asarray(pixels)
    if photometric == "RGB":
        if arr.ndim != 3 or arr.shape[2] != 3 or bits_stored != 8:
            raise MessageError("RGB images are (rows, columns, 3) with 8 bits stored")
        return arr.astype(np.uint8).tobytes()
    if arr.ndim != 2:
        raise MessageError(f"a {photometric} image is (rows, columns), not {arr.shape}")
    return arr.astype("<u2" if bits_stored > 8 else np.uint8).tobytes()


# ------------------------------------------------------------------ parsing (the agent side)


def parse_message(data: bytes) -> tuple[str, list[DeviceEvent]]:
    """(device id, events) of one message; MessageError names the record and field that is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError(f"message is not UTF-8 (byte {exc.start})") from None
    lines = text.split("\r")
    if lines and lines[-1] == "":
        lines.pop()  # a trailing CR after L is tolerated
    records = [line.split("|") for line in lines]
    if not records or records[0][0] != "H":
        raise MessageError("record 1: a message starts with an H record")
    if records[-1][0] != "L":
        raise MessageError(f"record {len(records)}: a message ends with an L record")
    for n, rec in enumerate(records, 1):
        kind = rec[0]
        if kind not in _FIELDS:
            raise MessageError(f"record {n}: unknown record type {kind!r}")
        if len(rec) - 1 != _FIELDS[kind]:
            raise MessageError(f"record {n} ({kind}): {len(rec) - 1} fields, expected {_FIELDS[kind]}")
        if kind in "HL" and n not in (1, len(records)):
            raise MessageError(f"record {n}: {kind} only at the {'start' if kind == 'H' else 'end'}")
    device_id, version = unescape(records[0][1]), records[0][2]
    if version != PROTOCOL_VERSION:
        raise MessageError(f"record 1 (H): protocol version {version!r}, this agent speaks {PROTOCOL_VERSION!r}")
    events: list[DeviceEvent] = []
    patient: PatientData | None = None
    n = 1
    while n < len(records) - 1:
        rec, kind = records[n], records[n][0]
        where = f"record {n + 1} ({kind})"
        if kind == "P":
            patient = PatientData(unescape(rec[1]), "^".join(unescape(c) for c in rec[2].split("^")),
                                  _date(rec[3], where), _choice(rec[4], ("", "M", "F", "O"), where, "sex"))
        elif kind == "S":
            events.append(ProcedureStarted(_key(rec[1], where), unescape(rec[2]), patient, unescape(rec[3]),
                                           unescape(rec[4]), _timestamp(rec[5], where)))
            patient = None
        elif kind == "I":
            data_records = []
            while n + 1 < len(records) - 1 and records[n + 1][0] == "D":
                n += 1
                data_records.append(records[n][1])
            events.append(_image(rec, "".join(data_records), where))
        elif kind == "D":
            raise MessageError(f"{where}: D record without an I record before it")
        elif kind == "M":
            events.append(Measurement(_key(rec[1], where), _nonempty(rec[2], where, "name"), unescape(rec[3]),
                                      unescape(rec[4])))
        elif kind == "E":
            status = _choice(rec[2], ("C", "A"), where, "status")
            events.append(ProcedureEnded(_key(rec[1], where), status == "A", unescape(rec[3])))
        n += 1
    if patient is not None:
        raise MessageError("P record not followed by an S record")
    return device_id, events


def _image(rec: list[str], b64: str, where: str) -> ImageAcquired:
    rows, cols = _int(rec[3], where, "rows", 1, 65535), _int(rec[4], where, "columns", 1, 65535)
    bits = _int(rec[5], where, "bits stored", 1, 16)
    photometric = _choice(rec[6], PHOTOMETRICS, where, "photometric")
    spacing = None
    if rec[7]:
        try:
            r, c = (float(v) for v in rec[7].split("^"))
        except ValueError:
            raise MessageError(f"{where}: pixel spacing {rec[7]!r}, expected ROW^COLUMN in mm") from None
        if not (r > 0 and c > 0):
            raise MessageError(f"{where}: pixel spacing must be positive")
        spacing = (r, c)
    attrs = []
    for comp in rec[8].split("^") if rec[8] else ():
        key, sep, value = unescape(comp).partition("=")
        if not sep or not key.isidentifier():
            raise MessageError(f"{where}: attribute {comp!r}, expected Keyword=value")
        attrs.append((key, value))
    if photometric == "RGB" and bits != 8:
        raise MessageError(f"{where}: RGB images have 8 bits stored")
    samples = 3 if photometric == "RGB" else 1
    width = 2 if bits > 8 else 1
    expected = rows * cols * samples * width
    length = _int(rec[9], where, "payload bytes", 0, 1 << 40)
    if length != expected:
        raise MessageError(f"{where}: payload of {length} bytes, {rows}x{cols} at {bits} bits needs {expected}")
    try:
        payload = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise MessageError(f"{where}: D records are not valid base64") from None
    if len(payload) != expected:
        raise MessageError(f"{where}: {len(payload)} payload bytes received, {expected} announced")
    if "%08X" % zlib.crc32(payload) != rec[10].upper():
        raise MessageError(f"{where}: payload CRC-32 {rec[10]!r} does not match the data")
    dtype = np.dtype("<u2") if width == 2 else np.dtype(np.uint8)
    shape = (rows, cols, 3) if samples == 3 else (rows, cols)
    pixels = np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    if bits < 8 * width and int(pixels.max(initial=0)) >= 1 << bits:
        raise MessageError(f"{where}: a pixel value exceeds {bits} bits stored")
    return ImageAcquired(_key(rec[1], where), _key(rec[2], where, "image key"), pixels, bits, photometric,
                         None, spacing, tuple(attrs))


def _key(value: str, where: str, name: str = "procedure key") -> str:
    return _nonempty(value, where, name)


def _nonempty(value: str, where: str, name: str) -> str:
    value = unescape(value)
    if not value.strip():
        raise MessageError(f"{where}: {name} is empty")
    return value


def _choice(value: str, allowed: Sequence[str], where: str, name: str) -> str:
    if value not in allowed:
        raise MessageError(f"{where}: {name} {value!r}, expected one of {', '.join(a or '(empty)' for a in allowed)}")
    return value


def _int(value: str, where: str, name: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise MessageError(f"{where}: {name} {value!r}, expected an integer {low}..{high}")
    return int(value)


def _date(value: str, where: str) -> str:
    if value and (len(value) != 8 or not value.isdigit()):
        raise MessageError(f"{where}: birth date {value!r}, expected YYYYMMDD")
    return value


def _timestamp(value: str, where: str) -> float | None:
    if not value:
        return None
    try:
        return float(calendar.timegm(time.strptime(value, "%Y%m%d%H%M%S")))
    except ValueError:
        raise MessageError(f"{where}: timestamp {value!r}, expected YYYYMMDDHHMMSS (UTC)") from None


__all__ = ["MessageError", "PROTOCOL_VERSION", "encode_message", "escape", "parse_message", "pixel_bytes", "unescape"]
