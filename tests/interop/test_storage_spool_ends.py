"""A receiving association's spool thread (agent.services.blocking.Spool: one thread and one eventfd per
association storing instances) ends with its association, not after its idle time: a burst of
one-image associations (a modality's script sending image by image) does not hold a thread and an
eventfd per association. The agent runs in this process with the spools' idle time made an hour, and
DCMTK storescu sends three images on three associations; each association's thread then ends."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import pytest
import trio

from agent.services import blocking, storage
from tests.conftest import require_tool, write_profile
from tests.interop.storage_helpers import make_images, run

pytestmark = pytest.mark.interop


async def test_spool_threads_end_with_their_associations(
    tmp_path: Path, start_agent, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    storescu = require_tool("storescu")
    monkeypatch.setattr(storage, "Spool", functools.partial(blocking.Spool, idle=3600))
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name.startswith("store "):
            started.append(self)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    running = await start_agent(write_profile(tmp_path / "agent", '[storage]\nfree_space_floor = "1MB"\n'))
    for image in make_images(tmp_path / "images", 3):
        rc, out = await run([storescu, "-aec", "AGENT", "127.0.0.1", str(running.port), str(image)])
        assert rc == 0, out
    assert len(started) == 3  # one spool thread per association
    for thread in started:
        await trio.to_thread.run_sync(thread.join, 10)  # a safety net: never reached when it works
    assert [t.is_alive() for t in started] == [False, False, False]
    running.cancel_scope.cancel()
