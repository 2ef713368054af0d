"""What the database commands (`status`, `queue`, `worklist`, `mpps`) share: the profile they are
given, the agent's database in its data_dir, and a missing section as a profile error.

Invariant: a read-only command never creates the database (`open_db(write=False)`: "no database at
PATH", exit 1), so a wrong profile or folder cannot answer with a new, empty queue or worklist. Commands
that queue work for the agent create the folder and database, which the agent then uses.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from agent.errors import ProfileError

if TYPE_CHECKING:  # the profile module pulls in pydicom (~0.3 s): only commands that need it pay
    from agent.profile import Profile


def age_text(seconds: float | None) -> str:
    """A duration for a table cell: "-", "42s", "3.5m", "2.0h", "1.5d"."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def profile_from(path: str | None) -> Profile:
    """The profile at `path`, or the embedded default profile when there is none."""
    from agent.profile import load_default_profile, load_profile

    return load_default_profile() if path is None else load_profile(path)


def open_db(profile: Profile, *, write: bool) -> Any:
    """The agent's database; a read-only command never creates it (NoDatabase, exit 1)."""
    import sqlite3

    from agent.data_dir import DatabaseUnusable, existing_database, prepare_data_dir
    from agent.store.db import DB_FILENAME, open_database

    path = profile.agent.data_dir / DB_FILENAME
    if not write:
        return existing_database(path)
    prepare_data_dir(profile.agent.data_dir)
    try:
        return open_database(path)
    except sqlite3.Error as exc:
        raise DatabaseUnusable(path, str(exc)) from None


def no_section(profile: Profile, section: str, command: str) -> ProfileError:
    return ProfileError(profile.source, f"[{section}]",
                        f"no such section in this profile; `dicom-agent {command}` needs it (the service is off without it)")


def when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
