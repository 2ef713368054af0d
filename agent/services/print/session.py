"""One association's print state (PS3.4 H.4.1 - H.4.4, H.4.9): film session, film boxes, image boxes,
annotation boxes and Presentation LUTs as typed values, and the operations on them.

Invariants:
- A `PrintState` belongs to one association: instances it creates are invisible to every other
  association (an N-SET/N-DELETE/N-ACTION naming them elsewhere is 0x0112, no such object instance).
  At most one film session per association (PS3.4 H.4.1.1); deleting it deletes its film boxes and
  their image and annotation boxes.
- A film box has exactly the image boxes its Image Display Format defines (positions 1..N) and the
  annotation boxes its Annotation Display Format ID defines; both are created with the film box and
  returned in its N-CREATE response.
- Every operation validates the whole request before changing anything: a failure leaves the state as
  it was. Problems raise `AttributeProblem(status, tag, message)`; warnings are returned.
- Pure: no I/O, no clock, no pydicom decoding of the wire (the SCP hands decoded Datasets in).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from agent.dimse.status import Status
from agent.services.print import attributes as A
from agent.services.print.attributes import AttributeProblem
from agent.services.print.images import Pixels, parse_image
from agent.services.print.model import FILM_SIZES_MM, FilmRequest, ImageRequest, PresentationLut
from drivers.base import PrinterCapabilities

from agent.services.print.layout import image_box_count  # the renderer owns the layout rules
from agent.services.print.model import RenderError
from agent.services.print.render import image_box_status


# --- SOP classes (PS3.4 H.3, H.4) ----------------------------------------------------------------

GRAYSCALE_META = "1.2.840.10008.5.1.1.9"
COLOR_META = "1.2.840.10008.5.1.1.18"
FILM_SESSION = "1.2.840.10008.5.1.1.1"
FILM_BOX = "1.2.840.10008.5.1.1.2"
GRAYSCALE_IMAGE_BOX = "1.2.840.10008.5.1.1.4"
COLOR_IMAGE_BOX = "1.2.840.10008.5.1.1.4.1"
ANNOTATION_BOX = "1.2.840.10008.5.1.1.15"
PRINT_JOB = "1.2.840.10008.5.1.1.14"
PRINTER = "1.2.840.10008.5.1.1.16"
PRINTER_INSTANCE = "1.2.840.10008.5.1.1.17"
PRINTER_CONFIGURATION = "1.2.840.10008.5.1.1.16.376"
PRINTER_CONFIGURATION_INSTANCE = "1.2.840.10008.5.1.1.17.376"
PRESENTATION_LUT = "1.2.840.10008.5.1.1.23"

MAX_COPIES = 99
MAX_ANNOTATION_BOXES = 8

SESSION_KEYWORDS = ("NumberOfCopies", "PrintPriority", "MediumType", "FilmDestination", "FilmSessionLabel",
                    "MemoryAllocation", "OwnerID")
FILM_BOX_SET_KEYWORDS = ("MagnificationType", "SmoothingType", "BorderDensity", "EmptyImageDensity",
                         "MinDensity", "MaxDensity", "Trim", "ConfigurationInformation", "Illumination",
                         "ReflectedAmbientLight", "ReferencedPresentationLUTSequence")
FILM_BOX_CREATE_KEYWORDS = FILM_BOX_SET_KEYWORDS + (
    "ImageDisplayFormat", "ReferencedFilmSessionSequence", "FilmOrientation", "FilmSizeID",
    "RequestedResolutionID", "AnnotationDisplayFormatID")
IMAGE_BOX_KEYWORDS = ("ImageBoxPosition", "Polarity", "MagnificationType", "SmoothingType", "MinDensity",
                      "MaxDensity", "ConfigurationInformation", "RequestedImageSize",
                      "RequestedDecimateCropBehavior", "BasicGrayscaleImageSequence", "BasicColorImageSequence")
ANNOTATION_KEYWORDS = ("AnnotationPosition", "TextString")
LUT_KEYWORDS = ("PresentationLUTSequence", "PresentationLUTShape")


def no_such_instance(what: str, uid: str) -> AttributeProblem:
    return AttributeProblem(Status.NO_SUCH_SOP_INSTANCE, None, f"no {what} {uid} on this association")


@dataclass(frozen=True, slots=True)
class PrinterLimits:
    """What this printer accepts: the driver's capabilities plus the profile's `[print]` choices."""

    caps: PrinterCapabilities
    display_formats: tuple[str, ...] = A.DEFAULT_DISPLAY_FORMAT_KINDS


@dataclass
class FilmSession:
    uid: str
    copies: int = 1
    priority: str = "MED"
    medium_type: str = ""
    film_destination: str = ""
    label: str = ""
    owner_id: str = ""
    film_boxes: list[str] = field(default_factory=list)


@dataclass
class ImageBox:
    uid: str
    position: int
    color: bool
    pixels: Pixels | None = None
    polarity: str = "NORMAL"
    magnification_type: str | None = None
    smoothing_type: str | None = None
    min_density: int | None = None
    max_density: int | None = None
    configuration_information: str = ""
    requested_image_size: float | None = None
    decimate_crop: str = "DECIMATE"


@dataclass
class AnnotationBox:
    uid: str
    position: int
    text: str = ""


@dataclass
class FilmBox:
    uid: str
    display_format: str
    orientation: str = "PORTRAIT"
    film_size_id: str = "14INX17IN"
    magnification_type: str = "BILINEAR"
    smoothing_type: str = ""
    border_density: str = "BLACK"
    empty_image_density: str = "BLACK"
    min_density: int | None = None
    max_density: int | None = None
    trim: str = "NO"
    configuration_information: str = ""
    illumination: int = 2000
    reflected_ambient_light: int = 10
    resolution_id: str = "STANDARD"
    presentation_lut: str | None = None
    annotation_format: str = ""
    image_boxes: list[ImageBox] = field(default_factory=list)
    annotation_boxes: list[AnnotationBox] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return all(box.pixels is None for box in self.image_boxes)


def annotation_box_count(format_id: str) -> int:
    """Annotation Display Format ID (2010,0030), this SCP's terms: "1".."8" boxes, or "LABEL" or
    "ANNOTATION" (one box; the second is what DCMTK's print SCU sends by default)."""
    value = format_id.strip().upper()
    if value in ("LABEL", "ANNOTATION"):
        return 1
    if value.isdigit() and 1 <= int(value) <= MAX_ANNOTATION_BOXES:
        return int(value)
    raise A.invalid("AnnotationDisplayFormatID", f"{value!r} is not LABEL, ANNOTATION or a number of boxes 1..{MAX_ANNOTATION_BOXES}")


def _ref(sop_class: str, uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = uid
    return item


def _referenced_uid(ds: Dataset, keyword: str) -> str:
    seq = ds.get(keyword) or []
    if len(seq) != 1 or not A.present(seq[0], "ReferencedSOPInstanceUID"):
        raise A.invalid(keyword, "one item with a Referenced SOP Instance UID expected")
    return str(seq[0].ReferencedSOPInstanceUID)


class PrintState:
    """The print objects of one association (see module invariants). `new_uid` makes instance UIDs."""

    def __init__(self, limits: PrinterLimits, new_uid: object) -> None:
        self.limits = limits
        self._new_uid = new_uid
        self.session: FilmSession | None = None
        self.film_boxes: dict[str, FilmBox] = {}
        self.image_boxes: dict[str, tuple[ImageBox, FilmBox]] = {}
        self.annotation_boxes: dict[str, tuple[AnnotationBox, FilmBox]] = {}
        self.luts: dict[str, PresentationLut] = {}

    def uid(self) -> str:
        return str(self._new_uid())  # type: ignore[operator]

    # ------------------------------------------------------------ film session (H.4.1)

    def _session_values(self, base: FilmSession, ds: Dataset) -> tuple[FilmSession, int | None]:
        caps, warning = self.limits.caps, None
        values = replace(base)
        if A.present(ds, "NumberOfCopies"):
            values.copies = A.integer(ds, "NumberOfCopies", 1, MAX_COPIES)
        if A.present(ds, "PrintPriority"):
            values.priority = A.cs(ds, "PrintPriority", A.PRINT_PRIORITIES)
        if A.present(ds, "MediumType"):
            medium = A.cs(ds, "MediumType", A.MEDIUM_TYPES)
            if medium not in caps.medium_types:
                raise A.invalid("MediumType", f"this printer has no {medium} (it has {', '.join(caps.medium_types)})")
            values.medium_type = medium
        if A.present(ds, "FilmDestination"):
            values.film_destination = A.film_destination(ds, caps.film_destinations)
        if "FilmSessionLabel" in ds:
            values.label = A.text(ds, "FilmSessionLabel")
        if "OwnerID" in ds:
            values.owner_id = A.text(ds, "OwnerID")
        if A.present(ds, "MemoryAllocation"):
            A.integer(ds, "MemoryAllocation", 0, 2**31 - 1)
            warning = Status.MEMORY_ALLOCATION_NOT_SUPPORTED  # B600: accepted, not reserved
        return values, warning

    def create_session(self, uid: str | None, ds: Dataset) -> tuple[FilmSession, int | None]:
        if self.session is not None:
            status = Status.DUPLICATE_SOP_INSTANCE if uid == self.session.uid else Status.PROCESSING_FAILURE
            raise AttributeProblem(status, None, "one film session per association (PS3.4 H.4.1)")
        media = self.limits.caps.medium_types
        session, warning = self._session_values(FilmSession(uid or self.uid(), medium_type=media[0] if media else ""), ds)
        self.session = session
        return session, warning

    def set_session(self, uid: str, ds: Dataset) -> int | None:
        session = self._session(uid)
        values, warning = self._session_values(session, ds)
        self.session = values
        return warning

    def delete_session(self, uid: str) -> None:
        session = self._session(uid)
        for box_uid in list(session.film_boxes):
            self.delete_film_box(box_uid)
        self.session = None

    def _session(self, uid: str) -> FilmSession:
        if self.session is None or self.session.uid != uid:
            raise no_such_instance("Film Session", uid)
        return self.session

    def session_reply(self) -> Dataset:
        s = self.session
        assert s is not None
        ds = Dataset()
        ds.NumberOfCopies = str(s.copies)
        ds.PrintPriority = s.priority
        ds.MediumType = s.medium_type
        ds.FilmDestination = s.film_destination or None
        ds.FilmSessionLabel = s.label or None
        return ds

    # ------------------------------------------------------------ film box (H.4.2)

    def _film_box_values(self, box: FilmBox, ds: Dataset) -> tuple[FilmBox, int | None]:
        caps = self.limits.caps
        values = replace(box, image_boxes=box.image_boxes, annotation_boxes=box.annotation_boxes)
        if A.present(ds, "MagnificationType"):
            values.magnification_type = A.cs(ds, "MagnificationType", A.MAGNIFICATION_TYPES)
        if A.present(ds, "SmoothingType"):
            values.smoothing_type = A.cs(ds, "SmoothingType", A.SMOOTHING_TYPES)
        if A.present(ds, "BorderDensity"):
            values.border_density = A.density_term(ds, "BorderDensity")
        if A.present(ds, "EmptyImageDensity"):
            values.empty_image_density = A.density_term(ds, "EmptyImageDensity")
        if A.present(ds, "MinDensity"):
            values.min_density = A.integer(ds, "MinDensity", 0, 999)
        if A.present(ds, "MaxDensity"):
            values.max_density = A.integer(ds, "MaxDensity", 0, 999)
        if A.present(ds, "Trim"):
            values.trim = A.cs(ds, "Trim", A.TRIM_VALUES)
        if "ConfigurationInformation" in ds:
            values.configuration_information = A.configuration_information(ds)
        if A.present(ds, "Illumination"):
            values.illumination = A.integer(ds, "Illumination", 0, 65535)
        if A.present(ds, "ReflectedAmbientLight"):
            values.reflected_ambient_light = A.integer(ds, "ReflectedAmbientLight", 0, 65535)
        if A.present(ds, "ReferencedPresentationLUTSequence"):
            lut = _referenced_uid(ds, "ReferencedPresentationLUTSequence")
            if lut not in self.luts:
                raise A.invalid("ReferencedPresentationLUTSequence", f"no Presentation LUT {lut} on this association")
            values.presentation_lut = lut
        warning = A.check_density_range(values.min_density, values.max_density, caps.min_density, caps.max_density)
        return values, warning

    def create_film_box(self, uid: str | None, ds: Dataset, *, color: bool, annotations: bool) -> tuple[FilmBox, Dataset, int | None]:
        """The new film box, its N-CREATE reply (PS3.4 H.4.2.2.1) and a warning status or None."""
        caps = self.limits.caps
        session_uid = _referenced_uid(ds, "ReferencedFilmSessionSequence")
        if self.session is None or self.session.uid != session_uid:
            raise A.invalid("ReferencedFilmSessionSequence", f"no Film Session {session_uid} on this association")
        if not A.present(ds, "ImageDisplayFormat"):
            raise AttributeProblem(Status.MISSING_ATTRIBUTE, A.tag_of("ImageDisplayFormat"), "Image Display Format is required")
        fmt = A.display_format(A.text(ds, "ImageDisplayFormat"), self.limits.display_formats)
        try:
            count = image_box_count(fmt)
        except ValueError as exc:
            raise A.invalid("ImageDisplayFormat", str(exc)) from None
        box = FilmBox(uid or self.uid(), fmt, film_size_id=caps.film_sizes[0])
        if A.present(ds, "FilmOrientation"):
            box.orientation = A.cs(ds, "FilmOrientation", A.FILM_ORIENTATIONS)
        if A.present(ds, "FilmSizeID"):
            size = A.cs(ds, "FilmSizeID", FILM_SIZES_MM)
            if size not in caps.film_sizes:
                raise A.invalid("FilmSizeID", f"this printer has no {size} film (it has {', '.join(caps.film_sizes)})")
            box.film_size_id = size
        if A.present(ds, "RequestedResolutionID"):
            resolution = A.cs(ds, "RequestedResolutionID", A.RESOLUTION_IDS)
            if resolution != "STANDARD":
                raise A.invalid("RequestedResolutionID", f"this printer prints at one resolution: STANDARD ({caps.dpi} dpi)")
        n_annotations = 0
        if A.present(ds, "AnnotationDisplayFormatID"):
            box.annotation_format = A.text(ds, "AnnotationDisplayFormatID").upper()
            n_annotations = annotation_box_count(box.annotation_format) if annotations else 0
        box, warning = self._film_box_values(box, ds)
        if box.uid in self.film_boxes:
            raise AttributeProblem(Status.DUPLICATE_SOP_INSTANCE, None, f"Film Box {box.uid} exists")
        # Valid: create the boxes (positions 1..N) and commit.
        box.image_boxes = [ImageBox(self.uid(), i + 1, color) for i in range(count)]
        box.annotation_boxes = [AnnotationBox(self.uid(), i + 1) for i in range(n_annotations)]
        self.film_boxes[box.uid] = box
        self.session.film_boxes.append(box.uid)
        for image in box.image_boxes:
            self.image_boxes[image.uid] = (image, box)
        for note in box.annotation_boxes:
            self.annotation_boxes[note.uid] = (note, box)
        return box, self.film_box_reply(box), warning

    def film_box_reply(self, box: FilmBox) -> Dataset:
        assert self.session is not None
        ds = Dataset()
        ds.ImageDisplayFormat = box.display_format
        ds.FilmOrientation = box.orientation
        ds.FilmSizeID = box.film_size_id
        ds.MagnificationType = box.magnification_type
        ds.SmoothingType = box.smoothing_type or None
        ds.BorderDensity = box.border_density
        ds.EmptyImageDensity = box.empty_image_density
        if box.min_density is not None:
            ds.MinDensity = box.min_density
        if box.max_density is not None:
            ds.MaxDensity = box.max_density
        ds.Trim = box.trim
        ds.ConfigurationInformation = box.configuration_information or None
        ds.RequestedResolutionID = box.resolution_id
        ds.Illumination = box.illumination
        ds.ReflectedAmbientLight = box.reflected_ambient_light
        if box.annotation_format:
            ds.AnnotationDisplayFormatID = box.annotation_format
        ds.ReferencedFilmSessionSequence = DicomSequence([_ref(FILM_SESSION, self.session.uid)])
        ds.ReferencedImageBoxSequence = DicomSequence(
            [_ref(COLOR_IMAGE_BOX if b.color else GRAYSCALE_IMAGE_BOX, b.uid) for b in box.image_boxes])
        if box.annotation_boxes:
            ds.ReferencedBasicAnnotationBoxSequence = DicomSequence(
                [_ref(ANNOTATION_BOX, b.uid) for b in box.annotation_boxes])
        if box.presentation_lut is not None:
            ds.ReferencedPresentationLUTSequence = DicomSequence([_ref(PRESENTATION_LUT, box.presentation_lut)])
        return ds

    def film_box(self, uid: str) -> FilmBox:
        box = self.film_boxes.get(uid)
        if box is None:
            raise no_such_instance("Film Box", uid)
        return box

    def set_film_box(self, uid: str, ds: Dataset) -> int | None:
        box = self.film_box(uid)
        values, warning = self._film_box_values(box, ds)
        self.film_boxes[uid] = values
        for image in values.image_boxes:
            self.image_boxes[image.uid] = (image, values)
        for note in values.annotation_boxes:
            self.annotation_boxes[note.uid] = (note, values)
        return warning

    def delete_film_box(self, uid: str) -> None:
        box = self.film_box(uid)
        for image in box.image_boxes:
            self.image_boxes.pop(image.uid, None)
        for note in box.annotation_boxes:
            self.annotation_boxes.pop(note.uid, None)
        del self.film_boxes[uid]
        if self.session is not None and uid in self.session.film_boxes:
            self.session.film_boxes.remove(uid)

    # ------------------------------------------------------------ image box (H.4.3)

    def set_image_box(self, uid: str, ds: Dataset, *, color: bool, big_endian: bool = False) -> int | None:
        entry = self.image_boxes.get(uid)
        if entry is None or entry[0].color != color:
            raise no_such_instance("Color Image Box" if color else "Grayscale Image Box", uid)
        image, box = entry
        values = replace(image)
        if A.present(ds, "ImageBoxPosition"):
            values.position = A.integer(ds, "ImageBoxPosition", 1, len(box.image_boxes))
        if A.present(ds, "Polarity"):
            values.polarity = A.cs(ds, "Polarity", A.POLARITIES)
        if A.present(ds, "MagnificationType"):
            values.magnification_type = A.cs(ds, "MagnificationType", A.MAGNIFICATION_TYPES)
        if A.present(ds, "SmoothingType"):
            values.smoothing_type = A.cs(ds, "SmoothingType", A.SMOOTHING_TYPES)
        if A.present(ds, "MinDensity"):
            values.min_density = A.integer(ds, "MinDensity", 0, 999)
        if A.present(ds, "MaxDensity"):
            values.max_density = A.integer(ds, "MaxDensity", 0, 999)
        if "ConfigurationInformation" in ds:
            values.configuration_information = A.configuration_information(ds)
        if A.present(ds, "RequestedImageSize"):
            try:
                size = float(ds.RequestedImageSize)
            except (TypeError, ValueError):
                raise A.invalid("RequestedImageSize", f"{ds.RequestedImageSize!r} is not a number") from None
            if not 0 < size <= 1000:
                raise A.invalid("RequestedImageSize", f"{size} mm is outside 0..1000 mm")
            values.requested_image_size = size
        if A.present(ds, "RequestedDecimateCropBehavior"):
            values.decimate_crop = A.cs(ds, "RequestedDecimateCropBehavior", A.DECIMATE_CROP)
        own, other = ("BasicColorImageSequence", "BasicGrayscaleImageSequence") if color else \
            ("BasicGrayscaleImageSequence", "BasicColorImageSequence")
        if other in ds:
            raise A.invalid(other, f"a {'color' if color else 'grayscale'} image box takes a {own}")
        if own in ds:
            items = ds[own].value or []
            if len(items) > 1:
                raise A.invalid(own, "one item expected")
            values.pixels = parse_image(items[0], color=color, big_endian=big_endian) if items else None
        warning = A.check_density_range(values.min_density, values.max_density,
                                        self.limits.caps.min_density, self.limits.caps.max_density)
        if values.pixels is not None:
            # Does the image fit its box (B604 demagnified, B609 cropped, C603 with FAIL; PS3.4 H.4.3.1)?
            try:
                fit = image_box_status(self.film_request(box, "0"), _image_request(values), self.limits.caps)
            except RenderError as exc:
                raise AttributeProblem(exc.status, A.tag_of(own), str(exc)) from None
            if fit and fit != Status.DENSITY_OUT_OF_RANGE:
                warning = fit
        # Valid: a position taken by another box is swapped with it, so positions stay 1..N, each once.
        for sibling in box.image_boxes:
            if sibling is not image and sibling.position == values.position:
                sibling.position = image.position
        for name in ImageBox.__dataclass_fields__:
            setattr(image, name, getattr(values, name))
        return warning

    # ------------------------------------------------------------ annotation box (H.4.4)

    def set_annotation_box(self, uid: str, ds: Dataset) -> None:
        entry = self.annotation_boxes.get(uid)
        if entry is None:
            raise no_such_instance("Basic Annotation Box", uid)
        note, box = entry
        position = note.position
        if A.present(ds, "AnnotationPosition"):
            position = A.integer(ds, "AnnotationPosition", 1, len(box.annotation_boxes))
        text = A.text(ds, "TextString") if "TextString" in ds else note.text
        for sibling in box.annotation_boxes:
            if sibling is not note and sibling.position == position:
                sibling.position = note.position
        note.position, note.text = position, text

    # ------------------------------------------------------------ Presentation LUT (H.4.9)

    def create_lut(self, uid: str | None, ds: Dataset) -> str:
        uid = uid or self.uid()
        if uid in self.luts:
            raise AttributeProblem(Status.DUPLICATE_SOP_INSTANCE, None, f"Presentation LUT {uid} exists")
        has_seq, has_shape = A.present(ds, "PresentationLUTSequence"), A.present(ds, "PresentationLUTShape")
        if has_seq == has_shape:
            raise AttributeProblem(Status.MISSING_ATTRIBUTE, A.tag_of("PresentationLUTShape"),
                                   "either Presentation LUT Sequence or Presentation LUT Shape is required")
        if has_shape:
            self.luts[uid] = PresentationLut(shape=A.cs(ds, "PresentationLUTShape", A.PRESENTATION_LUT_SHAPES))
            return uid
        self.luts[uid] = _explicit_lut(ds)
        return uid

    def delete_lut(self, uid: str) -> None:
        if uid not in self.luts:
            raise no_such_instance("Presentation LUT", uid)
        del self.luts[uid]
        for box in self.film_boxes.values():
            if box.presentation_lut == uid:
                box.presentation_lut = None

    # ------------------------------------------------------------ printing

    def film_request(self, box: FilmBox, job_id: str) -> FilmRequest:
        """What the renderer needs for `box` (densities clipped to the printer's range, as the B605
        warning at N-CREATE/N-SET announced)."""
        caps, session = self.limits.caps, self.session
        assert session is not None

        def clip(value: int | None) -> int | None:
            return None if value is None else min(max(value, caps.min_density), caps.max_density)

        images = tuple(_image_request(b, clip) for b in sorted(box.image_boxes, key=lambda b: b.position)
                       if b.pixels is not None)
        return FilmRequest(
            job_id=job_id, image_display_format=box.display_format, film_orientation=box.orientation,
            film_size_id=box.film_size_id, magnification_type=box.magnification_type,
            smoothing_type=box.smoothing_type, border_density=box.border_density,
            empty_image_density=box.empty_image_density, min_density=clip(box.min_density),
            max_density=clip(box.max_density), trim=box.trim == "YES", illumination=float(box.illumination),
            reflected_ambient_light=float(box.reflected_ambient_light),
            presentation_lut=self.luts.get(box.presentation_lut) if box.presentation_lut else None,
            images=images,
            annotations=tuple((n.position, n.text) for n in sorted(box.annotation_boxes, key=lambda n: n.position)
                              if n.text),
            copies=session.copies, medium_type=session.medium_type, film_destination=session.film_destination,
            label=session.label, priority=session.priority,
            configuration_information=box.configuration_information, requested_resolution_id=box.resolution_id,
        )


def _image_request(b: ImageBox, clip: Callable[[int | None], int | None] = lambda v: v) -> ImageRequest:
    assert b.pixels is not None
    return ImageRequest(
        position=b.position, pixels=b.pixels.array, bits_stored=b.pixels.bits_stored,
        monochrome1=b.pixels.monochrome1, color=b.pixels.color, pixel_aspect_ratio=b.pixels.aspect_ratio,
        polarity=b.polarity, magnification_type=b.magnification_type, smoothing_type=b.smoothing_type,
        requested_image_size=b.requested_image_size, decimate_crop=b.decimate_crop,
        min_density=clip(b.min_density), max_density=clip(b.max_density),
        configuration_information=b.configuration_information,
    )


def _explicit_lut(ds: Dataset) -> PresentationLut:
    """Presentation LUT Sequence (PS3.3 C.11.4): one item, LUT Descriptor (entries, first mapped,
    10..16 bits) and LUT Data with that many entries."""
    items = ds.PresentationLUTSequence
    if len(items) != 1:
        raise A.invalid("PresentationLUTSequence", "one item expected")
    item = items[0]
    if not A.present(item, "LUTDescriptor") or not A.present(item, "LUTData"):
        raise A.invalid("PresentationLUTSequence", "LUT Descriptor and LUT Data are required")
    descriptor = item.LUTDescriptor
    if isinstance(descriptor, bytes):
        descriptor = [int.from_bytes(descriptor[i:i + 2], "little") for i in range(0, len(descriptor), 2)]
    try:
        entries, first, bits = (int(v) for v in descriptor)
    except (TypeError, ValueError):
        raise A.invalid("LUTDescriptor", f"{descriptor!r}: three values expected") from None
    entries = entries or 65536
    if not 10 <= bits <= 16:
        raise A.invalid("LUTDescriptor", f"{bits} bits: 10..16 expected")
    data = item.LUTData
    if isinstance(data, bytes):
        values = tuple(int.from_bytes(data[i:i + 2], "little") for i in range(0, len(data) - 1, 2))
    else:
        values = tuple(int(v) for v in (data if hasattr(data, "__iter__") else [data]))
    if len(values) != entries:
        raise A.invalid("LUTData", f"{len(values)} entries, the descriptor says {entries}")
    if any(v >= 1 << bits for v in values):
        raise A.invalid("LUTData", f"a value does not fit {bits} bits")
    return PresentationLut(shape=None, table=values, first_mapped=first, output_bits=bits)


__all__ = [
    "ANNOTATION_BOX", "COLOR_IMAGE_BOX", "COLOR_META", "FILM_BOX", "FILM_SESSION", "GRAYSCALE_IMAGE_BOX",
    "GRAYSCALE_META", "PRESENTATION_LUT", "PRINTER", "PRINTER_CONFIGURATION", "PRINTER_CONFIGURATION_INSTANCE",
    "PRINTER_INSTANCE", "PRINT_JOB", "AnnotationBox", "FilmBox", "FilmSession", "ImageBox", "PrintState",
    "PrinterLimits", "annotation_box_count", "image_box_count",
]
