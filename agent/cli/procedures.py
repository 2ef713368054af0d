"""`dicom-agent procedures list|show`: the modality workflow's procedures and each of their steps.

- Read-only: it never creates the data folder or database ("no database at PATH", exit 1).
- `list` prints one line per procedure (oldest first); `show KEY` the procedure and every step: the MPPS
  N-CREATE / N-SET job state per destination, each image (stored locally, forwarded per destination,
  committed), the film. An unknown KEY: a message on stderr, exit 1.
- `--json`: `list` prints an array and `show` one object, each as agent.store.procedures.procedure_report
  builds it (keys procedure_key, state, scheduled, accession_number, patient_id, patient_name,
  study_instance_uid, series_instance_uid, mpps_uid, pps_id, description, operator, reason, error,
  started_at, ended_at, created_at, updated_at, images, mpps, print, measurements; times in seconds
  since the epoch). Queue job states are those of the queue (pending, claimed, done, dead); a job
  purged from the queue after it was done no longer shows.
- Without a `[device]` section in the profile: a profile error, exit 78.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.cli.common import no_section, open_db, profile_from, when

EX_FAILED = 1


def add_parsers(sub: Any) -> None:
    pr = sub.add_parser("procedures", help="the modality workflow's procedures and their steps (read-only)")
    pr_sub = pr.add_subparsers(dest="procedures_command", required=True, metavar="ACTION")
    lst = pr_sub.add_parser("list", help="one line per procedure")
    lst.add_argument("--profile", help="profile file (TOML)")
    lst.add_argument("--state", action="append", default=None, metavar="STATE",
                     help="only procedures in this state (repeatable)")
    lst.add_argument("--json", action="store_true", help="a JSON array of procedure reports")
    show = pr_sub.add_parser("show", help="one procedure and each of its steps")
    show.add_argument("key", metavar="ID", help="the device's procedure key")
    show.add_argument("--profile", help="profile file (TOML)")
    show.add_argument("--json", action="store_true", help="the procedure report as a JSON object")


def _summary(report: dict[str, Any]) -> str:
    images = report["images"]
    stored = sum(1 for i in images if i["state"] == "stored")
    committed = sum(1 for i in images if i["committed"])
    mpps = report["mpps"]
    mpps_text = "no MPPS" if not mpps["uid"] else "MPPS " + _jobs(mpps["create"], "N-CREATE") + " " + \
        _jobs(mpps["set"], "N-SET")
    who = report["accession_number"] or "unscheduled"
    return (f"{report['procedure_key']}  {report['state']:12}  {who:16}  patient {report['patient_id'] or '-':12}  "
            f"{stored}/{len(images)} stored, {committed} committed  {mpps_text}")


def _jobs(states: dict[str, str], what: str) -> str:
    if not states:
        return f"{what} -"
    return f"{what} " + ",".join(f"{dest}:{state}" for dest, state in sorted(states.items()))


def _details(report: dict[str, Any]) -> str:
    lines = [
        f"procedure {report['procedure_key']}: {report['state']}",
        f"  {'scheduled, accession ' + report['accession_number'] if report['scheduled'] else 'unscheduled'}; "
        f"patient {report['patient_name'] or '-'} ({report['patient_id'] or '-'})",
        f"  study {report['study_instance_uid'] or '-'}",
        f"  series {report['series_instance_uid'] or '-'}",
        f"  started {when(report['started_at'])}, ended {when(report['ended_at'])}",
    ]
    if report["reason"]:
        lines.append(f"  discontinued: {report['reason']}")
    if report["error"]:
        lines.append(f"  error: {report['error']}")
    mpps = report["mpps"]
    if mpps["uid"]:
        lines.append(f"  MPPS {mpps['uid']}: {_jobs(mpps['create'], 'N-CREATE')}; {_jobs(mpps['set'], 'N-SET')}")
    else:
        lines.append("  MPPS: none ([mpps] send_to not configured)" if report["state"] != "failed" else "  MPPS: none")
    for image in report["images"]:
        forwarded = ", ".join(f"{d}:{s}" for d, s in sorted(image["forwarded"].items())) or "-"
        line = (f"  image {image['image_key']} #{image['instance_number']}: {image['state']}"
                f"  {image['sop_instance_uid']}  forwarded {forwarded}  "
                f"{'committed' if image['committed'] else 'not committed'}")
        if image["error"]:
            line += f"  ({image['error']})"
        lines.append(line)
    if report["print"]:
        p = report["print"]
        lines.append(f"  film: job {p['job']} to {p.get('destination') or '-'}: {p['state']}")
    for m in report["measurements"]:
        lines.append(f"  measurement {m['name']} = {m['value']} {m['unit']}".rstrip())
    return "\n".join(lines)


def run_procedures(args: argparse.Namespace) -> int:
    from agent.store.procedures import ProcedureState, ProcedureStore, procedure_report

    profile = profile_from(args.profile)
    if profile.device is None:
        raise no_section(profile, "device", f"procedures {args.procedures_command}")
    db = open_db(profile, write=False)
    try:
        store = ProcedureStore(db)
        if args.procedures_command == "list":
            states = args.state
            if states is not None:
                known = [str(s) for s in ProcedureState]
                unknown = [s for s in states if s not in known]
                if unknown:
                    print(f"dicom-agent: unknown state {unknown[0]!r} (known: {', '.join(known)})", file=sys.stderr)
                    return 2
            reports = [procedure_report(db, row) for row in store.list(states)]
            if args.json:
                print(json.dumps(reports, indent=1))
            else:
                for report in reports:
                    print(_summary(report))
                if not reports:
                    print("no procedures")
            return 0
        row = store.get(args.key)
        if row is None:
            print(f"dicom-agent: no procedure {args.key!r}", file=sys.stderr)
            return EX_FAILED
        report = procedure_report(db, row)
        print(json.dumps(report, indent=1) if args.json else _details(report))
        return 0
    finally:
        db.close()
