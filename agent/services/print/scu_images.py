"""From a stored image to the pixels of an Image Box N-SET (PS3.4 H.4.3, PS3.3 C.13.5).

The choices (the printer only ever sees P-values, so the modality must decide how its stored values
become them; this is what the agent does):
- Grayscale images become MONOCHROME2 with 8 bits stored in 8 allocated (the default; every printer
  accepts it) or 12 bits stored in 16 allocated (`bits=12`, for printers that support it).
- The stored values first go through the Modality LUT (Rescale Slope/Intercept, PS3.3 C.11.1), then the
  image's own VOI: its first Window Center/Width pair with the linear function of PS3.3 C.11.2.1.2.1
  (the window the radiologist saw). Without a window, the range of the image's values is stretched to
  the output range, except an 8-bit unsigned image without rescale, which is already display values and
  goes out unchanged (bit for bit). MONOCHROME1 is inverted so that the output is MONOCHROME2.
- Color images (Samples per Pixel 3) go to a Basic Color Image Box: RGB, 8 bits, Planar Configuration 1
  (color-by-plane), as PS3.3 C.13.5.1 requires; YBR data are converted to RGB first.
- A multi-frame image prints its first frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag

from agent.errors import AgentError


class ImageError(AgentError):
    """An input file is not a printable image (not DICOM, no pixel data, an unsupported layout)."""


@dataclass(frozen=True, slots=True)
class PrintImage:
    """The pixels of one image box: (rows, columns) uint8/uint16 for grayscale, (rows, columns, 3) uint8
    RGB for color."""

    pixels: Any  # numpy.ndarray
    color: bool
    bits_stored: int = 8
    aspect_ratio: tuple[int, int] = (1, 1)


def read_image(path: Path, *, bits: int = 8) -> PrintImage:
    """The image in the DICOM file `path`, ready for an image box (see the module's choices)."""
    try:
        ds = dcmread(str(path), force=True)
        if "PixelData" not in ds and "FloatPixelData" not in ds:
            raise ImageError(f"{path}: no pixel data: not an image")
        arr = ds.pixel_array
    except ImageError:
        raise
    except Exception as exc:  # pydicom raises many types for unreadable or undecodable input
        raise ImageError(f"{path}: cannot read the image: {exc}") from exc
    return image_from_dataset(ds, arr, bits=bits, name=str(path))


def image_from_dataset(ds: Dataset, arr: Any, *, bits: int = 8, name: str = "image") -> PrintImage:
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]
    aspect = _aspect(ds)
    if samples == 3:
        return PrintImage(_rgb(ds, arr), color=True, aspect_ratio=aspect)
    if samples != 1 or arr.ndim != 2:
        raise ImageError(f"{name}: {samples} samples per pixel, shape {arr.shape}: not a printable image")
    return PrintImage(grayscale_pixels(ds, arr, bits), color=False, bits_stored=bits, aspect_ratio=aspect)


def _aspect(ds: Dataset) -> tuple[int, int]:
    value = ds.get("PixelAspectRatio")
    if value is not None and len(value) == 2 and int(value[0]) > 0 and int(value[1]) > 0:
        return int(value[0]), int(value[1])
    return (1, 1)


def _rgb(ds: Dataset, arr: Any) -> Any:
    photometric = str(ds.get("PhotometricInterpretation", "RGB")).strip()
    if photometric.startswith("YBR"):
        from pydicom.pixels import convert_color_space

        arr = convert_color_space(arr, photometric, "RGB")
    elif photometric != "RGB":
        raise ImageError(f"color image with Photometric Interpretation {photometric}: not printable")
    stored = int(ds.get("BitsStored", 8))
    if stored > 8:
        arr = arr.astype(np.float64) * (255.0 / ((1 << stored) - 1))
        arr = np.rint(arr)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def grayscale_pixels(ds: Dataset, arr: Any, bits: int = 8) -> Any:
    """Stored values -> MONOCHROME2 P-values of `bits` bits (uint8 for 8, uint16 for 12)."""
    top = (1 << bits) - 1
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    center, width = _window(ds)
    plain8 = (
        int(ds.get("BitsStored", 8)) <= 8 and int(ds.get("PixelRepresentation", 0)) == 0
        and slope == 1 and intercept == 0 and center is None
    )
    if plain8:
        out = arr.astype(np.uint16)
        if bits == 12:
            out = out * 16 + out // 16  # 0..255 -> 0..4095, both ends kept
        if photometric == "MONOCHROME1":
            out = top - out
        return out.astype(np.uint8 if bits == 8 else np.uint16)
    values = arr.astype(np.float64) * slope + intercept
    if center is not None and width is not None:
        # PS3.3 C.11.2.1.2.1, linear: y = ((x - (c - 0.5)) / (w - 1) + 0.5) * (ymax - ymin) + ymin
        w = max(width, 1.0)
        scaled = ((values - (center - 0.5)) / max(w - 1.0, 1.0) + 0.5) * top
    else:
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) * (top / (hi - lo)) if hi > lo else np.zeros_like(values)
    out = np.clip(np.rint(scaled), 0, top)
    if photometric == "MONOCHROME1":
        out = top - out
    return out.astype(np.uint8 if bits == 8 else np.uint16)


def _window(ds: Dataset) -> tuple[float | None, float | None]:
    c, w = ds.get("WindowCenter"), ds.get("WindowWidth")
    if c is None or w is None:
        return None, None
    try:
        c0 = float(c[0] if _multi(c) else c)
        w0 = float(w[0] if _multi(w) else w)
    except (TypeError, ValueError, IndexError):
        return None, None
    return (c0, w0) if w0 >= 1 else (None, None)


def _multi(value: Any) -> bool:
    return not isinstance(value, (str, bytes, int, float)) and hasattr(value, "__getitem__")


def image_sequence_item(image: PrintImage) -> Dataset:
    """The one item of Basic Grayscale Image Sequence (2020,0110) or Basic Color Image Sequence
    (2020,0111), PS3.3 C.13.5.1."""
    item = Dataset()
    rows, columns = image.pixels.shape[:2]
    item.Rows = rows
    item.Columns = columns
    if image.aspect_ratio != (1, 1):
        item.PixelAspectRatio = [image.aspect_ratio[0], image.aspect_ratio[1]]
    if image.color:
        item.SamplesPerPixel = 3
        item.PhotometricInterpretation = "RGB"
        item.PlanarConfiguration = 1  # color-by-plane, the only value allowed here
        item.BitsAllocated = item.BitsStored = 8
        item.HighBit = 7
        item.PixelRepresentation = 0
        data = np.ascontiguousarray(np.moveaxis(image.pixels, 2, 0)).tobytes()
        item.add_new(Tag(0x7FE00010), "OB", data + (b"\0" if len(data) % 2 else b""))
        return item
    item.SamplesPerPixel = 1
    item.PhotometricInterpretation = "MONOCHROME2"
    item.BitsAllocated = 8 if image.bits_stored == 8 else 16
    item.BitsStored = image.bits_stored
    item.HighBit = image.bits_stored - 1
    item.PixelRepresentation = 0
    if image.bits_stored == 8:
        data = np.ascontiguousarray(image.pixels, dtype=np.uint8).tobytes()
        item.add_new(Tag(0x7FE00010), "OB", data + (b"\0" if len(data) % 2 else b""))
    else:
        item.add_new(Tag(0x7FE00010), "OW", np.ascontiguousarray(image.pixels, dtype="<u2").tobytes())
    return item


def image_box_attributes(image: PrintImage, position: int, *, polarity: str | None = None,
                         decimate_crop: str | None = None) -> Dataset:
    """The Image Box N-SET attribute list (PS3.4 H.4.3.1.2.1.1)."""
    ds = Dataset()
    ds.ImageBoxPosition = position
    if polarity is not None:
        ds.Polarity = polarity
    if decimate_crop is not None:
        ds.RequestedDecimateCropBehavior = decimate_crop
    seq = DicomSequence([image_sequence_item(image)])
    if image.color:
        ds.BasicColorImageSequence = seq
    else:
        ds.BasicGrayscaleImageSequence = seq
    return ds


__all__ = ["ImageError", "PrintImage", "grayscale_pixels", "image_box_attributes", "image_from_dataset",
           "image_sequence_item", "read_image"]
