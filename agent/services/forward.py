"""Store-and-forward: the `store` job kind (C-STORE of a locally stored instance to a peer).

Invariants:
- Forward jobs are queued inside the same transaction as the instance's index row (`enqueue_forwards`
  is the StorageSCP's on_commit hook), so an instance acknowledged to its sender always has them.
- The payload carries the SOP class and transfer syntax, so the worker can choose presentation
  contexts for upcoming jobs without touching the disk; the file itself is found by UID in the index.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from agent.net.connection import DicomConnection
from agent.services.blocking import Blocking
from agent.services.outbound import JobFailed, check_status
from agent.services.storage_scu import SendItem, StoreFailed, proposals_for, send_file
from agent.store.dicomfile import NotDicom, read_meta
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

    def contexts(self, job: Job) -> Sequence[ProposedContext]:
        from agent.store.dicomfile import FileMeta
        from pathlib import Path

        p = job.payload
        meta = FileMeta(transfer_syntax_uid=p["ts"], sop_class_uid=p["sop_class"], sop_instance_uid=p["uid"], dataset_offset=0)
        return proposals_for([SendItem(Path("."), meta)])[0]

    async def perform(self, conn: DicomConnection, job: Job) -> None:
        uid = job.payload["uid"]
        stored = await self.blocking.run(lambda: self.store.get(uid))
        if stored is None:
            raise JobFailed(f"instance {uid} is no longer in the local store", permanent=True)
        try:
            item = SendItem(stored.path, read_meta(stored.path))
        except (NotDicom, OSError) as exc:
            raise JobFailed(f"instance {uid}: stored file unreadable: {exc}", permanent=True) from exc
        try:
            reply = await send_file(conn, item)
        except StoreFailed as exc:
            raise JobFailed(str(exc), permanent=True) from exc
        check_status(reply.status, f"C-STORE of {uid}")
