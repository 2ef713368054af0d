"""The configuration table of the statement (PS3.2 Table N.6-1): every profile key of the sections the
profile turns on, with its value, and the values the code fixes.

Who changes what (PS3.2 N.6 vocabulary): a profile key is SERVICE (the installer edits the profile file
and restarts the agent); a command-line option is USER (given per command); a value the code fixes is
FIXED. Keys are read from the profile's own dataclasses, so a new key appears here without an edit.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import re
from collections.abc import Mapping
from pathlib import Path

from agent import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from agent.conformance.model import Setting
from agent.profile import TRANSFER_SYNTAX_ALIASES, Profile

_KEY_COMMENT = re.compile(r"^\s*([a-z_]+)\s*=.*?#\s*(.+?)\s*$")
_SECTION = re.compile(r"^\s*\[([a-z_.]+)\]")

#: Fields that are not profile keys (set by the parser).
_NOT_KEYS = {"name"}
#: Fields whose values the statement does not print (where the data lives is not an interface).
_HIDDEN = {"data_dir", "options", "folder", "certificate", "key", "ca", "password_file"}
_TS_NAMES = {uid: name for name, uid in TRANSFER_SYNTAX_ALIASES.items()}


def default_comments() -> dict[tuple[str, str], str]:
    """The explanation of each key, from the comments of the embedded default profile (one source)."""
    text = importlib.resources.files("agent").joinpath("default_profile.toml").read_text("utf-8")
    out: dict[tuple[str, str], str] = {}
    section = ""
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            section = m.group(1)
            continue
        m = _KEY_COMMENT.match(line)
        if m and '"' not in m.group(2)[:1]:
            out[(section, m.group(1))] = m.group(2)
    return out


def duration(seconds: float) -> str:
    """Seconds as the profile would write them: "90 d", "10 min", "30 s", "0.5 s"."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def show(value: object) -> str:
    """A profile value as the statement prints it; secrets (passcodes, password hashes) never appear."""
    if value is None:
        return "(not set)"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _summary(value)
    if isinstance(value, (frozenset, set)):
        return show(tuple(sorted(str(v) for v in value)))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return duration(value)
    if isinstance(value, (tuple, list)):
        return ", ".join(show(v) for v in value) if value else "(none)"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={show(v)}" for k, v in value.items()) or "(none)"
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _summary(value: object) -> str:
    """One line for a nested setting (a peer's TLS or identity, an access rule), without secrets."""
    name = type(value).__name__
    if name == "ClientIdentity":
        who = f", user {value.username}" if getattr(value, "username", "") else ""  # type: ignore[attr-defined]
        return f"{value.kind}{who}; positive response {'requested' if value.positive_response else 'not requested'}"  # type: ignore[attr-defined]
    if name == "PeerTls":
        return f"TLS, profile {value.profile}" + (f", subject {value.subject}" if value.subject else "")  # type: ignore[attr-defined]
    if name == "AccessRule":
        return f"{value.calling_ae}: {', '.join(sorted(value.services))}"  # type: ignore[attr-defined]
    return name


def _rows(section: str, settings: object, comments: Mapping[tuple[str, str], str]) -> list[Setting]:
    rows = []
    for f in dataclasses.fields(settings):  # type: ignore[arg-type]
        if f.name in _NOT_KEYS or f.name == "sop_classes":
            continue
        value = "(site-specific)" if f.name in _HIDDEN else show(getattr(settings, f.name))
        if f.name == "accept_all":  # the profile's `accept` key is these two fields
            classes = getattr(settings, "sop_classes")
            rows.append(Setting(f"[{section}] accept", "SERVICE",
                                "all-storage" if getattr(settings, f.name) else f"{len(classes)} SOP classes (see 5.2)",
                                comments.get((section, "accept"), "")))
            continue
        if f.name == "users" and isinstance(getattr(settings, f.name), Mapping):
            value = show(tuple(getattr(settings, f.name))) + " (passwords: salted hashes, not shown)"
        if f.name == "transfer_syntaxes":
            value = ", ".join(_TS_NAMES.get(ts, ts) for ts in getattr(settings, f.name))
        if f.name == "max_pdu_length" and getattr(settings, f.name) == 0:
            value = "0 (unlimited)"
        elif f.name in {"max_pdu_length", "free_space_floor"}:
            value = f"{getattr(settings, f.name)} bytes"
        generic = section.split(".")[0] if section.startswith("peers.") else section
        rows.append(Setting(f"[{section}] {f.name}", "SERVICE", value, comments.get((generic, f.name), "")))
    return rows


def configuration(profile: Profile) -> tuple[Setting, ...]:
    comments = default_comments()
    rows: list[Setting] = [
        Setting("Implementation Class UID", "FIXED", IMPLEMENTATION_CLASS_UID),
        Setting("Implementation Version Name", "FIXED", IMPLEMENTATION_VERSION_NAME),
        Setting("Asynchronous operations window", "FIXED", "1 invoked, 1 performed",
                "an Asynchronous Operations Window item is answered with 1/1 (PS3.7 D.3.3.3)"),
        Setting("Presentation contexts per proposed association", "FIXED", "at most 128", "PS3.8 9.3.2.2"),
        Setting("Calling/called AE title, timeout of a command", "USER", "command-line options",
                "dicom-agent echo, store, find, move, get: --aet, --aec, --timeout"),
    ]
    rows += _rows("agent", profile.agent, comments)
    for name, peer in profile.peers.items():
        rows += _rows(f"peers.{name}", peer, comments)
    for section in ("storage", "commitment", "worklist", "mpps", "print", "device"):
        value = getattr(profile, section, None)
        if value is not None:
            rows += _rows(section, value, comments)
    for section in _optional_sections(profile):
        rows += _rows(section, getattr(profile, section), comments)
    return tuple(rows)


def _optional_sections(profile: Profile) -> list[str]:
    """Sections added to the profile after this module was written (query, tls, security, audit)."""
    known = {"source", "agent", "peers", "storage", "commitment", "worklist", "mpps", "print", "device"}
    return [f.name for f in dataclasses.fields(profile)
            if f.name not in known and dataclasses.is_dataclass(getattr(profile, f.name, None))]


__all__ = ["configuration", "default_comments", "duration", "show"]
