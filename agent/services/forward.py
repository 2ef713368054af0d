"""Store-and-forward: the `store` job kind (C-STORE of a locally stored instance to a peer).

Invariants:
- Forward jobs are queued inside the same transaction as the instance's index row (`enqueue_forwards`
  is the StorageSCP's on_commit hook), so an instance acknowledged to its sender always has them.
- The payload carries the SOP class and transfer syntax, so the worker can choose presentation
  contexts for upcoming jobs without touching the disk; the file itself is found by UID in the index.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.net.connection import DicomConnection
from agent.services.blocking import Blocking
from agent.services.outbound import JobFailed, check_status, payload_str
from agent.services.storage_scu import SendItem, StoreFailed, proposals_for, send_file
from agent.errors import StoreError
from agent.store.dicomfile import FileMeta, InvalidUID, object_relpath, read_meta
from agent.store.instances import InstanceStore, StoredInstance
from agent.store.queue import Job, JobQueue
from agent.ul.negotiation import ProposedContext

STORE_JOB = "store"


def store_payload(stored: StoredInstance) -> dict[str, str]:
    return {
        "uid": stored.sop_instance_uid,
        "sop_class": stored.sop_class_uid,
        "ts": stored.transfer_syntax_uid,
        "study": stored.study_instance_uid or "",
    }


def enqueue_forwards(queue: JobQueue, destinations: Sequence[str]):  # type: ignore[no-untyped-def]
    """An on_commit hook queuing one `store` job per destination for each committed instance."""

    def on_commit(conn: sqlite3.Connection, stored: StoredInstance) -> None:
        for dest in destinations:
            queue.enqueue(STORE_JOB, dest, store_payload(stored))

    return on_commit


@dataclass
class StorePerformer:
    store: InstanceStore
    blocking: Blocking
    _contexts: dict[tuple[str, str], Sequence[ProposedContext]] = field(default_factory=dict)
    #: Audit trail: (association, SOP Instance UID) after each instance the peer accepted.
    on_sent: Callable[[DicomConnection, str], None] | None = None

    def contexts(self, job: Job) -> Sequence[ProposedContext]:
        """Called for every job (and for upcoming ones): cached per (SOP class, transfer syntax)."""
        key = (payload_str(job, "sop_class"), payload_str(job, "ts"))
        found = self._contexts.get(key)
        if found is None:
            meta = FileMeta(transfer_syntax_uid=key[1], sop_class_uid=key[0], sop_instance_uid="", dataset_offset=0)
            found = self._contexts[key] = tuple(proposals_for([SendItem(Path("."), meta)])[0])
        return found

    async def perform(self, conn: DicomConnection, job: Job) -> None:
        uid = payload_str(job, "uid")
        # The path follows from the (validated) UID, so no index lookup is needed per job.
        try:
            path = self.store.data_dir / object_relpath(uid)
        except InvalidUID as exc:
            raise JobFailed(f"job payload has an invalid UID: {exc}", permanent=True) from exc
        try:
            item = SendItem(path, read_meta(path))
        except StoreError as exc:  # gone (deleted after commitment and retention), or not readable
            why = "is no longer in the local store" if not path.exists() else f"stored file unreadable: {exc}"
            raise JobFailed(f"instance {uid} {why}", permanent=True) from exc
        try:
            reply = await send_file(conn, item)
        except StoreFailed as exc:
            raise JobFailed(str(exc), permanent=True) from exc
        check_status(reply.status, f"C-STORE of {uid}")
        if self.on_sent is not None:
            self.on_sent(conn, uid)
