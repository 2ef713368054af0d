"""Pixels of an Image Box N-SET: the Basic Grayscale / Basic Color Image Sequence item (PS3.4 H.4.3.1,
PS3.3 C.13.5) checked and turned into a numpy array.

Invariants:
- Grayscale: Samples per Pixel 1, MONOCHROME1 or MONOCHROME2, Bits Allocated 8 (Bits Stored 8) or 16
  (Bits Stored 12..16), High Bit = Bits Stored - 1, Pixel Representation 0 (unsigned). Color: Samples
  per Pixel 3, RGB, Planar Configuration 0 or 1, 8 bits. Anything else is 0x0106 naming the element
  (the pixel format is an attribute value this printer cannot take), never a guess.
- Pixel Data must hold exactly Rows x Columns x Samples values (one trailing pad byte allowed).
- The array is a copy owned by the image box (the data set's buffer is not kept alive).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import Dataset

from agent.services.print.attributes import AttributeProblem, cs, integer, invalid, present

MAX_SIDE = 16384


@dataclass(frozen=True, slots=True)
class Pixels:
    array: Any  # numpy.ndarray: (rows, columns) uint8/uint16, or (rows, columns, 3) uint8
    bits_stored: int
    monochrome1: bool
    color: bool
    aspect_ratio: tuple[int, int]


def _aspect(item: Dataset) -> tuple[int, int]:
    if not present(item, "PixelAspectRatio"):
        return (1, 1)
    value = item.PixelAspectRatio
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise invalid("PixelAspectRatio", f"{value!r}: two positive integers expected") from None
    if a <= 0 or b <= 0:
        raise invalid("PixelAspectRatio", f"{value!r}: two positive integers expected")
    return (a, b)


def _require(item: Dataset, *keywords: str) -> None:
    for kw in keywords:
        if not present(item, kw):
            raise invalid(kw, "missing from the image sequence item")


def parse_image(item: Dataset, *, color: bool, big_endian: bool = False) -> Pixels:
    """The image of one Basic Grayscale (`color` False) or Basic Color Image Sequence item."""
    _require(item, "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
             "BitsStored", "HighBit", "PixelRepresentation", "PixelData")
    rows = integer(item, "Rows", 1, MAX_SIDE)
    cols = integer(item, "Columns", 1, MAX_SIDE)
    samples = integer(item, "SamplesPerPixel", 1, 4)
    if integer(item, "PixelRepresentation", 0, 1) != 0:
        raise invalid("PixelRepresentation", "print images are unsigned (0)")
    allocated = integer(item, "BitsAllocated", 1, 64)
    stored = integer(item, "BitsStored", 1, 64)
    if integer(item, "HighBit", 0, 63) != stored - 1:
        raise invalid("HighBit", f"must be Bits Stored - 1 = {stored - 1}")
    if color:
        if samples != 3:
            raise invalid("SamplesPerPixel", f"{samples}: a color image box takes 3 samples (RGB)")
        cs(item, "PhotometricInterpretation", ("RGB",))
        if allocated != 8 or stored != 8:
            raise invalid("BitsAllocated", f"{allocated}/{stored}: color images are 8 bits per sample")
        planar = integer(item, "PlanarConfiguration", 0, 1) if present(item, "PlanarConfiguration") else 0
    else:
        if samples != 1:
            raise invalid("SamplesPerPixel", f"{samples}: a grayscale image box takes 1 sample")
        monochrome1 = cs(item, "PhotometricInterpretation", ("MONOCHROME1", "MONOCHROME2")) == "MONOCHROME1"
        if allocated == 8 and stored != 8:
            raise invalid("BitsStored", f"{stored}: 8 with 8 bits allocated")
        if allocated == 16 and not 12 <= stored <= 16:
            raise invalid("BitsStored", f"{stored}: 12..16 with 16 bits allocated")
        if allocated not in (8, 16):
            raise invalid("BitsAllocated", f"{allocated}: 8 or 16")
        planar = 0
    data = item.PixelData
    if not isinstance(data, (bytes, bytearray)):
        raise invalid("PixelData", "native (uncompressed) pixel data expected")
    nbytes = allocated // 8
    expected = rows * cols * samples * nbytes
    if len(data) not in (expected, expected + 1):
        raise invalid("PixelData", f"{len(data)} bytes for {rows}x{cols}x{samples} at {allocated} bits "
                                   f"({expected} expected)")
    if nbytes == 1:
        flat = np.frombuffer(data, dtype=np.uint8, count=rows * cols * samples)
    else:
        flat = np.frombuffer(data, dtype=">u2" if big_endian else "<u2", count=rows * cols * samples)
        flat = flat.astype(np.uint16)
        if stored < 16:
            flat = flat & np.uint16((1 << stored) - 1)
    if color:
        array = flat.reshape(3, rows, cols).transpose(1, 2, 0) if planar == 1 else flat.reshape(rows, cols, 3)
        array = np.ascontiguousarray(array)
    else:
        return Pixels(flat.reshape(rows, cols).copy(), stored, monochrome1, False, _aspect(item))
    return Pixels(array, 8, False, True, _aspect(item))


__all__ = ["AttributeProblem", "Pixels", "parse_image"]
