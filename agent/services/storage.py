"""Storage Service Class SCP (PS3.4 Annex B; statuses PS3.4 Table B.2-1 and the general ones of PS3.7 Annex C).

Invariants:
- Memory stays bounded whatever the object's size: data set fragments (views of their PDUs, not
  copied) are handed on every `STREAM_SIZE` to be appended to the store's file with one writev, and
  an association whose spool thread has more than `MAX_QUEUED` bytes still to write waits for it.
- Nothing that can block for milliseconds runs on the event loop. Each association receiving
  instances has a spool thread (`blocking.Spool`, started by its first C-STORE, gone after 5 idle
  seconds) that does its file work in order while the event loop reads on: the file is created and
  appended to every `STREAM_SIZE` while the data set arrives, then checked and flushed, and the same
  thread renames and commits the index row holding the database's lock (`Blocking.call`). The event
  loop waits once per instance, for that end: an object under `STREAM_SIZE` costs one round trip to
  the thread in all (on two busy cores more, earlier hand-offs only cost CPU: the thread gets no core
  while the sender and the event loop have them). Instances of several associations that reach the
  commit together share one COMMIT (`InstanceStore.install_group`, group commit). A commit that
  waits for the database's write lock (a CLI command holding it) therefore stalls only the
  associations that are committing; the others keep receiving and flushing.
- C-STORE-RSP Success (or a warning) is sent only after the data is flushed and the index row (which
  names the flushed file) committed, see agent/store/instances.py; forwarding jobs are queued in that
  same transaction.
- A request we refuse (command SOP Class not the context's, invalid UID, out of space, unreadable data
  set, a store failure) still has its data set drained and gets a status, so the association stays
  usable; an association that breaks mid-object leaves no file and no row.
- One info line per C-STORE: calling AE, SOP Class name, SOP Instance UID, size, status.
"""

from __future__ import annotations

import logging
import sqlite3
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from pydicom.uid import UID_dictionary

from agent.dimse import CStoreRQ, DataSetFragment, MessageComplete, encode_message
from agent.dimse.status import Status
from agent.errors import StoreError
from agent.net.connection import DicomConnection, unexpected_event
from agent.net.server import ServiceRegistry
from agent.services.blocking import Blocking, Spool
from agent.services.storage_classes import ALL_STORAGE_SOP_CLASSES, sop_class_name
from agent.store.dicomfile import DataSetError, InvalidUID, validate_uid
from agent.store.instances import (
    SOP_CLASS_MISMATCH_WARNING,
    SOP_INSTANCE_MISMATCH_WARNING,
    CommitResult,
    Incoming,
    InstanceStore,
    OutOfResources,
    StoredInstance,
)
from agent.ul.association import Role
from agent.ul.negotiation import UNCOMPRESSED, PresentationContext, SyntaxSupport

log = logging.getLogger("agent.storage")

#: Standard transfer syntaxes newer than pydicom's registry (PS3.6 Table A-1), by UID and name. Listed
#: here because importing pynetdicom adds them to that registry: without this list the accepted set (and
#: the conformance statement) would depend on what the process imported before this module.
NEWER_TRANSFER_SYNTAXES: dict[str, str] = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
}
#: Every standard transfer syntax other than the three uncompressed ones.
COMPRESSED_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    uid for uid, entry in UID_dictionary.items() if entry[1] == "Transfer Syntax" and uid not in UNCOMPRESSED
) | frozenset(NEWER_TRANSFER_SYNTAXES)

OnCommit = Callable[[sqlite3.Connection, StoredInstance], None]

#: Every status the C-STORE SCP answers (PS3.4 Table B.2-1, PS3.7 Annex C); the conformance statement
#: lists these, and a test checks that the handler answers no status missing here.
SCP_STATUSES: tuple[int, ...] = (
    Status.SUCCESS, Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, Status.SOP_CLASS_NOT_SUPPORTED,
    Status.CANNOT_UNDERSTAND, Status.OUT_OF_RESOURCES, Status.PROCESSING_FAILURE,
)

#: Data set bytes gathered before they are handed to the spool thread to append (one writev).
STREAM_SIZE = 1024 * 1024
#: Data set bytes handed to the spool thread and not yet written, beyond which the association waits for
#: it (the disk is slower than the network): bounds memory per association.
MAX_QUEUED = 4 * 1024 * 1024


@dataclass
class _Outcome:
    status: int
    comment: str = ""
    size: int = 0
    note: str = ""


@dataclass
class StorageSCP:
    store: InstanceStore
    blocking: Blocking
    on_commit: OnCommit | None = None
    #: Called in trio context after each instance is durably stored (e.g. to wake forwarders).
    after_commit: Callable[[StoredInstance], None] | None = None
    #: Called in trio context after each instance is durably stored, with its association (audit trail).
    on_stored: Callable[[DicomConnection, StoredInstance], None] | None = None
    received: int = 0
    #: One spool (file work thread, see `Spool`) per association receiving instances.
    _spools: weakref.WeakKeyDictionary[DicomConnection, Spool] = field(
        default_factory=weakref.WeakKeyDictionary, repr=False)

    def register(
        self,
        registry: ServiceRegistry,
        *,
        sop_classes: tuple[str, ...] = ALL_STORAGE_SOP_CLASSES,
        transfer_syntaxes: tuple[str, ...] = UNCOMPRESSED,
        accept_compressed: bool = True,
    ) -> None:
        support = SyntaxSupport(
            transfer_syntaxes,
            compressed=COMPRESSED_TRANSFER_SYNTAXES if accept_compressed else frozenset(),
        )
        registry.add(sop_classes, support, {CStoreRQ: self.handle})  # type: ignore[dict-item]

    async def handle(self, conn: DicomConnection, ctx: PresentationContext, rq: CStoreRQ) -> None:
        # The usual answer is made now, while the data set is still on its way, not after it is stored.
        success = rq.response(Status.SUCCESS)
        success_command = encode_message(success)
        outcome = await self._receive(conn, ctx, rq)
        try:
            if outcome.status == Status.SUCCESS:
                await conn.send_message(ctx.id, success, command=success_command)
            else:
                kw = {"error_comment": outcome.comment[:64]} if outcome.comment else {}
                await conn.send_message(ctx.id, rq.response(outcome.status, **kw))
        finally:
            # After the response, not before: formatting and writing the line (the default log level
            # is INFO) is then no longer between the stored data and the peer's next request.
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "C-STORE from %s: %s %s, %d bytes: %04X %s%s",
                    conn.calling_ae or conn.remote, sop_class_name(rq.affected_sop_class_uid),
                    rq.affected_sop_instance_uid, outcome.size, outcome.status,
                    outcome.comment or "stored", f" ({outcome.note})" if outcome.note else "",
                )

    def _spool_of(self, conn: DicomConnection) -> Spool:
        spool = self._spools.get(conn)
        if spool is None:
            spool = self._spools[conn] = Spool(f"store {conn.remote}")
            # Its thread and eventfd end with the association, not 5 idle seconds later: a burst of
            # one-image associations would otherwise hold one of each per association for 5 s.
            weakref.finalize(conn, spool.close)
        return spool

    async def _receive(self, conn: DicomConnection, ctx: PresentationContext, rq: CStoreRQ) -> _Outcome:
        uid = rq.affected_sop_instance_uid
        if rq.affected_sop_class_uid != ctx.abstract_syntax:
            # A presentation context carries messages of its abstract syntax only (PS3.8 7.1.1.13); a
            # C-STORE naming another SOP Class asks for one that was not negotiated here: "Refused: SOP
            # Class not supported" (PS3.7 Annex C, general status 0122H), and nothing is stored.
            size = await _drain(conn)
            log.warning(
                "%s: C-STORE %s refused: command SOP Class %s on presentation context %d of %s",
                conn.remote, uid, rq.affected_sop_class_uid, ctx.id, ctx.abstract_syntax,
            )
            return _Outcome(Status.SOP_CLASS_NOT_SUPPORTED, "SOP Class not negotiated on this context", size)
        try:
            for value in (rq.affected_sop_class_uid, uid, ctx.transfer_syntax):
                validate_uid(value)
        except InvalidUID as exc:
            size = await _drain(conn)
            log.warning("%s: C-STORE refused, invalid UID: %s", conn.remote, exc)
            return _Outcome(Status.CANNOT_UNDERSTAND, "invalid UID in the command", size)

        # The sender is the peer: on an association we requested (C-GET sub-operations, PS3.4 C.4.3)
        # that is the called AE, not us.
        sender, receiver = conn.calling_ae, conn.called_ae
        if conn.assoc.role is Role.REQUESTOR:
            sender, receiver = receiver, sender

        def begin() -> Incoming:
            return self.store.begin(
                rq.affected_sop_class_uid, uid, ctx.transfer_syntax, calling_ae=sender, called_ae=receiver,
            )

        # The file work runs on the association's spool thread in arrival order while more of the data
        # set arrives: every STREAM_SIZE of fragments (their PDUs' own memory, never copied) is appended
        # with one writev (the first creates the file). The event loop only waits for the end: the
        # rest written, the check, the flush and the index commit of the whole object.
        spool = self._spool_of(conn)
        receiving = _Receiving(begin)
        pending: list[memoryview | bytes] = []
        pending_size = 0
        size = 0
        result: CommitResult | None = None
        try:
            while True:
                event = await conn.next_event()
                if isinstance(event, DataSetFragment):
                    size += len(event.data)
                    pending.append(event.data)
                    pending_size += len(event.data)
                    if pending_size < STREAM_SIZE:
                        continue
                    spool.submit(receiving.write, pending)
                    receiving.submitted += pending_size
                    pending, pending_size = [], 0
                    if receiving.submitted - receiving.written > MAX_QUEUED:
                        await spool.run(_nothing)  # the disk is slower than the network: wait for it
                elif isinstance(event, MessageComplete):
                    break
                else:
                    raise unexpected_event(event, "the C-STORE data set")
            rest, pending = pending, []
            try:
                result = await spool.run(receiving.finish, rest, self.store, self.blocking, self.on_commit)
            except OutOfResources as exc:
                if receiving.failed_writing:
                    log.error("%s: out of space while receiving %s: %s", conn.remote, uid, exc)
                else:
                    log.error("%s: C-STORE %s refused: %s", conn.remote, uid, exc)
                return _Outcome(Status.OUT_OF_RESOURCES, "out of resources: not enough storage space", size)
            except DataSetError as exc:
                log.warning("%s: C-STORE %s refused, data set unreadable: %s", conn.remote, uid, exc)
                return _Outcome(Status.CANNOT_UNDERSTAND, "cannot understand: data set unreadable", size)
            except StoreError as exc:
                if receiving.failed_writing:
                    log.error("%s: cannot write %s: %s", conn.remote, uid, exc)
                    return _Outcome(Status.PROCESSING_FAILURE, "processing failure: cannot write", size)
                log.error("%s: C-STORE %s failed: %s", conn.remote, uid, exc)
                return _Outcome(Status.PROCESSING_FAILURE, "processing failure: cannot store", size)
        finally:
            if result is None:
                # Refused, or the association broke (or the agent stops) mid-object: nothing of it may
                # stay. After the jobs queued before; idempotent (a failed finish already removed it).
                with trio.CancelScope(shield=True):
                    await spool.run(receiving.abort)
        self.received += 1
        if self.after_commit is not None:
            self.after_commit(result.stored)
        if self.on_stored is not None:
            self.on_stored(conn, result.stored)
        return self._outcome(result, size)

    @staticmethod
    def _outcome(result: CommitResult, size: int) -> _Outcome:
        note = ""
        if result.duplicate:
            note = "received again, kept the first copy" if result.kept_existing else "received again, replaced"
        # B007 "Data Set does not match SOP Class" (PS3.4 Table B.2-1): stored, but say which UID differs.
        if SOP_CLASS_MISMATCH_WARNING in result.warnings:
            return _Outcome(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "data set SOP Class UID differs from command", size, note)
        if SOP_INSTANCE_MISMATCH_WARNING in result.warnings:
            return _Outcome(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "data set SOP Instance UID differs from command", size, note)
        return _Outcome(Status.SUCCESS, "", size, note)


def _nothing() -> None:
    return None


class _Receiving:
    """One data set being received, as its spool thread sees it: the jobs `write` (any number; the
    first creates the file) and then `finish` or `abort` run there in that order. A failure to create
    or write the file is kept (the partial file is already gone) and raised by `finish`, so the rest
    of the data set is drained and then answered with it."""

    __slots__ = ("_begin", "incoming", "error", "failed_writing", "submitted", "written")

    def __init__(self, begin: Callable[[], Incoming]) -> None:
        self._begin = begin
        self.incoming: Incoming | None = None
        self.error: BaseException | None = None
        self.failed_writing = False  # the error came from creating or writing the file
        self.submitted = 0  # bytes queued by the event loop (only it writes this)
        self.written = 0  # bytes the spool thread is done with (only it writes this)

    def write(self, chunks: list[memoryview | bytes], *, keep: bool = False) -> None:
        try:
            if self.error is None:
                if self.incoming is None:
                    self.incoming = self._begin()
                self.incoming.write_all(chunks)
        except BaseException as exc:  # noqa: BLE001 - raised by finish
            self.error, self.failed_writing = exc, True
        finally:
            self.written += sum(len(c) for c in chunks)
            if not keep:
                chunks.clear()  # no reference to the PDUs' memory outlives the write

    def finish(self, rest: list[memoryview | bytes], store: InstanceStore, blocking: Blocking,
               on_commit: OnCommit | None) -> CommitResult:
        """Write what is left, check the data set and flush the file (no database, so beside other
        associations), then rename and commit the index row (the acknowledgement) with the database to
        itself, in one COMMIT with whatever other associations are committing at that moment (group
        commit). On any failure nothing of the instance is left."""
        whole = self.incoming is None and self.error is None  # `rest` is all of it: checked in memory
        self.write(rest, keep=whole)
        if self.error is not None:
            raise self.error
        incoming = self.incoming
        assert incoming is not None
        try:
            incoming.prepare(rest if whole else None)
            rest.clear()  # no reference to the PDUs' memory outlives the check
            return store.install_group(incoming, on_commit, blocking.call)
        finally:
            incoming.abort()  # idempotent; after an install it does nothing

    def abort(self) -> None:
        if self.incoming is not None:
            self.incoming.abort()


async def _drain(conn: DicomConnection) -> int:
    """Read and discard the rest of the current message's data set; returns how many bytes it had."""
    size = 0
    while True:
        event = await conn.next_event()
        if isinstance(event, MessageComplete):
            return size
        if not isinstance(event, DataSetFragment):
            raise unexpected_event(event, "the rest of a refused data set")
        size += len(event.data)


__all__ = ["ALL_STORAGE_SOP_CLASSES", "COMPRESSED_TRANSFER_SYNTAXES", "MAX_QUEUED", "STREAM_SIZE", "StorageSCP"]
