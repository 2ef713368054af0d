"""The agent's data folder and database as the command line meets them: checked before use, with one
clear line naming the path when they cannot be used.

Invariants:
- `check_data_dir` and `check_database` (for `check-profile`) create nothing: the folder is judged by
  its nearest existing ancestor, the database is opened read-only (`immutable` when no WAL file exists,
  so not even the `-shm`/`-wal` side files appear).
- `prepare_data_dir` (for `run` and the commands that write) creates the folder; every OS error
  becomes `DataDirUnusable` (exit 78, EX_CONFIG: the profile names a folder that cannot be used, and a
  restart cannot fix it, so systemd must not restart the agent forever).
- A database file that SQLite cannot open or that fails its quick check is `DatabaseUnusable` (exit 73,
  EX_CANTCREAT); the file is never touched, so the operator keeps the evidence.
- Read-only commands (status, queue list/show, worklist, mpps list) use `existing_database`: a missing
  database is `NoDatabase` (exit 1), never a new empty one that would say "queue: empty".
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from agent.errors import AgentError
from agent.store.db import make_private_dirs

__all__ = [
    "DataDirUnusable",
    "DatabaseUnusable",
    "NoDatabase",
    "check_data_dir",
    "check_database",
    "existing_database",
    "prepare_data_dir",
]


class DataDirUnusable(AgentError):
    """`[agent] data_dir` cannot hold the agent's data (under a file, no permission)."""

    exit_status = 78  # EX_CONFIG

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"data_dir {path}: {reason}")
        self.path = path


class DatabaseUnusable(AgentError):
    """The database file exists but cannot be opened or is damaged."""

    exit_status = 73  # EX_CANTCREAT

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"database {path} cannot be used: {reason} (move it aside to start afresh)")
        self.path = path


class NoDatabase(AgentError):
    """A read-only command found no database: it would otherwise report an empty one it just made."""

    exit_status = 1

    def __init__(self, path: Path) -> None:
        super().__init__(f"no database at {path} (has the agent run with this profile?)")
        self.path = path


def _writable_dir(path: Path) -> str | None:
    """Why `path` (which exists) cannot be a folder we create files in; None if it can."""
    if not path.is_dir():
        return f"{path} is not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"permission denied: cannot create files in {path}"
    return None


def check_data_dir(path: Path) -> None:
    """DataDirUnusable unless `path` is, or could be created as, a writable folder. Creates nothing."""
    probe = path
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: mkdir would fail on it
            raise DataDirUnusable(path, f"{probe} is a broken symbolic link")
        probe = probe.parent
    reason = _writable_dir(probe)
    if reason is not None:
        raise DataDirUnusable(path, reason)


def prepare_data_dir(path: Path) -> None:
    """Create `path` if needed; DataDirUnusable (naming the path) on any OS error."""
    check_data_dir(path)
    try:
        make_private_dirs(path)  # owner/group only whatever the umask: it holds patient data
    except OSError as exc:
        raise DataDirUnusable(path, exc.strerror or str(exc)) from None
    reason = _writable_dir(path)
    if reason is not None:
        raise DataDirUnusable(path, reason)


def check_database(path: Path) -> None:
    """DatabaseUnusable if the database at `path` exists and cannot be read or fails `quick_check`."""
    if not path.exists():
        return
    if not path.is_file():
        raise DatabaseUnusable(path, "not a regular file")
    # No WAL file: nothing is running on it, read the file as it is without creating side files.
    mode = "mode=ro" if Path(f"{path}-wal").exists() else "immutable=1"
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?{mode}", uri=True)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise DatabaseUnusable(path, str(exc)) from None
    problems = [r[0] for r in rows if r[0] != "ok"]
    if problems:
        raise DatabaseUnusable(path, f"quick_check: {problems[0]}")


def existing_database(path: Path) -> sqlite3.Connection:
    """Open the database a running (or past) agent made; NoDatabase if there is none."""
    from agent.store.db import open_database

    if not path.exists():
        raise NoDatabase(path)
    try:
        return open_database(path)
    except sqlite3.Error as exc:
        raise DatabaseUnusable(path, str(exc)) from None
