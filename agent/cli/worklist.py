"""`dicom-agent worklist`: the worklist cache from the command line, beside a running agent (SQLite WAL,
`BEGIN IMMEDIATE` writers).

- `worklist [--refresh] [--json]` prints what the MWL SCP serves (cache, local items, folder, minus
  performed steps) under a header saying fresh/stale and when the RIS answered last; `--refresh` runs the
  C-FIND itself first (exit 69 when the RIS cannot be reached: the cache is still printed).
- `worklist add FILE.wl...` adds local items (Part 10 worklist files, as dump2dcm writes them). Every
  file is checked first (a data set with a Scheduled Procedure Step Sequence, PS3.4 K.6.1.2.2); one that
  is empty or not DICOM is refused by name and nothing is added.
- Without a `[worklist]` section in the profile: a profile error, exit 78.
- `worklist` without --refresh only reads: without a database it says "no database at PATH", exit 1.
  `worklist add` and `--refresh` create the data folder and database, which the agent then uses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from agent.cli.common import no_section, open_db, profile_from, when
from agent.errors import AgentError

if TYPE_CHECKING:  # pydicom and the profile module cost ~0.3 s to import: only commands that need them pay
    from pydicom import Dataset

    from agent.profile import Profile

EX_FAILED = 1
EX_UNAVAILABLE = 69


def add_parsers(sub: Any) -> None:
    wl = sub.add_parser("worklist", help="print the cached Modality Worklist; refresh it; add local items")
    wl.add_argument("--profile", help="profile file (TOML); default: the embedded default profile")
    wl.add_argument("--json", action="store_true", help="print JSON instead of a table")
    wl.add_argument("--refresh", action="store_true", help="query the RIS ([worklist] source) first")
    wl_sub = wl.add_subparsers(dest="worklist_command", metavar="ACTION")
    add = wl_sub.add_parser("add", help="add worklist files (.wl) as local items")
    add.add_argument("--profile", default=argparse.SUPPRESS, help="profile file (TOML)")
    add.add_argument("files", nargs="+", metavar="FILE.wl")


def _worklist_item(name: str) -> Dataset:
    """The data set of a worklist file, or AgentError naming the file when it is not a worklist item."""
    from agent.services.dataset import DataSetError, read_part10

    try:
        ds = read_part10(name)
    except DataSetError as exc:
        raise AgentError(f"{name}: not a DICOM worklist item: {exc.__cause__ or exc}") from None
    # read_part10 reads leniently (files without File Meta), so an empty or text file reads as an empty or
    # nonsense data set: a worklist item has a Scheduled Procedure Step Sequence (PS3.4 K.6.1.2.2, type 1).
    sps = ds.get("ScheduledProcedureStepSequence") if len(ds) else None
    if not sps:
        what = "an empty file" if Path(name).stat().st_size == 0 else "no Scheduled Procedure Step Sequence (0040,0100)"
        raise AgentError(f"{name}: not a DICOM worklist item ({what}); nothing was added")
    return ds


def run_worklist(args: argparse.Namespace) -> int:
    from agent.services.dataset import EXPLICIT_VR_LE, encode
    from agent.services.worklist import served_items
    from agent.store.worklist import WorklistStore

    profile = profile_from(args.profile)
    settings = profile.worklist
    if settings is None:
        raise no_section(profile, "worklist", "worklist")
    if args.worklist_command == "add":
        items = [(name, _worklist_item(name)) for name in args.files]  # all checked before any is added
        store = WorklistStore(open_db(profile, write=True))
        for name, ds in items:
            store.add_local(Path(name).name, encode(ds, EXPLICIT_VR_LE))
            print(f"added {Path(name).name}: {ds.get('PatientName', '')} {ds.get('AccessionNumber', '')}")
        return 0
    store = WorklistStore(open_db(profile, write=args.refresh))
    status = 0
    if args.refresh:
        status = _refresh(profile, store)
    items = served_items(store, settings.folder)
    state = store.fetch_state(settings.source) if settings.source else None
    stale = state is not None and state.is_stale(time.time(), settings.stale_after)
    rows = [_row(item) for item in items]
    if args.json:
        print(json.dumps({
            "source": settings.source,
            "fresh": None if state is None else not stale,
            "fetched_at": None if state is None else state.fetched_at,
            "last_error": None if state is None else state.last_error,
            "items": rows,
        }, ensure_ascii=False, indent=2))
    else:
        print(_header(settings.source, state, stale, len(rows)))
        print(_table(rows))
    return status


def _refresh(profile: Profile, store: Any) -> int:
    from agent.app import timeouts_of
    from agent.services.worklist import build_query, query_worklist

    settings = profile.worklist
    assert settings is not None
    if settings.source is None:
        print("dicom-agent: [worklist] has no source to refresh from", file=sys.stderr)
        return EX_FAILED
    peer = profile.peers[settings.source]
    try:
        found = trio.run(lambda: query_worklist(peer, calling_ae=profile.agent.ae_title,
                                                identifier=build_query(settings), timeouts=timeouts_of(profile)))
    except AgentError as exc:
        store.record_failure(peer.name, str(exc))
        print(f"dicom-agent: worklist refresh from {peer.name} failed: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    store.replace_cache(peer.name, found)
    return 0


def _header(source: str | None, state: Any, stale: bool, count: int) -> str:
    if source is None or state is None:
        return f"Worklist: local items only ({count} item(s))"
    if not stale:
        return f"Worklist from {source}: fresh, fetched {when(state.fetched_at)} ({count} item(s))"
    error = f"; last error: {state.last_error}" if state.last_error else ""
    return f"Worklist from {source}: STALE, last fetched {when(state.fetched_at)} ({count} item(s)){error}"


def _row(item: Dataset) -> dict[str, str]:
    from pydicom import Dataset

    sps = (item.get("ScheduledProcedureStepSequence") or [Dataset()])[0]
    start = f"{sps.get('ScheduledProcedureStepStartDate', '') or ''} {sps.get('ScheduledProcedureStepStartTime', '') or ''}"
    return {
        "patient": str(item.get("PatientName", "") or ""),
        "patient_id": str(item.get("PatientID", "") or ""),
        "accession": str(item.get("AccessionNumber", "") or ""),
        "sps_start": start.strip(),
        "modality": str(sps.get("Modality", "") or ""),
        "description": str(sps.get("ScheduledProcedureStepDescription", "")
                           or item.get("RequestedProcedureDescription", "") or ""),
        "study_uid": str(item.get("StudyInstanceUID", "") or ""),
    }


_COLUMNS = (("patient", "Patient"), ("patient_id", "ID"), ("accession", "Accession"),
            ("sps_start", "SPS start"), ("modality", "Modality"), ("description", "Description"))


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _table(rows: list[dict[str, str]]) -> str:
    widths = {k: max([_width(h)] + [_width(r[k]) for r in rows]) for k, h in _COLUMNS}

    def line(values: dict[str, str]) -> str:
        return "  ".join(values[k] + " " * (widths[k] - _width(values[k])) for k, _h in _COLUMNS).rstrip()

    out = [line({k: h for k, h in _COLUMNS})]
    out += [line(r) for r in rows]
    return "\n".join(out)
