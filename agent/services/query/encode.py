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


__all__ = ["encode_flat"]
