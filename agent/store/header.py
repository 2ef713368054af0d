"""Index values from the raw top-level elements a data set walk kept (`dicomfile.scan_dataset`).

No pydicom Dataset is built: each value is decoded from its bytes by the kind its `INDEX_COLUMNS` row
declares. Only pydicom's character set tables are used, for the terms of Specific Character Set
(0008,0005) and for ISO 2022 code extensions (escape sequences, PS3.5 6.1.2.5); the common cases (no
escape sequence in the value) are a single `bytes.decode`.

Rules (the same values pydicom's `dcmread` gives, which the tests check):
- Text of the VRs that Specific Character Set applies to (SH, LO, PN, ST, LT, UT, UC) is decoded with
  it; other text VRs (CS, DA, TM, UI, IS, ...) use the default repertoire (PS3.5 6.1.2.3), read as
  Latin-1 so no byte is an error.
- A value is split into its values at backslashes (PS3.5 6.4) after decoding, each loses its trailing
  NUL/space padding, and they are joined back with a backslash; empty is NULL.
- An int column takes the first value of an IS (or of a binary integer VR); unparseable is NULL.
- A sequence column keeps the items' bytes as they are (`agent.store.sequences.pack`); an empty
  sequence is NULL, one too big to keep is `sequences.OVERSIZED`.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR

from agent.store.dicomfile import DataSetScan
from agent.store.index_columns import (
    INDEX_COLUMNS,
    SOP_CLASS_UID_TAG,
    SOP_INSTANCE_UID_TAG,
    SPECIFIC_CHARACTER_SET_TAG,
)
from agent.store.sequences import OVERSIZED, pack

#: VRs whose text is in the Specific Character Set (PS3.5 6.1.2.3); the rest are default repertoire.
_CHARSET_VRS = frozenset({b"SH", b"LO", b"PN", b"ST", b"LT", b"UT", b"UC"})
#: Characters after which an ISO 2022 code extension returns to the first character set (PS3.5 6.1.2.5.3).
_TEXT_DELIMITERS = {0x5C, 0x0D, 0x0A, 0x09, 0x0C}
_BINARY_INTS = {b"US": "H", b"SS": "h", b"UL": "I", b"SL": "i"}


@lru_cache(maxsize=256)
def _dictionary_vr(tag: int) -> bytes:
    """The VR of `tag` in the data dictionary (PS3.6), for Implicit VR data sets and VR UN."""
    try:
        return dictionary_VR(tag).split(" ")[0].encode("ascii")
    except KeyError:
        return b"UN"


@lru_cache(maxsize=64)
def _encodings(specific_character_set: str) -> tuple[str, ...]:
    terms = [t.strip() for t in specific_character_set.split("\\")]
    return tuple(convert_encodings(terms if any(terms) else None))


def _split(text: str) -> str | None:
    joined = "\\".join(v.rstrip("\0 ") for v in text.split("\\"))
    return joined if joined.strip("\\") else None


def _text(vr: bytes, raw: bytes, encodings: tuple[str, ...]) -> str | None:
    if vr in _CHARSET_VRS:
        return _split(decode_bytes(raw, list(encodings), _TEXT_DELIMITERS))
    return _split(raw.decode("latin-1").lstrip(" ") if vr in (b"CS", b"IS") else raw.decode("latin-1"))


def _int(vr: bytes, raw: bytes, little: bool) -> int | None:
    code = _BINARY_INTS.get(vr)
    if code is not None:
        size = struct.calcsize(code)
        if len(raw) < size:
            return None
        return int(struct.unpack(("<" if little else ">") + code, raw[:size])[0])
    first = raw.decode("latin-1").split("\\")[0].strip("\0 ")
    try:
        return int(first)
    except ValueError:
        try:
            number = float(first)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None


def index_values(scan: DataSetScan) -> tuple[dict[str, Any], str | None, str | None]:
    """(column -> value for every `INDEX_COLUMNS` row, data set SOP Class UID, SOP Instance UID)."""
    values = scan.values
    charset_raw = values.get(SPECIFIC_CHARACTER_SET_TAG, (b"", b""))[1]
    encodings = _encodings(charset_raw.decode("latin-1").rstrip("\0 "))
    out: dict[str, Any] = {}
    for column in INDEX_COLUMNS:
        found = values.get(column.tag)
        if found is None:
            # Only a sequence column says "too big to keep"; any other column too big is NULL.
            out[column.column] = OVERSIZED if column.kind == "sequence" and column.tag in scan.oversized else None
            continue
        vr, raw = found
        if column.kind == "sequence":  # raw items, decoded at query time (agent.store.sequences)
            un = vr == b"UN"
            out[column.column] = pack(raw, implicit=scan.implicit or un, little=scan.little or un) if raw else None
            continue
        if not vr or vr == b"UN":
            vr = _dictionary_vr(column.tag)
        if column.kind == "int":
            out[column.column] = _int(vr, raw, scan.little)
        elif column.kind == "uid":
            out[column.column] = _split(raw.decode("latin-1"))
        else:
            out[column.column] = _text(vr, raw, encodings)

    def uid(tag: int) -> str | None:
        found = values.get(tag)
        return None if found is None else _split(found[1].decode("latin-1"))

    return out, uid(SOP_CLASS_UID_TAG), uid(SOP_INSTANCE_UID_TAG)


__all__ = ["index_values"]
