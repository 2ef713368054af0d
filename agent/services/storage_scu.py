"""Storage Service Class SCU (PS3.4 Annex B): send Part 10 files, streamed from disk.

Invariants:
- A file whose transfer syntax the peer accepted is sent from disk in PDU-sized fragments without
  decoding (`send_message_from_file`), so memory stays bounded for any object size.
- Otherwise an uncompressed file is transcoded with pydicom into the accepted uncompressed syntax;
  a compressed file with no matching context fails for that file only (we do not decompress).
  Transcoding reads and encodes a whole object, so it runs in a worker thread, never on the event loop.
- Presentation contexts come from the files: one per (SOP class, transfer syntax) seen, plus one per
  SOP class offering all uncompressed syntaxes for transcoding; more than 128 are split across
  associations.
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import trio

from agent.dimse import CStoreRQ
from agent.dimse.status import StatusCategory, category
from agent.errors import AgentError
from agent.net.connection import DicomConnection, ReadAhead
from agent.net.requests import Reply, await_response
from agent.store.dicomfile import FileMeta, NotDicom, read_meta
from agent.ul.negotiation import (
    EXPLICIT_VR_BE,
    IMPLICIT_VR_LE,
    UNCOMPRESSED,
    PresentationContext,
    ProposedContext,
)
from agent.ul.values import value

if TYPE_CHECKING:
    from pydicom import Dataset

log = logging.getLogger("agent.storage")


# Plain classes and `value` rather than dataclasses: `dicom-agent store` imports this module at every
# start, and making a dataclass costs 0.25-0.45 ms (agent/ul/values.py).


@value
class SendItem:
    """A Part 10 file to send and its File Meta Information."""

    path: Path
    meta: FileMeta

    @property
    def size(self) -> int:
        return self.path.stat().st_size - self.meta.dataset_offset


class ScanResult:
    """The DICOM files found, and the paths skipped with why."""

    __slots__ = ("items", "skipped")

    def __init__(self) -> None:
        self.items: list[SendItem] = []
        self.skipped: list[tuple[Path, str]] = []


def scan(paths: Iterable[str | Path]) -> ScanResult:
    """Files and folders (recursive) → the DICOM Part 10 files among them; others are reported."""
    result = ScanResult()
    for raw in paths:
        path = Path(raw)
        files: Iterator[Path]
        if path.is_dir():
            files = (p for p in sorted(path.rglob("*")) if p.is_file())
        elif path.exists():
            files = iter([path])
        else:
            result.skipped.append((path, "no such file or folder"))
            continue
        for file in files:
            try:
                result.items.append(SendItem(file, read_meta(file)))
            except NotDicom as exc:
                result.skipped.append((file, f"not a DICOM file: {exc}"))
            except OSError as exc:
                result.skipped.append((file, f"cannot read: {exc.strerror or exc}"))
    return result


def proposals_for(items: Sequence[SendItem]) -> list[list[ProposedContext]]:
    """Presentation contexts for `items`, split into groups of at most 128 (one association each)."""
    wanted: dict[tuple[str, tuple[str, ...]], None] = {}
    for item in items:
        sop, ts = item.meta.sop_class_uid, item.meta.transfer_syntax_uid
        if ts not in UNCOMPRESSED:
            wanted[(sop, (ts,))] = None
        wanted[(sop, UNCOMPRESSED)] = None
    contexts = [ProposedContext(sop, syntaxes) for sop, syntaxes in wanted]
    return [contexts[i : i + 128] for i in range(0, len(contexts), 128)] or [[]]


def choose_context(conn: DicomConnection, meta: FileMeta) -> PresentationContext | None:
    exact = conn.context_for(meta.sop_class_uid, meta.transfer_syntax_uid)
    if exact is not None:
        return exact
    if meta.transfer_syntax_uid in UNCOMPRESSED:
        return conn.context_for(meta.sop_class_uid)  # any uncompressed one: we transcode
    return None


def transcode(path: Path, transfer_syntax: str) -> bytes:
    """The data set of an uncompressed file re-encoded in another uncompressed transfer syntax.

    Blocking (a whole-object read and encode): call it in a worker thread. pydicom writes OW/OL/OF/OD/OV
    values as the bytes it read, so when the byte order changes they are swapped here, word by word
    (PS3.5 7.3: these VRs are encoded in the transfer syntax's byte order).
    """
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import correct_ambiguous_vr, write_dataset

    ds = dcmread(path)
    source_little = ds.file_meta.TransferSyntaxUID != EXPLICIT_VR_BE
    target_little = transfer_syntax != EXPLICIT_VR_BE
    buffer = DicomBytesIO()
    buffer.is_little_endian = target_little
    buffer.is_implicit_VR = transfer_syntax == IMPLICIT_VR_LE
    ds.file_meta = None  # type: ignore[assignment]
    if source_little != target_little:
        correct_ambiguous_vr(ds, source_little)  # "OB or OW" and the like: the width decides the swap
        _swap_binary_words(ds)
    write_dataset(buffer, ds)
    return buffer.getvalue()


#: Binary VRs made of fixed-width words, by word width (PS3.5 Table 6.2-1).
_WORD_WIDTH = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _swap_binary_words(ds: Dataset) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or ():
                _swap_binary_words(item)
            continue
        width = _WORD_WIDTH.get(elem.VR)
        value = elem.value
        if width is None or not isinstance(value, bytes | bytearray) or len(value) % width:
            continue
        swapped = bytearray(len(value))
        for i in range(width):
            swapped[i::width] = value[width - 1 - i :: width]
        elem.value = bytes(swapped)


class StoreFailed(AgentError):
    """A file could not be sent (no usable context, or a transcoding error)."""


class Prepared:
    """A file ready to go: its context, and when it is sent as stored, the open file and data-set
    size (and, once read ahead, its first block)."""

    __slots__ = ("item", "ctx", "rq", "file", "size", "ahead")

    def __init__(self, item: SendItem, ctx: PresentationContext, rq: CStoreRQ) -> None:
        self.item, self.ctx, self.rq = item, ctx, rq
        self.file: BinaryIO | None = None
        self.size = 0
        self.ahead: ReadAhead | None = None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def prepare_file(
    conn: DicomConnection, item: SendItem, *, read_ahead: bool = False,
    move_originator: tuple[str, int] | None = None,
) -> Prepared:
    meta = item.meta
    ctx = choose_context(conn, meta)
    if ctx is None:
        raise StoreFailed(
            f"{item.path}: the peer accepted no presentation context for SOP class "
            f"{meta.sop_class_uid} in transfer syntax {meta.transfer_syntax_uid}"
        )
    extra = {}
    if move_originator is not None:
        extra = {"move_originator_ae_title": move_originator[0], "move_originator_message_id": move_originator[1]}
    rq = CStoreRQ(
        message_id=conn.next_message_id(),
        affected_sop_class_uid=meta.sop_class_uid,
        affected_sop_instance_uid=meta.sop_instance_uid,
        **extra,
    )
    prepared = Prepared(item, ctx, rq)
    if ctx.transfer_syntax == meta.transfer_syntax_uid:
        try:
            prepared.file = open(item.path, "rb")  # noqa: SIM115 (closed by _send or close)
        except OSError as exc:
            raise StoreFailed(f"{item.path}: cannot read: {exc.strerror or exc}") from exc
        prepared.size = prepared.file.seek(0, io.SEEK_END) - meta.dataset_offset
        if read_ahead:
            prepared.ahead = conn.read_ahead(ctx.id, prepared.file, meta.dataset_offset, prepared.size, rq)
    return prepared


async def send_prepared(conn: DicomConnection, prepared: Prepared) -> int:
    """Send the C-STORE-RQ and its data set; returns its message ID (the response is not awaited)."""
    meta, ctx, rq = prepared.item.meta, prepared.ctx, prepared.rq
    try:
        if prepared.file is not None:
            await conn.send_message_from_file(ctx.id, rq, prepared.file, meta.dataset_offset, prepared.size,
                                              ahead=prepared.ahead)
        else:
            try:
                data = await trio.to_thread.run_sync(transcode, prepared.item.path, ctx.transfer_syntax)
            except Exception as exc:  # pydicom raises many kinds for odd files
                raise StoreFailed(f"{prepared.item.path}: cannot transcode to {ctx.transfer_syntax}: {exc}") from exc
            await conn.send_message(ctx.id, rq, data)
    finally:
        prepared.close()
    return rq.message_id


async def send_file(conn: DicomConnection, item: SendItem, *, move_originator: tuple[str, int] | None = None) -> Reply:
    """C-STORE one file over an open association; returns the peer's response."""
    message_id = await send_prepared(conn, prepare_file(conn, item, move_originator=move_originator))
    return await await_response(conn, message_id)


async def send_files(
    conn: DicomConnection, items: Sequence[SendItem]
) -> AsyncIterator[tuple[SendItem, Reply | None, str | None]]:
    """C-STORE `items` in turn over one association: yields `(item, reply, None)`, or
    `(item, None, why)` for a file that could not be sent (the others still are).

    Pipelined (one operation outstanding, as negotiated by default, PS3.7 D.3.3.3): once a file's
    data set is out, the next file is opened and its first block read before the response is
    awaited (and its command encoded), so that work overlaps the peer's on the current one instead
    of following it.
    """
    upcoming: Prepared | StoreFailed | None = None
    try:
        for index, item in enumerate(items):
            prepared, upcoming = upcoming, None
            try:
                if prepared is None:
                    prepared = prepare_file(conn, item)
                elif isinstance(prepared, StoreFailed):
                    raise prepared
                message_id = await send_prepared(conn, prepared)
            except StoreFailed as exc:
                yield item, None, str(exc)
                continue
            if index + 1 < len(items):
                try:
                    upcoming = prepare_file(conn, items[index + 1], read_ahead=True)
                except StoreFailed as exc:
                    upcoming = exc
            yield item, await await_response(conn, message_id), None
    finally:
        if isinstance(upcoming, Prepared):
            upcoming.close()


class StoreSummary:
    """What a store run did: counts, bytes of the data sets sent, seconds, and each failure with why."""

    __slots__ = ("sent", "warnings", "failed", "bytes", "seconds", "failures")

    def __init__(self) -> None:
        self.sent = self.warnings = self.failed = self.bytes = 0
        self.seconds = 0.0
        self.failures: list[tuple[Path, str]] = []

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def record(self, item: SendItem, reply: Reply | None, error: str | None = None) -> None:
        if reply is not None:
            cat = category(reply.status)
            if cat is StatusCategory.SUCCESS:
                self.sent += 1
                self.bytes += item.size
                return
            if cat is StatusCategory.WARNING:
                self.sent += 1
                self.warnings += 1
                self.bytes += item.size
                return
            from agent.dimse.status import describe

            error = describe(reply.status)
        self.failed += 1
        self.failures.append((item.path, error or "failed"))
