"""The running agent runs the maintenance pass (agent/services/maintenance.py): a DONE job finished
eight days ago is gone shortly after start-up, one finished today stays."""

from __future__ import annotations

import time
from pathlib import Path

from agent.store.db import open_database
from agent.store.queue import JobQueue
from tests.conftest import write_profile
from tests.integration.commitment_helpers import query, wait_until


async def test_the_agent_purges_old_finished_jobs(tmp_path: Path, start_agent) -> None:
    profile = write_profile(tmp_path / "agent", """
        [peers.pacs]
        ae_title = "PACS"
        host = "127.0.0.1"
        port = 9
        """)
    db = open_database(profile.agent.data_dir / "agent.db")
    eight_days_ago = time.time() - 8 * 86400
    old_queue = JobQueue(db, clock=lambda: eight_days_ago)
    today = JobQueue(db)
    for q in (old_queue, today):
        job_id = q.enqueue("mpps-create", "elsewhere", {"uid": "1.2"})
        q.claim("elsewhere")
        q.complete(job_id)
    db.close()
    agent = await start_agent(profile)
    await wait_until(lambda: query(agent.data_dir, "SELECT id FROM queue_jobs") == [(2,)], 30,
                     "the job finished eight days ago purged")
