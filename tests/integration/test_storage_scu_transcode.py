"""Sending a file the peer accepts only in another uncompressed transfer syntax: the object is transcoded
in a worker thread (a whole-object read and encode never runs on the event loop) and arrives intact:
pixel values too, whose 16-bit words must be swapped when the byte order changes."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

import agent.services.storage_scu as scu
from agent.net.client import associate
from tests.conftest import write_profile
from tests.integration.test_storage_bad_input import FAST
from tests.interop.storage_helpers import assert_same_dataset, index_row, make_image


@pytest.mark.parametrize(("source", "accepted", "target"), [
    (ExplicitVRLittleEndian, "explicit-be", ExplicitVRBigEndian),
    (ExplicitVRBigEndian, "explicit-le", ExplicitVRLittleEndian),
    (ImplicitVRLittleEndian, "explicit-be", ExplicitVRBigEndian),
    (ExplicitVRBigEndian, "implicit-le", ImplicitVRLittleEndian),
])
async def test_transcoding_runs_off_the_event_loop_and_keeps_pixels(
    tmp_path: Path, start_agent, monkeypatch: pytest.MonkeyPatch, source: str, accepted: str, target: str
) -> None:
    running = await start_agent(write_profile(
        tmp_path / "agent", f'[storage]\nfree_space_floor = "1MB"\ntransfer_syntaxes = ["{accepted}"]\n'))
    image = make_image(tmp_path / "img.dcm", rows=256, columns=256, seed=4, transfer_syntax=source)
    threads: list[threading.Thread] = []
    real = scu.transcode

    def recording(path: Path, ts: str) -> bytes:
        threads.append(threading.current_thread())
        return real(path, ts)

    monkeypatch.setattr(scu, "transcode", recording)
    items = scu.scan([image]).items
    async with associate("127.0.0.1", running.port, calling_ae="SENDER", called_ae="AGENT",
                         proposals=scu.proposals_for(items)[0], timeouts=FAST) as conn:
        reply = await scu.send_file(conn, items[0])
    assert reply.status == 0
    assert threads and threads[0] is not threading.main_thread(), "transcoded on the event loop's thread"
    row = index_row(running.data_dir, items[0].meta.sop_instance_uid)
    assert row is not None and row["transfer_syntax_uid"] == target
    assert_same_dataset(image, running.data_dir / row["path"])
