"""A power cut may lose the index rows of acknowledged instances (their COMMIT skips the database's
flush, see agent/store/instances.py), and the rename of their files into objects/ too; the files are
the truth: at start-up the agent indexes them again and queues their forwarding again.

Simulated on a real agent (a subprocess fed by a real Storage SCU): after a SIGKILL, the rows and
forward jobs of two acknowledged instances are deleted in SQL (the lost, un-flushed database tail), one
of their files is moved back to the slot in tmp/ it was received into (the lost rename), and two
never-finished slots are added: one cut inside an element, one cut exactly between two elements (it
walks as a whole data set but was never completed, so it must not be indexed either).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import trio

from agent.store.dicomfile import object_relpath
from tests.conftest import free_port, require_pynetdicom
from tests.integration.commitment_helpers import query, send_images
from tests.interop.storage_helpers import PEER_ENV, make_images, temp_files, wait_listening

PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


async def test_rows_lost_by_a_power_cut_are_rebuilt_from_the_files(tmp_path: Path) -> None:
    require_pynetdicom()  # send_images is a pynetdicom Storage SCU
    port = free_port()
    data = tmp_path / "data"
    profile = tmp_path / "profile.toml"
    # The forward destination is down (nothing listens there): jobs stay pending, visible in the queue.
    profile.write_text(f"""
[agent]
ae_title = "AGENT"
bind = "127.0.0.1"
port = {port}
data_dir = "{data}"

[peers.pacs]
ae_title = "PACS"
host = "127.0.0.1"
port = {free_port()}
retry_base = "60s"
retry_cap = "60s"

[storage]
forward_to = ["pacs"]
""")
    log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115

    async def start() -> trio.Process:
        proc = await trio.lowlevel.open_process([sys.executable, "-m", "agent", "run", "--profile", str(profile)],
                                                stdout=log, stderr=subprocess.STDOUT, env=PEER_ENV)
        await wait_listening(port, proc, timeout=30)
        return proc

    images = make_images(tmp_path / "images", 4, rows=16, columns=16)
    proc = await start()
    try:
        await send_images(port, images)  # every C-STORE answered Success
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    uids = sorted(r[0] for r in query(data, "SELECT sop_instance_uid FROM instances"))
    assert len(uids) == 4
    lost_row, lost_rename = uids[0], uids[1]
    db = __import__("sqlite3").connect(data / "agent.db")
    with db:
        for uid in (lost_row, lost_rename):
            db.execute("DELETE FROM instances WHERE sop_instance_uid = ?", (uid,))
            db.execute("DELETE FROM queue_jobs WHERE payload LIKE ?", (f"%{uid}%",))
    db.close()
    # The rename of lost_rename never reached the disk: its file is still under its slot's name.
    os.rename(data / object_relpath(lost_rename), data / "tmp" / f"{uuid.uuid4().hex}.slot")
    # Two slots an association was still writing into when the power went (never acknowledged).
    whole = (data / object_relpath(uids[2])).read_bytes()
    cut_between = data / "tmp" / f"{uuid.uuid4().hex}.slot"
    other = uids[2][:-1] + ("2" if uids[2].endswith("1") else "1")  # a UID the index does not hold
    cut_between.write_bytes(whole[: whole.index(PIXEL_DATA_TAG)].replace(uids[2].encode(), other.encode()))
    cut_inside = data / "tmp" / f"{uuid.uuid4().hex}.slot"
    cut_inside.write_bytes(whole[: len(whole) - 10])
    for slot in (cut_between, cut_inside):
        os.chmod(slot, 0o600)  # as the store makes them: a slot is only group-readable once complete

    proc = await start()  # recovery runs before the listener opens
    try:
        rows = query(data, "SELECT sop_instance_uid, path, calling_ae, study_instance_uid FROM instances")
        assert sorted(r[0] for r in rows) == uids  # the two lost rows are back, nothing else indexed
        assert other not in {r[0] for r in rows}
        for uid, path, calling_ae, study in rows:
            assert path == str(object_relpath(uid)) and (data / path).is_file()
            assert calling_ae == "MODALITY" and study  # the row is made from the header, as at receive
        # Waiting for the destination: pending, or claimed by an attempt in progress (it is down).
        pending = query(data, "SELECT payload FROM queue_jobs WHERE destination = 'pacs' "
                              "AND state IN ('pending', 'claimed')")
        for uid in uids:
            assert sum(uid in p[0] for p in pending) == 1, f"{uid}: forward job not queued exactly once"
        assert temp_files(data) == []  # the partial slots are removed, not indexed
        assert sorted(os.listdir(data / "objects" / object_relpath(lost_rename).parent.name)).count(
            f"{lost_rename}.dcm") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await proc.wait()
