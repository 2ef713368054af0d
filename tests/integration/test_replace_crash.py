"""A crash at any step of replacing an instance (a re-sent SOP Instance UID, `duplicate = "replace"`)
leaves either the old acknowledged instance with its row, or the new one with its row: never the new
file under the old row, never no file at all.

A child process stores an OLD instance, then replaces it with a NEW one while counting the file-system
and database steps the store takes (os.link, os.rename, os.fsync, os.unlink, ..., and each COMMIT); at
step N it SIGKILLs itself before taking the step. N runs from 1 until the replace completes. After each
kill the store is reopened, `startup_cleanup()` runs (as the agent does before listening), and the file
and the row must agree.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from pydicom import dcmread

ROOT = Path(__file__).resolve().parents[2]
UID = "1.2.826.0.1.3680043.8.498.4242"

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from agent.store import instances
    from agent.store.db import open_database
    from agent.store.instances import InstanceStore
    from agent.store.dicomfile import read_meta
    from tests.interop.storage_helpers import make_image

    data_dir, kill_at = Path(sys.argv[1]), int(sys.argv[2])
    old = make_image(data_dir.parent / "old.dcm", sop_instance_uid={uid!r}, patient_id="OLD", seed=1)
    new = make_image(data_dir.parent / "new.dcm", sop_instance_uid={uid!r}, patient_id="NEW", seed=2)

    def receive(store, path):
        meta = read_meta(path)
        incoming = store.begin(meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax_uid,
                               calling_ae="MODALITY")
        incoming.write(path.read_bytes()[meta.dataset_offset:])
        return incoming.commit()

    conn = open_database(data_dir / "agent.db")
    store = InstanceStore(data_dir, conn, duplicate="replace")
    receive(store, old)
    print("old acknowledged", flush=True)

    steps = 0
    def step(what):
        global steps
        steps += 1
        if steps == kill_at:
            print("killed before", what, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    class CountingOS:
        WATCHED = {{"link", "rename", "replace", "fsync", "unlink", "remove", "open", "close", "write",
                   "mkdir", "chmod", "fchmod"}}
        def __getattr__(self, name):
            real = getattr(os, name)
            if name not in self.WATCHED:
                return real
            def call(*args, **kw):
                step(f"os.{{name}}{{args[:2]!r}}")
                return real(*args, **kw)
            return call

    class CountingConnection:
        def __init__(self, conn):
            self._conn = conn
        def __getattr__(self, name):
            return getattr(self._conn, name)
        def execute(self, sql, *args):
            if sql.strip().upper() in ("COMMIT", "BEGIN IMMEDIATE"):
                step(sql)
            return self._conn.execute(sql, *args)
        def executemany(self, sql, *args):
            return self._conn.executemany(sql, *args)

    instances.os = CountingOS()
    store.conn = CountingConnection(conn)
    receive(store, new)
    print("new acknowledged after", steps, "steps", flush=True)
    """
)


def row_of(data_dir: Path) -> sqlite3.Row | None:
    conn = sqlite3.connect(data_dir / "agent.db")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM instances WHERE sop_instance_uid = ?", (UID,)).fetchone()
    finally:
        conn.close()


def test_crash_at_every_step_of_a_replace_keeps_file_and_row_together(tmp_path: Path) -> None:
    from agent.store.db import open_database
    from agent.store.instances import InstanceStore

    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), uid=UID))
    outcomes: list[str] = []
    for kill_at in range(1, 200):
        run_dir = tmp_path / f"run{kill_at}"
        data_dir = run_dir / "data"
        data_dir.mkdir(parents=True)
        child = subprocess.run([sys.executable, str(script), str(data_dir), str(kill_at)],
                               capture_output=True, text=True, timeout=120)
        assert "old acknowledged" in child.stdout, child.stdout + child.stderr
        completed = child.returncode == 0
        if not completed:
            assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr

        # Restart: what the agent does before it listens again.
        conn = open_database(data_dir / "agent.db")
        store = InstanceStore(data_dir, conn, duplicate="replace")
        store.startup_cleanup()
        conn.close()

        row = row_of(data_dir)
        assert row is not None, f"kill at step {kill_at}: the acknowledged instance lost its row"
        path = data_dir / row["path"]
        assert path.is_file(), f"kill at step {kill_at}: the row's file is gone"
        in_file = dcmread(path, stop_before_pixels=True).PatientID
        assert row["patient_id"] == in_file, (
            f"kill at step {kill_at} ({child.stdout.strip().splitlines()[-1]}): "
            f"row says {row['patient_id']}, file holds {in_file}"
        )
        if completed:
            assert in_file == "NEW", "the replace was acknowledged but the old instance is kept"
        leftovers = [p for p in (data_dir / "objects").rglob("*") if p.is_file() and p != path]
        assert leftovers == [], f"kill at step {kill_at}: files left behind {leftovers}"
        assert list((data_dir / "tmp").iterdir()) == []
        outcomes.append(in_file)
        if completed:
            break
    else:
        raise AssertionError("the replace never completed")
    assert len(outcomes) >= 6, "too few steps counted: the hook does not see the replace"
    assert "OLD" in outcomes and outcomes[-1] == "NEW"
