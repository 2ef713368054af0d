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
    assert mode(d) == "0o750"  # data_dir itself: nobody else may rename or delete agent.db


def test_loose_database_and_folders_of_an_older_install_are_tightened(tmp_path: Path) -> None:
    """Files an earlier version made under umask 000 are closed to others when the store opens them."""
    from agent.store.db import open_database
    from agent.store.instances import InstanceStore

    data = tmp_path / "data"
    for folder in (data, data / "objects", data / "tmp"):
        folder.mkdir()
        folder.chmod(0o777)
    (data / "agent.db").touch()
    (data / "agent.db").chmod(0o666)
    conn = open_database(data / "agent.db")
    InstanceStore(data, conn)
    conn.close()
    assert mode(data / "agent.db") == "0o640"
    assert mode(data / "objects") == mode(data / "tmp") == "0o750"
