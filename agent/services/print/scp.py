"""Print SCP (PS3.4 Annex H): Basic Grayscale / Color Print Management Meta SOP classes, their member
classes proposed one by one, Presentation LUT, Basic Annotation Box, Print Job and Printer
Configuration Retrieval.

Invariants:
- Dispatch is on the command's SOP class (Affected/Requested SOP Class UID), checked against the
  context it came on: under a Meta SOP class context the command names a member class (H.3.1), and
  a class that is not a member of that meta class (or another class than the context's, outside a
  meta class) is 0x0118 "no such SOP class".
- Each association has its own `PrintState` (film session and boxes), dropped when it ends. Requests
  are answered in order on the serving task; Printer and Print Job N-EVENT-REPORTs come from the
  print worker's task, so every send on a print association goes through that association's lock
  (one DIMSE message at a time on the wire).
- N-ACTION (print) renders each film box in a worker thread (CapacityLimiter(1): rendering is CPU),
  writes each film durably (agent.services.print.films) and records its Print Job row, all before the
  response; a render that cannot honour the request answers the renderer's Annex H status and
  records nothing. A film box without images answers B603 (film session: B602) and prints nothing.
- Print Job N-EVENT-REPORTs go only to the association that created the job, and only if it
  negotiated the Print Job SOP class (H.4.6.2.1); Printer N-EVENT-REPORTs go to every open print
  association (on its Printer or meta context).
- Color classes are accepted at negotiation only when the driver prints color.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from agent.dimse import NActionRQ, NCreateRQ, NDeleteRQ, NEventReportRQ, NGetRQ, NSetRQ, Status
from agent.dimse.messages import Message
from agent.errors import AssociationAborted
from agent.net.connection import DicomConnection
from agent.net.server import ServiceRegistry
from agent.services.blocking import Blocking
from agent.services.dataset import EXPLICIT_VR_BE, DataSetError, decode, encode
from agent.services.print import films
from agent.services.print.attributes import AttributeProblem
from agent.services.print.model import RenderError
from agent.services.print.session import (
    ANNOTATION_BOX, ANNOTATION_KEYWORDS, COLOR_IMAGE_BOX, COLOR_META, FILM_BOX, FILM_BOX_CREATE_KEYWORDS,
    FILM_BOX_SET_KEYWORDS, FILM_SESSION, GRAYSCALE_IMAGE_BOX, GRAYSCALE_META, IMAGE_BOX_KEYWORDS, LUT_KEYWORDS,
    PRESENTATION_LUT, PRINT_JOB, PRINTER, PRINTER_CONFIGURATION, PRINTER_CONFIGURATION_INSTANCE, PRINTER_INSTANCE,
    SESSION_KEYWORDS, FilmBox, PrinterLimits, PrintState,
)
from agent.services.print import attributes as A
from agent.services.print.printer_info import (
    configuration_attributes, print_job_attributes, printer_attributes,
)
from agent.store.printjobs import PrintJob, PrintJobStore
from agent.ul.fsm import State
from agent.ul.negotiation import PresentationContext, SyntaxSupport
from drivers.base import Film, PrinterState, PrinterStatus

log = logging.getLogger("agent.print")

META_MEMBERS = {
    GRAYSCALE_META: (FILM_SESSION, FILM_BOX, GRAYSCALE_IMAGE_BOX, PRINTER),
    COLOR_META: (FILM_SESSION, FILM_BOX, COLOR_IMAGE_BOX, PRINTER),
}
ACTION_PRINT = 1
#: Every status the Print SCP answers, on any of its SOP classes (PS3.4 H.4; this module, `session`
#: and `attributes` choose them); the conformance statement lists these, and a test checks that the
#: three modules answer no status missing here.
SCP_STATUSES: tuple[int, ...] = (
    Status.SUCCESS, Status.ATTRIBUTE_LIST_ERROR, Status.MEMORY_ALLOCATION_NOT_SUPPORTED,
    Status.FILM_SESSION_EMPTY_PAGE, Status.FILM_BOX_EMPTY_PAGE, Status.DENSITY_OUT_OF_RANGE,
    Status.INVALID_ATTRIBUTE_VALUE, Status.MISSING_ATTRIBUTE, Status.DUPLICATE_SOP_INSTANCE,
    Status.NO_SUCH_SOP_CLASS, Status.NO_SUCH_SOP_INSTANCE, Status.NO_SUCH_ACTION, Status.UNRECOGNIZED_OPERATION,
    Status.PROCESSING_FAILURE, Status.FILM_SESSION_NO_FILM_BOX, Status.PRINT_QUEUE_FULL_FILM_SESSION,
    Status.PRINT_QUEUE_FULL_FILM_BOX,
)
#: Printer N-EVENT-REPORT Event Type IDs (PS3.4 H.4.11.1.2) and Print Job ones (H.4.6.1.2).
PRINTER_EVENTS = {PrinterState.NORMAL: 1, PrinterState.WARNING: 2, PrinterState.FAILURE: 3}
JOB_EVENTS = {"PENDING": 1, "PRINTING": 2, "DONE": 3, "FAILURE": 4}

Renderer = Callable[..., Film]
#: What an operation answers: status, the reply data set (or None) and extra response fields.
Outcome = tuple[int, Dataset | None, dict[str, Any]]


def _comment(text: str) -> str:
    """An Error Comment (PS3.7 C.4: LO, 64 characters, no backslash)."""
    clean = "".join(c if c.isascii() and c.isprintable() and c != "\\" else "/" for c in text).strip()
    return clean[:64].strip() or "error"


@dataclass
class PrintAssociation:
    conn: DicomConnection
    state: PrintState
    lock: trio.Lock = field(default_factory=trio.Lock)

    def context_id(self, *abstract_syntaxes: str) -> int | None:
        for uid in abstract_syntaxes:
            ctx = self.conn.context_for(uid)
            if ctx is not None:
                return ctx.id
        return None

    async def send(self, context_id: int, message: Message, data: bytes | None = None) -> None:
        async with self.lock:
            await self.conn.send_message(context_id, message, data)


@dataclass
class PrintSCP:
    """The Print SCP. `render(request, caps) -> Film` is the renderer; `status()` refreshes the printer's
    status (through the worker, which also sends the events); `wake()` tells the worker there is work."""

    limits: PrinterLimits
    jobs: PrintJobStore
    blocking: Blocking
    data_dir: Path
    render: Renderer
    status: Callable[[], Awaitable[PrinterStatus]]
    wake: Callable[[], None] = lambda: None
    render_limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(1))
    associations: dict[int, PrintAssociation] = field(default_factory=dict)
    job_owner: dict[str, PrintAssociation] = field(default_factory=dict)

    # ------------------------------------------------------------ registration

    def sop_classes(self) -> list[str]:
        classes = [GRAYSCALE_META, FILM_SESSION, FILM_BOX, GRAYSCALE_IMAGE_BOX, PRINTER, PRINTER_CONFIGURATION,
                   PRINT_JOB, PRESENTATION_LUT, ANNOTATION_BOX]
        if self.limits.caps.color:
            classes += [COLOR_META, COLOR_IMAGE_BOX]
        return classes

    def register(self, registry: ServiceRegistry) -> None:
        handlers = {t: self.handle for t in (NCreateRQ, NSetRQ, NGetRQ, NActionRQ, NDeleteRQ)}
        registry.add(self.sop_classes(), SyntaxSupport(), handlers)  # type: ignore[arg-type]

    def prune(self) -> None:
        """Forget associations that ended (their film sessions, boxes and images)."""
        for key in [k for k, a in self.associations.items() if not a.conn.is_open]:
            del self.associations[key]
        for job_id in [j for j, a in self.job_owner.items() if not a.conn.is_open]:
            del self.job_owner[job_id]

    def association_started(self, conn: DicomConnection) -> None:
        """A new association: one that negotiated a print class is "using the printer" at once
        (it gets Printer N-EVENT-REPORTs before its first request)."""
        classes = set(self.sop_classes())
        if any(ctx.abstract_syntax in classes for ctx in conn.contexts.values()):
            self._association(conn)

    def _association(self, conn: DicomConnection) -> PrintAssociation:
        self.prune()
        pa = self.associations.get(id(conn))
        if pa is None or pa.conn is not conn:
            pa = PrintAssociation(conn, PrintState(self.limits, generate_uid))
            self.associations[id(conn)] = pa
        return pa

    # ------------------------------------------------------------ dispatch

    async def handle(self, conn: DicomConnection, ctx: PresentationContext, rq: Any) -> None:
        pa = self._association(conn)
        data = await conn.read_dataset(ctx.id) if rq.has_dataset else None
        sop_class = getattr(rq, "affected_sop_class_uid", None) or getattr(rq, "requested_sop_class_uid", "")
        members = META_MEMBERS.get(ctx.abstract_syntax, (ctx.abstract_syntax,))
        if sop_class not in members:
            await self._answer(pa, ctx, rq, Status.NO_SUCH_SOP_CLASS,
                               comment=f"{sop_class} is not served on a {ctx.abstract_syntax} context")
            return
        route = self._routes().get((sop_class, type(rq)))
        if route is None:
            await self._answer(pa, ctx, rq, Status.UNRECOGNIZED_OPERATION)
            return
        try:
            ds = decode(data, ctx.transfer_syntax, eager=True) if data is not None else Dataset()
        except DataSetError as exc:
            await self._answer(pa, ctx, rq, Status.INVALID_ATTRIBUTE_VALUE, comment=str(exc))
            return
        try:
            status, reply, extra = await route(pa, ctx, rq, ds)
        except AttributeProblem as exc:
            log.warning("%s: %s refused (0x%04X): %s", conn.remote, type(rq).__name__, exc.status, exc)
            await self._answer(pa, ctx, rq, exc.status, comment=str(exc), tags=exc.tags)
            return
        except AssociationAborted:
            raise
        except Exception as exc:  # a bug on odd input: that request fails (0110), the association goes on
            log.exception("%s: %s failed", conn.remote, type(rq).__name__)
            await self._answer(pa, ctx, rq, Status.PROCESSING_FAILURE, comment=f"processing failure: {exc}")
            return
        after = extra.pop("after", None)
        await self._answer(pa, ctx, rq, status, reply, **extra)
        if after is not None:
            after()  # the worker starts on the new jobs once the requestor has its answer

    def operations(self) -> frozenset[tuple[str, type]]:
        """The (SOP class, request type) pairs this SCP performs; any other gets 0211 (or 0118 for a
        class not served on the context). The conformance statement lists them."""
        return frozenset(self._routes())

    def _routes(self) -> dict[tuple[str, type], Callable[..., Awaitable[Outcome]]]:
        return {
            (FILM_SESSION, NCreateRQ): self.create_session,
            (FILM_SESSION, NSetRQ): self.set_session,
            (FILM_SESSION, NDeleteRQ): self.delete_session,
            (FILM_SESSION, NActionRQ): self.print_session,
            (FILM_BOX, NCreateRQ): self.create_film_box,
            (FILM_BOX, NSetRQ): self.set_film_box,
            (FILM_BOX, NDeleteRQ): self.delete_film_box,
            (FILM_BOX, NActionRQ): self.print_film_box,
            (GRAYSCALE_IMAGE_BOX, NSetRQ): self.set_image_box,
            (COLOR_IMAGE_BOX, NSetRQ): self.set_image_box,
            (ANNOTATION_BOX, NSetRQ): self.set_annotation_box,
            (PRESENTATION_LUT, NCreateRQ): self.create_lut,
            (PRESENTATION_LUT, NDeleteRQ): self.delete_lut,
            (PRINTER, NGetRQ): self.get_printer,
            (PRINTER_CONFIGURATION, NGetRQ): self.get_printer_configuration,
            (PRINT_JOB, NGetRQ): self.get_print_job,
        }

    async def _answer(self, pa: PrintAssociation, ctx: PresentationContext, rq: Any, status: int,
                      reply: Dataset | None = None, *, comment: str | None = None,
                      tags: tuple[int, ...] | None = None, **kw: Any) -> None:
        if not hasattr(rq, "response"):
            return
        if comment is not None and status != Status.SUCCESS:
            log.info("%s: %s -> 0x%04X %s", pa.conn.remote, type(rq).__name__, status, comment)
        data = encode(reply, ctx.transfer_syntax) if reply is not None else None
        response = rq.response(int(status), error_comment=_comment(comment) if comment else None,
                               attribute_identifier_list=tags or None, has_dataset=data is not None, **kw)
        await pa.send(ctx.id, response, data)

    @staticmethod
    def _unknown(ds: Dataset, keywords: tuple[str, ...]) -> tuple[int, dict[str, Any]]:
        """Success, or 0x0107 'attribute list error' naming attributes this operation does not define."""
        unknown = A.unknown_attributes(ds, keywords)
        if unknown:
            return Status.ATTRIBUTE_LIST_ERROR, {"tags": unknown, "comment": "attributes not defined here were ignored"}
        return Status.SUCCESS, {}

    # ------------------------------------------------------------ film session

    async def create_session(self, pa: PrintAssociation, ctx: PresentationContext, rq: NCreateRQ, ds: Dataset) -> Outcome:
        session, warning = pa.state.create_session(rq.affected_sop_instance_uid, ds)
        status, extra = self._unknown(ds, SESSION_KEYWORDS)
        log.info("%s: film session %s created", pa.conn.remote, session.uid)
        return warning or status, pa.state.session_reply(), {**extra, "affected_sop_instance_uid": session.uid}

    async def set_session(self, pa: PrintAssociation, ctx: PresentationContext, rq: NSetRQ, ds: Dataset) -> Outcome:
        warning = pa.state.set_session(rq.requested_sop_instance_uid, ds)
        status, extra = self._unknown(ds, SESSION_KEYWORDS)
        return warning or status, None, extra

    async def delete_session(self, pa: PrintAssociation, ctx: PresentationContext, rq: NDeleteRQ, ds: Dataset) -> Outcome:
        pa.state.delete_session(rq.requested_sop_instance_uid)
        return Status.SUCCESS, None, {}

    async def print_session(self, pa: PrintAssociation, ctx: PresentationContext, rq: NActionRQ, ds: Dataset) -> Outcome:
        if rq.action_type_id != ACTION_PRINT:
            raise AttributeProblem(Status.NO_SUCH_ACTION, None, f"action type {rq.action_type_id}")
        state = pa.state
        if state.session is None or state.session.uid != rq.requested_sop_instance_uid:
            raise AttributeProblem(Status.NO_SUCH_SOP_INSTANCE, None, f"no Film Session {rq.requested_sop_instance_uid}")
        boxes = [state.film_boxes[u] for u in state.session.film_boxes]
        if not boxes:
            raise AttributeProblem(Status.FILM_SESSION_NO_FILM_BOX, None, "the film session has no film box")
        if all(b.empty for b in boxes):
            return Status.FILM_SESSION_EMPTY_PAGE, None, {"comment": "no image box holds an image: nothing printed"}
        return await self._print(pa, [b for b in boxes if not b.empty], session_level=True)

    # ------------------------------------------------------------ film box

    def _color(self, pa: PrintAssociation, ctx: PresentationContext) -> bool:
        """Which image boxes a film box gets: the meta class says it; classes proposed one by one:
        grayscale unless only the Color Image Box class was negotiated."""
        if ctx.abstract_syntax in META_MEMBERS:
            return ctx.abstract_syntax == COLOR_META
        gray = pa.conn.context_for(GRAYSCALE_IMAGE_BOX) or pa.conn.context_for(GRAYSCALE_META)
        color = pa.conn.context_for(COLOR_IMAGE_BOX) or pa.conn.context_for(COLOR_META)
        return color is not None and gray is None

    async def create_film_box(self, pa: PrintAssociation, ctx: PresentationContext, rq: NCreateRQ, ds: Dataset) -> Outcome:
        annotations = pa.conn.context_for(ANNOTATION_BOX) is not None
        box, reply, warning = pa.state.create_film_box(rq.affected_sop_instance_uid, ds, color=self._color(pa, ctx),
                                                       annotations=annotations)
        status, extra = self._unknown(ds, FILM_BOX_CREATE_KEYWORDS)
        log.info("%s: film box %s (%s, %d image boxes)", pa.conn.remote, box.uid, box.display_format,
                 len(box.image_boxes))
        return warning or status, reply, {**extra, "affected_sop_instance_uid": box.uid}

    async def set_film_box(self, pa: PrintAssociation, ctx: PresentationContext, rq: NSetRQ, ds: Dataset) -> Outcome:
        warning = pa.state.set_film_box(rq.requested_sop_instance_uid, ds)
        status, extra = self._unknown(ds, FILM_BOX_SET_KEYWORDS)
        return warning or status, None, extra

    async def delete_film_box(self, pa: PrintAssociation, ctx: PresentationContext, rq: NDeleteRQ, ds: Dataset) -> Outcome:
        pa.state.delete_film_box(rq.requested_sop_instance_uid)
        return Status.SUCCESS, None, {}

    async def print_film_box(self, pa: PrintAssociation, ctx: PresentationContext, rq: NActionRQ, ds: Dataset) -> Outcome:
        if rq.action_type_id != ACTION_PRINT:
            raise AttributeProblem(Status.NO_SUCH_ACTION, None, f"action type {rq.action_type_id}")
        box = pa.state.film_box(rq.requested_sop_instance_uid)
        if box.empty:
            return Status.FILM_BOX_EMPTY_PAGE, None, {"comment": "no image box holds an image: nothing printed"}
        return await self._print(pa, [box])

    # ------------------------------------------------------------ boxes, LUT

    async def set_image_box(self, pa: PrintAssociation, ctx: PresentationContext, rq: NSetRQ, ds: Dataset) -> Outcome:
        color = rq.requested_sop_class_uid == COLOR_IMAGE_BOX
        warning = pa.state.set_image_box(rq.requested_sop_instance_uid, ds, color=color,
                                         big_endian=ctx.transfer_syntax == EXPLICIT_VR_BE)
        status, extra = self._unknown(ds, IMAGE_BOX_KEYWORDS)
        return warning or status, None, extra

    async def set_annotation_box(self, pa: PrintAssociation, ctx: PresentationContext, rq: NSetRQ, ds: Dataset) -> Outcome:
        pa.state.set_annotation_box(rq.requested_sop_instance_uid, ds)
        status, extra = self._unknown(ds, ANNOTATION_KEYWORDS)
        return status, None, extra

    async def create_lut(self, pa: PrintAssociation, ctx: PresentationContext, rq: NCreateRQ, ds: Dataset) -> Outcome:
        uid = pa.state.create_lut(rq.affected_sop_instance_uid, ds)
        status, extra = self._unknown(ds, LUT_KEYWORDS)
        return status, None, {**extra, "affected_sop_instance_uid": uid}

    async def delete_lut(self, pa: PrintAssociation, ctx: PresentationContext, rq: NDeleteRQ, ds: Dataset) -> Outcome:
        pa.state.delete_lut(rq.requested_sop_instance_uid)
        return Status.SUCCESS, None, {}

    # ------------------------------------------------------------ N-GET

    @staticmethod
    def _only(reply: Dataset, rq: NGetRQ) -> Dataset:
        """The attributes the N-GET asked for (all when it named none, PS3.7 10.1.2.1.3)."""
        if not rq.attribute_identifier_list:
            return reply
        out = Dataset()
        for tag in rq.attribute_identifier_list:
            if tag in reply:
                out[tag] = reply[tag]
        return out

    async def get_printer(self, pa: PrintAssociation, ctx: PresentationContext, rq: NGetRQ, ds: Dataset) -> Outcome:
        if rq.requested_sop_instance_uid != PRINTER_INSTANCE:
            raise AttributeProblem(Status.NO_SUCH_SOP_INSTANCE, None, "the Printer is 1.2.840.10008.5.1.1.17")
        reply = printer_attributes(await self.status(), self.limits.caps)
        return Status.SUCCESS, self._only(reply, rq), {}

    async def get_printer_configuration(self, pa: PrintAssociation, ctx: PresentationContext, rq: NGetRQ, ds: Dataset) -> Outcome:
        """Printer Configuration Retrieval (PS3.4 H.4.12): one item describing this printer."""
        if rq.requested_sop_instance_uid != PRINTER_CONFIGURATION_INSTANCE:
            raise AttributeProblem(Status.NO_SUCH_SOP_INSTANCE, None, "the instance is 1.2.840.10008.5.1.1.17.376")
        classes = [u for u in self.sop_classes() if u != PRINTER_CONFIGURATION]
        reply = configuration_attributes(self.limits.caps, classes, self.limits.display_formats)
        return Status.SUCCESS, self._only(reply, rq), {}

    async def get_print_job(self, pa: PrintAssociation, ctx: PresentationContext, rq: NGetRQ, ds: Dataset) -> Outcome:
        job = await self.blocking.run(self.jobs.get, rq.requested_sop_instance_uid)
        if job is None:
            raise AttributeProblem(Status.NO_SUCH_SOP_INSTANCE, None, f"no Print Job {rq.requested_sop_instance_uid}")
        return Status.SUCCESS, self._only(print_job_attributes(job, self.limits.caps.printer_name), rq), {}

    # ------------------------------------------------------------ printing

    async def _print(self, pa: PrintAssociation, boxes: list[FilmBox], *, session_level: bool = False) -> Outcome:
        """Render, save and record one job per film box; then answer (see module invariants). A job
        that cannot be stored (disk full, database unusable) is C601 (film session) / C602 (film
        box), "unable to create Print Job SOP Instance; print queue is full" (PS3.4 H.4.1.2.4,
        H.4.2.2.4), and leaves no film behind."""
        queue_full = Status.PRINT_QUEUE_FULL_FILM_SESSION if session_level else Status.PRINT_QUEUE_FULL_FILM_BOX
        state, caps = pa.state, self.limits.caps
        assert state.session is not None
        requests = [state.film_request(box, generate_uid()) for box in boxes]
        directory = films.films_dir(self.data_dir)

        def render_and_save() -> list[tuple[str, str]]:
            rendered = [self.render(request, caps) for request in requests]  # all or nothing
            saved: list[tuple[str, str]] = []
            try:
                for film in rendered:
                    saved.append((film.job_id, str(films.save(directory, film))))
            except OSError:
                for _, path in saved:
                    films.remove(path)
                raise
            return saved

        try:
            saved = await trio.to_thread.run_sync(render_and_save, limiter=self.render_limiter)
        except RenderError as exc:
            raise AttributeProblem(exc.status, None, str(exc)) from None
        except OSError as exc:
            log.error("%s: cannot store a rendered film: %s", pa.conn.remote, exc)
            raise AttributeProblem(queue_full, None, f"cannot store the film: {exc.strerror or exc}") from None
        except Exception as exc:  # a renderer bug: this request fails (0110), the association goes on
            log.exception("%s: rendering failed", pa.conn.remote)
            raise AttributeProblem(Status.PROCESSING_FAILURE, None, f"rendering failed: {exc}") from None
        session = state.session

        def record() -> list[PrintJob]:
            with self.jobs.batch():  # one transaction for every film of the action
                return [self.jobs.add(job_id, path, film_box_uid=box.uid, session_uid=session.uid,
                                      calling_ae=pa.conn.calling_ae, copies=session.copies,
                                      priority=session.priority, label=session.label, film_size_id=box.film_size_id)
                        for (job_id, path), box in zip(saved, boxes)]

        try:
            jobs = await self.blocking.run(record)
        except sqlite3.Error as exc:
            log.error("%s: cannot record a print job: %s", pa.conn.remote, exc)
            await trio.to_thread.run_sync(lambda: [films.remove(path) for _, path in saved])
            raise AttributeProblem(queue_full, None, f"cannot record the print job: {exc}") from None
        for job in jobs:
            self.job_owner[job.id] = pa
            log.info("%s: print job %s recorded (film box %s)", pa.conn.remote, job.id, job.film_box_uid)
        reply = None
        if pa.conn.context_for(PRINT_JOB) is not None:
            reply = Dataset()
            seq = []
            for job in jobs:
                ref = Dataset()
                ref.ReferencedSOPClassUID = PRINT_JOB
                ref.ReferencedSOPInstanceUID = job.id
                seq.append(ref)
            reply.add_new(0x21000500, "SQ", DicomSequence(seq))  # Referenced Print Job Sequence (H.4.2.2.4)
        return Status.SUCCESS, reply, {"after": self.wake}

    # ------------------------------------------------------------ events (called by the worker)

    async def printer_event(self, status: PrinterStatus) -> None:
        """Printer N-EVENT-REPORT to every open print association (PS3.4 H.4.11.1.2)."""
        for pa in list(self.associations.values()):
            if not pa.conn.is_open:
                continue
            ctx_id = pa.context_id(PRINTER, GRAYSCALE_META, COLOR_META)
            if ctx_id is None:
                continue
            data = None
            if status.state is not PrinterState.NORMAL:
                info = Dataset()
                info.PrinterStatusInfo = status.info
                info.PrinterName = self.limits.caps.printer_name
                data = encode(info, pa.conn.contexts[ctx_id].transfer_syntax)
            rq = NEventReportRQ(message_id=pa.conn.next_message_id(), affected_sop_class_uid=PRINTER,
                                affected_sop_instance_uid=PRINTER_INSTANCE,
                                event_type_id=PRINTER_EVENTS[status.state], has_dataset=data is not None)
            await self._send_event(pa, ctx_id, rq, data)

    async def job_event(self, job: PrintJob, execution: str, info: str) -> None:
        """Print Job N-EVENT-REPORT on the association that created `job`, if it negotiated Print Job."""
        pa = self.job_owner.get(job.id)
        if pa is None or not pa.conn.is_open:
            self.job_owner.pop(job.id, None)
            return
        ctx_id = pa.context_id(PRINT_JOB)
        if ctx_id is None:
            return
        ds = Dataset()
        ds.ExecutionStatusInfo = info
        ds.FilmSessionLabel = job.label or None
        ds.PrinterName = self.limits.caps.printer_name
        rq = NEventReportRQ(message_id=pa.conn.next_message_id(), affected_sop_class_uid=PRINT_JOB,
                            affected_sop_instance_uid=job.id, event_type_id=JOB_EVENTS[execution])
        await self._send_event(pa, ctx_id, rq, encode(ds, pa.conn.contexts[ctx_id].transfer_syntax))
        if execution in ("DONE", "FAILURE"):
            self.job_owner.pop(job.id, None)

    async def _send_event(self, pa: PrintAssociation, ctx_id: int, rq: NEventReportRQ, data: bytes | None) -> None:
        # The requestor's N-EVENT-REPORT-RSP comes back to the association's serving task, which has
        # nothing to do with it; we do not wait for it (a slow requestor never holds the worker).
        if pa.conn.assoc.state is not State.STA6:
            return  # a release (or abort) is under way: the requestor would ignore the report (PS3.8 9.2)
        try:
            await pa.send(ctx_id, rq, data)
            log.info("%s: N-EVENT-REPORT %s event %d", pa.conn.remote,
                     "Printer" if rq.affected_sop_class_uid == PRINTER else "Print Job", rq.event_type_id)
        except (AssociationAborted, trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError) as exc:
            log.info("%s: N-EVENT-REPORT not sent: %s", pa.conn.remote, exc)


__all__ = ["META_MEMBERS", "PrintAssociation", "PrintSCP"]
