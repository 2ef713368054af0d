"""C-GET sub-operations (PS3.4 C.4.3): C-STORE back on the requestor's own association.

Invariants:
- A sub-operation uses a presentation context of the instance's SOP class on which the requestor took
  the SCP role (SCP/SCU Role Selection, PS3.7 D.3.3.4): the stored transfer syntax if accepted (sent
  from disk without decoding), else an accepted uncompressed one (transcoded in a worker thread). No
  such context: the sub-operation fails without anything being sent.
- While it waits for the C-STORE-RSP, a C-CANCEL-RQ for the C-GET is noted (the caller stops after this
  sub-operation); any other request is a protocol error that ends the association.
"""

from __future__ import annotations

import io
import logging
import sqlite3
from pathlib import Path

import trio

from agent.dimse import CCancelRQ, CommandReceived, CStoreRQ, DataSetFragment, MessageComplete
from agent.dimse.status import StatusCategory, category, describe
from agent.errors import AgentError
from agent.net.connection import DicomConnection, unexpected_event
from agent.services.storage_scu import transcode
from agent.store.dicomfile import read_meta
from agent.ul.negotiation import UNCOMPRESSED

log = logging.getLogger("agent.query")


async def store_back(conn: DicomConnection, data_dir: Path, row: sqlite3.Row, get_id: int) -> tuple[str, bool]:
    """One C-STORE sub-operation on the requestor's association: its outcome ("ok", "warning" or
    "failed") and whether a C-CANCEL-RQ for the C-GET arrived meanwhile."""
    rel = Path(row["path"])
    if rel.is_absolute() or ".." in rel.parts:
        return "failed", False
    path = data_dir / rel
    try:
        meta = await trio.to_thread.run_sync(read_meta, path)
    except (AgentError, OSError) as exc:
        log.warning("C-GET: %s unreadable: %s", row["sop_instance_uid"], exc)
        return "failed", False
    contexts = [c for c in conn.contexts.values() if c.abstract_syntax == meta.sop_class_uid and c.requestor_is_scp]
    ctx = next((c for c in contexts if c.transfer_syntax == meta.transfer_syntax_uid), None)
    if ctx is None and meta.transfer_syntax_uid in UNCOMPRESSED:
        ctx = next(iter(contexts), None)
    if ctx is None:
        log.warning("%s: C-GET: no context with the SCP role for %s", conn.remote, meta.sop_class_uid)
        return "failed", False
    store = CStoreRQ(message_id=conn.next_message_id(), affected_sop_class_uid=meta.sop_class_uid,
                     affected_sop_instance_uid=meta.sop_instance_uid)
    if ctx.transfer_syntax == meta.transfer_syntax_uid:
        with open(path, "rb") as f:
            size = f.seek(0, io.SEEK_END) - meta.dataset_offset
            await conn.send_message_from_file(ctx.id, store, f, meta.dataset_offset, size)
    else:
        try:
            data = await trio.to_thread.run_sync(transcode, path, ctx.transfer_syntax)
        except Exception as exc:  # pydicom raises many kinds for odd files
            log.warning("C-GET: cannot transcode %s: %s", meta.sop_instance_uid, exc)
            return "failed", False
        await conn.send_message(ctx.id, store, data)
    cancel = False
    with trio.fail_after(conn.timeouts.dimse):
        while True:
            event = await conn.next_event()
            if isinstance(event, (DataSetFragment, MessageComplete)):
                continue  # the tail of a data set we do not read
            if not isinstance(event, CommandReceived):
                raise unexpected_event(event, "a C-STORE-RSP during a C-GET")
            msg = event.message
            if isinstance(msg, CCancelRQ):
                cancel = cancel or msg.message_id_being_responded_to == get_id
                continue
            if getattr(msg, "message_id_being_responded_to", None) != store.message_id:
                raise unexpected_event(event, "a C-STORE-RSP during a C-GET")
            if msg.has_dataset:
                await conn.discard_dataset()
            break
    cat = category(int(msg.status))
    if cat is StatusCategory.SUCCESS:
        return "ok", cancel
    if cat is StatusCategory.WARNING:
        return "warning", cancel
    log.warning("C-GET: %s refused by the requestor: %s", meta.sop_instance_uid, describe(int(msg.status)))
    return "failed", cancel


__all__ = ["store_back"]
