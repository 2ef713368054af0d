"""`dicom-agent worklist` and `dicom-agent mpps`: the worklist cache and MPPS queue from the command line.

Both work on the agent's database beside a running agent (SQLite WAL, `BEGIN IMMEDIATE` writers):
- `worklist [--refresh] [--json]` prints what the MWL SCP serves (cache, local items, folder, minus
  performed steps) under a header saying fresh/stale and when the RIS answered last; `--refresh` runs the
  C-FIND itself first (exit 69 when the RIS cannot be reached: the cache is still printed).
- `worklist add FILE.wl...` adds local items (Part 10 worklist files, as dump2dcm writes them). Every
  file is checked first (a data set with a Scheduled Procedure Step Sequence, PS3.4 K.6.1.2.2); one that
  is empty or not DICOM is refused by name and nothing is added.
- `mpps start` / `mpps end` queue N-CREATE / N-SET jobs; the running agent sends them within its idle
  poll (5 s). `mpps list [--json]` shows the instances; JSON: a list of objects with the keys uid,
  origin, status, created_at, updated_at, expires_at (times in seconds since the epoch).
- Without the command's section in the profile (`[worklist]`, `[mpps]`): a profile error, exit 78.
- Read-only commands (`worklist` without --refresh, `mpps list`) never create the database: without
  one they say "no database at PATH" and exit 1. Commands that write (`worklist add`, `--refresh`,
  `mpps start/end`) create the data folder and database, which the agent then uses.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import trio
from typing import TYPE_CHECKING

from agent.errors import AgentError, ProfileError

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

    mp = sub.add_parser("mpps", help="start or end a Modality Performed Procedure Step (queued)")
    mp_sub = mp.add_subparsers(dest="mpps_command", required=True, metavar="ACTION")
    start = mp_sub.add_parser("start", help="N-CREATE (IN PROGRESS) for a worklist item or a patient")
    start.add_argument("--profile", help="profile file (TOML)")
    start.add_argument("--worklist-accession", metavar="ACCESSION", help="the worklist item's Accession Number")
    start.add_argument("--patient-id", help="unscheduled: Patient ID")
    start.add_argument("--patient-name", default="", help="unscheduled: Patient's Name (PN, e.g. DOE^JOHN)")
    start.add_argument("--birth-date", default="", help="unscheduled: Patient's Birth Date (YYYYMMDD)")
    start.add_argument("--sex", default="", help="unscheduled: Patient's Sex (M, F, O)")
    start.add_argument("--modality", help="Modality (default: [worklist] modality or the item's)")
    end = mp_sub.add_parser("end", help="N-SET COMPLETED (or DISCONTINUED)")
    end.add_argument("--profile", help="profile file (TOML)")
    end.add_argument("uid", help="the MPPS SOP Instance UID that 'mpps start' printed")
    end.add_argument("--discontinued", action="store_true", help="DISCONTINUED instead of COMPLETED")
    end.add_argument("--series", action="append", default=[], metavar="SERIES_UID",
                     help="a performed series (repeatable)")
    lst = mp_sub.add_parser("list", help="list MPPS instances")
    lst.add_argument("--profile", help="profile file (TOML)")
    lst.add_argument("--json", action="store_true",
                     help="JSON: [{uid, origin, status, created_at, updated_at, expires_at}] (epoch seconds)")


def _profile(path: str | None) -> Profile:
    from agent.profile import load_default_profile, load_profile

    return load_default_profile() if path is None else load_profile(path)


def _open(profile: Profile, *, write: bool) -> Any:
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


def _no_section(profile: Profile, section: str, command: str) -> ProfileError:
    return ProfileError(profile.source, f"[{section}]",
                        f"no such section in this profile; `dicom-agent {command}` needs it (the service is off without it)")


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


# ------------------------------------------------------------------ worklist


def run_worklist(args: argparse.Namespace) -> int:
    from agent.services.dataset import EXPLICIT_VR_LE, encode
    from agent.services.worklist import served_items
    from agent.store.worklist import WorklistStore

    profile = _profile(args.profile)
    settings = profile.worklist
    if settings is None:
        raise _no_section(profile, "worklist", "worklist")
    if args.worklist_command == "add":
        items = [(name, _worklist_item(name)) for name in args.files]  # all checked before any is added
        store = WorklistStore(_open(profile, write=True))
        for name, ds in items:
            store.add_local(Path(name).name, encode(ds, EXPLICIT_VR_LE))
            print(f"added {Path(name).name}: {ds.get('PatientName', '')} {ds.get('AccessionNumber', '')}")
        return 0
    store = WorklistStore(_open(profile, write=args.refresh))
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


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _header(source: str | None, state: Any, stale: bool, count: int) -> str:
    if source is None or state is None:
        return f"Worklist: local items only ({count} item(s))"
    if not stale:
        return f"Worklist from {source}: fresh, fetched {_when(state.fetched_at)} ({count} item(s))"
    error = f"; last error: {state.last_error}" if state.last_error else ""
    return f"Worklist from {source}: STALE, last fetched {_when(state.fetched_at)} ({count} item(s)){error}"


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


# ------------------------------------------------------------------ mpps


def run_mpps(args: argparse.Namespace) -> int:
    from agent.services.mpps import MppsSCU
    from agent.services.worklist import served_items
    from agent.store.mpps import MppsStore, PpsStatus
    from agent.store.queue import JobQueue
    from agent.store.worklist import WorklistStore

    profile = _profile(args.profile)
    m = profile.mpps
    if m is None:
        raise _no_section(profile, "mpps", f"mpps {args.mpps_command}")
    db = _open(profile, write=args.mpps_command != "list")
    store = MppsStore(db, lifetime=m.instance_lifetime)
    worklist = WorklistStore(db)
    w = profile.worklist
    scu = MppsSCU(db, store, JobQueue(db), worklist, m.send_to,
                  w.station_ae if w else profile.agent.ae_title, w.modality if w else None)
    if args.mpps_command == "list":
        instances = store.list()
        if args.json:
            print(json.dumps([{"uid": i.uid, "origin": i.origin, "status": str(i.status), "created_at": i.created_at,
                               "updated_at": i.updated_at, "expires_at": i.expires_at} for i in instances], indent=1))
            return 0
        for inst in instances:
            print(f"{inst.uid}  {inst.origin:6}  {inst.status:12}  created {_when(inst.created_at)}")
        return 0
    if args.mpps_command == "start":
        item = None
        patient = None
        if args.worklist_accession:
            matches = [i for i in served_items(worklist, w.folder if w else None)
                       if str(i.get("AccessionNumber", "")) == args.worklist_accession]
            if not matches:
                print(f"dicom-agent: no worklist item with accession {args.worklist_accession}", file=sys.stderr)
                return EX_FAILED
            item = matches[0]
        elif args.patient_id:
            patient = {"PatientID": args.patient_id, "PatientName": args.patient_name,
                       "PatientBirthDate": args.birth_date, "PatientSex": args.sex}
        else:
            print("dicom-agent: mpps start needs --worklist-accession or --patient-id", file=sys.stderr)
            return 2
        uid = scu.mpps_started(item, patient=patient, modality=args.modality)
        print(uid)
        return 0
    if args.mpps_command == "end":
        status = PpsStatus.DISCONTINUED if args.discontinued else PpsStatus.COMPLETED
        series = [{"series_uid": s} for s in args.series]
        scu.mpps_ended(args.uid, status, series)
        print(f"{args.uid} {status}")
        return 0
    raise AssertionError(args.mpps_command)
