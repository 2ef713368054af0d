"""A SIGKILL between any two steps of receiving and committing instances loses nothing acknowledged and
leaves nothing unacknowledged half-made.

A forked child receives three new instances into a fresh store as the Storage SCP does (write, prepare,
group commit) (slot batches of 2, so making slots is
among the steps) while counting every file-system call the store makes (os.open, os.write, os.fdatasync,
os.rename, os.mkdir, ...) and each BEGIN/COMMIT; at step N it SIGKILLs itself before taking the step.
After a commit returns the child reports the instance as acknowledged through a pipe (what the C-STORE
response would say). N runs from 1 until the child completes. After each kill the parent reopens the store
and runs `startup_cleanup()`, as the agent does before listening, then checks:
- every acknowledged instance has its row and its file, and the file holds the data set that was sent;
- every row has its file with that row's data set (an instance whose COMMIT landed before the kill but
  was not yet reported is whole: the peer, never answered, sends it again);
- no object file without a row, nothing left in tmp/.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

from agent.store.db import open_database
from agent.store.instances import InstanceStore
from tests.unit.test_instances import CT, EXPLICIT, encode, make_dataset

UIDS = [f"1.2.826.0.1.3680043.8.498.61.{i}" for i in range(3)]


def _child(data_dir: Path, kill_at: int, report_fd: int) -> None:
    """Runs in the forked child; never returns (SIGKILL, or os._exit)."""
    from agent.store import instances

    payloads = {uid: encode(make_dataset(uid, name=f"Patient^{uid[-1]}"), EXPLICIT) for uid in UIDS}
    conn = open_database(data_dir / "agent.db")
    store = InstanceStore(data_dir, conn)
    instances.SLOT_BATCH = 2
    steps = 0

    def step() -> None:
        nonlocal steps
        steps += 1
        if steps == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    real_os = os

    class CountingOS:
        WATCHED = {"open", "close", "write", "fsync", "fdatasync", "rename", "replace", "link", "unlink",
                   "mkdir", "chmod", "fchmod"}

        def __getattr__(self, name: str) -> object:
            real = getattr(real_os, name)
            if name not in self.WATCHED:
                return real

            def call(*args: object, **kw: object) -> object:
                step()
                return real(*args, **kw)

            return call

    class CountingConnection:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self._conn = conn

        def __getattr__(self, name: str) -> object:
            return getattr(self._conn, name)

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql.strip().upper() in ("COMMIT", "BEGIN IMMEDIATE"):
                step()
            return self._conn.execute(sql, *args)

    instances.os = CountingOS()  # type: ignore[assignment]
    store.conn = CountingConnection(conn)  # type: ignore[assignment]
    for uid in UIDS:
        incoming = store.begin(CT, uid, EXPLICIT, calling_ae="MODALITY")
        data = payloads[uid]
        incoming.write(data[: len(data) // 2])
        incoming.write(memoryview(data)[len(data) // 2 :])
        incoming.prepare()  # what the Storage SCP does: check and flush, then the (group) commit
        store.install_group(incoming, None, lambda fn, *args: fn(*args))
        real_os.write(report_fd, f"{uid}\n".encode())
    real_os.write(report_fd, b"done\n")
    real_os._exit(0)


def _run(data_dir: Path, kill_at: int) -> tuple[list[str], bool]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        try:
            _child(data_dir, kill_at, write_fd)
        finally:
            os._exit(3)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        lines = pipe.read().split()
    _, status = os.waitpid(pid, 0)
    done = lines[-1:] == ["done"]
    if done:
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    else:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    return [line for line in lines if line != "done"], done


def test_kill_between_every_pair_of_steps_of_receive_and_commit(tmp_path: Path) -> None:
    expected = {uid: encode(make_dataset(uid, name=f"Patient^{uid[-1]}"), EXPLICIT) for uid in UIDS}
    kills = 0
    for kill_at in range(1, 400):
        data_dir = tmp_path / f"run{kill_at}"
        acknowledged, done = _run(data_dir, kill_at)
        if not (data_dir / "agent.db").exists():
            continue  # killed before the store existed
        conn = open_database(data_dir / "agent.db")
        try:
            store = InstanceStore(data_dir, conn)
            store.startup_cleanup()
            rows = {s.sop_instance_uid: s for s in store.find()}
        finally:
            conn.close()
        where = f"kill at step {kill_at} (acknowledged {acknowledged})"
        assert set(acknowledged) <= set(rows), f"{where}: an acknowledged instance was lost"
        for uid, stored in rows.items():
            assert stored.path.is_file(), f"{where}: row {uid} has no file"
            body = stored.path.read_bytes()
            assert body.endswith(expected[uid]) and stored.size == len(body), f"{where}: {uid} is half"
            assert stored.patient_name == f"Patient^{uid[-1]}"
        files = sorted(p for p in (data_dir / "objects").rglob("*") if p.is_file())
        assert files == sorted(s.path for s in rows.values()), f"{where}: files without a row"
        assert list((data_dir / "tmp").iterdir()) == [], f"{where}: tmp/ not emptied"
        if done:
            assert sorted(rows) == sorted(UIDS)
            break
        kills += 1
    else:
        raise AssertionError("the child never completed")
    assert kills >= 20, "too few steps counted: the hook does not see the commit"
