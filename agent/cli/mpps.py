"""`dicom-agent mpps`: Modality Performed Procedure Steps from the command line, beside a running agent.

- `mpps start` / `mpps end` queue N-CREATE / N-SET jobs; the running agent sends them within its idle
  poll (5 s). They create the data folder and database if needed.
- `mpps list [--json]` shows the instances and only reads (no database: "no database at PATH", exit 1).
  JSON: a list of objects with exactly the keys uid, origin, status, created_at, updated_at,
  expires_at (times in seconds since the epoch).
- Without an `[mpps]` section in the profile: a profile error, exit 78.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.cli.common import no_section, open_db, profile_from, when

EX_FAILED = 1


def add_parsers(sub: Any) -> None:
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


def run_mpps(args: argparse.Namespace) -> int:
    from agent.services.mpps import MppsSCU
    from agent.services.worklist import served_items
    from agent.store.mpps import MppsStore, PpsStatus
    from agent.store.queue import JobQueue
    from agent.store.worklist import WorklistStore

    profile = profile_from(args.profile)
    m = profile.mpps
    if m is None:
        raise no_section(profile, "mpps", f"mpps {args.mpps_command}")
    db = open_db(profile, write=args.mpps_command != "list")
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
            print(f"{inst.uid}  {inst.origin:6}  {inst.status:12}  created {when(inst.created_at)}")
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
