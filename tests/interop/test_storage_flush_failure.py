"""A C-STORE whose file flush fails (EIO from fsync, on the receiving association's spool thread) is
answered with a failure status, leaves nothing (no file, no temporary file, no index row), and the same
association then stores the next instance: for an object checked in memory (under the 1 MiB
hand-off) and for one streamed to its file while it arrives (several hand-offs). A pynetdicom SCU is
the peer; the agent runs in this process with os.fsync failing once for the object's file."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import trio
from pydicom import dcmread

from tests.conftest import require_pynetdicom, write_profile
from tests.interop.storage_helpers import index_row, make_image, object_files, temp_files

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("rows", [64, 1024], ids=["in-memory", "streamed"])
async def test_a_failed_flush_is_answered_as_a_failure_and_leaves_nothing(
    tmp_path: Path, start_agent, monkeypatch: pytest.MonkeyPatch, rows: int  # type: ignore[no-untyped-def]
) -> None:
    require_pynetdicom()
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    failing = make_image(tmp_path / "send" / "a.dcm", rows=rows, columns=rows, seed=1)  # 2 MiB when streamed
    after = make_image(tmp_path / "send" / "b.dcm", seed=2)
    real_fsync = os.fsync
    failed: list[int] = []

    def fsync(fd: int) -> None:
        if not failed and stat.S_ISREG(os.fstat(fd).st_mode) and os.fstat(fd).st_size > 1000:
            failed.append(fd)
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    running = await start_agent(write_profile(tmp_path / "agent", '[storage]\nfree_space_floor = "1MB"\n'))
    monkeypatch.setattr(os, "fsync", fsync)

    def send() -> list[int]:
        ae = AE(ae_title="FLUSHSCU")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", running.port, ae_title="AGENT")
        assert assoc.is_established
        try:
            return [int(assoc.send_c_store(dcmread(p)).Status) for p in (failing, after)]
        finally:
            assoc.release()

    statuses = await trio.to_thread.run_sync(send)
    data = running.data_dir
    assert failed, "the object's flush was not reached"
    assert statuses[0] == 0x0110 and statuses[1] == 0x0000, [hex(s) for s in statuses]
    assert index_row(data, dcmread(failing).SOPInstanceUID) is None
    assert temp_files(data) == []
    assert [p.name for p in object_files(data)] == [f"{dcmread(after).SOPInstanceUID}.dcm"]
    running.cancel_scope.cancel()
