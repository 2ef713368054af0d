"""Four DCMTK storescu processes send to the agent at once: every instance is stored whole and indexed,
each from its own association. This is the path where the agent overlaps their file flushes and lets
instances of different associations share one index commit (group commit): nothing may be lost, mixed
up between associations, or answered before its row is committed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from tests.conftest import require_tool, write_profile
from tests.interop.storage_helpers import index_count, make_images, run, temp_files
from tests.interop.test_storage_interop import STORAGE, check_received

pytestmark = pytest.mark.interop

SENDERS = 4
PER_SENDER = 6


async def test_four_storescu_at_once_into_agent(tmp_path: Path, start_agent) -> None:
    storescu = require_tool("storescu")
    batches = []
    for k in range(SENDERS):
        files = make_images(tmp_path / f"send{k}", PER_SENDER)
        for i, f in enumerate(files):  # make_images derives UIDs from the seed: make them distinct
            ds = dcmread(f)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.8.498.62.{k}.{i}"
            ds.save_as(f)
        batches.append(files)
    running = await start_agent(write_profile(tmp_path / "agent", STORAGE))
    outcomes: dict[int, tuple[int, str]] = {}

    async def send(k: int) -> None:
        cmd = [storescu, "-aet", f"SCU{k}", "-aec", "AGENT", "127.0.0.1", str(running.port)]
        outcomes[k] = await run([*cmd, *map(str, batches[k])], timeout=120)

    async with trio.open_nursery() as nursery:
        for k in range(SENDERS):
            nursery.start_soon(send, k)
    for k, (rc, out) in outcomes.items():
        assert rc == 0, f"sender {k}: {out}"
    assert index_count(running.data_dir) == SENDERS * PER_SENDER
    for k, files in enumerate(batches):
        for sent in files:
            check_received(running.data_dir, sent, transfer_syntax=ExplicitVRLittleEndian, calling_ae=f"SCU{k}")
    assert temp_files(running.data_dir) == []
