"""What the Print SCU makes of an image's stored values, and which options it accepts."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom import Dataset

from agent.services.print.scu import film_box_attributes, session_attributes
from agent.services.print.scu_images import grayscale_pixels, image_box_attributes, PrintImage
from agent.services.print.scu_options import FilmOptions, PrintOptionError, image_boxes


def _ds(**kw) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = kw.pop("photometric", "MONOCHROME2")
    ds.BitsStored = kw.pop("bits", 8)
    ds.PixelRepresentation = kw.pop("signed", 0)
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def test_monochrome1_is_inverted_to_monochrome2() -> None:
    arr = np.array([[0, 100, 255]], np.uint8)
    assert grayscale_pixels(_ds(photometric="MONOCHROME1"), arr).tolist() == [[255, 155, 0]]


def test_rescale_then_window_per_ps3_3_c11_2_1_2_1() -> None:
    # CT: stored 0..2000, slope 1, intercept -1000 -> HU -1000..1000; window 40/400
    arr = np.array([[0, 840, 1040, 1240, 2000]], np.uint16)
    ds = _ds(bits=12, RescaleSlope=1, RescaleIntercept=-1000, WindowCenter=40, WindowWidth=400)
    out = grayscale_pixels(ds, arr)
    # x=-160: ((-160-39.5)/399+0.5)*255 = 0.0 ; x=40: 127.82 -> 128 ; x=240: 255.6 -> clipped 255
    assert out.tolist() == [[0, 0, 128, 255, 255]]


def test_without_window_the_range_is_stretched_and_twelve_bits_kept() -> None:
    arr = np.array([[100, 301, 500]], np.uint16)
    assert grayscale_pixels(_ds(bits=12), arr, 12).tolist() == [[0, 2058, 4095]]
    assert grayscale_pixels(_ds(bits=12), arr, 8).tolist() == [[0, 128, 255]]
    flat = np.full((2, 2), 7, np.uint16)
    assert grayscale_pixels(_ds(bits=12), flat).max() == 0


def test_eight_bit_image_goes_unchanged_and_widens_to_twelve() -> None:
    arr = np.array([[0, 1, 128, 255]], np.uint8)
    assert grayscale_pixels(_ds(), arr).tolist() == [[0, 1, 128, 255]]
    assert grayscale_pixels(_ds(), arr, 12).tolist() == [[0, 16, 2056, 4095]]


def test_color_box_is_planar_rgb() -> None:
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    ds = image_box_attributes(PrintImage(pixels, color=True), 2, polarity="REVERSE")
    item = ds.BasicColorImageSequence[0]
    assert ds.ImageBoxPosition == 2 and ds.Polarity == "REVERSE"
    assert item.PlanarConfiguration == 1 and item.SamplesPerPixel == 3
    assert item.PixelData[:6] == bytes(pixels[:, :, 0].ravel())


@pytest.mark.parametrize(("fmt", "boxes"), [
    ("STANDARD\\1,1", 1), ("STANDARD\\4,5", 20), ("ROW\\2,1,3", 6), ("COL\\2,2", 4),
    ("SLIDE", None), ("CUSTOM\\3", None),
])
def test_image_boxes(fmt: str, boxes: int | None) -> None:
    assert image_boxes(fmt) == boxes


@pytest.mark.parametrize("fmt", ["STANDARD\\0,1", "STANDARD\\2", "ROW\\", "2,2", "standard 2,2"])
def test_bad_display_formats(fmt: str) -> None:
    with pytest.raises(PrintOptionError):
        image_boxes(fmt)


def test_only_given_options_are_sent_and_payload_round_trips() -> None:
    bare = FilmOptions().validated()
    assert len(session_attributes(bare)) == 0
    box = film_box_attributes(bare, "1.2.3", None)
    assert [e.keyword for e in box] == ["ImageDisplayFormat", "ReferencedFilmSessionSequence"]
    full = FilmOptions(display_format="standard\\2,2", film_size="a4", orientation="landscape", copies=3,
                       trim=True, min_density=10, annotations=("A", "B")).validated()
    assert FilmOptions.from_payload(full.to_payload()) == full
    box = film_box_attributes(full, "1.2.3", "4.5.6")
    assert box.ImageDisplayFormat == "STANDARD\\2,2" and box.FilmSizeID == "A4" and box.Trim == "YES"
    assert box.AnnotationDisplayFormatID == "2" and box.ReferencedPresentationLUTSequence[0].ReferencedSOPInstanceUID == "4.5.6"
    assert session_attributes(full).NumberOfCopies == 3
