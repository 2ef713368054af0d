"""While one association's instance waits on its file flush, the agent serves others (issue 11: no fsync
on the event loop; overlap of flushes across associations).

The agent runs in this process. Every `os.fsync` is recorded with the thread that calls it, and the first
flush of an object file after the agent is up is held (at most 60 s) until the test lets it go. Then:
DCMTK storescu A sends one image and stays unanswered while its flush is held; meanwhile echoscu is
answered and storescu B's image, on another association, is stored and acknowledged; only then is A's
flush released, and A is answered Success. Observed in that order, never timed. No flush ran on the
event loop's thread.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
import trio

from tests.conftest import require_tool, write_profile
from tests.interop.storage_helpers import index_row, make_image, run

pytestmark = pytest.mark.interop


class HeldFlush:
    """os.fsync wrapper: records (thread, is a regular file) per call, holds the first file flush."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.calls: list[tuple[int, bool]] = []
        self.armed = False
        self.holding = threading.Event()
        self.release = threading.Event()
        self.released_by_timeout = False

    def __call__(self, fd: int) -> None:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        self.calls.append((threading.get_ident(), regular))
        if regular and self.armed:
            self.armed = False
            self.holding.set()
            if not self.release.wait(60):
                self.released_by_timeout = True
        self.real(fd)  # type: ignore[operator]


async def test_a_held_flush_stalls_only_its_own_association(
    tmp_path: Path, start_agent, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    storescu, echoscu = require_tool("storescu"), require_tool("echoscu")
    running = await start_agent(write_profile(tmp_path / "agent", '[storage]\nfree_space_floor = "1MB"\n',
                                              agent_extra='dimse_timeout = "90s"'))
    a = make_image(tmp_path / "a.dcm", seed=1)
    b = make_image(tmp_path / "b.dcm", seed=2)
    from pydicom import dcmread

    uid_a, uid_b = (str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (a, b))
    held = HeldFlush(os.fsync)
    monkeypatch.setattr(os, "fsync", held)
    held.armed = True
    loop_thread = threading.get_ident()
    outcome: dict[str, tuple[int, str]] = {}

    async def send_a() -> None:
        outcome["a"] = await run([storescu, "-aet", "SENDER_A", "-aec", "AGENT", "127.0.0.1", str(running.port),
                                  str(a)], 120)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_a)
            with trio.fail_after(60):
                await trio.to_thread.run_sync(held.holding.wait)
            # A's flush is held. Another association is answered, and another instance is stored.
            rc, out = await run([echoscu, "-aet", "ECHO", "-aec", "AGENT", "127.0.0.1", str(running.port)], 60)
            assert rc == 0, out
            rc, out = await run([storescu, "-aet", "SENDER_B", "-aec", "AGENT", "127.0.0.1", str(running.port),
                                 str(b)], 60)
            assert rc == 0, out
            assert index_row(running.data_dir, uid_b) is not None
            assert "a" not in outcome and index_row(running.data_dir, uid_a) is None, "A answered before its flush"
            held.release.set()
    finally:
        held.release.set()
    rc, out = outcome["a"]
    assert rc == 0, out
    assert index_row(running.data_dir, uid_a) is not None
    assert not held.released_by_timeout
    assert sum(regular for _, regular in held.calls) >= 2  # both instances' file flushes went through here
    assert all(thread != loop_thread for thread, _ in held.calls), "an fsync ran on the event loop's thread"
