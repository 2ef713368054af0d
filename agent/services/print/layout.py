"""Where things go on a film: Image Display Format, image box rectangles, annotation bands.

Image Display Format (2010,0010), PS3.3 C.13.3 (Basic Film Box):
- STANDARD\\C,R: C columns and R rows of equal boxes.
- ROW\\n1,n2,...: rows of equal height, row i holding n_i equal boxes side by side.
- COL\\n1,n2,...: columns of equal width, column i holding n_i equal boxes one above the other.
- SLIDE, SUPERSLIDE, CUSTOM\\i: the number and place of boxes is the printer's own (its Conformance
  Statement); this renderer defines none of them, so they are refused (`UnsupportedFormat`).

Image Box Position (2020,0010), PS3.3 C.13.5.1, numbers the boxes from 1: row by row from the top left
(left to right, then top to bottom) for STANDARD and ROW, and column by column (top to bottom, then
left to right) for COL, where rows of boxes do not line up.

Geometry (this renderer's choice; the standard leaves it to the printer): an outer margin and a gap
between boxes of 2 mm each, filled with Border Density. When annotations are given, bands of 8 mm per
line at the top and bottom of the film hold them (see `annotation_slot`), and the boxes share what is
left. All coordinates are printer pixels, (x0, y0, x1, y1) with x1, y1 exclusive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARGIN_MM = 2.0
GAP_MM = 2.0
ANNOTATION_LINE_MM = 8.0
#: Annotation positions per line pair: 1-3 top (left, centre, right), 4-6 bottom (left, centre, right);
#: 7-12 are a second line below/above those, and so on.
ANNOTATION_SLOTS_PER_LINE = 6
MAX_BOXES_PER_LINE = 99

_STANDARD = re.compile(r"STANDARD\\(\d+),(\d+)")
_ROWCOL = re.compile(r"(ROW|COL)\\(\d+(?:,\d+)*)")
_PRINTER_DEFINED = re.compile(r"SLIDE|SUPERSLIDE|CUSTOM\\\d+")

Rect = tuple[int, int, int, int]


class UnsupportedFormat(ValueError):
    """A well-formed Image Display Format whose layout only a printer's Conformance Statement defines
    (SLIDE, SUPERSLIDE, CUSTOM\\i): this renderer has none."""


@dataclass(frozen=True, slots=True)
class DisplayFormat:
    """A parsed Image Display Format: `kind` STANDARD, ROW or COL; `counts` boxes per row (STANDARD,
    ROW) or per column (COL)."""

    kind: str
    counts: tuple[int, ...]

    @property
    def boxes(self) -> int:
        return sum(self.counts)


def parse_display_format(value: str) -> DisplayFormat:
    """Parse Image Display Format (PS3.3 C.13.3). ValueError for a malformed value, UnsupportedFormat
    (a ValueError) for SLIDE, SUPERSLIDE and CUSTOM\\i."""
    text = value.strip()
    m = _STANDARD.fullmatch(text)
    if m:
        columns, rows = int(m.group(1)), int(m.group(2))
        _check_counts(value, [columns, rows])
        return DisplayFormat("STANDARD", (columns,) * rows)
    m = _ROWCOL.fullmatch(text)
    if m:
        counts = [int(n) for n in m.group(2).split(",")]
        _check_counts(value, counts)
        return DisplayFormat(m.group(1), tuple(counts))
    if _PRINTER_DEFINED.fullmatch(text):
        raise UnsupportedFormat(f"Image Display Format {value!r} is defined by each printer; this one has no "
                                "layout for it (use STANDARD\\C,R, ROW\\n,... or COL\\n,...)")
    raise ValueError(f"malformed Image Display Format {value!r}: expected STANDARD\\C,R, ROW\\n1,n2,..., "
                     "COL\\n1,n2,..., SLIDE, SUPERSLIDE or CUSTOM\\i")


def _check_counts(value: str, counts: list[int]) -> None:
    if min(counts) < 1 or max(counts) > MAX_BOXES_PER_LINE or len(counts) > MAX_BOXES_PER_LINE:
        raise ValueError(f"Image Display Format {value!r}: each number must be 1..{MAX_BOXES_PER_LINE}")


def validate_display_format(value: str) -> None:
    """Raise ValueError (UnsupportedFormat for printer-defined formats) unless `value` can be laid out."""
    parse_display_format(value)


def image_box_count(display_format: str) -> int:
    """How many image boxes a film box with this Image Display Format has (raises like
    `parse_display_format`)."""
    return parse_display_format(display_format).boxes


def mm_to_px(mm: float, dpi: int) -> int:
    return int(round(mm * dpi / 25.4))


def _split(start: int, length: int, parts: int, gap: int) -> list[tuple[int, int]]:
    """`parts` equal spans with `gap` between them over [start, start + length)."""
    out = []
    for i in range(parts):
        a = start + (i * (length + gap)) // parts
        b = start + ((i + 1) * (length + gap)) // parts - gap
        out.append((a, max(a, b)))
    return out


def box_rects(fmt: DisplayFormat, area: Rect, gap: int) -> list[Rect]:
    """The image box rectangles inside `area`, in Image Box Position order (index 0 is position 1)."""
    x0, y0, x1, y1 = area
    out: list[Rect] = []
    if fmt.kind == "COL":
        for (cx0, cx1), n in zip(_split(x0, x1 - x0, len(fmt.counts), gap), fmt.counts):
            for (ry0, ry1) in _split(y0, y1 - y0, n, gap):
                out.append((cx0, ry0, cx1, ry1))
        return out
    for (ry0, ry1), n in zip(_split(y0, y1 - y0, len(fmt.counts), gap), fmt.counts):
        for (cx0, cx1) in _split(x0, x1 - x0, n, gap):
            out.append((cx0, ry0, cx1, ry1))
    return out


def annotation_slot(position: int) -> tuple[str, int, str]:
    """Where Annotation Position `position` (from 1) goes: (band "top"|"bottom", line from the film's
    edge starting at 0, alignment "left"|"centre"|"right")."""
    if position < 1:
        raise ValueError(f"Annotation Position {position}: positions start at 1")
    line, slot = divmod(position - 1, ANNOTATION_SLOTS_PER_LINE)
    band = "top" if slot < 3 else "bottom"
    return band, line, ("left", "centre", "right")[slot % 3]


@dataclass(frozen=True, slots=True)
class FilmLayout:
    """Every rectangle of one film, in printer pixels."""

    width: int
    height: int
    boxes: tuple[Rect, ...]
    top_lines: int
    bottom_lines: int
    line_height: int
    margin: int


def film_layout(fmt: DisplayFormat, width: int, height: int, dpi: int,
                annotation_positions: tuple[int, ...] = ()) -> FilmLayout:
    """The layout of a `width` x `height` pixel film with annotations at the given positions."""
    margin = mm_to_px(MARGIN_MM, dpi)
    gap = mm_to_px(GAP_MM, dpi)
    line = mm_to_px(ANNOTATION_LINE_MM, dpi)
    top = bottom = 0
    for p in annotation_positions:
        band, index, _ = annotation_slot(p)
        if band == "top":
            top = max(top, index + 1)
        else:
            bottom = max(bottom, index + 1)
    area = (margin, margin + top * line, width - margin, height - margin - bottom * line)
    if area[2] - area[0] < 1 or area[3] - area[1] < 1:
        raise ValueError("the film is too small for its margins and annotation lines")
    boxes = tuple(box_rects(fmt, area, gap))
    if any(x1 - x0 < 1 or y1 - y0 < 1 for x0, y0, x1, y1 in boxes):
        raise ValueError(f"{fmt.boxes} image boxes in this layout do not fit on the film at {dpi} dpi")
    return FilmLayout(width, height, boxes, top, bottom, line, margin)


__all__ = ["ANNOTATION_SLOTS_PER_LINE", "DisplayFormat", "FilmLayout", "Rect", "UnsupportedFormat",
           "annotation_slot", "box_rects", "film_layout", "image_box_count", "mm_to_px",
           "parse_display_format", "validate_display_format"]
