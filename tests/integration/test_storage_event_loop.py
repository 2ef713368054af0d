"""Nothing the Storage SCP does can stall the event loop: while a C-STORE waits for the database's write
lock (held by a CLI command, for up to the 30 s busy timeout), another association's C-ECHO is answered.

The order is observed, not timed: the lock is taken, a whole C-STORE is sent (from then on the agent can
only be waiting on the database), then a C-ECHO on a second association must succeed while the store still
has no answer and no row; only then is the lock released, and the store is answered Success.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio
from pydicom.uid import CTImageStorage

from agent.dimse import CStoreRQ
from agent.dimse.status import Status
from agent.net.client import associate
from agent.net.requests import await_response
from agent.services.verification import echo
from tests.conftest import write_profile
from tests.integration.test_storage_bad_input import CONTEXTS, FAST, dataset_of
from tests.interop.storage_helpers import index_row, make_image


async def test_echo_answered_while_a_store_waits_for_the_database_lock(tmp_path: Path, start_agent) -> None:
    running = await start_agent(write_profile(tmp_path / "agent", '[storage]\nfree_space_floor = "1MB"\n'))
    uid, data = dataset_of(make_image(tmp_path / "img.dcm", seed=3))

    cli = sqlite3.connect(running.data_dir / "agent.db", isolation_level=None)
    cli.execute("BEGIN IMMEDIATE")  # what a CLI command's write transaction holds
    replies: list[int] = []
    try:
        async with associate("127.0.0.1", running.port, calling_ae="MODALITY", called_ae="AGENT",
                             proposals=CONTEXTS, timeouts=FAST) as conn:
            async with trio.open_nursery() as nursery:

                sent = trio.Event()

                async def send() -> None:
                    ctx = conn.context_for(CTImageStorage)
                    assert ctx is not None
                    rq = CStoreRQ(message_id=conn.next_message_id(), affected_sop_class_uid=CTImageStorage,
                                  affected_sop_instance_uid=uid)
                    await conn.send_message(ctx.id, rq, data)
                    sent.set()  # the agent has the whole object: from here on it can only wait on the database
                    replies.append((await await_response(conn, rq.message_id)).status)

                nursery.start_soon(send)
                with trio.fail_after(20):
                    await sent.wait()
                    result = await echo("127.0.0.1", running.port, calling_ae="ECHOSCU", called_ae="AGENT",
                                        timeouts=FAST)
                assert result.status == Status.SUCCESS
                assert replies == [], "the store was answered while the database was still locked"
                assert index_row(running.data_dir, uid) is None
                cli.execute("COMMIT")
    finally:
        if cli.in_transaction:
            cli.execute("ROLLBACK")
        cli.close()
    assert replies == [Status.SUCCESS]
    assert index_row(running.data_dir, uid) is not None
