"""Sequence index values (Q/R sequence keys): the raw bytes of a top-level SQ element, kept at receive
without building a pydicom Dataset, and decoded into one only at query time, for candidate rows.

Stored form (a BLOB column per sequence, see `index_columns.INDEX_COLUMNS` rows of kind "sequence"):
one flag byte, then the sequence's items exactly as received, as a defined-length value (the header
walker drops the Sequence Delimitation Item of an undefined-length sequence; items keep their own
lengths and delimiters, PS3.5 7.5).
- bit 0: Implicit VR; bit 1: Little Endian (the encoding of the items: the data set's, or Implicit VR
  Little Endian for a sequence received as UN, PS3.5 6.2.2);
- `OVERSIZED` (flag byte 0x80 alone): the sequence was present but over
  `dicomfile.MAX_WANTED_VALUE` bytes, so it is not kept; at query time it is treated as absent.

Text inside the items is decoded with the instance's Specific Character Set (the `specific_character_set`
column), which items inherit (PS3.5 6.1.2.3); an item's own (0008,0005) overrides it, as pydicom does.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.sequence import Sequence

IMPLICIT = 0x01
LITTLE = 0x02
OVERSIZED = b"\x80"
#: Decoded sequences kept by `unpack` (least recently used first out), each of at most
#: `UNPACKED_MAX_BYTES` stored bytes (typical ones are a few hundred): a few MiB at most.
UNPACKED = 512
UNPACKED_MAX_BYTES = 4096


def pack(raw: bytes, *, implicit: bool, little: bool) -> bytes:
    """The stored form of a sequence value `raw` (its items, defined length)."""
    return bytes(((IMPLICIT if implicit else 0) | (LITTLE if little else 0),)) + raw


def unpack(blob: bytes | None, tag: int, charset: str | None) -> Sequence | None:
    """The items of a stored sequence as pydicom Datasets, text decoded with `charset` (the instance's
    Specific Character Set, values backslash-separated); None when absent, oversized or undecodable.

    The same stored bytes give the same (shared) object: the instances of a series mostly carry the
    same sequences (request attributes, concept name), decoded once per query instead of once per row.
    Callers read it and never change it (agent.matching copies what it answers)."""
    if not blob or blob[0] & 0x80:
        return None
    if len(blob) > UNPACKED_MAX_BYTES:
        return _decode(blob, tag, charset)
    return _unpacked(bytes(blob), tag, charset)


@lru_cache(maxsize=UNPACKED)
def _unpacked(blob: bytes, tag: int, charset: str | None) -> Sequence | None:
    return _decode(blob, tag, charset)


def _decode(blob: bytes, tag: int, charset: str | None) -> Sequence | None:
    flags, raw = blob[0], blob[1:]
    implicit, little = bool(flags & IMPLICIT), bool(flags & LITTLE)
    e = "<" if little else ">"
    data = bytearray()
    if charset:
        value = charset.encode("latin-1")
        if len(value) % 2:
            value += b" "
        data += struct.pack(e + "HH", 0x0008, 0x0005)
        data += struct.pack(e + "I", len(value)) if implicit else b"CS" + struct.pack(e + "H", len(value))
        data += value
    data += struct.pack(e + "HH", tag >> 16, tag & 0xFFFF)
    data += struct.pack(e + "I", len(raw)) if implicit else b"SQ\0\0" + struct.pack(e + "I", len(raw))
    data += raw
    try:
        ds: Dataset = read_dataset(BytesIO(bytes(data)), implicit, little)
        elem = ds[tag]
    except Exception:  # noqa: BLE001 - bytes the walker accepted but pydicom cannot read: no value
        return None
    value = elem.value
    return value if isinstance(value, Sequence) else None


__all__ = ["IMPLICIT", "LITTLE", "OVERSIZED", "pack", "unpack"]
