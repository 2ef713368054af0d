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
from agent.net.requests import await_response
from agent.services.storage_scu import Prepared, SendItem, StoreFailed, prepare_file, proposals_for, send_prepared
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
    """Performs `store` jobs. Pipelined like `dicom-agent store`: told the batch's next job
    (`expect`), it opens that job's file and reads its first block while the peer works on the
    current one, on the same association only."""

    store: InstanceStore
    blocking: Blocking
    _contexts: dict[tuple[str, str], Sequence[ProposedContext]] = field(default_factory=dict)
    #: Audit trail: (association, SOP Instance UID) after each instance the peer accepted.
    on_sent: Callable[[DicomConnection, str], None] | None = None
    # Per destination (each has its own worker and association): the job after the current one,
    # and the file prepared for it on that association.
    _expected: dict[str, Job] = field(default_factory=dict)
    _ready: dict[str, tuple[int, DicomConnection, Prepared]] = field(default_factory=dict)

    def expect(self, destination: str, job: Job | None) -> None:
        """The job `destination`'s worker performs after the current one (None: none known)."""
        if job is None:
            self._expected.pop(destination, None)
        else:
            self._expected[destination] = job

    def _take_ready(self, job: Job, conn: DicomConnection) -> Prepared | None:
        ready = self._ready.pop(job.destination, None)
        if ready is None:
            return None
        if ready[0] == job.id and ready[1] is conn:
            return ready[2]
        ready[2].close()  # for another job or association: of no use
        return None

    def _get_ready(self, destination: str, conn: DicomConnection) -> None:
        job = self._expected.pop(destination, None)
        old = self._ready.pop(destination, None)
        if old is not None:
            old[2].close()
        if job is None or job.kind != STORE_JOB:
            return
        try:
            self._ready[destination] = (job.id, conn, prepare_file(conn, self.item_of(job), read_ahead=True))
        except (JobFailed, StoreFailed, OSError):
            return  # it fails on its own turn, with its own error

    def contexts(self, job: Job) -> Sequence[ProposedContext]:
        """Called for every job (and for upcoming ones): cached per (SOP class, transfer syntax)."""
        key = (payload_str(job, "sop_class"), payload_str(job, "ts"))
        found = self._contexts.get(key)
        if found is None:
            meta = FileMeta(transfer_syntax_uid=key[1], sop_class_uid=key[0], sop_instance_uid="", dataset_offset=0)
            found = self._contexts[key] = tuple(proposals_for([SendItem(Path("."), meta)])[0])
        return found

    def item_of(self, job: Job) -> SendItem:
        """The stored file a job names (its payload's UID), with its File Meta; JobFailed (permanent)
        when the UID is invalid or the instance is gone or unreadable."""
        uid = payload_str(job, "uid")
        # The path follows from the (validated) UID, so no index lookup is needed per job.
        try:
            path = self.store.data_dir / object_relpath(uid)
        except InvalidUID as exc:
            raise JobFailed(f"job payload has an invalid UID: {exc}", permanent=True) from exc
        try:
            return SendItem(path, read_meta(path))
        except StoreError as exc:  # gone (deleted after commitment and retention), or not readable
            why = "is no longer in the local store" if not path.exists() else f"stored file unreadable: {exc}"
            raise JobFailed(f"instance {uid} {why}", permanent=True) from exc

    async def perform(self, conn: DicomConnection, job: Job) -> None:
        prepared = self._take_ready(job, conn)
        try:
            if prepared is None:
                prepared = prepare_file(conn, self.item_of(job))
            message_id = await send_prepared(conn, prepared)
        except StoreFailed as exc:
            self.expect(job.destination, None)
            raise JobFailed(str(exc), permanent=True) from exc
        self._get_ready(job.destination, conn)  # the next job's file, read while the peer works on this one
        reply = await await_response(conn, message_id)
        uid = payload_str(job, "uid")
        check_status(reply.status, f"C-STORE of {uid}")
        if self.on_sent is not None:
            self.on_sent(conn, uid)
