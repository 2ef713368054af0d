"""Render a film box to the printer's raster: a pure function of the request and the printer.

`render_film(request, caps) -> drivers.base.Film`; `render(...)` also returns the Annex H warnings
(PS3.4 H.4) the SCP may answer with. Nothing here does I/O.

The pipeline, per film (PS3.3 C.13, PS3.4 H.2, PS3.14 chapter 7):
1. Layout (`layout.py`): the film at `caps.dpi` in its orientation (LANDSCAPE swaps the width and
   height of the Film Size ID), margins, gaps, annotation bands, image boxes by Image Display Format.
2. Per image box, the size of the printed image: fitted to the box keeping the physical shape (Pixel
   Aspect Ratio is vertical / horizontal pixel size, PS3.3 C.7.6.3.1.7), or Requested Image Size (the
   printed width in mm), or one image pixel per printer pixel for Magnification Type NONE.
   An image "larger than its box" is one whose rows or columns exceed the box's printer pixels at
   magnification 1 (or at its Requested Image Size), PS3.3 C.13.5 Requested Decimate/Crop Behavior:
   DECIMATE shrinks it to fit (warning B604), CROP prints the centre at magnification 1 (B609), FAIL
   refuses (C603). Smaller images are magnified to fill the box (REPLICATE: nearest neighbour,
   BILINEAR, CUBIC: Pillow's bicubic; NONE: not magnified). Smoothing Type is not used: it names
   printer-specific filters PS3.3 does not define. The image is centred; the rest of its box shows
   Border Density, the film's area "surrounding and between" images.
3. Grayscale values: one lookup table from every possible stored value straight to a drive level,
   computed once per (bits, polarity, photometric, densities, Presentation LUT) and applied by
   indexing after resampling (so resampling works on stored values, the LUT input; for the nearest-
   neighbour magnifications, which only pick source pixels, before it, with the same result):
   MONOCHROME1 inverts, Polarity REVERSE inverts (PS3.3 C.13.5); the Presentation LUT (PS3.3 C.11.6,
   PS3.4 H.4.9) gives P-values: IDENTITY scales the stored range onto the P-value range, an explicit
   LUT maps stored values (clamped to its first/last entry) to P-values of its output bits, LIN OD
   takes the value as optical density, linear from Min Density (0) to Max Density (top); P-values
   become optical density by the GSDF between Min and Max Density under Illumination and Reflected
   Ambient Light (`gsdf.py`, PS3.14 7.2; paper (Medium Type PAPER) as a reflective print, 7.3);
   density becomes the drive level through the printer's characteristic curve (linear interpolation).
4. Min/Max Density: the image box's, else the film box's, else the printer's; a value outside the
   printer's range is replaced by the printer's limit (warning B605). Border Density and Empty Image
   Density: BLACK is Max Density, WHITE is Min Density, a number is hundredths of OD (clamped to the
   printer's range).
5. Color images (RGB, 8 bits) print as they are (Polarity REVERSE inverts each channel), scaled to the
   drive bits; a film with any color image on a color printer is RGB (grayscale parts gray). A color
   image on a grayscale printer is refused (0106, invalid attribute value: Annex H has no status of
   its own for it; the SCP should not have accepted the color class in the first place).
6. Trim YES: a frame of 0.5 mm around each printed image, at Min Density on a dark border and Max
   Density on a light one. Annotations: text in the top/bottom bands (positions in `layout.py`), in
   Pillow's default font scaled to the line height, same contrast rule.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from agent.services.print import gsdf
from agent.services.print.layout import (
    FilmLayout, Rect, UnsupportedFormat, annotation_slot, film_layout, image_box_count, mm_to_px,
    parse_display_format, validate_display_format,
)
from agent.services.print.model import FILM_SIZES_MM, FilmRequest, ImageRequest, PresentationLut, RenderError
from drivers.base import Film, PrinterCapabilities

# PS3.4 H.4 status codes the renderer answers with.
INVALID_ATTRIBUTE_VALUE = 0x0106
IMAGE_DEMAGNIFIED = 0xB604  # warning: image larger than its box, demagnified (DECIMATE)
DENSITY_OUT_OF_RANGE = 0xB605  # warning: Min/Max Density outside the printer's range, its own used
IMAGE_CROPPED = 0xB609  # warning: image larger than its box, cropped (CROP)
IMAGE_TOO_LARGE = 0xC603  # failure: image larger than its box (FAIL)

MAGNIFICATIONS = {
    "REPLICATE": Image.Resampling.NEAREST,
    "BILINEAR": Image.Resampling.BILINEAR,
    "CUBIC": Image.Resampling.BICUBIC,
    "NONE": Image.Resampling.NEAREST,  # only ever used to decimate (DECIMATE with NONE)
}
TRIM_MM = 0.5
MAX_THREADS = 4


@dataclass(frozen=True, slots=True)
class Rendered:
    """A film and the warnings met on the way: (Image Box Position, or 0 for the film box, status)."""

    film: Film
    warnings: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class _Placement:
    """Where an image goes: the printed size (out_w x out_h), the part of it that shows (a centred
    window of the box), and the matching source rectangle in image pixels."""

    out_w: int
    out_h: int
    dest: Rect
    source: tuple[float, float, float, float]
    status: int  # 0, IMAGE_DEMAGNIFIED or IMAGE_CROPPED


def render_film(request: FilmRequest, caps: PrinterCapabilities) -> Film:
    """The film for `request` on a printer with `caps`. Raises RenderError with the Annex H status."""
    return render(request, caps).film


def render(request: FilmRequest, caps: PrinterCapabilities) -> Rendered:
    """Like `render_film`, with the Annex H warnings."""
    ctx = _Context(request, caps)
    warnings: list[tuple[int, int]] = list(ctx.warnings)
    color = any(img.color for img in request.images)
    if color and not caps.color:
        raise RenderError("a color image on a grayscale printer", INVALID_ATTRIBUTE_VALUE)
    shape = (ctx.layout.height, ctx.layout.width) + ((3,) if color else ())
    pixels = np.empty(shape, dtype=ctx.dtype)  # not written until nothing can refuse the film
    placed: dict[int, ImageRequest] = {}
    for img in request.images:
        if not 1 <= img.position <= len(ctx.layout.boxes):
            raise RenderError(f"Image Box Position {img.position}: the format "
                              f"{request.image_display_format} has {len(ctx.layout.boxes)} boxes",
                              INVALID_ATTRIBUTE_VALUE)
        if img.position in placed:
            raise RenderError(f"two images for Image Box Position {img.position}", INVALID_ATTRIBUTE_VALUE)
        placed[img.position] = img
    jobs: list[Callable[[], None]] = []
    empty: list[Rect] = []
    frames: list[tuple[Rect, Rect]] = []
    for position, box in enumerate(ctx.layout.boxes, start=1):
        img = placed.get(position)
        if img is None:
            empty.append(box)
            continue
        where = _place(img, box, request, caps)
        if where.status:
            warnings.append((position, where.status))
        if img.color:
            jobs.append(_color_job(pixels, img, where, request, ctx))
        else:
            jobs.append(_gray_job(pixels, img, where, request, ctx, warnings))
        frames.append((box, where.dest))
    pixels[...] = ctx.drive_of_density(ctx.border)
    empty_level = ctx.drive_of_density(ctx.empty)
    for x0, y0, x1, y1 in empty:
        pixels[y0:y1, x0:x1] = empty_level
    if request.trim:
        trim_level, trim_width = ctx.drive_of_density(ctx.contrast), mm_to_px(TRIM_MM, caps.dpi)
        for box, dest in frames:
            _draw_trim(pixels, box, dest, trim_level, trim_width)
    _run(jobs)
    if request.annotations:
        _draw_annotations(pixels, request.annotations, ctx.layout, ctx.drive_of_density(ctx.contrast))
    film = Film(
        job_id=request.job_id, pixels=pixels, width_mm=ctx.width_mm, height_mm=ctx.height_mm, dpi=caps.dpi,
        copies=request.copies, film_size_id=request.film_size_id, medium_type=request.medium_type,
        film_destination=request.film_destination, label=request.label, priority=request.priority,
    )
    return Rendered(film, tuple(warnings))


def image_box_status(request: FilmRequest, image: ImageRequest, caps: PrinterCapabilities) -> int:
    """The status an Image Box N-SET with `image` earns in the film box `request` (PS3.4 H.4.3.1):
    0, IMAGE_DEMAGNIFIED, IMAGE_CROPPED or DENSITY_OUT_OF_RANGE; raises RenderError (C603, 0106) when
    the film could not be printed with it. Renders nothing."""
    ctx = _Context(request, caps)
    if image.color and not caps.color:
        raise RenderError("a color image on a grayscale printer", INVALID_ATTRIBUTE_VALUE)
    if not 1 <= image.position <= len(ctx.layout.boxes):
        raise RenderError(f"Image Box Position {image.position}: the format has {len(ctx.layout.boxes)} "
                          "boxes", INVALID_ATTRIBUTE_VALUE)
    status = _place(image, ctx.layout.boxes[image.position - 1], request, caps).status
    if status:
        return status
    if not image.color and (image.min_density is not None or image.max_density is not None):
        _, _, clamped = ctx.densities(image)
        if clamped:
            return DENSITY_OUT_OF_RANGE
    return 0


# ------------------------------------------------------------------ film-wide values


class _Context:
    """What every box of one film shares: layout, density range, drive-level tables."""

    def __init__(self, request: FilmRequest, caps: PrinterCapabilities) -> None:
        self.request = request
        self.caps = caps
        self.warnings: list[tuple[int, int]] = []
        if request.film_size_id not in FILM_SIZES_MM or request.film_size_id not in caps.film_sizes:
            raise RenderError(f"Film Size ID {request.film_size_id!r} is not one of this printer's: "
                              f"{', '.join(caps.film_sizes)}", INVALID_ATTRIBUTE_VALUE)
        if request.film_orientation not in ("PORTRAIT", "LANDSCAPE"):
            raise RenderError(f"Film Orientation {request.film_orientation!r}: expected PORTRAIT or LANDSCAPE",
                              INVALID_ATTRIBUTE_VALUE)
        _check_magnification(request.magnification_type)
        try:
            fmt = parse_display_format(request.image_display_format)
        except ValueError as exc:
            raise RenderError(str(exc), INVALID_ATTRIBUTE_VALUE) from exc
        w_mm, h_mm = FILM_SIZES_MM[request.film_size_id]
        if request.film_orientation == "LANDSCAPE":
            w_mm, h_mm = h_mm, w_mm
        self.width_mm, self.height_mm = w_mm, h_mm
        positions = tuple(p for p, text in request.annotations if text)
        try:
            self.layout: FilmLayout = film_layout(fmt, mm_to_px(w_mm, caps.dpi), mm_to_px(h_mm, caps.dpi),
                                                  caps.dpi, positions)
        except ValueError as exc:
            raise RenderError(str(exc), INVALID_ATTRIBUTE_VALUE) from exc
        self.top = (1 << caps.drive_bits) - 1
        self.dtype = np.uint8 if caps.drive_bits <= 8 else np.uint16
        curve = caps.curve()
        if len(curve) < 2:
            raise RenderError("the printer's characteristic curve has fewer than two points", 0xC000)
        self.curve_d = np.array([d for d, _ in curve], dtype=np.float64)
        self.curve_level = np.array([v for _, v in curve], dtype=np.float64)
        self.d_min, self.d_max, clamped = self._range(request.min_density, request.max_density)
        if clamped:
            self.warnings.append((0, DENSITY_OUT_OF_RANGE))
        self.reflective = request.medium_type.strip().upper() == "PAPER"
        self.border = self.density_term(request.border_density, "Border Density")
        self.empty = self.density_term(request.empty_image_density, "Empty Image Density")
        # Trim and annotation text contrast with the border.
        self.contrast = self.d_min if self.border > (self.d_min + self.d_max) / 2 else self.d_max
        self._luts: dict[tuple[Any, ...], Any] = {}

    def _range(self, lo: int | None, hi: int | None) -> tuple[float, float, bool]:
        p_lo, p_hi = self.caps.min_density, self.caps.max_density
        want_lo = p_lo if lo is None else lo
        want_hi = p_hi if hi is None else hi
        got_lo, got_hi = max(want_lo, p_lo), min(want_hi, p_hi)
        if got_lo >= got_hi:
            raise RenderError(f"Min Density {want_lo} is not below Max Density {want_hi} (hundredths of OD) "
                              f"within the printer's {p_lo}..{p_hi}", INVALID_ATTRIBUTE_VALUE)
        return got_lo / 100.0, got_hi / 100.0, (got_lo, got_hi) != (want_lo, want_hi)

    def densities(self, img: ImageRequest) -> tuple[float, float, bool]:
        """Min and Max Density (OD) for an image box, and whether the printer's limits replaced them."""
        if img.min_density is None and img.max_density is None:
            return self.d_min, self.d_max, False
        lo = round(self.d_min * 100) if img.min_density is None else img.min_density
        hi = round(self.d_max * 100) if img.max_density is None else img.max_density
        return self._range(lo, hi)

    def density_term(self, value: str, name: str) -> float:
        """BLACK, WHITE or hundredths of OD (PS3.3 C.13.3) as OD, clamped to the printer's range."""
        text = str(value).strip().upper()
        if text in ("", "BLACK"):
            return self.d_max
        if text == "WHITE":
            return self.d_min
        if text.isdigit():
            return min(max(int(text), self.caps.min_density), self.caps.max_density) / 100.0
        raise RenderError(f"{name} {value!r}: expected BLACK, WHITE or hundredths of OD", INVALID_ATTRIBUTE_VALUE)

    def drive_levels(self, density: Any) -> Any:
        """Drive levels for optical densities, through the characteristic curve."""
        level = np.interp(density, self.curve_d, self.curve_level)
        return np.clip(np.rint(level), 0, self.top).astype(self.dtype)

    def drive_of_density(self, density: float) -> Any:
        return self.drive_levels(np.array([density]))[0]

    def gray_lut(self, img: ImageRequest) -> Any:
        """Stored value -> drive level for every value `img` can hold (PS3.4 H.2, PS3.14 7.2)."""
        d_min, d_max, _ = self.densities(img)
        lut_spec = self.request.presentation_lut
        key = (img.bits_stored, img.monochrome1, img.polarity, d_min, d_max, id(lut_spec))
        cached = self._luts.get(key)
        if cached is not None:
            return cached
        if not 1 <= img.bits_stored <= 16:
            raise RenderError(f"Bits Stored {img.bits_stored}: expected 1..16", INVALID_ATTRIBUTE_VALUE)
        if img.polarity not in ("NORMAL", "REVERSE"):
            raise RenderError(f"Polarity {img.polarity!r}: expected NORMAL or REVERSE", INVALID_ATTRIBUTE_VALUE)
        n = 1 << img.bits_stored
        values = np.arange(n, dtype=np.float64)
        if img.monochrome1 != (img.polarity == "REVERSE"):
            values = (n - 1) - values
        density = _values_to_density(values, n, lut_spec, d_min, d_max, self.request, self.reflective)
        lut = self.drive_levels(density)
        self._luts[key] = lut
        return lut


def _values_to_density(values: Any, n: int, spec: PresentationLut | None, d_min: float, d_max: float,
                       request: FilmRequest, reflective: bool) -> Any:
    """Polarity-corrected stored values (0..n-1) -> optical density through the Presentation LUT."""
    if spec is None or (spec.table is None and spec.shape in (None, "IDENTITY")):
        p = values / (n - 1)
    elif spec.table is None and spec.shape == "LIN OD":
        # PS3.3 C.11.6.1.2: "input to Presentation LUT is in linear optical density over the range of
        # Min Density and Max Density": the value is a density, so 0 prints Min Density and the top
        # value Max Density (the reverse of P-values; DCMTK's print LUT reads it the same way).
        return d_min + values / (n - 1) * (d_max - d_min)
    elif spec.table is not None and len(spec.table) > 0:
        if not 8 <= spec.output_bits <= 16:
            raise RenderError(f"Presentation LUT output bits {spec.output_bits}: expected 8..16",
                              INVALID_ATTRIBUTE_VALUE)
        table = np.asarray(spec.table, dtype=np.float64)
        index = np.clip(values.astype(np.int64) - spec.first_mapped, 0, len(table) - 1)
        p = np.clip(table[index] / ((1 << spec.output_bits) - 1), 0.0, 1.0)
    else:
        raise RenderError(f"Presentation LUT Shape {spec.shape!r}: expected IDENTITY, LIN OD or a table",
                          INVALID_ATTRIBUTE_VALUE)
    return gsdf.p_value_density(p, d_min, d_max, request.illumination, request.reflected_ambient_light,
                                reflective=reflective)


def _check_magnification(value: str) -> None:
    if value not in MAGNIFICATIONS:
        raise RenderError(f"Magnification Type {value!r}: expected REPLICATE, BILINEAR, CUBIC or NONE",
                          INVALID_ATTRIBUTE_VALUE)


# ------------------------------------------------------------------ one image box


def _place(img: ImageRequest, box: Rect, request: FilmRequest, caps: PrinterCapabilities) -> _Placement:
    """Size and place `img` in `box` (PS3.3 C.13.5: magnification, Requested Image Size, Requested
    Decimate/Crop Behavior)."""
    rows, cols = int(img.pixels.shape[0]), int(img.pixels.shape[1])
    if rows < 1 or cols < 1:
        raise RenderError(f"Image Box Position {img.position}: an image without pixels", INVALID_ATTRIBUTE_VALUE)
    magnification = img.magnification_type or request.magnification_type
    _check_magnification(magnification)
    v, h = img.pixel_aspect_ratio
    aspect = v / h if v > 0 and h > 0 else 1.0
    if magnification == "NONE":
        aspect = 1.0  # one image pixel per printer pixel: no interpolation, so no aspect correction
    bw, bh = box[2] - box[0], box[3] - box[1]
    fit = min(bw / cols, bh / (rows * aspect))
    if img.requested_image_size is not None:
        if img.requested_image_size <= 0:
            raise RenderError(f"Requested Image Size {img.requested_image_size}: must be positive",
                              INVALID_ATTRIBUTE_VALUE)
        natural = img.requested_image_size * caps.dpi / 25.4 / cols
    else:
        natural = 1.0
    status = 0
    too_large = round(cols * natural) > bw or round(rows * aspect * natural) > bh
    if too_large:
        behaviour = img.decimate_crop or "DECIMATE"
        if behaviour == "FAIL":
            raise RenderError(f"Image Box Position {img.position}: the image ({cols}x{rows}) is larger than its "
                              f"box ({bw}x{bh} printer pixels) and Requested Decimate/Crop Behavior is FAIL",
                              IMAGE_TOO_LARGE)
        if behaviour == "CROP":
            scale, status = natural, IMAGE_CROPPED
        elif behaviour == "DECIMATE":
            scale, status = fit, IMAGE_DEMAGNIFIED
        else:
            raise RenderError(f"Requested Decimate/Crop Behavior {behaviour!r}: expected DECIMATE, CROP or FAIL",
                              INVALID_ATTRIBUTE_VALUE)
    elif magnification == "NONE" or img.requested_image_size is not None:
        scale = natural
    else:
        scale = fit
    out_w = max(1, round(cols * scale))
    out_h = max(1, round(rows * aspect * scale))
    vis_w, vis_h = min(out_w, bw), min(out_h, bh)
    dx, dy = box[0] + (bw - vis_w) // 2, box[1] + (bh - vis_h) // 2
    ox, oy = (out_w - vis_w) // 2, (out_h - vis_h) // 2  # the window of the printed image that shows
    sx, sy = cols / out_w, rows / out_h
    source = (ox * sx, oy * sy, (ox + vis_w) * sx, (oy + vis_h) * sy)
    return _Placement(out_w, out_h, (dx, dy, dx + vis_w, dy + vis_h), source, status)


def _resampled(arr: Any, where: _Placement, magnification: str) -> Any:
    """The visible part of the printed image, resampled to printer pixels."""
    x0, y0, x1, y1 = where.dest
    w, h = x1 - x0, y1 - y0
    sx0, sy0, sx1, sy1 = where.source
    if (where.out_w, where.out_h) == (arr.shape[1], arr.shape[0]):
        # Magnification 1: no resampling at all, just the visible window.
        ix, iy = int(round(sx0)), int(round(sy0))
        return arr[iy:iy + h, ix:ix + w]
    im = Image.fromarray(arr)
    return np.asarray(im.resize((w, h), MAGNIFICATIONS[magnification], box=(sx0, sy0, sx1, sy1)))


def _gray_job(pixels: Any, img: ImageRequest, where: _Placement, request: FilmRequest, ctx: _Context,
              warnings: list[tuple[int, int]]) -> Callable[[], None]:
    """Check a grayscale image and return the drawing of it (resample, then one LUT to drive levels)."""
    arr = np.asarray(img.pixels)
    if arr.ndim != 2:
        raise RenderError(f"Image Box Position {img.position}: a grayscale image must be 2-D, got {arr.shape}",
                          INVALID_ATTRIBUTE_VALUE)
    if img.min_density is not None or img.max_density is not None:
        if ctx.densities(img)[2]:
            warnings.append((img.position, DENSITY_OUT_OF_RANGE))
    lut = ctx.gray_lut(img)
    magnification = img.magnification_type or request.magnification_type
    x0, y0, x1, y1 = where.dest
    target = pixels[y0:y1, x0:x1]

    def draw() -> None:
        if magnification in ("REPLICATE", "NONE"):
            # Nearest neighbour only picks source pixels, so looking them up first gives the same film
            # with a lookup per image pixel instead of one per printer pixel.
            levels = _resampled(np.take(lut, arr, mode="clip"), where, magnification)
            target[...] = levels if target.ndim == 2 else levels[..., None]
            return
        src = arr
        if src.dtype != np.uint8:
            # 32-bit integers: Pillow resamples them twice as fast as 16-bit ones, and a bicubic
            # overshoot below 0 or above the top reaches the clipping lookup below intact.
            src = src.astype(np.int32)
        values = _resampled(src, where, magnification)
        # mode="clip": values outside the LUT (bicubic overshoot, stray high bits) take its end entries.
        # (A contiguous result copied into the film is faster than take(out=) into the strided view.)
        levels = np.take(lut, values, mode="clip")
        target[...] = levels if target.ndim == 2 else levels[..., None]

    return draw


def _color_job(pixels: Any, img: ImageRequest, where: _Placement, request: FilmRequest,
               ctx: _Context) -> Callable[[], None]:
    """Check a color image and return the drawing of it."""
    arr = np.asarray(img.pixels)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise RenderError(f"Image Box Position {img.position}: a color image must be (rows, columns, 3) "
                          f"8-bit RGB, got {arr.shape} {arr.dtype}", INVALID_ATTRIBUTE_VALUE)
    if img.polarity not in ("NORMAL", "REVERSE"):
        raise RenderError(f"Polarity {img.polarity!r}: expected NORMAL or REVERSE", INVALID_ATTRIBUTE_VALUE)
    magnification = img.magnification_type or request.magnification_type
    x0, y0, x1, y1 = where.dest

    def draw() -> None:
        rgb = _resampled(arr, where, magnification)
        if img.polarity == "REVERSE":
            rgb = 255 - rgb
        if ctx.dtype == np.uint8:
            pixels[y0:y1, x0:x1] = rgb
        else:
            pixels[y0:y1, x0:x1] = rgb.astype(np.uint16) * (ctx.top // 255)

    return draw


def _run(jobs: list[Callable[[], None]]) -> None:
    """Draw the image boxes, on a few threads when there are several: Pillow's resampling and numpy's
    lookup release the GIL, and every box writes its own part of the film."""
    workers = min(len(jobs), os.cpu_count() or 1, MAX_THREADS)
    if workers <= 1:
        for job in jobs:
            job()
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()


def _draw_trim(pixels: Any, box: Rect, dest: Rect, level: Any, width: int) -> None:
    """A frame `width` pixels wide just outside the printed image, inside its box (PS3.3 C.13.3 Trim)."""
    bx0, by0, bx1, by1 = box
    x0, y0, x1, y1 = max(dest[0] - width, bx0), max(dest[1] - width, by0), min(dest[2] + width, bx1), \
        min(dest[3] + width, by1)
    pixels[y0:dest[1], x0:x1] = level
    pixels[dest[3]:y1, x0:x1] = level
    pixels[y0:y1, x0:dest[0]] = level
    pixels[y0:y1, dest[2]:x1] = level


# ------------------------------------------------------------------ annotations


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _draw_annotations(pixels: Any, annotations: tuple[tuple[int, str], ...], layout: FilmLayout,
                      level: Any) -> None:
    """Text String of each Basic Annotation Box in its band (see `layout.annotation_slot`)."""
    line = layout.line_height
    font = _font(max(8, int(line * 0.7)))
    pad = layout.margin
    for position, text in annotations:
        if not text:
            continue
        band, index, align = annotation_slot(position)
        y0 = pad + index * line if band == "top" else layout.height - pad - (index + 1) * line
        strip = Image.new("L", (layout.width - 2 * pad, line), 0)
        draw = ImageDraw.Draw(strip)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw = right - left
        x = {"left": 0, "centre": (strip.width - tw) // 2, "right": strip.width - tw}[align]
        draw.text((max(0, x) - left, (line - (bottom - top)) // 2 - top), text, fill=255, font=font)
        mask = np.asarray(strip) >= 128
        pixels[y0:y0 + line, pad:pad + strip.width][mask] = level


__all__ = ["DENSITY_OUT_OF_RANGE", "IMAGE_CROPPED", "IMAGE_DEMAGNIFIED", "IMAGE_TOO_LARGE",
           "INVALID_ATTRIBUTE_VALUE", "Rendered", "UnsupportedFormat", "image_box_count", "image_box_status", "render",
           "render_film", "validate_display_format"]
