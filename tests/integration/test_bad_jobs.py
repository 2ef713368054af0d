"""A queue job that cannot be run (its payload lacks a field, or holds garbage) goes to dead with a
readable error, and the agent keeps serving: it answers C-ECHO (DCMTK echoscu) and forwards good
jobs to a pynetdicom archive.

The bad jobs are written by a second database connection, as `dicom-agent` CLI commands or an older
agent version would; the running agent picks them up within its idle poll.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import trio

from agent.store.db import open_database
from agent.store.queue import JobQueue
from tests.conftest import free_port, require_pynetdicom, require_tool, write_profile
from tests.integration.commitment_helpers import query, send_images, wait_until
from tests.interop.storage_helpers import make_images, wait_listening

#: One malformed job per kind the agent performs, with the field its error must name.
BAD_JOBS = [
    ("store", {"sop_class": "1.2.840.10008.5.1.4.1.1.2", "ts": "1.2.840.10008.1.2.1"}, "uid"),
    ("store", {"uid": "1.2.3.4"}, "sop_class"),
    ("commit-request", {}, "transaction_uid"),
    ("commit-report", {"transaction_uid": "1.2.3.5"}, "calling_ae"),
    ("mpps-create", {"uid": "1.2.3.6"}, "data"),
    ("mpps-set", {"data": "AAAA"}, "uid"),
    ("mpps-set", {"uid": "1.2.3.7", "data": "not base64 at all!"}, "data"),
]


async def test_bad_jobs_go_dead_and_the_agent_keeps_serving(tmp_path: Path, start_agent) -> None:
    echoscu = require_tool("echoscu")
    require_pynetdicom()
    from tests.interop.commitment_peer import PynetdicomArchive

    pacs_port = free_port()
    archive = PynetdicomArchive(tmp_path / "pacs", report="same", ae_title="PACS")
    archive.start(pacs_port)
    try:
        await wait_listening(pacs_port)
        profile = write_profile(tmp_path / "agent", f"""
            [peers.pacs]
            ae_title = "PACS"
            host = "127.0.0.1"
            port = {pacs_port}
            retry_base = "0.2s"
            retry_cap = "1s"
            linger = "0.5s"

            [storage]
            forward_to = ["pacs"]
            commit_with = "pacs"
            commit_idle = "0.2s"

            [commitment]

            [mpps]
            send_to = ["pacs"]
            """)
        agent = await start_agent(profile)
        other = JobQueue(open_database(profile.agent.data_dir / "agent.db"))
        ids = [other.enqueue(kind, "pacs", payload) for kind, payload, _ in BAD_JOBS]
        # A row whose payload is not JSON at all (written by hand, or damaged; the database's JSON
        # index refuses such a row for a store job, not for the others).
        ids.append(other.enqueue("mpps-create", "pacs", {}))
        raw = sqlite3.connect(profile.agent.data_dir / "agent.db")
        with raw:
            raw.execute("UPDATE queue_jobs SET payload = 'not json {' WHERE id = ?", (ids[-1],))
        raw.close()
        expected = [*BAD_JOBS, ("mpps-create", {}, "uid")]

        def dead() -> list[tuple]:
            marks = ", ".join("?" * len(ids))
            return query(agent.data_dir, f"SELECT id, state, last_error FROM queue_jobs WHERE id IN ({marks}) "
                                         "AND state = 'dead' ORDER BY id", ids)

        rows = await wait_until(lambda: len(dead()) == len(ids) and dead(), 30, "every bad job dead")
        for (_, _, error), (kind, _, missing) in zip(rows, expected):
            assert kind in error and missing in error, error  # says which job and what is wrong with it
        listed = await trio.run_process([sys.executable, "-m", "agent", "queue", "list", "--profile",
                                         str(profile.source)], capture_stdout=True, capture_stderr=True, check=False)
        assert listed.returncode == 0 and listed.stdout.decode().count("dead") >= len(ids), listed

        # Still serving: C-ECHO from a real peer, and a good image is forwarded.
        done = await trio.run_process([echoscu, "-aec", "AGENT", "127.0.0.1", str(agent.port)], check=False)
        assert done.returncode == 0
        image = make_images(tmp_path / "images", 1)
        await send_images(agent.port, image)
        await wait_until(lambda: len(archive.holds()) == 1, 30, "the good image forwarded")
    finally:
        archive.stop()
