"""One association's print state (agent.services.print.session): what each N-CREATE/N-SET answers, per
PS3.4 Annex H, and the film request handed to the renderer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence

from agent.services.print.attributes import AttributeProblem
from agent.services.print.render import render_film
from agent.services.print.session import (
    COLOR_IMAGE_BOX, FILM_SESSION, GRAYSCALE_IMAGE_BOX, PrinterLimits, PrintState,
)
from drivers.base import PrinterCapabilities

CAPS = PrinterCapabilities(film_sizes=("8INX10IN", "14INX17IN"), dpi=50, min_density=20, max_density=300, color=True)


def new_state() -> PrintState:
    counter = itertools.count(1)
    return PrintState(PrinterLimits(CAPS), lambda: f"1.2.3.{next(counter)}")


def ds(**kw: object) -> Dataset:
    out = Dataset()
    for k, v in kw.items():
        setattr(out, k, v)
    return out


def film_box_rq(session_uid: str, fmt: str = "STANDARD\\2,1", **kw: object) -> Dataset:
    ref = ds(ReferencedSOPClassUID=FILM_SESSION, ReferencedSOPInstanceUID=session_uid)
    return ds(ImageDisplayFormat=fmt, ReferencedFilmSessionSequence=Sequence([ref]), **kw)


def gray(rows: int = 32, cols: int = 32, value: int = 128) -> Dataset:
    return ds(SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2", Rows=rows, Columns=cols,
              BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
              PixelData=np.full((rows, cols), value, np.uint8).tobytes())


def rgb(rows: int = 16, cols: int = 16) -> Dataset:
    pixels = np.zeros((rows, cols, 3), np.uint8)
    pixels[..., 0] = 255  # red
    return ds(SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0, Rows=rows, Columns=cols,
              BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0, PixelData=pixels.tobytes())


def test_film_box_has_the_format_s_image_boxes_and_answers_them() -> None:
    st = new_state()
    session, warning = st.create_session(None, ds(NumberOfCopies="2", MediumType="PAPER"))
    assert warning is None and session.copies == 2
    box, reply, warning = st.create_film_box(None, film_box_rq(session.uid, "ROW\\2,3"), color=False, annotations=False)
    assert len(reply.ReferencedImageBoxSequence) == 5
    assert [i.ReferencedSOPClassUID for i in reply.ReferencedImageBoxSequence] == [GRAYSCALE_IMAGE_BOX] * 5
    assert [b.position for b in box.image_boxes] == [1, 2, 3, 4, 5]
    assert reply.FilmSizeID == "8INX10IN"  # the printer's first size when none is asked for


@pytest.mark.parametrize("attrs, tag", [
    ({"FilmSizeID": "A3"}, 0x20100050),             # a defined term this printer lacks
    ({"FilmSizeID": "15INX15IN"}, 0x20100050),      # not a PS3.3 term at all
    ({"FilmOrientation": "SIDEWAYS"}, 0x20100040),
    ({"MagnificationType": "LANCZOS"}, 0x20100060),
    ({"Trim": "MAYBE"}, 0x20100140),
    ({"BorderDensity": "GREY"}, 0x20100100),
    ({"RequestedResolutionID": "HIGH"}, 0x20200050),
    ({"AnnotationDisplayFormatID": "FANCY"}, 0x20100030),
    ({"MinDensity": 250, "MaxDensity": 100}, 0x20100120),
])
def test_bad_film_box_values_are_0106_naming_the_attribute(attrs: dict, tag: int) -> None:
    st = new_state()
    session, _ = st.create_session(None, Dataset())
    with pytest.raises(AttributeProblem) as err:
        st.create_film_box(None, film_box_rq(session.uid, **attrs), color=False, annotations=True)
    assert (err.value.status, err.value.tags) == (0x0106, (tag,))
    assert st.film_boxes == {}  # nothing half-created


def test_density_outside_the_printer_range_warns_b605_and_is_clipped() -> None:
    st = new_state()
    session, _ = st.create_session(None, Dataset())
    box, _, warning = st.create_film_box(None, film_box_rq(session.uid, MaxDensity=400), color=False, annotations=False)
    assert warning == 0xB605
    assert st.film_request(box, "9.9").max_density == 300


def test_memory_allocation_warns_b600() -> None:
    st = new_state()
    _, warning = st.create_session(None, ds(MemoryAllocation="1000"))
    assert warning == 0xB600


def test_one_film_session_per_association() -> None:
    st = new_state()
    st.create_session("1.5", Dataset())
    with pytest.raises(AttributeProblem) as err:
        st.create_session("1.5", Dataset())
    assert err.value.status == 0x0111


def test_image_larger_than_its_box_with_fail_is_c603_and_crop_warns_b609() -> None:
    st = new_state()
    session, _ = st.create_session(None, Dataset())
    box, reply, _ = st.create_film_box(None, film_box_rq(session.uid, "STANDARD\\2,2", FilmSizeID="8INX10IN"),
                                       color=False, annotations=False)
    uid = reply.ReferencedImageBoxSequence[0].ReferencedSOPInstanceUID
    big = gray(600, 600)  # 600 px in a box of about 190 px (8x10 in at 50 dpi, 2x2)
    with pytest.raises(AttributeProblem) as err:
        st.set_image_box(uid, ds(ImageBoxPosition=1, RequestedDecimateCropBehavior="FAIL",
                                 BasicGrayscaleImageSequence=Sequence([big])), color=False)
    assert err.value.status == 0xC603
    assert box.image_boxes[0].pixels is None  # a failed N-SET changes nothing
    warning = st.set_image_box(uid, ds(ImageBoxPosition=1, RequestedDecimateCropBehavior="CROP",
                                       BasicGrayscaleImageSequence=Sequence([big])), color=False)
    assert warning == 0xB609


def test_position_swap_keeps_positions_unique() -> None:
    st = new_state()
    session, _ = st.create_session(None, Dataset())
    box, reply, _ = st.create_film_box(None, film_box_rq(session.uid, "STANDARD\\2,1"), color=False, annotations=False)
    first = reply.ReferencedImageBoxSequence[0].ReferencedSOPInstanceUID
    st.set_image_box(first, ds(ImageBoxPosition=2, BasicGrayscaleImageSequence=Sequence([gray()])), color=False)
    assert sorted(b.position for b in box.image_boxes) == [1, 2]
    assert [b.position for b in box.image_boxes if b.pixels is not None] == [2]


def test_presentation_lut_create_reference_delete() -> None:
    st = new_state()
    session, _ = st.create_session(None, Dataset())
    lut = st.create_lut(None, ds(PresentationLUTShape="LIN OD"))
    ref = ds(ReferencedSOPClassUID="1.2.840.10008.5.1.1.23", ReferencedSOPInstanceUID=lut)
    box, reply, _ = st.create_film_box(None, film_box_rq(session.uid, ReferencedPresentationLUTSequence=Sequence([ref])),
                                       color=False, annotations=False)
    assert st.film_request(box, "9.9").presentation_lut.shape == "LIN OD"
    table = st.create_lut(None, ds(PresentationLUTSequence=Sequence([
        ds(LUTDescriptor=[4, 0, 12], LUTData=[0, 1000, 3000, 4095])])))
    assert st.luts[table].table == (0, 1000, 3000, 4095)
    with pytest.raises(AttributeProblem) as err:
        st.create_lut(None, ds(PresentationLUTShape="GAMMA"))
    assert err.value.status == 0x0106
    st.delete_lut(lut)
    assert box.presentation_lut is None
    with pytest.raises(AttributeProblem) as err:
        st.delete_lut(lut)
    assert err.value.status == 0x0112


def test_color_film_box_takes_rgb_and_renders_red() -> None:
    st = new_state()
    session, _ = st.create_session(None, Dataset())
    box, reply, _ = st.create_film_box(None, film_box_rq(session.uid, "STANDARD\\1,1"), color=True, annotations=False)
    item = reply.ReferencedImageBoxSequence[0]
    assert item.ReferencedSOPClassUID == COLOR_IMAGE_BOX
    with pytest.raises(AttributeProblem):  # a grayscale sequence in a color box
        st.set_image_box(item.ReferencedSOPInstanceUID, ds(BasicGrayscaleImageSequence=Sequence([gray()])), color=True)
    st.set_image_box(item.ReferencedSOPInstanceUID, ds(BasicColorImageSequence=Sequence([rgb()])), color=True)
    film = render_film(st.film_request(box, "9.9"), CAPS)
    centre = film.pixels[film.pixels.shape[0] // 2, film.pixels.shape[1] // 2]
    assert film.pixels.ndim == 3 and centre[0] > 200 and centre[1] < 50 and centre[2] < 50


def test_deleting_the_session_deletes_its_boxes() -> None:
    st = new_state()
    session, _ = st.create_session(None, Dataset())
    box, reply, _ = st.create_film_box(None, film_box_rq(session.uid), color=False, annotations=False)
    st.delete_session(session.uid)
    assert st.film_boxes == {} and st.image_boxes == {} and st.session is None
    with pytest.raises(AttributeProblem) as err:
        st.set_image_box(reply.ReferencedImageBoxSequence[0].ReferencedSOPInstanceUID, Dataset(), color=False)
    assert err.value.status == 0x0112


@pytest.mark.parametrize("attrs, tag", [
    ({"SmoothingType": "MEDIUM"}, 0x20100080),             # this printer defines only NONE
    ({"ConfigurationInformation": "GAMMA=2.2"}, 0x20100150),  # and no configuration values
])
def test_printer_defined_values_it_does_not_define_are_refused(attrs: dict, tag: int) -> None:
    st = new_state()
    session, _ = st.create_session(None, Dataset())
    with pytest.raises(AttributeProblem) as err:
        st.create_film_box(None, film_box_rq(session.uid, **attrs), color=False, annotations=False)
    assert (err.value.status, err.value.tags) == (0x0106, (tag,))
    box, _, _ = st.create_film_box(None, film_box_rq(session.uid, SmoothingType="NONE", ConfigurationInformation=""),
                                   color=False, annotations=False)
    assert box.smoothing_type == "NONE"
