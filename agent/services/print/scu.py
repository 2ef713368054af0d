"""Print SCU (PS3.4 Annex H): a print request through the durable queue, printed on one association.

Invariants:
- A print request is a queue job of kind `print` for the printer's peer, queued only after copies of its
  image files are on disk (written, fsynced, folder fsynced) under `<data_dir>/print-spool/<id>/`; the
  payload names that folder and the film options (JSON). A restart or a printer that is down loses
  nothing: the job waits in the queue. The folder is removed only after the printer accepted the print
  action, so a job whose folder is gone has printed (a repeat after a crash between the two finds it gone
  and counts as done instead of printing twice).
- One job = one association = one film session: Printer N-GET first; a printer that says FAILURE makes the
  job wait (transient, retried with the peer's backoff) before anything is created. Then Film Session
  N-CREATE, Presentation LUT N-CREATE (IDENTITY) when that SOP class was accepted, and per film (as many
  films as the images need for the display format) Film Box N-CREATE, one Image Box N-SET per image,
  Annotation Box N-SET per `--annotation` when the printer offers annotation boxes, Film Box N-ACTION
  (print), Film Box N-DELETE; then Film Session N-DELETE and A-RELEASE.
- Under a Meta SOP Class context every command names the individual SOP Class (Film Session, Film Box,
  Grayscale or Color Image Box, Printer), as PS3.4 H.3 / H.4 require.
- A job with any color image runs under Basic Color Print Management Meta (grayscale images of it go as
  RGB); an all-grayscale job under Basic Grayscale Print Management Meta.
- An optional attribute the printer refuses (a failure naming it, or a 0105/0106/0116 naming nothing)
  is dropped and the request repeated without it, with a warning: printers differ in what they support
  (DCMTK's refuses anything its configuration does not list), and the film matters more than, say, its
  border density. Only `DROPPABLE` attributes are dropped; film size, orientation, format, copies and
  medium never are: their refusal fails the job.
- N-EVENT-REPORTs (Printer, Print Job) arriving during the session are answered Success and logged.
- Failures: printer FAILURE, refused or dropped connection, timeouts: transient; a C6xx/Cxxx failure,
  a missing SOP class, unreadable spooled files: permanent (dead, with the printer's reason).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from agent.dimse import NActionRQ, NCreateRQ, NDeleteRQ, NEventReportRQ, NGetRQ, NSetRQ, Status
from agent.dimse.messages import Message
from agent.dimse.status import StatusCategory, category, describe
from agent.net.connection import DicomConnection
from agent.net.requests import Reply, request
from agent.services.dataset import EXPLICIT_VR_LE, IMPLICIT_VR_LE, DataSetError, decode, encode
from agent.services.outbound import JobFailed, check_status
from agent.services.print.scu_images import ImageError, PrintImage, image_box_attributes, read_image
from agent.services.print.scu_options import FilmOptions, PrintOptionError, image_boxes
from agent.store.queue import Job, JobQueue, JobState
from agent.ul.negotiation import PresentationContext, ProposedContext

log = logging.getLogger("agent.print.scu")

PRINT_JOB_KIND = "print"
SPOOL_DIR = "print-spool"

GRAYSCALE_META = "1.2.840.10008.5.1.1.9"
COLOR_META = "1.2.840.10008.5.1.1.18"
PRESENTATION_LUT = "1.2.840.10008.5.1.1.23"
ANNOTATION_BOX = "1.2.840.10008.5.1.1.15"
PRINT_JOB = "1.2.840.10008.5.1.1.14"
FILM_SESSION = "1.2.840.10008.5.1.1.1"
FILM_BOX = "1.2.840.10008.5.1.1.2"
GRAYSCALE_IMAGE_BOX = "1.2.840.10008.5.1.1.4"
COLOR_IMAGE_BOX = "1.2.840.10008.5.1.1.4.1"
PRINTER = "1.2.840.10008.5.1.1.16"
PRINTER_INSTANCE = "1.2.840.10008.5.1.1.17"  # the well-known Printer SOP Instance

_SYNTAXES = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)
#: Optional attributes the SCU may leave out when a printer refuses them, least important first.
#: Never dropped: Image Display Format, Film Size ID, Film Orientation, Number of Copies, Medium Type,
#: the references and the pixels: without them the film would not be what was asked for.
DROPPABLE = (
    0x20100140,  # Trim
    0x20100100,  # Border Density
    0x20100110,  # Empty Image Density
    0x20100120,  # Min Density
    0x20100130,  # Max Density
    0x20100080,  # Smoothing Type
    0x20200050,  # Requested Resolution ID
    0x20100150,  # Configuration Information
    0x2010015E,  # Illumination
    0x20100160,  # Reflected Ambient Light
    0x20200040,  # Requested Decimate/Crop Behavior
    0x20000050,  # Film Session Label
    0x20000020,  # Print Priority
    0x20000040,  # Film Destination
    0x20100060,  # Magnification Type
    0x20100030,  # Annotation Display Format ID
    0x20200020,  # Polarity
)
_PRINTER_EVENTS = {1: "NORMAL", 2: "WARNING", 3: "FAILURE"}
_JOB_EVENTS = {1: "PENDING", 2: "PRINTING", 3: "DONE", 4: "FAILURE"}


class PrinterUnavailable(JobFailed):
    """The printer answered N-GET with Printer Status FAILURE: try again later."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=False)


# ------------------------------------------------------------------ queuing


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def spool_images(data_dir: Path, paths: Sequence[Path]) -> tuple[str, list[str]]:
    """Copy `paths` durably into a new spool folder; return (its path relative to data_dir, file names)."""
    rel = f"{SPOOL_DIR}/{uuid.uuid4().hex}"
    folder = data_dir / rel
    folder.mkdir(parents=True)
    names = []
    for i, src in enumerate(paths, 1):
        name = f"{i:03d}.dcm"
        with open(src, "rb") as fin, open(folder / name, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        names.append(name)
    _fsync_dir(folder)
    _fsync_dir(folder.parent)
    return rel, names


def sweep_spool(queue: JobQueue, data_dir: Path, *, min_age: float = 3600.0) -> int:
    """Remove spool folders no unfinished `print` job names (their job was dropped from the queue, or
    its process died between spooling and queuing). Folders younger than `min_age` seconds are kept: a
    request being queued right now by another process has its folder before its job. Returns the count."""
    root = data_dir / SPOOL_DIR
    if not root.is_dir():
        return 0
    live = {str(j.payload.get("spool", "")) for j in queue.list(
        states=[JobState.PENDING, JobState.CLAIMED, JobState.DEAD], kind=PRINT_JOB_KIND, limit=1_000_000)}
    now, removed = time.time(), 0
    for folder in root.iterdir():
        rel = f"{SPOOL_DIR}/{folder.name}"
        if folder.is_dir() and rel not in live and now - folder.stat().st_mtime > min_age:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def queue_print(queue: JobQueue, data_dir: Path, printer: str, paths: Sequence[Path | str],
                options: FilmOptions, *, not_before: float | None = None) -> int:
    """Check the request, spool the images and queue a `print` job for peer `printer`; returns its id.
    `not_before` keeps a running agent's worker off the job until then (a command about to claim and
    run it itself). Raises PrintOptionError (bad option) or ImageError (not a printable image). Blocking."""
    options = options.validated()
    files = [Path(p) for p in paths]
    if not files:
        raise PrintOptionError("nothing to print: no image given")
    kinds = [read_image(p, bits=options.bits).color for p in files]  # every file must be printable now
    if sweep_spool(queue, data_dir):
        log.info("removed spooled images of print jobs no longer queued")
    rel, names = spool_images(data_dir, files)
    payload = {"spool": rel, "files": names, "color": any(kinds), "options": options.to_payload()}
    try:
        return queue.enqueue(PRINT_JOB_KIND, printer, payload, not_before=not_before)
    except BaseException:
        shutil.rmtree(data_dir / rel, ignore_errors=True)
        raise


# ------------------------------------------------------------------ the session


@dataclass
class PrintOutcome:
    """What a print session did, for the CLI and the tests."""

    printer_status: tuple[str, str] | None = None  # (Printer Status, Printer Status Info)
    session_uid: str = ""
    films: list[str] = field(default_factory=list)  # Film Box SOP Instance UIDs printed
    print_jobs: list[str] = field(default_factory=list)  # Print Job SOP Instance UIDs, when the printer told
    events: list[tuple[str, int, str]] = field(default_factory=list)  # (SOP class, event type, description)
    warnings: list[str] = field(default_factory=list)
    presentation_lut: bool = False


def proposals(color: bool, options: FilmOptions) -> list[ProposedContext]:
    """The presentation contexts a print job needs (the meta class its images need, and the optional
    Presentation LUT, Basic Annotation Box and Print Job SOP classes)."""
    out = [ProposedContext(COLOR_META if color else GRAYSCALE_META, _SYNTAXES)]
    if options.presentation_lut and not color:
        out.append(ProposedContext(PRESENTATION_LUT, _SYNTAXES))
    if options.annotations:
        out.append(ProposedContext(ANNOTATION_BOX, _SYNTAXES))
    out.append(ProposedContext(PRINT_JOB, _SYNTAXES))
    return out


def _ref(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def session_attributes(o: FilmOptions) -> Dataset:
    """Film Session N-CREATE attribute list (PS3.4 H.4.1.1.1.1): only the options given."""
    ds = Dataset()
    if o.copies is not None:
        ds.NumberOfCopies = str(int(o.copies))
    for kw, value in (("PrintPriority", o.priority), ("MediumType", o.medium_type),
                      ("FilmDestination", o.film_destination), ("FilmSessionLabel", o.label)):
        if value is not None:
            setattr(ds, kw, value)
    return ds


def film_box_attributes(o: FilmOptions, session_uid: str, plut_uid: str | None) -> Dataset:
    """Film Box N-CREATE attribute list (PS3.4 H.4.2.1.1.1): the format, the references, and only the
    options given."""
    ds = Dataset()
    ds.ImageDisplayFormat = o.display_format
    ds.ReferencedFilmSessionSequence = DicomSequence([_ref(FILM_SESSION, session_uid)])
    if o.annotations:
        ds.AnnotationDisplayFormatID = o.annotation_format or str(len(o.annotations))
    for kw, value in (("FilmOrientation", o.orientation), ("FilmSizeID", o.film_size),
                      ("MagnificationType", o.magnification), ("SmoothingType", o.smoothing),
                      ("BorderDensity", o.border_density), ("EmptyImageDensity", o.empty_image_density),
                      ("RequestedResolutionID", o.resolution), ("ConfigurationInformation", o.configuration)):
        if value is not None:
            setattr(ds, kw, value)
    if o.min_density is not None:
        ds.MinDensity = int(o.min_density)
    if o.max_density is not None:
        ds.MaxDensity = int(o.max_density)
    if o.trim is not None:
        ds.Trim = "YES" if o.trim else "NO"
    if plut_uid is not None:
        ds.ReferencedPresentationLUTSequence = DicomSequence([_ref(PRESENTATION_LUT, plut_uid)])
        if o.illumination is not None:
            ds.Illumination = int(o.illumination)
        if o.reflected_ambient_light is not None:
            ds.ReflectedAmbientLight = int(o.reflected_ambient_light)
    return ds


class PrintSession:
    """Runs one film session on an open association (the association's owner releases it)."""

    def __init__(self, conn: DicomConnection, *, color: bool,
                 progress: Callable[[str], None] | None = None) -> None:
        self.conn = conn
        self.progress = progress or (lambda line: None)
        self._tell = progress is not None  # the CLI shows progress lines; the agent logs instead
        meta = COLOR_META if color else GRAYSCALE_META
        ctx = conn.context_for(meta)
        if ctx is None:
            kind = "Basic Color" if color else "Basic Grayscale"
            raise JobFailed(f"{conn.called_ae} did not accept {kind} Print Management Meta ({meta})",
                            permanent=True)
        self.meta = ctx
        self.color = color
        self.outcome = PrintOutcome()
        self.dropped: set[int] = set()  # refused once: not sent again in this session (next films, boxes)

    # -------------------------------------------------------- messaging

    async def _request(self, ctx: PresentationContext, message: Message, data: Dataset | None) -> tuple[Reply, Dataset | None]:
        body = encode(data, ctx.transfer_syntax) if data is not None else None
        reply = await request(self.conn, ctx.id, message, body, incoming=self._incoming)
        answer = None
        if reply.dataset:
            try:
                answer = decode(reply.dataset, ctx.transfer_syntax, eager=True)
            except DataSetError as exc:
                raise JobFailed(f"{self.conn.called_ae} answered a data set we cannot read: {exc}",
                                permanent=True) from exc
        if category(reply.status) is StatusCategory.WARNING:
            self._warn(f"{type(message).__name__[:-2]}: {describe(reply.status)}")
        return reply, answer

    async def _incoming(self, conn: DicomConnection, ctx: PresentationContext, msg: Message) -> None:
        """A request from the printer while we wait: N-EVENT-REPORT (PS3.4 H.4.4, H.4.5) is answered
        Success and logged; anything else is refused."""
        data = await conn.read_dataset(ctx.id) if msg.has_dataset else None
        if not isinstance(msg, NEventReportRQ):
            respond = getattr(msg, "response", None)
            if respond is not None:
                await conn.send_message(ctx.id, respond(Status.UNRECOGNIZED_OPERATION))
            return
        info = ""
        if data:
            try:
                ds = decode(data, ctx.transfer_syntax, eager=True)
                info = str(ds.get("PrinterStatusInfo") or ds.get("ExecutionStatusInfo") or "")
            except DataSetError:
                info = "(unreadable event information)"
        names = _JOB_EVENTS if msg.affected_sop_class_uid == PRINT_JOB else _PRINTER_EVENTS
        what = "Print Job" if msg.affected_sop_class_uid == PRINT_JOB else "Printer"
        description = f"{what} {names.get(msg.event_type_id, msg.event_type_id)} {info}".strip()
        self.outcome.events.append((msg.affected_sop_class_uid, msg.event_type_id, description))
        self.progress(f"event: {description}")
        log.info("%s: event: %s", conn.called_ae, description)
        await conn.send_message(ctx.id, msg.response(Status.SUCCESS))

    def _warn(self, note: str) -> None:
        self.outcome.warnings.append(note)
        if self._tell:
            self.progress(f"warning: {note}")
        else:
            log.warning("%s: %s", self.conn.called_ae, note)

    def _id(self) -> int:
        return self.conn.next_message_id()

    # -------------------------------------------------------- steps

    async def printer_status(self) -> tuple[str, str] | None:
        """Printer N-GET of Printer Status and Printer Status Info (PS3.4 H.4.4.1.2)."""
        rq = NGetRQ(message_id=self._id(), requested_sop_class_uid=PRINTER,
                    requested_sop_instance_uid=PRINTER_INSTANCE, attribute_identifier_list=(0x21100010, 0x21100020))
        reply, ds = await self._request(self.meta, rq, None)
        if category(reply.status) not in (StatusCategory.SUCCESS, StatusCategory.WARNING) or ds is None:
            log.warning("%s: Printer N-GET answered %s: status unknown, printing anyway",
                        self.conn.called_ae, describe(reply.status))
            return None
        status = (str(ds.get("PrinterStatus") or "").strip(), str(ds.get("PrinterStatusInfo") or "").strip())
        self.outcome.printer_status = status
        self.progress(f"printer {self.conn.called_ae}: {status[0] or '?'} ({status[1] or 'no detail'})")
        return status

    async def _create(self, ctx: PresentationContext, sop_class: str, attrs: Dataset, what: str) -> tuple[str, Dataset | None]:
        """N-CREATE, dropping refused optional attributes (see `_refused`)."""
        self._strip(attrs)
        while True:
            rq = NCreateRQ(message_id=self._id(), affected_sop_class_uid=sop_class)
            reply, answer = await self._request(ctx, rq, attrs)
            if category(reply.status) in (StatusCategory.SUCCESS, StatusCategory.WARNING):
                uid = getattr(reply.message, "affected_sop_instance_uid", None)
                if not uid:
                    raise JobFailed(f"{what} N-CREATE: the printer assigned no SOP Instance UID", permanent=True)
                return uid, answer
            self._refused(reply, attrs, f"{what} N-CREATE")

    async def _set(self, ctx: PresentationContext, sop_class: str, uid: str, attrs: Dataset, what: str) -> None:
        self._strip(attrs)
        while True:
            rq = NSetRQ(message_id=self._id(), requested_sop_class_uid=sop_class, requested_sop_instance_uid=uid)
            reply, _ = await self._request(ctx, rq, attrs)
            if category(reply.status) in (StatusCategory.SUCCESS, StatusCategory.WARNING):
                return
            self._refused(reply, attrs, f"{what} N-SET")

    def _strip(self, attrs: Dataset) -> None:
        for tag in self.dropped:
            if tag in attrs:
                del attrs[tag]

    def _refused(self, reply: Reply, attrs: Dataset, what: str) -> None:
        """After a failure: drop what the printer refused from `attrs` (so the caller sends it again), or
        raise JobFailed. Only attributes in `DROPPABLE` are ever dropped: those the printer named
        (Attribute Identifier List / Offending Element), or, when a 0105/0106/0116 names none (DCMTK's
        print SCP names none), the least important one still present, one per attempt."""
        named = set(getattr(reply.message, "attribute_identifier_list", None) or ())
        named |= set(getattr(reply.message, "offending_element", None) or ())
        present = [t for t in DROPPABLE if t in attrs]
        if named:
            drop = [t for t in present if t in named]
            if not drop or len(drop) != len(named):
                check_status(reply.status, what)
        elif reply.status in (0x0105, 0x0106, 0x0116) and present:
            drop = present[:1]
        else:
            check_status(reply.status, what)
            raise JobFailed(f"{what}: {describe(reply.status)}", permanent=True)
        for tag in drop:
            keyword = attrs[tag].keyword
            del attrs[tag]
            self.dropped.add(tag)
            note = f"{what}: the printer refused it ({describe(reply.status)}); sent again without {keyword}"
            self._warn(note)

    async def _delete(self, ctx: PresentationContext, sop_class: str, uid: str, what: str) -> None:
        rq = NDeleteRQ(message_id=self._id(), requested_sop_class_uid=sop_class, requested_sop_instance_uid=uid)
        reply, _ = await self._request(ctx, rq, None)
        if category(reply.status) not in (StatusCategory.SUCCESS, StatusCategory.WARNING):
            self._warn(f"{what} N-DELETE: {describe(reply.status)}")  # the film printed; only tidying failed

    async def run(self, images: Sequence[PrintImage], options: FilmOptions) -> PrintOutcome:
        """The whole film session (see the module invariants)."""
        called = self.conn.called_ae
        status = await self.printer_status()
        if status is not None and status[0].upper() == "FAILURE":
            raise PrinterUnavailable(f"printer {called} reports FAILURE ({status[1] or 'no detail'}): the job waits")
        session_uid, _ = await self._create(self.meta, FILM_SESSION, session_attributes(options), "Film Session")
        self.outcome.session_uid = session_uid
        plut_uid = None
        plut_ctx = self.conn.context_for(PRESENTATION_LUT) if options.presentation_lut and not self.color else None
        if plut_ctx is not None:
            lut = Dataset()
            lut.PresentationLUTShape = "IDENTITY"  # P-values are our output values (PS3.3 C.11.6)
            try:
                plut_uid, _ = await self._create(plut_ctx, PRESENTATION_LUT, lut, "Presentation LUT")
                self.outcome.presentation_lut = True
            except JobFailed as exc:
                log.warning("%s: no Presentation LUT (%s): the printer's default applies", called, exc)
        remaining = list(images)
        annot_ctx = self.conn.context_for(ANNOTATION_BOX) if options.annotations else None
        if options.annotations and annot_ctx is None:
            self._warn("the printer did not accept Basic Annotation Box: annotations not printed")
        while remaining:
            remaining = await self._film(remaining, options, session_uid, plut_uid, annot_ctx)
        await self._delete(self.meta, FILM_SESSION, session_uid, "Film Session")
        if plut_uid is not None and plut_ctx is not None:
            await self._delete(plut_ctx, PRESENTATION_LUT, plut_uid, "Presentation LUT")
        return self.outcome

    async def _film(self, images: list[PrintImage], options: FilmOptions, session_uid: str, plut_uid: str | None,
                    annot_ctx: PresentationContext | None) -> list[PrintImage]:
        """One film box: create, fill, print, delete; returns the images left for the next film."""
        attrs = film_box_attributes(options, session_uid, plut_uid)
        if annot_ctx is None and "AnnotationDisplayFormatID" in attrs:
            del attrs.AnnotationDisplayFormatID
        film_uid, answer = await self._create(self.meta, FILM_BOX, attrs, "Film Box")
        boxes = list((answer or Dataset()).get("ReferencedImageBoxSequence") or [])
        if not boxes:
            raise JobFailed(f"Film Box N-CREATE: {self.conn.called_ae} answered no image boxes", permanent=True)
        expected = image_boxes(options.display_format)
        if expected is not None and len(boxes) != expected:
            log.warning("%s: display format %s has %d boxes, the printer answered %d",
                        self.conn.called_ae, options.display_format, expected, len(boxes))
        box_class = COLOR_IMAGE_BOX if self.color else GRAYSCALE_IMAGE_BOX
        for position, (box, image) in enumerate(zip(boxes, images), 1):
            sop_class = str(box.get("ReferencedSOPClassUID") or box_class)
            attrs = image_box_attributes(_as_color(image) if self.color else image, position,
                                         polarity=options.polarity, decimate_crop=options.decimate_crop)
            await self._set(self.meta, sop_class, str(box.ReferencedSOPInstanceUID), attrs, f"Image Box {position}")
        if annot_ctx is not None:
            annotation_boxes = list((answer or Dataset()).get("ReferencedBasicAnnotationBoxSequence") or [])
            for position, (box, text) in enumerate(zip(annotation_boxes, options.annotations), 1):
                ann = Dataset()
                ann.AnnotationPosition = position
                ann.TextString = text
                await self._set(annot_ctx, ANNOTATION_BOX, str(box.ReferencedSOPInstanceUID), ann,
                                f"Annotation Box {position}")
            if len(options.annotations) > len(annotation_boxes):
                self._warn(
                    f"{len(options.annotations)} annotations, the printer offers {len(annotation_boxes)} boxes")
        rq = NActionRQ(message_id=self._id(), requested_sop_class_uid=FILM_BOX, requested_sop_instance_uid=film_uid,
                       action_type_id=1, has_dataset=False)
        reply, answer = await self._request(self.meta, rq, None)
        check_status(reply.status, "Film Box N-ACTION (print)")
        self.outcome.films.append(film_uid)
        self.progress(f"film {len(self.outcome.films)} printed ({min(len(boxes), len(images))} image(s), "
                      f"{options.display_format}): {describe(reply.status)}")
        for item in (answer or Dataset()).get("ReferencedPrintJobSequence") or []:
            self.outcome.print_jobs.append(str(item.ReferencedSOPInstanceUID))
        log.info("%s: film %s printed (%d image(s))", self.conn.called_ae, film_uid, min(len(boxes), len(images)))
        await self._delete(self.meta, FILM_BOX, film_uid, "Film Box")
        return images[len(boxes):]


def _as_color(image: PrintImage) -> PrintImage:
    if image.color:
        return image
    import numpy as np

    pixels = image.pixels if image.bits_stored == 8 else (image.pixels >> 4).astype(np.uint8)
    return PrintImage(np.repeat(pixels[:, :, None], 3, axis=2), color=True, aspect_ratio=image.aspect_ratio)


# ------------------------------------------------------------------ the performer


@dataclass
class PrintPerformer:
    """The `print` job kind: one whole print session per job (see the module invariants)."""

    data_dir: Path
    progress: Callable[[str], None] | None = None
    last: PrintOutcome | None = None

    def contexts(self, job: Job) -> Sequence[ProposedContext]:
        try:
            options = FilmOptions.from_payload(job.payload.get("options", {}))
        except (PrintOptionError, TypeError):
            options = FilmOptions()
        return proposals(bool(job.payload.get("color")), options)

    def _images(self, job: Job, options: FilmOptions) -> list[PrintImage] | None:
        spool = str(job.payload.get("spool", ""))
        if not spool.startswith(f"{SPOOL_DIR}/") or ".." in spool or "/" in spool[len(SPOOL_DIR) + 1:]:
            raise JobFailed(f"print job {job.id}: bad spool folder {spool!r}", permanent=True)
        folder = self.data_dir / spool
        if not folder.is_dir():
            return None
        images = []
        for name in job.payload.get("files", []):
            if "/" in name or name.startswith("."):
                raise JobFailed(f"print job {job.id}: bad file name {name!r}", permanent=True)
            try:
                images.append(read_image(folder / name, bits=options.bits))
            except ImageError as exc:
                raise JobFailed(str(exc), permanent=True) from exc
        return images

    async def perform(self, conn: DicomConnection, job: Job) -> None:
        try:
            options = FilmOptions.from_payload(job.payload.get("options", {}))
        except (PrintOptionError, TypeError) as exc:
            raise JobFailed(f"print job {job.id}: {exc}", permanent=True) from exc
        images = self._images(job, options)
        if images is None:
            log.info("print job %d: its spool folder is gone: printed by an earlier attempt", job.id)
            return
        if not images:
            raise JobFailed(f"print job {job.id} has no images", permanent=True)
        session = PrintSession(conn, color=any(i.color for i in images), progress=self.progress)
        try:
            await session.run(images, options)
        except DataSetError as exc:  # a data set we could not encode: repeating cannot help
            raise JobFailed(f"print job {job.id}: {exc}", permanent=True) from exc
        finally:
            self.last = session.outcome
        shutil.rmtree(self.data_dir / job.payload["spool"], ignore_errors=True)


def outcome_of(job: Job) -> dict[str, Any]:
    """A short description of a print job for listings."""
    return {"id": job.id, "printer": job.destination, "state": job.state.value,
            "images": len(job.payload.get("files", [])),
            "format": job.payload.get("options", {}).get("display_format"), "last_error": job.last_error}


__all__ = [
    "ANNOTATION_BOX", "COLOR_IMAGE_BOX", "COLOR_META", "FILM_BOX", "FILM_SESSION", "GRAYSCALE_IMAGE_BOX",
    "GRAYSCALE_META", "PRESENTATION_LUT", "PRINTER", "PRINTER_INSTANCE", "PRINT_JOB", "PRINT_JOB_KIND",
    "PrintOutcome", "PrintPerformer", "PrintSession", "PrinterUnavailable", "film_box_attributes",
    "outcome_of", "proposals", "queue_print", "session_attributes", "spool_images", "sweep_spool",
]
