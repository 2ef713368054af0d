"""Storage Service Class SCP (PS3.4 Annex B; seed Table 2, statuses Table 67 / S-24).

Invariants (DESIGN.md "Storage path"):
- The data set streams from P-DATA fragments straight into the store's temporary file; memory stays
  bounded whatever the object's size.
- C-STORE-RSP Success (or a warning) is sent only after the file and its directory are fsynced, renamed
  and the index row committed; forwarding jobs are queued in that same transaction.
- A request we refuse (invalid UID, out of space) still has its data set drained, so the association
  stays usable; an association that breaks mid-object leaves no file and no row.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.uid import UID_dictionary

from agent.dimse import CStoreRQ, DataSetFragment, MessageComplete
from agent.dimse.status import Status
from agent.net.connection import DicomConnection, _unexpected
from agent.net.server import ServiceRegistry
from agent.services.blocking import Blocking
from agent.services.storage_classes import ALL_STORAGE_SOP_CLASSES, sop_class_name
from agent.store.dicomfile import DataSetError, InvalidUID
from agent.store.instances import (
    SOP_MISMATCH_WARNING,
    InstanceStore,
    OutOfResources,
    StoredInstance,
)
from agent.ul.negotiation import UNCOMPRESSED, PresentationContext, SyntaxSupport

log = logging.getLogger("agent.storage")


#: Every standard transfer syntax other than the three uncompressed ones.
COMPRESSED_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    uid for uid, entry in UID_dictionary.items() if entry[1] == "Transfer Syntax" and uid not in UNCOMPRESSED
)

OnCommit = Callable[[sqlite3.Connection, StoredInstance], None]

#: Objects up to this size are committed (checked, fsynced, indexed) on the event loop itself. Measured
#: here: a 0.5 MB commit takes ~3 ms inline but ~7 ms through trio.to_thread, which halves the small-image
#: rate; an fsync of a few MiB blocks the loop for about a millisecond. Larger objects, whose fsync can
#: take seconds, always go through the thread so other associations keep being served.
INLINE_COMMIT_LIMIT = 4 * 1024 * 1024


@dataclass
class StorageSCP:
    store: InstanceStore
    blocking: Blocking
    on_commit: OnCommit | None = None
    #: Called in trio context after each instance is durably stored (e.g. to wake forwarders).
    after_commit: Callable[[StoredInstance], None] | None = None
    received: int = 0

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
        status, comment = await self._receive(conn, ctx, rq)
        kw = {"error_comment": comment[:64]} if comment and status != Status.SUCCESS else {}
        await conn.send_message(ctx.id, rq.response(status, **kw))

    async def _receive(self, conn: DicomConnection, ctx: PresentationContext, rq: CStoreRQ) -> tuple[int, str]:
        uid = rq.affected_sop_instance_uid
        try:
            incoming = self.store.begin(
                rq.affected_sop_class_uid, uid, ctx.transfer_syntax,
                calling_ae=conn.calling_ae, called_ae=conn.called_ae,
            )
        except InvalidUID as exc:
            await _drain(conn)
            log.warning("%s: C-STORE refused, invalid UID: %s", conn.remote, exc)
            return Status.CANNOT_UNDERSTAND, f"invalid SOP Instance UID"
        except OutOfResources as exc:
            await _drain(conn)
            log.error("%s: C-STORE refused: %s", conn.remote, exc)
            return Status.OUT_OF_RESOURCES, "out of resources: not enough storage space"
        try:
            failure: tuple[int, str] | None = None
            while True:
                event = await conn.next_event()
                if isinstance(event, DataSetFragment):
                    if failure is None:
                        try:
                            incoming.write(event.data)
                        except OutOfResources as exc:
                            log.error("%s: disk full while receiving %s: %s", conn.remote, uid, exc)
                            incoming.abort()
                            failure = (Status.OUT_OF_RESOURCES, "out of resources: disk full")
                elif isinstance(event, MessageComplete):
                    break
                else:
                    raise _unexpected(event, "the C-STORE data set")
            if failure is not None:
                return failure
            try:
                if incoming.bytes_received <= INLINE_COMMIT_LIMIT and self.blocking.limiter.borrowed_tokens == 0:
                    result = incoming.commit(on_commit=self.on_commit)
                else:
                    result = await self.blocking.run(lambda: incoming.commit(on_commit=self.on_commit))
            except DataSetError as exc:
                log.warning("%s: C-STORE %s refused, data set unreadable: %s", conn.remote, uid, exc)
                return Status.CANNOT_UNDERSTAND, "cannot understand: data set unreadable"
            except OutOfResources as exc:
                log.error("%s: C-STORE %s failed: %s", conn.remote, uid, exc)
                return Status.OUT_OF_RESOURCES, "out of resources"
        finally:
            incoming.abort()  # idempotent; after a commit it only closes what is left
        self.received += 1
        if self.after_commit is not None:
            self.after_commit(result.stored)
        if result.duplicate:
            log.info("%s: %s received again (%s)", conn.remote, uid,
                     "kept the first copy" if result.kept_existing else "replaced")
        if SOP_MISMATCH_WARNING in result.warnings:
            return Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "data set does not match SOP class"
        return Status.SUCCESS, ""


async def _drain(conn: DicomConnection) -> None:
    """Read and discard the rest of the current message's data set."""
    while True:
        event = await conn.next_event()
        if isinstance(event, MessageComplete):
            return
        if not isinstance(event, DataSetFragment):
            raise _unexpected(event, "the rest of a refused data set")


__all__ = ["ALL_STORAGE_SOP_CLASSES", "COMPRESSED_TRANSFER_SYNTAXES", "StorageSCP"]
