"""The Storage Commitment batcher waits instead of polling, on trio's autojump clock: idle, it reads the
database only at its safety-net interval; once the last C-STORE of a study completes it asks for
commitment `commit_idle` later, not at its next poll."""

from __future__ import annotations

from pathlib import Path

import trio

from agent.profile import StorageSettings
from agent.services.commitment import COMMIT_REQUEST_JOB, CommitmentRequester
from agent.store.commitment import CommitmentStore
from agent.store.db import open_database
from agent.store.instances import InstanceStore
from agent.store.queue import JobQueue
from tests.integration.test_outbound_backoff import EPOCH, InlineBlocking
from tests.unit.test_commitment_store import CT, add_instance


async def test_the_batcher_waits_for_work_instead_of_polling(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    clock = lambda: EPOCH + autojump_clock.current_time()  # noqa: E731
    db = open_database(tmp_path / "agent.db")
    instances = InstanceStore(tmp_path, db)
    queue = JobQueue(db, clock=clock)
    commitments = CommitmentStore(db, clock=clock)
    settings = StorageSettings(forward_to=("pacs",), commit_with="pacs", commit_batch="study", commit_idle=2.0)
    requester = CommitmentRequester("pacs", settings, instances, commitments, queue, InlineBlocking())
    looks = [0]
    candidates = commitments.candidates

    def counting(*args, **kw):  # type: ignore[no-untyped-def]
        looks[0] += 1
        return candidates(*args, **kw)

    commitments.candidates = counting  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(requester.run)
        await trio.sleep(60)
        # Idle for a minute: a look every 5 s at most (for changes made by another process), not a poll.
        assert looks[0] <= 60 / 5 + 2, looks[0]

        add_instance(db, "1.1")
        job_id = queue.enqueue("store", "pacs", {"uid": "1.1", "sop_class": CT, "ts": "1.2.840.10008.1.2.1",
                                                 "study": "1.9"})
        queue.claim("pacs")
        await trio.sleep(0.5)  # the C-STORE takes a while; it completes at t0
        queue.complete(job_id)
        t0 = trio.current_time()
        with trio.fail_after(30):
            while not queue.list(kind=COMMIT_REQUEST_JOB):
                await trio.sleep(0.01)
        waited = trio.current_time() - t0
        # Asked once the study was quiet for commit_idle (2 s), well before a 5 s poll would notice.
        assert 2.0 <= waited <= 2.5, waited
        nursery.cancel_scope.cancel()
