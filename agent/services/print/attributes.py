"""Print Management attributes (PS3.3 C.13, PS3.4 H.4): defined terms and value checks.

Invariants:
- Every check either returns a typed Python value or raises `AttributeProblem(status, tag, message)`:
  0x0106 (invalid attribute value) with the attribute's tag for a value outside its defined terms or
  range, and the Annex H status when the value is valid DICOM but beyond what this printer can do
  (a film size, medium or destination the device lacks is 0x0106 too: Annex H has no more specific
  code for those). Nothing is silently replaced by a value the requestor did not ask for.
- An attribute the request leaves out keeps its current (or default) value; an attribute present
  with no value (type 2 empty) also means "the SCP's default" (PS3.4 H.4.1.2.1.1).
- Pure functions over pydicom Datasets; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.multival import MultiValue

from agent.dimse.status import Status

# --- defined terms (PS3.3 C.13.1 .. C.13.5, C.13.9) ----------------------------------------------

PRINT_PRIORITIES = ("HIGH", "MED", "LOW")
MEDIUM_TYPES = ("PAPER", "CLEAR FILM", "BLUE FILM", "MAMMO CLEAR FILM", "MAMMO BLUE FILM")
FILM_DESTINATION_RE = re.compile(r"MAGAZINE|PROCESSOR|BIN_[0-9]{1,2}")
FILM_ORIENTATIONS = ("PORTRAIT", "LANDSCAPE")
MAGNIFICATION_TYPES = ("REPLICATE", "BILINEAR", "CUBIC", "NONE")
#: Smoothing Type values are the SCP's to define (PS3.3 C.13.3). This one defines a single type, NONE:
#: the interpolation is the Magnification Type's own, nothing further is applied.
SMOOTHING_TYPES = ("NONE",)
DENSITY_TERMS = ("BLACK", "WHITE")
TRIM_VALUES = ("YES", "NO")
RESOLUTION_IDS = ("STANDARD", "HIGH")
POLARITIES = ("NORMAL", "REVERSE")
DECIMATE_CROP = ("DECIMATE", "CROP", "FAIL")
PRESENTATION_LUT_SHAPES = ("IDENTITY", "LIN OD")
#: Image Display Format (2010,0010) kinds; SLIDE, SUPERSLIDE and CUSTOM only when the profile lists them.
DISPLAY_FORMAT_KINDS = ("STANDARD", "ROW", "COL", "SLIDE", "SUPERSLIDE", "CUSTOM")
DEFAULT_DISPLAY_FORMAT_KINDS = ("STANDARD", "ROW", "COL")


class AttributeProblem(ValueError):
    """A request attribute that cannot be honoured: answer `status`, naming `tag` when there is one."""

    def __init__(self, status: int, tag: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.tag = tag

    @property
    def tags(self) -> tuple[int, ...] | None:
        return None if self.tag is None else (self.tag,)


def tag_of(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


def invalid(keyword: str, message: str) -> AttributeProblem:
    return AttributeProblem(Status.INVALID_ATTRIBUTE_VALUE, tag_of(keyword), f"{keyword}: {message}")


def present(ds: Dataset, keyword: str) -> bool:
    """In the data set with a value (an empty type 2 attribute means 'the default')."""
    if keyword not in ds:
        return False
    value = ds[keyword].value
    return value is not None and value != "" and not (isinstance(value, (list, tuple, bytes)) and len(value) == 0)


def text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def cs(ds: Dataset, keyword: str, terms: Iterable[str]) -> str:
    """A code string that must be one of `terms`."""
    value = text(ds, keyword).upper()
    allowed = tuple(terms)
    if value not in allowed:
        raise invalid(keyword, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def integer(ds: Dataset, keyword: str, low: int, high: int) -> int:
    """An IS or US value within [low, high]."""
    raw = ds[keyword].value
    if isinstance(raw, (list, tuple, MultiValue)):
        raise invalid(keyword, "one value expected")
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise invalid(keyword, f"{raw!r} is not an integer") from None
    if not low <= value <= high:
        raise invalid(keyword, f"{value} is outside {low}..{high}")
    return value


def density_term(ds: Dataset, keyword: str) -> str:
    """Border Density / Empty Image Density: BLACK, WHITE or hundredths of OD (PS3.3 C.13.3)."""
    value = text(ds, keyword).upper()
    if value in DENSITY_TERMS or (value.isdigit() and int(value) <= 999):
        return value
    raise invalid(keyword, f"{value!r} is not BLACK, WHITE or a density in hundredths of OD")


def film_destination(ds: Dataset, available: Iterable[str]) -> str:
    value = text(ds, "FilmDestination").upper()
    if not FILM_DESTINATION_RE.fullmatch(value):
        raise invalid("FilmDestination", f"{value!r} is not MAGAZINE, PROCESSOR or BIN_i")
    allowed = tuple(available)
    if value not in allowed:
        raise invalid("FilmDestination", f"this printer has no {value} (it has {', '.join(allowed) or 'none'})")
    return value


def display_format(value: str, kinds: Iterable[str]) -> str:
    """Image Display Format (2010,0010): `STANDARD\\C,R`, `ROW\\r1,r2,...`, `COL\\c1,c2,...`, `SLIDE`,
    `SUPERSLIDE` or `CUSTOM\\i`, each kind only if this printer accepts it."""
    value = value.strip().upper()
    kind, _, rest = value.partition("\\")
    allowed = tuple(kinds)
    if kind not in DISPLAY_FORMAT_KINDS:
        raise invalid("ImageDisplayFormat", f"{value!r}: unknown format (defined: {', '.join(DISPLAY_FORMAT_KINDS)})")
    if kind not in allowed:
        raise invalid("ImageDisplayFormat", f"{value!r}: this printer accepts {', '.join(allowed)}")
    if kind == "STANDARD" and not re.fullmatch(r"[1-9][0-9]?,[1-9][0-9]?", rest):
        raise invalid("ImageDisplayFormat", f"{value!r}: STANDARD\\C,R expected")
    if kind in ("ROW", "COL") and not re.fullmatch(r"[1-9][0-9]?(,[1-9][0-9]?)*", rest):
        raise invalid("ImageDisplayFormat", f"{value!r}: {kind}\\n1,n2,... expected")
    if kind in ("SLIDE", "SUPERSLIDE") and rest:
        raise invalid("ImageDisplayFormat", f"{value!r}: {kind} takes no parameters")
    if kind == "CUSTOM" and not rest.isdigit():
        raise invalid("ImageDisplayFormat", f"{value!r}: CUSTOM\\i expected")
    return value


def configuration_information(ds: Dataset) -> str:
    """Configuration Information (2010,0150): values are the SCP's to define (PS3.3 C.13.3); this one
    defines none, so only an empty value is accepted (a value that would do nothing is refused)."""
    value = text(ds, "ConfigurationInformation")
    if value:
        raise invalid("ConfigurationInformation", f"{value[:20]!r}: this printer defines no configuration values")
    return value


def check_density_range(low: int | None, high: int | None, printer_low: int, printer_high: int) -> int | None:
    """B605 when a requested Min/Max Density lies outside the printer's range (PS3.4 H.4.2.2.1.2):
    the request is kept and the renderer clips to what the device can do; the warning says so."""
    if low is not None and high is not None and low >= high:
        raise invalid("MinDensity", f"Min Density {low} is not below Max Density {high}")
    for value in (low, high):
        if value is not None and not printer_low <= value <= printer_high:
            return Status.DENSITY_OUT_OF_RANGE
    return None


def unknown_attributes(ds: Dataset, allowed: Iterable[str]) -> tuple[int, ...]:
    """Tags in `ds` this operation does not define (answered with warning 0x0107, PS3.7 C.4)."""
    known = {tag_of(k) for k in allowed} | {0x00080005}  # Specific Character Set is always allowed
    return tuple(int(e.tag) for e in ds if int(e.tag) not in known)


__all__ = [
    "AttributeProblem", "DECIMATE_CROP", "DEFAULT_DISPLAY_FORMAT_KINDS", "DENSITY_TERMS", "DISPLAY_FORMAT_KINDS",
    "FILM_ORIENTATIONS", "MAGNIFICATION_TYPES", "MEDIUM_TYPES", "POLARITIES", "PRESENTATION_LUT_SHAPES",
    "PRINT_PRIORITIES", "RESOLUTION_IDS", "SMOOTHING_TYPES", "TRIM_VALUES", "check_density_range", "configuration_information", "cs",
    "density_term", "display_format", "film_destination", "integer", "invalid", "present", "tag_of", "text",
    "unknown_attributes",
]
