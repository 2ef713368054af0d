"""What a print request asks of the printer: film session and film box options, validated.

Invariants:
- Every value is checked against the defined terms of PS3.3 C.13 here, before anything is queued, so
  a typo is answered at once (the CLI exits 2) instead of dying later as a C6xx from the printer.
- A `None` (or empty) option is *not sent*: printers refuse attributes they do not support (DCMTK's
  print SCP refuses any optional attribute its configuration does not list), so by default the SCU
  sends only Image Display Format and the references the standard requires, and the printer uses its
  own defaults for the rest.
- `FilmOptions` round-trips through a JSON mapping (`to_payload` / `from_payload`), the form kept in the
  durable queue.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.errors import AgentError
from agent.services.print.model import FILM_SIZES_MM


class PrintOptionError(AgentError, ValueError):
    """A print option is not one of its defined terms (the message says which values are)."""


#: PS3.3 C.13.3 / C.13.8 defined terms.
ORIENTATIONS = ("PORTRAIT", "LANDSCAPE")
MAGNIFICATIONS = ("REPLICATE", "BILINEAR", "CUBIC", "NONE")
PRIORITIES = ("HIGH", "MED", "LOW")
MEDIUM_TYPES = ("PAPER", "CLEAR FILM", "BLUE FILM", "MAMMO CLEAR FILM", "MAMMO BLUE FILM")
RESOLUTIONS = ("STANDARD", "HIGH")
POLARITIES = ("NORMAL", "REVERSE")
DECIMATE_CROP = ("DECIMATE", "CROP", "FAIL")
_DESTINATION = re.compile(r"^(MAGAZINE|PROCESSOR|BIN_\d{1,2})$")
_FORMAT_STANDARD = re.compile(r"^STANDARD\\(\d{1,2}),(\d{1,2})$")
_FORMAT_ROWCOL = re.compile(r"^(ROW|COL)\\(\d{1,2}(?:,\d{1,2})*)$")
_FORMAT_CUSTOM = re.compile(r"^CUSTOM\\\d{1,4}$")


def image_boxes(display_format: str) -> int | None:
    """How many image boxes `display_format` (Image Display Format, PS3.3 C.13.3) has, or None when only
    the printer knows (SLIDE, SUPERSLIDE, CUSTOM\\i). Raises PrintOptionError for a malformed value."""
    m = _FORMAT_STANDARD.match(display_format)
    if m:
        columns, rows = int(m.group(1)), int(m.group(2))
        if columns < 1 or rows < 1:
            raise PrintOptionError(f"display format {display_format!r}: columns and rows start at 1")
        return columns * rows
    m = _FORMAT_ROWCOL.match(display_format)
    if m:
        counts = [int(n) for n in m.group(2).split(",")]
        if min(counts) < 1:
            raise PrintOptionError(f"display format {display_format!r}: each row/column has at least 1 image")
        return sum(counts)
    if display_format in ("SLIDE", "SUPERSLIDE") or _FORMAT_CUSTOM.match(display_format):
        return None
    raise PrintOptionError(
        f"unknown display format {display_format!r}: expected STANDARD\\C,R (e.g. STANDARD\\2,2), "
        "ROW\\n,n..., COL\\n,n..., SLIDE, SUPERSLIDE or CUSTOM\\i"
    )


def _density(name: str, value: str | None, words: tuple[str, ...] = ()) -> str | None:
    if value is None:
        return None
    value = str(value).strip().upper()
    if value in words or (value.isdigit() and 0 <= int(value) <= 400):
        return value
    choices = " or ".join([*words, "hundredths of OD (0-400)"])
    raise PrintOptionError(f"{name} must be {choices}, got {value!r}")


def _term(name: str, value: str | None, terms: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    value = str(value).strip().upper()
    if value not in terms:
        raise PrintOptionError(f"unknown {name} {value!r}: expected one of {', '.join(terms)}")
    return value


@dataclass(frozen=True, slots=True)
class FilmOptions:
    """One print request's film session and film box options (None: not sent)."""

    display_format: str = "STANDARD\\1,1"
    # Film Session (PS3.3 C.13.1)
    copies: int | None = None
    priority: str | None = None
    medium_type: str | None = None
    film_destination: str | None = None
    label: str | None = None
    # Film Box (PS3.3 C.13.3)
    film_size: str | None = None
    orientation: str | None = None
    magnification: str | None = None
    smoothing: str | None = None
    border_density: str | None = None
    empty_image_density: str | None = None
    min_density: int | None = None
    max_density: int | None = None
    trim: bool | None = None
    resolution: str | None = None
    configuration: str | None = None
    illumination: int | None = None  # cd/m², sent only with a Presentation LUT
    reflected_ambient_light: int | None = None
    # Image Box (PS3.3 C.13.5)
    polarity: str | None = None
    decimate_crop: str | None = None
    # Basic Annotation Box (PS3.3 C.13.7)
    annotations: tuple[str, ...] = ()
    annotation_format: str | None = None  # Annotation Display Format ID; None: the number of annotations
    # How stored pixels become P-values: 8 or 12 bits stored (see scu_images).
    bits: int = 8
    presentation_lut: bool = True  # propose Presentation LUT and send IDENTITY when accepted

    def validated(self) -> FilmOptions:
        """A copy with every term upper-cased and checked; raises PrintOptionError."""
        image_boxes(self.display_format.upper())
        if self.copies is not None and not 1 <= int(self.copies) <= 99:
            raise PrintOptionError(f"number of copies must be 1-99, got {self.copies}")
        if self.film_size is not None and self.film_size.upper() not in FILM_SIZES_MM:
            raise PrintOptionError(
                f"unknown film size {self.film_size!r}: expected one of {', '.join(FILM_SIZES_MM)}"
            )
        dest = self.film_destination
        if dest is not None and not _DESTINATION.match(dest.upper()):
            raise PrintOptionError(f"film destination must be MAGAZINE, PROCESSOR or BIN_i, got {dest!r}")
        for name, value in (("min density", self.min_density), ("max density", self.max_density)):
            if value is not None and not 0 <= int(value) <= 400:
                raise PrintOptionError(f"{name} is in hundredths of OD (0-400), got {value}")
        if self.bits not in (8, 12):
            raise PrintOptionError(f"bits stored must be 8 or 12, got {self.bits}")
        for text in self.annotations:
            if len(text) > 64 or "\\" in text:
                raise PrintOptionError(f"an annotation is at most 64 characters without backslash: {text!r}")
        if self.label is not None and len(self.label) > 64:
            raise PrintOptionError("a film session label is at most 64 characters")
        return dataclasses.replace(
            self,
            display_format=self.display_format.upper(),
            priority=_term("print priority", self.priority, PRIORITIES),
            medium_type=_term("medium type", self.medium_type, MEDIUM_TYPES),
            film_destination=dest.upper() if dest is not None else None,
            film_size=self.film_size.upper() if self.film_size is not None else None,
            orientation=_term("film orientation", self.orientation, ORIENTATIONS),
            magnification=_term("magnification type", self.magnification, MAGNIFICATIONS),
            border_density=_density("border density", self.border_density, ("BLACK", "WHITE")),
            empty_image_density=_density("empty image density", self.empty_image_density, ("BLACK", "WHITE")),
            resolution=_term("resolution", self.resolution, RESOLUTIONS),
            polarity=_term("polarity", self.polarity, POLARITIES),
            decimate_crop=_term("decimate/crop behavior", self.decimate_crop, DECIMATE_CROP),
        )

    def to_payload(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["annotations"] = list(self.annotations)
        return out

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> FilmOptions:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise PrintOptionError(f"unknown film option(s): {', '.join(sorted(unknown))}")
        kw = dict(data)
        if "annotations" in kw:
            kw["annotations"] = tuple(kw["annotations"])
        return cls(**kw).validated()


__all__ = ["FilmOptions", "PrintOptionError", "image_boxes"]
