"""Query/Retrieve SCU (PS3.4 Annex C): C-FIND, C-MOVE and C-GET as requestor over an open association.

Invariants:
- One operation at a time on an association; responses are matched on Message ID Being Responded To
  (a response to another message aborts the association: PS3.7 9.1.2.1 leaves nothing to match it to).
- Pending responses (FF00, FF01) are reported as they come; the operation ends at the first
  non-pending one. The DIMSE deadline applies to each message received, not to the whole operation,
  so a retrieve of thousands of instances does not time out while sub-operations keep coming.
- C-CANCEL (PS3.7 9.3.2.3, 9.3.3.3, 9.3.4.3): when the caller's `cancel` event is set, one
  C-CANCEL-RQ is sent for the operation (from a helper task: the connection serialises writes) and
  the responses are read on until the final one, which is normally FE00 with the counts so far.
- C-GET (PS3.4 C.4.3): the storage classes are proposed with SCP/SCU role selection, this side as SCP
  (PS3.7 D.3.3.4); the C-STORE sub-operations arrive on the same association and are handed to
  `store`, which must answer each one (the Storage SCP's handler: the same durable path as any
  received instance, the response only after the data is on disk).
- Specific Character Set: an identifier is sent in the character set it names; the CLI names
  ISO_IR 192 when a value is not ASCII (PS3.5 6.1.2.5.3). Matches are decoded with their own.
- Sans network code: everything goes through `DicomConnection`; the caller opens the association
  with `proposals(...)`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio
from pydicom import Dataset

from agent.dimse import (
    CCancelRQ,
    CFindRQ,
    CGetRQ,
    CMoveRQ,
    CommandReceived,
    DataSetFragment,
    MessageComplete,
    UnusableRequest,
)
from agent.dimse.status import StatusCategory, category, describe
from agent.errors import AgentError, AssociationAborted, TimeoutExpired
from agent.net.connection import DicomConnection, unexpected_event
from agent.net.server import Handler, refuse_request
from agent.services.dataset import DataSetError, decode, encode
from agent.services.query.models import MODELS, UNIQUE_KEYS, Model
from agent.services.storage_classes import STORAGE_KEYWORDS
from agent.ul.negotiation import UNCOMPRESSED, PresentationContext, ProposedContext

log = logging.getLogger("agent.query")

#: Storage classes proposed for C-GET by default (a context has one transfer syntax, so each class is
#: proposed twice: uncompressed, and the usual compressed syntaxes; 2 x 45 + 3 stays under 128).
GET_STORAGE_KEYWORDS: tuple[str, ...] = (
    "ComputedRadiographyImageStorage", "DigitalXRayImageStorageForPresentation",
    "DigitalXRayImageStorageForProcessing", "DigitalMammographyXRayImageStorageForPresentation",
    "DigitalMammographyXRayImageStorageForProcessing", "CTImageStorage", "EnhancedCTImageStorage",
    "MRImageStorage", "EnhancedMRImageStorage", "UltrasoundImageStorage", "UltrasoundMultiFrameImageStorage",
    "SecondaryCaptureImageStorage", "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage", "MultiFrameTrueColorSecondaryCaptureImageStorage",
    "XRayAngiographicImageStorage", "EnhancedXAImageStorage", "XRayRadiofluoroscopicImageStorage",
    "EnhancedXRFImageStorage", "NuclearMedicineImageStorage", "PositronEmissionTomographyImageStorage",
    "EnhancedPETImageStorage", "RTImageStorage", "RTDoseStorage", "RTStructureSetStorage", "RTPlanStorage",
    "RTIonPlanStorage", "BasicTextSRStorage", "EnhancedSRStorage", "ComprehensiveSRStorage",
    "Comprehensive3DSRStorage", "XRayRadiationDoseSRStorage", "KeyObjectSelectionDocumentStorage",
    "GrayscaleSoftcopyPresentationStateStorage", "EncapsulatedPDFStorage", "VLPhotographicImageStorage",
    "VLEndoscopicImageStorage", "VLMicroscopicImageStorage", "OphthalmicPhotography8BitImageStorage",
    "BreastTomosynthesisImageStorage", "XRay3DAngiographicImageStorage", "SegmentationStorage",
    "RawDataStorage", "SpatialRegistrationStorage", "TwelveLeadECGWaveformStorage",
)
#: Compressed transfer syntaxes offered for C-GET sub-operations: JPEG Baseline, JPEG Extended,
#: JPEG Lossless SV1, JPEG-LS lossless and near-lossless, JPEG 2000 (lossless only and any), RLE.
GET_COMPRESSED: tuple[str, ...] = (
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5",
)


class QueryError(AgentError):
    """The peer cannot serve the operation asked for (no such context accepted)."""


def get_storage_classes(extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The storage SOP Class UIDs a C-GET proposes: the default list plus `extra`, without repeats."""
    out = [STORAGE_KEYWORDS[k] for k in GET_STORAGE_KEYWORDS if k in STORAGE_KEYWORDS]
    return tuple(dict.fromkeys([*out, *extra]))


def proposals(
    root: str, operations: Sequence[str], *, storage_classes: Sequence[str] = ()
) -> list[ProposedContext]:
    """Contexts for `operations` ('find', 'move', 'get') of `root` ('patient' or 'study'); with 'get',
    each of `storage_classes` (default `get_storage_classes()`) with this side as its SCP."""
    model: Model = MODELS[root]
    out = [ProposedContext(getattr(model, op), UNCOMPRESSED) for op in operations]
    if "get" in operations:
        classes = tuple(storage_classes) or get_storage_classes()
        room = (128 - len(out)) // 2
        if len(classes) > room:
            raise ValueError(f"at most {room} storage classes can be proposed for C-GET, got {len(classes)}")
        for uid in classes:
            # PS3.4 C.4.3.1: the C-GET SCU is the Storage SCP of the sub-operations: role selection
            # with SCU role 0 and SCP role 1 for each storage class.
            out.append(ProposedContext(uid, UNCOMPRESSED, scu_role=False, scp_role=True))
            out.append(ProposedContext(uid, GET_COMPRESSED, scu_role=False, scp_role=True))
    return out


def context(conn: DicomConnection, sop_class: str, what: str) -> PresentationContext:
    ctx = conn.context_for(sop_class)
    if ctx is None:
        raise QueryError(f"{conn.remote} did not accept {what} ({sop_class})")
    return ctx


# ------------------------------------------------------------------ outcomes


@dataclass
class FindOutcome:
    """The final response of a C-FIND and how many matches came before it."""

    status: int = 0
    matches: int = 0
    cancel_sent: bool = False
    error_comment: str = ""
    offending: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return category(self.status) in (StatusCategory.SUCCESS, StatusCategory.CANCEL)

    def describe(self) -> str:
        text = describe(self.status)
        if self.error_comment:
            text += f": {self.error_comment}"
        if self.offending:
            text += " (offending: " + ", ".join(f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in self.offending) + ")"
        return text


@dataclass
class RetrieveOutcome:
    """Counts of a C-MOVE or C-GET as its last response gave them (PS3.4 C.4.2.1.5, C.4.3.1.5)."""

    status: int = 0
    remaining: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    cancel_sent: bool = False
    error_comment: str = ""
    offending: tuple[int, ...] = ()
    responses: int = 0
    stored: int = 0  # C-GET: sub-operations this side stored (its own count, not the peer's)

    @property
    def ok(self) -> bool:
        return category(self.status) is StatusCategory.SUCCESS and self.failed == 0

    def update(self, message: object) -> None:
        self.status = int(getattr(message, "status", 0))
        remaining = getattr(message, "number_of_remaining_suboperations", None)
        self.remaining = remaining if category(self.status) is StatusCategory.PENDING else remaining or 0
        for name in ("completed", "failed", "warning"):
            value = getattr(message, f"number_of_{name}_suboperations", None)
            if value is not None:
                setattr(self, name, value)
        self.error_comment = getattr(message, "error_comment", None) or self.error_comment
        self.offending = getattr(message, "offending_element", None) or self.offending
        self.responses += 1

    def describe(self) -> str:
        text = describe(self.status)
        if self.error_comment:
            text += f": {self.error_comment}"
        return text


# ------------------------------------------------------------------ operations

Progress = Callable[[RetrieveOutcome], None]
OnMatch = Callable[[Dataset], Awaitable[None] | None]


async def find(
    conn: DicomConnection,
    sop_class: str,
    identifier: Dataset,
    *,
    on_match: Callable[[Dataset], None] | None = None,
    cancel: trio.Event | None = None,
    cancel_after: int | None = None,
    decode_matches: bool = True,
) -> tuple[FindOutcome, list[Dataset]]:
    """C-FIND `identifier`; returns the final outcome and the matches (also given to `on_match` as they
    arrive). A C-CANCEL goes out when `cancel` is set or after `cancel_after` matches. Without
    `decode_matches` the matches are left as the encoded bytes received (to time a server, not pydicom)."""
    ctx = context(conn, sop_class, "the C-FIND SOP Class")
    rq = CFindRQ(message_id=conn.next_message_id(), affected_sop_class_uid=sop_class)
    outcome = FindOutcome()
    matches: list[Dataset] = []
    canceller = _Canceller(conn, ctx.id, rq.message_id, cancel)
    await conn.send_message(ctx.id, rq, encode(identifier, ctx.transfer_syntax))

    async def read_responses() -> None:
        while True:
            msg, data = await _next_response(conn, rq.message_id, None)
            outcome.status = int(msg.status)
            if category(outcome.status) is not StatusCategory.PENDING:
                outcome.error_comment = getattr(msg, "error_comment", None) or ""
                outcome.offending = getattr(msg, "offending_element", None) or ()
                return
            if data is not None and not decode_matches:
                matches.append(data)  # type: ignore[arg-type]
                outcome.matches += 1
            elif data is not None:
                try:
                    match = decode(data, ctx.transfer_syntax, eager=True)
                except DataSetError as exc:
                    log.warning("%s: an undecodable C-FIND match skipped: %s", conn.remote, exc)
                    continue
                matches.append(match)
                outcome.matches += 1
                if on_match is not None:
                    on_match(match)
            if cancel_after is not None and outcome.matches >= cancel_after:
                await canceller.send()

    await canceller.around(read_responses)
    outcome.cancel_sent = canceller.sent
    return outcome, matches


async def move(
    conn: DicomConnection,
    sop_class: str,
    identifier: Dataset,
    destination: str,
    *,
    on_progress: Progress | None = None,
    cancel: trio.Event | None = None,
) -> RetrieveOutcome:
    """C-MOVE `identifier` to `destination` (an AE title the peer knows); returns the final counts."""
    ctx = context(conn, sop_class, "the C-MOVE SOP Class")
    rq = CMoveRQ(message_id=conn.next_message_id(), affected_sop_class_uid=sop_class, move_destination=destination)
    return await _retrieve(conn, ctx, rq, identifier, None, on_progress, cancel)


async def get(
    conn: DicomConnection,
    sop_class: str,
    identifier: Dataset,
    *,
    store: Handler,
    on_progress: Progress | None = None,
    cancel: trio.Event | None = None,
) -> RetrieveOutcome:
    """C-GET `identifier`; the C-STORE sub-operations are answered by `store` (module invariants)."""
    ctx = context(conn, sop_class, "the C-GET SOP Class")
    if not any(c.requestor_is_scp for c in conn.contexts.values()):
        raise QueryError(f"{conn.remote} accepted no storage SOP Class with us as SCP: C-GET cannot deliver")
    rq = CGetRQ(message_id=conn.next_message_id(), affected_sop_class_uid=sop_class)
    return await _retrieve(conn, ctx, rq, identifier, store, on_progress, cancel)


async def _retrieve(
    conn: DicomConnection,
    ctx: PresentationContext,
    rq: CMoveRQ | CGetRQ,
    identifier: Dataset,
    store: Handler | None,
    on_progress: Progress | None,
    cancel: trio.Event | None,
) -> RetrieveOutcome:
    outcome = RetrieveOutcome()
    canceller = _Canceller(conn, ctx.id, rq.message_id, cancel)

    async def counting_store(c: DicomConnection, pc: PresentationContext, msg: object) -> None:
        assert store is not None
        await store(c, pc, msg)  # type: ignore[arg-type]
        outcome.stored += 1

    await conn.send_message(ctx.id, rq, encode(identifier, ctx.transfer_syntax))

    async def read_responses() -> None:
        while True:
            msg, data = await _next_response(conn, rq.message_id, counting_store if store else None)
            outcome.update(msg)
            if data is not None:
                outcome.failed_uids = _failed_uids(data, ctx.transfer_syntax)
            if on_progress is not None:
                on_progress(outcome)
            if category(outcome.status) is not StatusCategory.PENDING:
                return

    await canceller.around(read_responses)
    outcome.cancel_sent = canceller.sent
    return outcome


def _failed_uids(data: bytes, transfer_syntax: str) -> list[str]:
    """Failed SOP Instance UID List (0008,0058) of a final C-MOVE/C-GET response (PS3.4 C.4.2.1.4)."""
    try:
        ds = decode(data, transfer_syntax, eager=True)
    except DataSetError:
        return []
    value = ds.get("FailedSOPInstanceUIDList")
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]


class _Canceller:
    """Sends one C-CANCEL-RQ for `message_id` when asked or when `event` is set."""

    def __init__(self, conn: DicomConnection, context_id: int, message_id: int, event: trio.Event | None) -> None:
        self.conn, self.context_id, self.message_id, self.event = conn, context_id, message_id, event
        self.sent = False

    async def around(self, read_responses: Callable[[], Awaitable[None]]) -> None:
        """Run `read_responses` while watching the event; an error it raises comes out as itself, not
        wrapped in an exception group by the watcher's nursery."""
        if self.event is None:
            await read_responses()
            return
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch)
                await read_responses()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _watch(self) -> None:
        assert self.event is not None
        await self.event.wait()
        await self.send()

    async def send(self) -> None:
        if self.sent:
            return
        self.sent = True
        log.info("%s: C-CANCEL for message %d", self.conn.remote, self.message_id)
        try:
            await self.conn.send_message(self.context_id, CCancelRQ(message_id_being_responded_to=self.message_id))
        except AssociationAborted:
            pass  # the response loop reports the end of the association


async def _next_response(
    conn: DicomConnection, message_id: int, incoming: Handler | None
) -> tuple[object, bytes | None]:
    """The next response to `message_id`; requests from the peer in between go to `incoming` (C-STORE
    sub-operations of a C-GET) or are refused. The DIMSE deadline restarts with every message."""
    while True:
        with trio.move_on_after(conn.timeouts.dimse) as scope:
            event = await conn.next_event()
        if scope.cancelled_caught:
            with trio.CancelScope(shield=True):
                await conn.abort(linger=0, why=f"no DIMSE message within {conn.timeouts.dimse:g} s")
            raise TimeoutExpired(f"{conn.remote} sent nothing within {conn.timeouts.dimse:g} s")
        if not isinstance(event, CommandReceived):
            if isinstance(event, (DataSetFragment, MessageComplete)):
                continue
            raise unexpected_event(event, "a DIMSE response")
        msg = event.message
        responding_to = getattr(msg, "message_id_being_responded_to", None)
        if responding_to is None:  # a request from the peer: a C-STORE sub-operation, or refused
            ctx = conn.contexts[event.context_id]
            if incoming is None or isinstance(msg, UnusableRequest) or not ctx.requestor_is_scp:
                await refuse_request(conn, ctx, msg)
            else:
                await incoming(conn, ctx, msg)  # type: ignore[arg-type]
            continue
        if responding_to != message_id:
            await conn.abort(why=f"response to message {responding_to}, expected {message_id}")
            raise AssociationAborted(f"response to message {responding_to}, expected {message_id}", local=True)
        data = await conn.read_dataset(event.context_id) if msg.has_dataset else None
        return msg, data


def unique_key(level: str) -> str:
    """The keyword of `level`'s unique key (PS3.4 C.6.1.1, C.6.2.1)."""
    return str(UNIQUE_KEYS[level][0])


__all__ = [
    "FindOutcome", "GET_STORAGE_KEYWORDS", "QueryError", "RetrieveOutcome", "context", "find", "get",
    "get_storage_classes", "move", "proposals", "unique_key",
]
