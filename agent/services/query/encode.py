"""Encoding C-FIND response identifiers without pydicom's writer (PS3.5 7.1, 6.2; PS3.5 Annex A).

A response identifier here is flat and small: text, IS/DS, UI, binary integers (US/UL/SS/SL) and empty
sequences, in one character set. Writing it element by element costs a few microseconds where
pydicom's general writer costs most of a millisecond, which is most of a large answer's time.

Invariants:
- The bytes are what pydicom would write for the same elements (the unit tests decode both and compare):
  tags ascending, values joined with backslash, padded to even length (UI with NUL, other text with a
  space), binary integers little endian.
- Only Implicit VR Little Endian and Explicit VR Little Endian are written; Specific Character Set
  must be one term without code extensions (ISO_IR 100, ISO_IR 192, GB18030, ...) or absent. Anything
  else (Big Endian, ISO 2022 escape sequences, a non-empty sequence, an unknown VR) returns None and the
  caller uses pydicom.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.multival import MultiValue

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"

#: VRs whose text is in the Specific Character Set (PS3.5 6.1.2.3); other text is the default repertoire.
_CHARSET_VRS = frozenset({"SH", "LO", "PN", "ST", "LT", "UT", "UC"})
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                       "UR", "UT"})
_BINARY = {"US": "<H", "UL": "<I", "SS": "<h", "SL": "<i"}
#: Explicit VR with a 4-byte length (PS3.5 Table 7.1-1).
_LONG = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})


@lru_cache(maxsize=64)
def _codec(charset: str) -> str | None:
    """The Python codec of a one-term Specific Character Set, or None when it needs ISO 2022."""
    terms = [t.strip() for t in charset.split("\\")]
    if len(terms) != 1 or terms[0].startswith("ISO 2022"):
        return None
    return convert_encodings(terms if terms[0] else None)[0]


_U16 = struct.Struct("<H").pack
_U32 = struct.Struct("<I").pack


@lru_cache(maxsize=1024)
def _head(tag: int, vr: str, explicit: bool) -> bytes:
    """The element's tag, and in Explicit VR its VR (and the two reserved bytes before a 4-byte
    length), all but the length (PS3.5 7.1.1, 7.1.2)."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if explicit:
        head += vr.encode("ascii") + (b"\0\0" if vr in _LONG else b"")
    return head


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


def encode_flat(elements: Iterable[tuple[int, str, Any]], transfer_syntax: str) -> bytes | None:
    """The data set of `elements` ((tag, VR, value), any order; a value is None, a str, an int or a
    list of them), or None when this encoder does not apply (module notes)."""
    if transfer_syntax not in (IMPLICIT_VR_LE, EXPLICIT_VR_LE):
        return None
    explicit = transfer_syntax == EXPLICIT_VR_LE
    elems = sorted(elements, key=lambda e: e[0])
    codec = "ascii"
    for tag, _vr, value in elems:
        if tag == 0x00080005 and value:
            found = _codec(_text(value))
            if found is None:
                return None
            codec = found
    out = bytearray()
    for tag, vr, value in elems:
        if vr == "SQ":
            if value:
                return None
            raw = b""
        elif value is None or value == "":
            raw = b""
        elif vr in _BINARY:
            values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
            raw = b"".join(struct.pack(_BINARY[vr], int(v)) for v in values)
        elif vr in _TEXT_VRS:
            try:  # a plain str is the common case: no isinstance check against the ABCs
                raw = (value if type(value) is str else _text(value)).encode(
                    codec if vr in _CHARSET_VRS else "ascii")
            except (UnicodeError, LookupError):
                return None
            if len(raw) % 2:
                raw += b"\0" if vr == "UI" else b" "
        else:
            return None
        out += _head(tag, vr, explicit)
        if not explicit or vr in _LONG:
            out += _U32(len(raw))
        else:
            if len(raw) > 0xFFFF:
                return None
            out += _U16(len(raw))
        out += raw
    return bytes(out)


# ------------------------------------------------------------------ one layout per query

_INT_TEXT_VRS = frozenset({"IS"})
_EMPTY, _CONST, _COLUMN = 0, 1, 2
_M_TEXT, _M_CHARSET_TEXT, _M_UID, _M_INT_TEXT, _M_BINARY = range(5)


def _length(explicit: bool, vr: str, size: int) -> bytes:
    return _U32(size) if not explicit or vr in _LONG else _U16(size)


class FlatLayout:
    """The response data sets of one query, compiled once: every element's tag and VR bytes (and, for
    keys a row never fills, the whole element) are made when the query is planned, so each matching row
    costs one value conversion per key. `encode(row)` gives exactly `encode_flat` of the answer that
    agent.services.query.engine builds for the same row, or None where `encode_flat` would not apply
    (or might not: an ISO 2022 or unknown character set, a value its character set cannot hold, a
    non-ASCII value in a row without a character set, a binary value that is not a number, a value too
    long for its length field); the caller then takes the general path for that row.

    `items`: per response key, in any order, (tag, VR when the row has a value, VR when it has none,
    kind, column index or constant value): kind `_EMPTY` (never filled), `_CONST` (a fixed value, the
    Query/Retrieve Level), `_COLUMN` (the row's value at that index: None or '' is zero length, a str
    with backslashes is several values, an IS or binary integer given as digits is that number).
    `charset_column`: the index of the row's stored Specific Character Set, or None."""

    __slots__ = ("_template", "_columns", "_charset_column", "_charset_at", "_charset_elements", "_explicit")

    def __init__(self, items: Iterable[tuple[int, str, str, int, Any]], charset_column: int | None,
                 transfer_syntax: str) -> None:
        if transfer_syntax not in (IMPLICIT_VR_LE, EXPLICIT_VR_LE):
            raise ValueError(f"no flat layout for {transfer_syntax}")
        explicit = self._explicit = transfer_syntax == EXPLICIT_VR_LE
        parts: list[Any] = []
        self._charset_at = -1
        for tag, vr, empty_vr, kind, source in sorted(items, key=lambda i: i[0]):
            for code in (vr, empty_vr):  # pydicom's "US or SS" and the like: not for this encoder
                if len(code) != 2 or not code.isalpha() or not code.isupper():
                    raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {code!r}: no flat encoding")
            if self._charset_at < 0 and tag > 0x00080005:
                self._charset_at = len(parts)
            empty = _head(tag, empty_vr, explicit) + _length(explicit, empty_vr, 0)
            if kind == _EMPTY:
                parts.append(empty)
                continue
            if kind == _CONST:
                fixed = encode_flat([(tag, vr, source)], transfer_syntax)
                if fixed is None:
                    raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr}: no flat encoding")
                parts.append(fixed)
                continue
            if vr in _BINARY:
                mode = _M_BINARY
            elif vr in _INT_TEXT_VRS:
                mode = _M_INT_TEXT
            elif vr == "UI":
                mode = _M_UID
            elif vr in _CHARSET_VRS:
                mode = _M_CHARSET_TEXT
            elif vr in _TEXT_VRS:
                mode = _M_TEXT
            else:
                raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr}: no flat encoding")
            long = not explicit or vr in _LONG
            parts.append((source, mode, _head(tag, vr, explicit), long, empty, vr))
        if self._charset_at < 0:
            self._charset_at = len(parts)
        parts.insert(self._charset_at, b"")  # the slot of (0008,0005), filled per row when stored
        # The row's elements go into a copy of the template: constant ones are there already, and a
        # column's element has three slots, its tag and VR (there already), its length and its value
        # (or its whole zero-length element in the first slot and nothing in the others).
        template: list[bytes] = []
        self._columns = []
        for part in parts:
            if type(part) is bytes:
                template.append(part)
                continue
            source, mode, head, long, empty, vr = part
            self._columns.append((len(template), source, mode, empty, b"\0" if mode == _M_UID else b" ",
                                  _U32 if long else _U16, 0xFFFFFFFF if long else 0xFFFF, vr))
            template.extend((head, b"", b""))
        self._template = template
        self._charset_column = charset_column
        self._charset_elements: dict[str, tuple[bytes, str] | None] = {}

    def _charset(self, charset: str) -> tuple[bytes, str] | None:
        """The (0008,0005) element and the Python codec for a stored character set, or None."""
        try:
            return self._charset_elements[charset]
        except KeyError:
            pass
        codec = _codec(charset)
        found = None
        if codec is not None:
            value = charset.split("\\") if "\\" in charset else charset
            element = encode_flat([(0x00080005, "CS", value)],
                                  EXPLICIT_VR_LE if self._explicit else IMPLICIT_VR_LE)
            if element is not None:
                found = (element, codec)
        if len(self._charset_elements) < 64:
            self._charset_elements[charset] = found
        return found

    def encode(self, row: Any) -> bytes | None:
        """`row`'s response data set (indexable by the layout's column indexes), or None (class notes)."""
        out = self._template.copy()
        charset = row[self._charset_column] if self._charset_column is not None else None
        if charset:
            known = self._charset(charset)
            if known is None:
                return None
            out[self._charset_at], codec = known
        else:
            codec = "ascii"
        for pos, source, mode, empty, pad, length, limit, vr in self._columns:
            value = row[source]
            if value is None or value == "":
                out[pos] = empty
                continue
            if type(value) is str and mode <= _M_UID:  # text, the usual case
                try:
                    raw = value.encode(codec if mode == _M_CHARSET_TEXT else "ascii")
                except UnicodeError:
                    return None
            else:
                raw = _convert(value, mode, vr, codec)
                if raw is None:
                    return None
            if len(raw) & 1:
                raw += pad
            if len(raw) > limit:
                return None
            out[pos + 1] = length(len(raw))
            out[pos + 2] = raw
        return b"".join(out)


def _convert(value: Any, mode: int, vr: str, codec: str) -> bytes | None:
    """A value that is not plain text, or of an integer VR, as `encode_flat` writes it; None when it
    cannot be (FlatLayout.encode)."""
    try:
        if mode == _M_BINARY:
            if type(value) is int:
                return struct.pack(_BINARY[vr], value)
            return b"".join(struct.pack(_BINARY[vr], int(v)) for v in str(value).split("\\"))
        if mode == _M_INT_TEXT and type(value) is str and value.isdigit():
            return str(int(value)).encode("ascii")
        return str(value).encode(codec if mode == _M_CHARSET_TEXT else "ascii")
    except (UnicodeError, ValueError, struct.error):
        return None


__all__ = ["FlatLayout", "encode_flat"]
