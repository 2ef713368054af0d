"""Received through many small PDUs (DCMTK storescu with a 4096-byte Maximum Length, so every PDU
comes through the connection's reusable read buffer, not its own), an object is stored with exactly
the bytes sent, both when it is streamed to its file by the spool thread while more PDUs are read (2
MiB, several hand-offs) and when it is checked in memory from its fragments (128 KiB, one hand-off)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from tests.conftest import require_tool, write_profile
from tests.interop.storage_helpers import make_image, object_files, run

pytestmark = pytest.mark.interop


async def test_objects_sent_in_small_pdus_are_stored_byte_for_byte(
    tmp_path: Path, start_agent  # type: ignore[no-untyped-def]
) -> None:
    storescu = require_tool("storescu")
    images = [make_image(tmp_path / "send" / "big.dcm", rows=1024, columns=1024, seed=3),
              make_image(tmp_path / "send" / "small.dcm", rows=256, columns=256, seed=4)]
    running = await start_agent(write_profile(tmp_path / "agent", '[storage]\nfree_space_floor = "1MB"\n'))
    rc, out = await run([storescu, "-xe", "--max-pdu", "4096", "-aec", "AGENT", "127.0.0.1", str(running.port),
                         *map(str, images)])
    assert rc == 0, out
    stored = {p.name: p for p in object_files(running.data_dir)}
    for image in images:
        sent = dcmread(image)
        got = dcmread(stored[f"{sent.SOPInstanceUID}.dcm"])
        assert got.PixelData == sent.PixelData
        assert [(e.tag, e.value) for e in got if e.tag != 0x7FE00010] == [
            (e.tag, e.value) for e in sent if e.tag != 0x7FE00010]
    running.cancel_scope.cancel()
