"""The agent's single SQLite database (`<data_dir>/agent.db`).

Invariants:
- One database file per agent instance, shared by the instance index, the durable queue, the worklist
  cache, MPPS instances and print jobs, so that "index row written" and "forward jobs queued" commit in
  one transaction: a crash can never leave a stored instance without its forwarding jobs.
- WAL journal with `synchronous=FULL`: a committed transaction survives power loss. Two writers
  switch one COMMIT to `synchronous=NORMAL` (survives a process crash, not a power cut) where a lost
  transaction is recovered or harmless: a received instance's row (start-up indexes its file again,
  `instances.py`) and a forwarded job's completion (`queue.py`: it is sent once more).
- Autocommit mode (`isolation_level=None`); writers open `BEGIN IMMEDIATE` explicitly through
  `transaction()`, so a write lock is taken up front and never upgraded mid-transaction (no SQLITE_BUSY
  deadlock between the agent and a CLI command running beside it).
- Each module creates its own tables with `CREATE TABLE IF NOT EXISTS` from its own schema string.
- Patient data is owner/group only whatever the process umask: files the store creates are 0640 and
  folders 0750 (`FILE_MODE`, `DIR_MODE`, set explicitly after creation because the umask can only take
  bits away). SQLite gives the -wal and -shm files the database file's own mode, so creating that file
  0640 ourselves before SQLite opens it covers all three.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

DB_FILENAME = "agent.db"


FILE_MODE = 0o640
DIR_MODE = 0o750


def make_private_dirs(path: str | Path) -> None:
    """Create `path` and its missing parents as DIR_MODE folders; existing ones are left as they are."""
    path = Path(path)
    if path.is_dir():
        return
    make_private_dirs(path.parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)


def create_private_file(path: str | Path) -> None:
    """Create `path` empty with FILE_MODE if it does not exist (a file that exists is not touched)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def open_database(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the agent database at `path` with the durability settings above."""
    path = Path(path)
    make_private_dirs(path.parent)
    create_private_file(path)
    for own in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        # Written by an earlier version under a loose umask: take group write and all other access away.
        with contextlib.suppress(OSError):
            if own.stat().st_mode & 0o027:
                os.chmod(own, own.stat().st_mode & 0o750)
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, timeout=30.0
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def create_tables(conn: sqlite3.Connection, schema: str) -> None:
    """Run a store's `CREATE … IF NOT EXISTS` statements (separated by ';') inside the caller's
    transaction, one at a time: `executescript` would COMMIT the open transaction."""
    for statement in schema.split(";"):
        if statement.strip():
            conn.execute(statement)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE` … `COMMIT`, or `ROLLBACK` on any exception.

    Nested use joins the outer transaction (the inner block neither begins nor commits), so a module
    function that writes can be called alone or inside a caller's larger transaction.
    """
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        # SQLite rolls back by itself after some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM): a ROLLBACK
        # then fails with "no transaction is active" and would hide the error that matters.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
