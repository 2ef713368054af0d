"""What the renderer is given: plain, validated values taken from a film box and its image boxes.

The Print SCP (agent.services.print.scp) builds a `FilmRequest` from the film session, film box,
image boxes, annotation boxes and Presentation LUT it holds; `render.render_film(request, caps)` turns
it into a `drivers.base.Film`. Nothing here touches pydicom, sockets or the disk.

Units: densities in hundredths of optical density (PS3.3 C.13.3); Illumination (2010,015E) in cd/m²;
Reflected Ambient Light (2010,0160) in cd/m²; Requested Image Size (2020,0030) in mm (the width of
the image in its box).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drivers.base import FILM_SIZES_MM  # the one table, shared with the drivers



@dataclass(frozen=True, slots=True)
class PresentationLut:
    """Presentation LUT SOP instance (PS3.3 C.11.4): a shape or an explicit table.

    `shape` is "IDENTITY" or "LIN OD" (with `table` None), or None with `table` set: the LUT Data
    mapping input values (from `first_mapped`, one per entry) to P-values of `output_bits` bits.
    """

    shape: str | None = "IDENTITY"
    table: tuple[int, ...] | None = None
    first_mapped: int = 0
    output_bits: int = 16


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """One image box with an image.

    Grayscale: `pixels` is a 2-D numpy uint8/uint16 array of stored values with `bits_stored` bits
    (MONOCHROME2 unless `monochrome1`); color: a (rows, columns, 3) uint8 RGB array.
    """

    position: int  # Image Box Position (2020,0010), from 1
    pixels: Any  # numpy.ndarray
    bits_stored: int = 8
    monochrome1: bool = False
    color: bool = False
    pixel_aspect_ratio: tuple[int, int] = (1, 1)
    polarity: str = "NORMAL"  # NORMAL | REVERSE
    magnification_type: str | None = None  # None: the film box's
    smoothing_type: str | None = None
    requested_image_size: float | None = None  # mm
    decimate_crop: str = "DECIMATE"  # DECIMATE | CROP | FAIL
    min_density: int | None = None  # None: the film box's
    max_density: int | None = None
    configuration_information: str = ""


@dataclass(frozen=True, slots=True)
class FilmRequest:
    """One film box to render."""

    job_id: str
    image_display_format: str = "STANDARD\\1,1"
    film_orientation: str = "PORTRAIT"  # PORTRAIT | LANDSCAPE
    film_size_id: str = "14INX17IN"
    magnification_type: str = "BILINEAR"  # REPLICATE | BILINEAR | CUBIC | NONE
    smoothing_type: str = ""
    border_density: str = "BLACK"  # BLACK | WHITE | hundredths of OD as digits
    empty_image_density: str = "BLACK"
    min_density: int | None = None  # None: the printer's
    max_density: int | None = None
    trim: bool = False
    illumination: float = 2000.0  # L0, cd/m² (PS3.3 default for transmissive film)
    reflected_ambient_light: float = 10.0  # La, cd/m²
    presentation_lut: PresentationLut | None = None
    images: tuple[ImageRequest, ...] = ()
    annotations: tuple[tuple[int, str], ...] = ()  # (Annotation Position, Text String)
    copies: int = 1
    medium_type: str = ""
    film_destination: str = ""
    label: str = ""
    priority: str = "MED"
    configuration_information: str = ""
    requested_resolution_id: str = "STANDARD"  # STANDARD | HIGH


class RenderError(ValueError):
    """The request cannot be rendered as asked. `status` is the Annex H status to answer
    (e.g. 0xC603 image larger than its box with FAIL; 0x0106 for a value the printer cannot honour,
    such as a color image on a grayscale printer: PS3.4 H.4 has no status of its own for that, and
    0xC613 means a combined print image larger than its box)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


__all__ = ["FILM_SIZES_MM", "FilmRequest", "ImageRequest", "PresentationLut", "RenderError"]
