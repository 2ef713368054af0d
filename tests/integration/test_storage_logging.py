"""What an operator reads in the journal: one info line per C-STORE, new instances included (not only
duplicates), naming the calling AE, the SOP Class, the SOP Instance UID, the size and the status."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.net.client import associate
from tests.conftest import write_profile
from tests.integration.test_storage_bad_input import CONTEXTS, FAST, dataset_of, store
from tests.interop.storage_helpers import make_image


async def test_one_info_line_per_stored_instance(tmp_path: Path, start_agent,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    running = await start_agent(write_profile(tmp_path / "agent", '[storage]\nfree_space_floor = "1MB"\n'))
    sent = [dataset_of(make_image(tmp_path / f"img{i}.dcm", seed=i)) for i in range(2)]
    with caplog.at_level(logging.INFO, logger="agent.storage"):
        async with associate("127.0.0.1", running.port, calling_ae="MODALITY", called_ae="AGENT",
                             proposals=CONTEXTS, timeouts=FAST) as conn:
            for uid, data in sent:
                assert (await store(conn, uid, data)).status == 0
            assert (await store(conn, *sent[0])).status == 0  # the same instance again
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.storage" and r.levelno == logging.INFO]
    for uid, data in sent:
        mine = [line for line in lines if uid in line]
        assert len(mine) == (2 if uid == sent[0][0] else 1), lines
        assert "MODALITY" in mine[0] and "CT Image Storage" in mine[0]
        assert f"{len(data)} bytes" in mine[0] and "0000" in mine[0]
    again = [line for line in lines if sent[0][0] in line][1]
    assert "received again" in again
