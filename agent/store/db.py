"""The agent's single SQLite database (`<data_dir>/agent.db`).

Invariants:
- One database file per agent instance, shared by the instance index, the durable queue, the worklist
  cache, MPPS instances and print jobs, so that "index row written" and "forward jobs queued" commit in
  one transaction: a crash can never leave a stored instance without its forwarding jobs.
- WAL journal with `synchronous=FULL`: a committed transaction survives power loss.
- Autocommit mode (`isolation_level=None`); writers open `BEGIN IMMEDIATE` explicitly through
  `transaction()`, so a write lock is taken up front and never upgraded mid-transaction (no SQLITE_BUSY
  deadlock between the agent and a CLI command running beside it).
- Each module creates its own tables with `CREATE TABLE IF NOT EXISTS` from its own schema string.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

DB_FILENAME = "agent.db"


def open_database(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the agent database at `path` with the durability settings above."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, timeout=30.0
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


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
