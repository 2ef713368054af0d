"""Print rendering (agent/services/print/render.py, gsdf.py, layout.py): what a film looks like.

Densities are read back from the raster through a characteristic curve that is linear in density with
16-bit drive levels (level 65535 at 0.0 OD, 0 at 4.0 OD: 0.00006 OD per step), and compared with the
Grayscale Standard Display Function computed here from PS3.14 7.1 and 7.2 by a separate transcription
(plain `math`, the published coefficients typed again).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.services.print.layout import film_layout, parse_display_format
from agent.services.print.model import FilmRequest, ImageRequest, PresentationLut, RenderError
from agent.services.print.render import (
    image_box_count, image_box_status, render, render_film, validate_display_format,
)
from drivers.base import PrinterCapabilities

# ------------------------------------------------------------------ an independent GSDF (PS3.14 7.1)

# Equation 1, L(j): numerator a, c, e, g, m; denominator 1, b, d, f, h, k (in powers of ln j).
NUM = [-1.3011877, 8.0242636e-2, 1.3646699e-1, -2.5468404e-2, 1.3635334e-3]
DEN = [1.0, -2.5840191e-2, -1.0320229e-1, 2.8745620e-2, -3.1978977e-3, 1.2992634e-4]
# Equation 2, j(L): A .. I in powers of log10 L.
JCO = [71.498068, 94.593053, 41.912053, 9.8247004, 0.28175407, -1.1878455, -0.18014349, 0.14710899,
       -0.017046845]


def gsdf_l(j: float) -> float:
    x = math.log(j)
    return 10 ** (sum(c * x ** i for i, c in enumerate(NUM)) / sum(c * x ** i for i, c in enumerate(DEN)))


def gsdf_j(lum: float) -> float:
    y = math.log10(lum)
    return sum(c * y ** i for i, c in enumerate(JCO))


def expected_density(p: int, bits: int, d_min: float, d_max: float, l0: float, la: float) -> float:
    """PS3.14 7.2: P-values linear in JND index between L(Dmax) and L(Dmin), L = La + L0 * 10^-D.

    The two published formulas are inverses only to within a fraction of a JND, which under strong
    ambient light puts the ends a few thousandths of OD outside Dmin..Dmax; the printer never prints
    outside the requested range, so the expectation is held to it too."""
    j_min = gsdf_j(la + l0 * 10 ** -d_max)
    j_max = gsdf_j(la + l0 * 10 ** -d_min)
    lum = gsdf_l(j_min + p / (2 ** bits - 1) * (j_max - j_min))
    return min(max(-math.log10((lum - la) / l0), d_min), d_max)


# ------------------------------------------------------------------ helpers

TOP16 = 65535
LINEAR_CURVE = ((0.0, TOP16), (4.0, 0))  # drive level linear in density


def caps(**kw) -> PrinterCapabilities:
    base = dict(film_sizes=("8INX10IN", "14INX17IN"), dpi=40, min_density=10, max_density=360,
                drive_bits=16, characteristic_curve=LINEAR_CURVE)
    base.update(kw)
    return PrinterCapabilities(**base)


def density(level) -> np.ndarray:
    return 4.0 * (1.0 - np.asarray(level, dtype=np.float64) / TOP16)


def uniform(value: int, size: int = 16, bits: int = 12, **kw) -> np.ndarray:
    return np.full((size, size), value, dtype=np.uint8 if bits <= 8 else np.uint16)


def film(images=(), **kw) -> FilmRequest:
    kw.setdefault("film_size_id", "8INX10IN")
    kw.setdefault("border_density", "WHITE")
    return FilmRequest(job_id="1.2.3", images=tuple(images), **kw)


def centre_density(request: FilmRequest, c: PrinterCapabilities | None = None) -> float:
    px = render_film(request, c or caps()).pixels
    return float(density(px[px.shape[0] // 2, px.shape[1] // 2]))


def boxes(request: FilmRequest, c: PrinterCapabilities):
    """The image box rectangles the renderer uses, from the layout module."""
    from agent.services.print.model import FILM_SIZES_MM
    w, h = FILM_SIZES_MM[request.film_size_id]
    if request.film_orientation == "LANDSCAPE":
        w, h = h, w
    fmt = parse_display_format(request.image_display_format)
    lay = film_layout(fmt, round(w * c.dpi / 25.4), round(h * c.dpi / 25.4), c.dpi,
                      tuple(p for p, t in request.annotations if t))
    return lay.boxes


# ------------------------------------------------------------------ densities


@pytest.mark.parametrize("p", [0, 1, 10, 100, 500, 1000, 2047, 3000, 4000, 4095])
def test_p_value_density_follows_the_gsdf(p: int) -> None:
    got = centre_density(film([ImageRequest(1, uniform(p), bits_stored=12)]))
    want = expected_density(p, 12, 0.10, 3.60, 2000.0, 10.0)
    assert abs(got - want) < 1e-3, (p, got, want)


@pytest.mark.parametrize("p", [0, 37, 128, 200, 255])
def test_gsdf_with_film_box_densities_and_viewing_conditions(p: int) -> None:
    request = film([ImageRequest(1, uniform(p, bits=8), bits_stored=8)], min_density=25, max_density=280,
                   illumination=600.0, reflected_ambient_light=40.0)
    got = centre_density(request)
    want = expected_density(p, 8, 0.25, 2.80, 600.0, 40.0)
    assert abs(got - want) < 1e-3, (p, got, want)


def test_image_box_densities_override_the_film_box() -> None:
    img = ImageRequest(1, uniform(0, bits=8), bits_stored=8, min_density=50, max_density=150)
    got = centre_density(film([img], min_density=20, max_density=300))
    assert abs(got - 1.50) < 1e-3


def test_density_outside_the_printer_range_uses_the_printer_limit_and_warns() -> None:
    request = film([ImageRequest(1, uniform(0, bits=8), bits_stored=8)], max_density=500)
    result = render(request, caps())
    px = result.film.pixels
    want = expected_density(0, 8, 0.10, 3.60, 2000.0, 10.0)
    assert abs(float(density(px[px.shape[0] // 2, px.shape[1] // 2])) - want) < 1e-3
    assert abs(want - 3.60) < 0.01  # the printer's Max Density, not the 5.00 asked for
    assert (0, 0xB605) in result.warnings


def test_reflective_paper_uses_l0_without_ambient_light() -> None:
    # PS3.14 7.3: L = L0 * 10^-D for reflective prints.
    request = film([ImageRequest(1, uniform(100, bits=8), bits_stored=8)], medium_type="PAPER",
                   illumination=150.0, reflected_ambient_light=10.0, max_density=250)
    got = centre_density(request)
    j_min, j_max = gsdf_j(150 * 10 ** -2.5), gsdf_j(150 * 10 ** -0.1)
    want = -math.log10(gsdf_l(j_min + 100 / 255 * (j_max - j_min)) / 150)
    assert abs(got - want) < 1e-3


@pytest.mark.parametrize("v", [0, 1024, 2048, 4095])
def test_lin_od_is_linear_in_optical_density(v: int) -> None:
    request = film([ImageRequest(1, uniform(v), bits_stored=12)], min_density=20, max_density=300,
                   presentation_lut=PresentationLut(shape="LIN OD"))
    # The value is a density: 0 is Min Density, the top value Max Density (PS3.3 C.11.6.1.2).
    assert abs(centre_density(request) - (0.20 + v / 4095 * 2.80)) < 1e-3


def test_explicit_presentation_lut() -> None:
    # 256 entries for 8-bit input, 12-bit output, first value mapped 0: a reversed ramp squared.
    table = tuple(int(round(((255 - i) / 255) ** 2 * 4095)) for i in range(256))
    for v in (0, 10, 128, 255):
        request = film([ImageRequest(1, uniform(v, bits=8), bits_stored=8)],
                       presentation_lut=PresentationLut(shape=None, table=table, first_mapped=0, output_bits=12))
        want = expected_density(table[v], 12, 0.10, 3.60, 2000.0, 10.0)
        assert abs(centre_density(request) - want) < 1e-3, v


def test_explicit_lut_clamps_values_outside_its_range() -> None:
    table = (0, 4095)  # first mapped 100: 100 -> black, 101 and above -> white
    lut = PresentationLut(shape=None, table=table, first_mapped=100, output_bits=12)
    low = centre_density(film([ImageRequest(1, uniform(3, bits=8), bits_stored=8)], presentation_lut=lut))
    high = centre_density(film([ImageRequest(1, uniform(200, bits=8), bits_stored=8)], presentation_lut=lut))
    assert abs(low - expected_density(0, 12, 0.10, 3.60, 2000.0, 10.0)) < 1e-3
    assert abs(high - expected_density(4095, 12, 0.10, 3.60, 2000.0, 10.0)) < 1e-3


def test_gsdf_module_against_the_transcription() -> None:
    from agent.services.print import gsdf
    for j in (1, 2, 50, 300, 700, 1023):
        assert abs(float(gsdf.luminance(j)) - gsdf_l(j)) < 1e-9 * max(1.0, gsdf_l(j))
    for lum in (0.05, 1.0, 37.0, 500.0, 3986.0):
        assert abs(float(gsdf.jnd_index(lum)) - gsdf_j(lum)) < 1e-9
    # The published end points: j = 1 is 0.05 cd/m², j = 1023 about 3993 cd/m² (PS3.14 Annex B).
    assert abs(gsdf_l(1) - 0.05) < 1e-4 and abs(gsdf_l(1023) - 3993.4) < 0.5


# ------------------------------------------------------------------ polarity, photometric


def test_polarity_reverse_and_monochrome1_invert() -> None:
    normal = centre_density(film([ImageRequest(1, uniform(300), bits_stored=12)]))
    reverse = centre_density(film([ImageRequest(1, uniform(300), bits_stored=12, polarity="REVERSE")]))
    mono1 = centre_density(film([ImageRequest(1, uniform(300), bits_stored=12, monochrome1=True)]))
    mono1_reverse = centre_density(film([ImageRequest(1, uniform(300), bits_stored=12, monochrome1=True,
                                                      polarity="REVERSE")]))
    inverted = centre_density(film([ImageRequest(1, uniform(4095 - 300), bits_stored=12)]))
    assert normal > 2.0  # a dark value prints dark
    assert abs(reverse - inverted) < 1e-6 and abs(mono1 - inverted) < 1e-6
    assert abs(mono1_reverse - normal) < 1e-6


# ------------------------------------------------------------------ borders and empty boxes


@pytest.mark.parametrize("term,od", [("BLACK", 3.60), ("WHITE", 0.10), ("150", 1.50), ("0", 0.10)])
def test_border_density(term: str, od: float) -> None:
    px = render_film(film([ImageRequest(1, uniform(2000))], border_density=term), caps()).pixels
    assert abs(float(density(px[0, 0])) - od) < 1e-3
    assert abs(float(density(px[-1, -1])) - od) < 1e-3


@pytest.mark.parametrize("term,od", [("BLACK", 3.60), ("WHITE", 0.10), ("220", 2.20)])
def test_empty_image_density(term: str, od: float) -> None:
    request = film([ImageRequest(1, uniform(2000))], image_display_format="STANDARD\\2,1",
                   empty_image_density=term)
    c = caps()
    x0, y0, x1, y1 = boxes(request, c)[1]
    px = render_film(request, c).pixels
    region = density(px[y0:y1, x0:x1])
    assert np.allclose(region, od, atol=1e-3)


def test_trim_draws_a_frame_around_the_image() -> None:
    c = caps(dpi=100)
    img = ImageRequest(1, uniform(4095, size=20), bits_stored=12, magnification_type="NONE")
    plain = render_film(film([img]), c).pixels
    trimmed = render_film(film([img], trim=True), c).pixels
    w = plain.shape[1]
    assert not np.any(density(plain) > 3.5)  # white image on a white border: nothing dark
    ys, xs = np.nonzero(density(trimmed) > 3.5)  # dark trim on a light border
    frame = round(0.5 * 100 / 25.4)
    left = (w - 20) // 2
    assert xs.min() == left - frame and xs.max() == left + 20 + frame - 1
    assert ys.max() - ys.min() == 20 + 2 * frame - 1
    assert len(ys) == (20 + 2 * frame) ** 2 - 20 * 20  # a frame, the image inside untouched


# ------------------------------------------------------------------ layout


def centroid(px: np.ndarray, level) -> tuple[float, float]:
    ys, xs = np.nonzero(px == level)
    assert len(ys), "value not on the film"
    return float(xs.mean()), float(ys.mean())


def numbered(n: int) -> list[ImageRequest]:
    """Images 1..n, each a uniform 8-bit value 40 * position (distinct drive levels)."""
    return [ImageRequest(i, uniform(40 * i, bits=8), bits_stored=8) for i in range(1, n + 1)]


def levels(request: FilmRequest, c: PrinterCapabilities) -> dict[int, tuple[float, float]]:
    px = render_film(request, c).pixels
    centre = {}
    for img in request.images:
        probe = render_film(film([ImageRequest(1, img.pixels, bits_stored=8)]), c).pixels
        centre[img.position] = centroid(px, probe[probe.shape[0] // 2, probe.shape[1] // 2])
    return centre


def test_standard_layout_is_numbered_row_by_row_from_the_top_left() -> None:
    c = caps()
    request = film(numbered(6), image_display_format="STANDARD\\2,3")
    at = levels(request, c)
    w = render_film(request, c).pixels.shape[1]
    for row in range(3):
        left, right = at[2 * row + 1], at[2 * row + 2]
        assert left[0] < w / 2 < right[0] and abs(left[1] - right[1]) < 1
    assert at[1][1] < at[3][1] < at[5][1]


def test_row_layout() -> None:
    c = caps()
    request = film(numbered(3), image_display_format="ROW\\2,1")
    at = levels(request, c)
    w = render_film(request, c).pixels.shape[1]
    assert at[1][0] < w / 2 < at[2][0] and abs(at[1][1] - at[2][1]) < 1
    assert abs(at[3][0] - w / 2) < 2 and at[3][1] > at[1][1]


def test_col_layout_is_numbered_column_by_column() -> None:
    c = caps()
    request = film(numbered(3), image_display_format="COL\\1,2")
    at = levels(request, c)
    px = render_film(request, c).pixels
    h, w = px.shape
    assert at[1][0] < w / 2 and abs(at[1][1] - h / 2) < 2
    assert at[2][0] > w / 2 and at[3][0] > w / 2 and at[2][1] < h / 2 < at[3][1]


def test_boxes_fill_the_film_inside_margins_and_gaps() -> None:
    c = caps(dpi=100)
    rects = boxes(film(image_display_format="STANDARD\\3,2"), c)
    assert len(rects) == 6
    widths = {x1 - x0 for x0, _, x1, _ in rects}
    heights = {y1 - y0 for _, y0, _, y1 in rects}
    assert max(widths) - min(widths) <= 1 and max(heights) - min(heights) <= 1
    assert rects[0][0] == round(2 * 100 / 25.4)  # 2 mm margin
    assert rects[1][0] - rects[0][2] in (7, 8, 9)  # 2 mm gap


def test_landscape_swaps_the_film() -> None:
    portrait = render_film(film(film_size_id="14INX17IN"), caps())
    landscape = render_film(film(film_size_id="14INX17IN", film_orientation="LANDSCAPE"), caps())
    assert portrait.pixels.shape == (round(431.8 * 40 / 25.4), round(355.6 * 40 / 25.4))
    assert landscape.pixels.shape == portrait.pixels.shape[::-1]
    assert (landscape.width_mm, landscape.height_mm) == (431.8, 355.6)


def test_14x17_at_320_dpi_is_4480_by_5440() -> None:
    f = render_film(film(film_size_id="14INX17IN"), caps(dpi=320, drive_bits=8, characteristic_curve=()))
    assert f.pixels.shape == (5440, 4480) and f.pixels.dtype == np.uint8 and f.dpi == 320


def test_image_box_count_and_validation() -> None:
    assert image_box_count("STANDARD\\4,5") == 20
    assert image_box_count("ROW\\2,1") == 3
    assert image_box_count("COL\\1,2,3") == 6
    for bad in ("STANDARD\\0,2", "STANDARD\\2", "ROW\\", "COL\\1,,2", "GRID\\2,2", "standard\\1,1", ""):
        with pytest.raises(ValueError):
            validate_display_format(bad)
    for printer_defined in ("SLIDE", "SUPERSLIDE", "CUSTOM\\3"):
        with pytest.raises(ValueError, match="printer"):
            image_box_count(printer_defined)


def test_unsupported_format_film_size_and_position_are_refused_with_0106() -> None:
    for request in (film(image_display_format="SLIDE"), film(film_size_id="A4"),
                    film(film_size_id="35MMX35MM"),
                    film([ImageRequest(3, uniform(1))], image_display_format="STANDARD\\1,2")):
        with pytest.raises(RenderError) as err:
            render_film(request, caps())
        assert err.value.status == 0x0106


# ------------------------------------------------------------------ magnification and fit


def checker(n: int = 2, hi: int = 255) -> np.ndarray:
    return ((np.indices((n, n)).sum(axis=0) % 2) * hi).astype(np.uint8)


def image_area(px: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(px != px[0, 0])
    return px[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def test_replicate_gives_blocks_and_bilinear_blends() -> None:
    c = caps()
    rep = render_film(film([ImageRequest(1, checker(), magnification_type="REPLICATE")],
                           border_density="150"), c).pixels
    bil = render_film(film([ImageRequest(1, checker(), magnification_type="BILINEAR")],
                           border_density="150"), c).pixels
    area = image_area(rep)
    assert len(np.unique(area)) == 2  # nothing but the two values
    h, w = area.shape
    quads = [area[:h // 2, :w // 2], area[:h // 2, w // 2:], area[h // 2:, :w // 2], area[h // 2:, w // 2:]]
    assert all(len(np.unique(q)) == 1 for q in quads)  # four solid blocks
    assert quads[0][0, 0] == quads[3][0, 0] != quads[1][0, 0]
    assert len(np.unique(image_area(bil))) > 10  # interpolated in between


def test_cubic_differs_from_bilinear() -> None:
    c = caps()
    img = np.linspace(0, 255, 64, dtype=np.uint8).reshape(8, 8)
    img[3:5, 3:5] = 255
    a = render_film(film([ImageRequest(1, img, magnification_type="CUBIC")]), c).pixels
    b = render_film(film([ImageRequest(1, img, magnification_type="BILINEAR")]), c).pixels
    assert a.shape == b.shape and np.count_nonzero(a != b) > 100


def test_magnification_none_is_one_image_pixel_per_printer_pixel() -> None:
    c = caps(dpi=100)
    img = ImageRequest(1, checker(10), magnification_type="NONE")
    px = render_film(film([img], border_density="150"), c).pixels
    area = image_area(px)
    assert area.shape == (10, 10)
    assert np.array_equal(area == area[0, 0], checker(10) == 0)


def test_fit_keeps_the_pixel_aspect_ratio_and_centres() -> None:
    c = caps()
    img = ImageRequest(1, uniform(100, size=20, bits=8), bits_stored=8, pixel_aspect_ratio=(2, 1))
    request = film([img], border_density="150")
    x0, y0, x1, y1 = boxes(request, c)[0]
    area = image_area(render_film(request, c).pixels)
    assert area.shape[0] == y1 - y0 or area.shape[1] == x1 - x0
    assert abs(area.shape[0] / area.shape[1] - 2.0) < 0.02


def test_requested_image_size_sets_the_printed_width() -> None:
    c = caps(dpi=100)
    img = ImageRequest(1, uniform(100, size=20, bits=8), bits_stored=8, requested_image_size=50.0)
    area = image_area(render_film(film([img], border_density="150"), c).pixels)
    assert area.shape[1] == round(50 * 100 / 25.4) == area.shape[0]


def big(size: int = 600, **kw) -> ImageRequest:
    return ImageRequest(1, uniform(100, size=size, bits=8), bits_stored=8, magnification_type="NONE", **kw)


def test_image_larger_than_box_with_fail_is_c603() -> None:
    request = film([big(decimate_crop="FAIL")])
    with pytest.raises(RenderError) as err:
        render_film(request, caps())
    assert err.value.status == 0xC603
    with pytest.raises(RenderError) as err:
        image_box_status(request, request.images[0], caps())
    assert err.value.status == 0xC603


def test_image_larger_than_box_decimated_or_cropped_with_warnings() -> None:
    c = caps()
    request = film([big(decimate_crop="DECIMATE")], border_density="150")
    box = boxes(request, c)[0]
    result = render(request, c)
    assert (1, 0xB604) in result.warnings
    area = image_area(result.film.pixels)
    assert max(area.shape) == min(box[2] - box[0], box[3] - box[1])  # shrunk to fit, square kept
    cropped = render(film([big(decimate_crop="CROP")], border_density="150"), c)
    assert (1, 0xB609) in cropped.warnings
    assert image_area(cropped.film.pixels).shape == (box[3] - box[1], box[2] - box[0])  # fills the box
    assert image_box_status(film([big(decimate_crop="CROP")]), big(decimate_crop="CROP"), c) == 0xB609


def test_a_larger_image_fits_without_fail_when_it_does_not_exceed_the_box() -> None:
    c = caps()
    small = ImageRequest(1, uniform(100, size=64, bits=8), bits_stored=8, decimate_crop="FAIL")
    assert render(film([small]), c).warnings == ()
    assert image_box_status(film([small]), small, c) == 0


# ------------------------------------------------------------------ annotations


def test_annotation_text_appears_in_its_band() -> None:
    c = caps(dpi=100)
    plain = render_film(film(annotations=((1, ""),)), c).pixels
    top = render_film(film(annotations=((1, "PATIENT^TEST 2024"),)), c).pixels
    bottom = render_film(film(annotations=((4, "BOTTOM LEFT"),)), c).pixels
    line = round(8 * 100 / 25.4)
    margin = round(2 * 100 / 25.4)
    band_top = top[margin:margin + line]
    assert np.count_nonzero(band_top != plain[0, 0]) > 50  # ink in the top band
    assert abs(float(density(band_top.min())) - 3.60) < 1e-3  # dark text on the white border
    ys, xs = np.nonzero(band_top != plain[0, 0])
    assert xs.max() < top.shape[1] / 2  # left-aligned
    band_bottom = bottom[-margin - line:-margin]
    assert np.count_nonzero(band_bottom != plain[0, 0]) > 50


def test_annotation_reserves_space_boxes_shrink() -> None:
    c = caps(dpi=100)
    without = boxes(film(), c)[0]
    with_text = boxes(film(annotations=((2, "X"),)), c)[0]
    assert with_text[1] > without[1] and with_text[3] == without[3]


# ------------------------------------------------------------------ color and output format


def test_color_image_on_a_color_printer_makes_an_rgb_film() -> None:
    c = caps(color=True, drive_bits=8, characteristic_curve=())
    rgb = np.zeros((10, 10, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 50, 10
    gray = ImageRequest(2, uniform(255, bits=8), bits_stored=8)
    f = render_film(film([ImageRequest(1, rgb, color=True, magnification_type="NONE"), gray],
                         image_display_format="STANDARD\\2,1"), c)
    assert f.pixels.ndim == 3 and f.pixels.shape[2] == 3 and f.pixels.dtype == np.uint8
    px = f.pixels
    assert any(np.array_equal(px[y, x], [200, 50, 10]) for y, x in zip(*np.nonzero(px[..., 0] == 200)))
    rev = render_film(film([ImageRequest(1, rgb, color=True, magnification_type="NONE", polarity="REVERSE")]),
                      c).pixels
    assert np.count_nonzero(np.all(rev == [55, 205, 245], axis=2)) == 100
    # the gray box is gray in all three channels
    x0, y0, x1, y1 = boxes(film(image_display_format="STANDARD\\2,1"), c)[1]
    region = px[y0:y1, x0:x1]
    assert np.array_equal(region[..., 0], region[..., 1]) and np.array_equal(region[..., 1], region[..., 2])


def test_color_image_on_a_grayscale_printer_is_refused() -> None:
    rgb = np.zeros((10, 10, 3), dtype=np.uint8)
    with pytest.raises(RenderError) as err:
        render_film(film([ImageRequest(1, rgb, color=True)]), caps(color=False))
    assert err.value.status == 0x0106


def test_drive_bits_choose_the_dtype_and_the_default_curve_spans_the_levels() -> None:
    f8 = render_film(film([ImageRequest(1, uniform(255, bits=8), bits_stored=8)], border_density="BLACK"),
                     caps(drive_bits=8, characteristic_curve=()))
    assert f8.pixels.dtype == np.uint8 and f8.pixels.ndim == 2
    assert f8.pixels.min() == 0 and f8.pixels.max() == 255  # black border, white image
    f16 = render_film(film(), caps(drive_bits=16))
    assert f16.pixels.dtype == np.uint16


def test_film_carries_the_session_values() -> None:
    f = render_film(film(copies=3, medium_type="BLUE FILM", film_destination="PROCESSOR", label="L",
                         priority="HIGH"), caps())
    assert (f.job_id, f.copies, f.medium_type, f.film_destination, f.label, f.priority, f.dpi) == \
        ("1.2.3", 3, "BLUE FILM", "PROCESSOR", "L", "HIGH", 40)
    assert (f.width_mm, f.height_mm) == (203.2, 254.0)


# ------------------------------------------------------------------ any request: a film or a clear refusal

formats = st.one_of(
    st.tuples(st.integers(1, 12), st.integers(1, 12)).map(lambda cr: f"STANDARD\\{cr[0]},{cr[1]}"),
    st.lists(st.integers(1, 6), min_size=1, max_size=5).map(lambda n: "ROW\\" + ",".join(map(str, n))),
    st.lists(st.integers(1, 6), min_size=1, max_size=5).map(lambda n: "COL\\" + ",".join(map(str, n))),
    st.sampled_from(["SLIDE", "STANDARD\\0,1", "ROW\\", "STANDARD\\60,60"]),
)
image_requests = st.builds(
    lambda rows, cols, bits, mag, dc, size, ar, pol: ImageRequest(
        1, np.random.default_rng(rows * cols).integers(0, 1 << bits, (rows, cols)).astype(
            np.uint8 if bits <= 8 else np.uint16), bits_stored=bits, magnification_type=mag, decimate_crop=dc,
        requested_image_size=size, pixel_aspect_ratio=ar, polarity=pol),
    st.integers(1, 300), st.integers(1, 300), st.sampled_from([8, 10, 12, 16]),
    st.sampled_from([None, "REPLICATE", "BILINEAR", "CUBIC", "NONE"]), st.sampled_from(["DECIMATE", "CROP", "FAIL"]),
    st.one_of(st.none(), st.floats(1.0, 300.0)), st.sampled_from([(1, 1), (2, 1), (1, 3)]),
    st.sampled_from(["NORMAL", "REVERSE"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=formats, image=image_requests, landscape=st.booleans(), trim=st.booleans(),
       annotate=st.booleans())
def test_any_request_gives_a_film_of_the_right_size_or_a_render_error(fmt, image, landscape, trim, annotate):
    c = caps(dpi=30)
    request = film([image], image_display_format=fmt, film_orientation="LANDSCAPE" if landscape else "PORTRAIT",
                   trim=trim, annotations=((2, "TEXT"),) if annotate else ())
    try:
        result = render(request, c)
    except RenderError as exc:
        assert exc.status in (0x0106, 0xC603)
        return
    h, w = round(254.0 * 30 / 25.4), round(203.2 * 30 / 25.4)
    assert result.film.pixels.shape == ((w, h) if landscape else (h, w))
    assert all(status in (0xB604, 0xB609, 0xB605) for _, status in result.warnings)


def test_a_format_too_fine_for_the_resolution_is_refused() -> None:
    request = film([ImageRequest(1, uniform(1, size=5, bits=8), bits_stored=8)],
                   image_display_format="STANDARD\\99,99")
    with pytest.raises(RenderError) as err:
        render_film(request, caps(dpi=10))
    assert err.value.status == 0x0106 and "do not fit" in str(err.value)
