"""Patient data is owner/group only whatever the process umask: instance files, their folders, the temp
folder and the SQLite database with its -wal/-shm files (0640 files, 0750 folders), even under umask 000
(which would otherwise make folders world-writable) and 022 (world-readable files)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.net.client import associate
from tests.conftest import write_profile
from tests.integration.test_storage_bad_input import CONTEXTS, FAST, dataset_of, store
from tests.interop.storage_helpers import make_image, object_files


@pytest.fixture(params=[0o000, 0o022])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


async def test_stored_data_is_owner_and_group_only(tmp_path: Path, umask: int, start_agent) -> None:
    running = await start_agent(write_profile(tmp_path / "agent", '[storage]\nfree_space_floor = "1MB"\n'))
    uid, data = dataset_of(make_image(tmp_path / "img.dcm", seed=2))
    async with associate("127.0.0.1", running.port, calling_ae="MODALITY", called_ae="AGENT",
                         proposals=CONTEXTS, timeouts=FAST) as conn:
        assert (await store(conn, uid, data)).status == 0
        assert (await store(conn, uid, data)).status == 0  # a replace goes through tmp/ too
    d = running.data_dir
    [instance] = object_files(d)
    files = [instance, d / "agent.db", d / "agent.db-wal", d / "agent.db-shm"]
    folders = [d / "objects", instance.parent, d / "tmp"]
    assert {str(p.relative_to(d)): mode(p) for p in files} == {str(p.relative_to(d)): "0o640" for p in files}
    assert {str(p.relative_to(d)): mode(p) for p in folders} == {str(p.relative_to(d)): "0o750" for p in folders}
