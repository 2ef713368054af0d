"""Film encodings at true physical size, and durable file writes.

- PNG and TIFF carry the resolution in their metadata (PNG pHYs in pixels per metre, TIFF
  XResolution/YResolution in pixels per inch), so columns / dpi is the film's width in inches.
- PDF is written here rather than with Pillow because Pillow encodes grayscale pages as JPEG, which
  would alter the drive levels; ours is one page whose MediaBox is the film's physical size in points
  (1/72 in) and whose single image, FlateDecode (lossless), fills the page.
- PostScript (Language Level 2) places the raster with the `image` operator, ASCII85 data, on a page
  of the film's physical size; it is what a raw page-description printer receives.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from drivers.base import DriverError, Film

POINTS_PER_MM = 72.0 / 25.4
_SAFE = re.compile(r"[A-Za-z0-9._-]{1,80}")


def safe_name(job_id: str) -> str:
    """A file-name stem made from `job_id`: the id itself when it is made of [A-Za-z0-9._-] only,
    otherwise its safe characters plus a digest, so two ids never share a name and no id names a path."""
    if _SAFE.fullmatch(job_id) and not job_id.startswith("."):
        return job_id
    kept = re.sub(r"[^A-Za-z0-9_-]", "_", job_id)[:40]
    return f"{kept}-{hashlib.sha256(job_id.encode()).hexdigest()[:16]}"


def page_points(film: Film) -> tuple[float, float]:
    """The film's width and height in PostScript/PDF points."""
    return film.width_mm * POINTS_PER_MM, film.height_mm * POINTS_PER_MM


def _channels(film: Film) -> tuple[Any, int, int, int]:
    """(array, rows, columns, components), checking the raster is one the encoders know."""
    pixels = np.asarray(film.pixels)
    if pixels.ndim == 2:
        comps = 1
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        comps = 3
    else:
        raise DriverError(f"film {film.job_id}: raster of shape {pixels.shape} is neither grayscale nor RGB")
    if pixels.dtype not in (np.uint8, np.uint16) or (comps == 3 and pixels.dtype != np.uint8):
        raise DriverError(f"film {film.job_id}: raster of type {pixels.dtype} (expected uint8, or uint16 grayscale)")
    return pixels, int(pixels.shape[0]), int(pixels.shape[1]), comps


def _pillow(film: Film) -> Image.Image:
    pixels, _, _, _ = _channels(film)
    # Pillow picks the mode from the array: uint8 -> L, (rows, cols, 3) uint8 -> RGB, <u2 -> I;16.
    if pixels.dtype == np.uint16:
        pixels = pixels.astype("<u2", copy=False)
    return Image.fromarray(np.ascontiguousarray(pixels))


def encode_png(film: Film) -> bytes:
    out = io.BytesIO()
    # compress_level 3: lossless either way; level 6 costs about twice the time on a 14x17 in film.
    _pillow(film).save(out, format="PNG", dpi=(film.dpi, film.dpi), compress_level=3)
    return out.getvalue()


def encode_tiff(film: Film) -> bytes:
    out = io.BytesIO()
    _pillow(film).save(out, format="TIFF", dpi=(film.dpi, film.dpi), compression="tiff_deflate")
    return out.getvalue()


def encode_pdf(film: Film) -> bytes:
    """A one-page PDF 1.5 whose page is the film (MediaBox in points) and whose image fills it."""
    pixels, rows, cols, comps = _channels(film)
    bits = 16 if pixels.dtype == np.uint16 else 8
    raw = pixels.astype(">u2", copy=False).tobytes() if bits == 16 else pixels.tobytes()
    data = zlib.compress(raw, 3)
    width, height = page_points(film)
    space = "/DeviceRGB" if comps == 3 else "/DeviceGray"
    content = f"q {width:.4f} 0 0 {height:.4f} 0 0 cm /Film Do Q\n".encode()
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width:.4f} {height:.4f}] "
            f"/Resources << /XObject << /Film 5 0 R >> >> /Contents 4 0 R >>"
        ).encode(),
        f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream",
        (
            f"<< /Type /XObject /Subtype /Image /Width {cols} /Height {rows} /ColorSpace {space} "
            f"/BitsPerComponent {bits} /Filter /FlateDecode /Length {len(data)} >>\nstream\n"
        ).encode() + data + b"\nendstream",
    ]
    title = _pdf_string(film.label or film.job_id)
    objects.append(f"<< /Title {title} /Creator (dicom-agent) >>".encode())
    out = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {len(objects)} 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _pdf_string(text: str) -> str:
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return "(" + clean.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def ascii85(data: bytes, width: int = 76) -> bytes:
    """ASCII85 (PLRM 3.13.3) without the `<~` prefix, ending with `~>`, in lines of `width`.

    Vectorised: the standard library's a85encode takes seconds for a 14x17 in film."""
    n = len(data)
    pad = (-n) % 4
    words = np.frombuffer(data + b"\0" * pad, dtype=">u4").astype(np.uint64)
    digits = np.empty((words.size, 5), dtype=np.uint8)
    for i in range(4, -1, -1):
        words, rest = np.divmod(words, 85)
        digits[:, i] = rest
    digits += 33
    zero = np.all(digits == 33, axis=1)
    if pad:
        zero[-1] = False  # a partial last group is never written as 'z'
    # 'z' stands for a whole group of zero bytes; the four NULs after it are dropped below (NUL never
    # occurs in ASCII85 output).
    digits[zero] = np.frombuffer(b"z\0\0\0\0", dtype=np.uint8)
    flat = digits.reshape(-1)
    if pad:
        flat = flat[: flat.size - pad]  # the last group keeps (4 - pad) + 1 characters
    flat = flat[flat != 0]
    lines = [flat[i : i + width].tobytes() for i in range(0, flat.size, width)]
    return b"\n".join(lines) + b"~>\n"


def encode_postscript(film: Film, title: str) -> bytes:
    """A DSC-conforming Level 2 PostScript job of one page the size of the film, `copies` copies."""
    pixels, rows, cols, comps = _channels(film)
    if pixels.dtype != np.uint8:
        # Level 2 `image` takes 1, 2, 4, 8 or 12 bits; keep 8 (the raw driver declares 8 drive bits).
        pixels = (pixels >> 8).astype(np.uint8)
    width, height = page_points(film)
    space = "/DeviceRGB" if comps == 3 else "/DeviceGray"
    decode = "[0 1 0 1 0 1]" if comps == 3 else "[0 1]"
    safe_title = "".join(c if 32 <= ord(c) < 127 and c not in "()\\" else "_" for c in title)
    head = (
        "%!PS-Adobe-3.0\n"
        f"%%Title: ({safe_title})\n"
        "%%Creator: dicom-agent\n"
        f"%%BoundingBox: 0 0 {round(width)} {round(height)}\n"
        f"%%HiResBoundingBox: 0 0 {width:.4f} {height:.4f}\n"
        "%%LanguageLevel: 2\n"
        "%%Pages: 1\n"
        "%%EndComments\n"
        "%%BeginSetup\n"
        f"<< /PageSize [{width:.4f} {height:.4f}] /NumCopies {max(1, film.copies)} >> setpagedevice\n"
        "%%EndSetup\n"
        "%%Page: 1 1\n"
        "gsave\n"
        f"{width:.4f} {height:.4f} scale\n"
        f"{space} setcolorspace\n"
        f"<< /ImageType 1 /Width {cols} /Height {rows} /BitsPerComponent 8 /Decode {decode}\n"
        f"   /ImageMatrix [{cols} 0 0 -{rows} 0 {rows}] /DataSource currentfile /ASCII85Decode filter >>\n"
        "image\n"
    ).encode()
    tail = b"grestore\nshowpage\n%%Trailer\n%%EOF\n"
    return head + ascii85(np.ascontiguousarray(pixels).tobytes()) + tail


ENCODERS = {"png": encode_png, "tiff": encode_tiff, "pdf": encode_pdf}
SUFFIXES = {"png": ".png", "tiff": ".tiff", "pdf": ".pdf"}


def write_durably(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that after a crash the file is either absent or complete:
    a temporary file in the same directory, fsync, rename, fsync of the directory."""
    fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "ENCODERS", "POINTS_PER_MM", "SUFFIXES", "ascii85", "encode_pdf", "encode_png", "encode_postscript",
    "encode_tiff", "page_points", "safe_name", "sync_directory", "write_durably",
]
