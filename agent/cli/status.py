"""`dicom-agent status --profile FILE [--json] [--watch [--interval S]]`: what the agent is doing now.

Invariants:
- The running agent is asked on its control socket (agent/control.py); when none answers, the
  database is read instead and the output says so (text: a first line "agent not running ...";
  JSON: `"source": "database"` with the live keys null). A socket that exists but cannot be used
  (permission denied) is reported on stderr, then the database is read.
- Read-only: never creates the data folder or the database (no agent and no database: exit 1).
- `--json` prints the status document (schema `dicom-agent.status/1`, docs/status.md); with
  `--watch` one document per line (JSON Lines). Text `--watch` redraws the screen on a terminal,
  and separates the snapshots with a line of dashes elsewhere. Ctrl-C ends `--watch` with status 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from agent.cli.common import age_text, open_db, profile_from

EX_FAILED = 1
CLEAR = "\x1b[H\x1b[2J"


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = sub.add_parser(
        "status", help="what the agent is doing now: associations and transfers, counters, queue, commitment, "
                       "worklist, MPPS, printer, device (from the running agent, else from its database)")
    status.add_argument("--profile", required=True, help="the agent's profile (TOML)")
    status.add_argument("--json", action="store_true", help="the status document as JSON (docs/status.md)")
    status.add_argument("--watch", action="store_true", help="redraw every --interval seconds until Ctrl-C")
    status.add_argument("--interval", type=_interval, default=1.0, help="seconds between redraws with --watch [1]")


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"seconds from 0.1 to 3600, got {text!r}")
    return value


def gather(profile: Any) -> tuple[dict[str, Any], str]:
    """The status document and, when it comes from the database, why (for the text output)."""
    from agent.control import ControlError, ask, status_socket_candidates
    from agent.status import StoredStatus, document

    candidates = status_socket_candidates(profile)
    for path in candidates:
        try:
            answer = ask(path)
        except ControlError as exc:
            print(f"dicom-agent status: {exc}; reading the database instead", file=sys.stderr)
            continue
        if answer is not None:
            return answer, ""
    from agent.errors import AgentError
    from agent.store.db import DB_FILENAME

    path = profile.agent.data_dir / DB_FILENAME
    try:
        there = path.exists()
    except PermissionError:  # the data folder itself is closed to us
        there = True
    if there and not os.access(path, os.R_OK | os.W_OK):
        # SQLite's write-ahead log needs write access even to read; say so instead of "damaged".
        raise AgentError(f"no agent answers and the database {path} cannot be opened as this user "
                         f"(it needs read and write access): run status as root or as the agent's user")
    db = open_db(profile, write=False)  # NoDatabase (exit 1) when there is none either
    try:
        doc = document("database", None, StoredStatus(profile, db).read())
    finally:
        db.close()
    return doc, f"agent not running (no control socket at {candidates[0]}): from the database"


def run_status(args: argparse.Namespace) -> int:
    profile = profile_from(args.profile)
    if not args.watch:
        doc, note = gather(profile)
        print(json.dumps(doc, indent=1) if args.json else render(doc, note))
        return 0
    tty = sys.stdout.isatty()
    try:
        while True:
            doc, note = gather(profile)
            if args.json:
                print(json.dumps(doc, separators=(",", ":")), flush=True)
            else:
                text = render(doc, note)
                print(f"{CLEAR}{text}" if tty else f"{text}\n{'-' * 40}", flush=True)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


# ---------------------------------------------------------------------------------------- text


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, step in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= step:
            return f"{n / step:.1f} {unit}"
    return f"{int(n)} B"


def _table(headers: list[str], rows: list[list[object]]) -> str:
    from agent.cli.queue import _table as table

    return table(headers, rows)


def _transfer(t: dict[str, Any] | None) -> str:
    if t is None:
        return "-"
    of = f" of {_size(t['total'])}" if t.get("total") else ""
    return f"{t['command']} {t['sop_class']}: {_size(t['bytes'])}{of}"


def render(doc: dict[str, Any], note: str = "") -> str:
    now = doc["generated_at"]
    out: list[str] = []
    a = doc["agent"]
    if a is None:
        out.append(note or "agent not running: from the database")
    else:
        out.append(f"agent {a['ae_title']} (dicom-agent {a['version']}, pid {a['pid']}), up {age_text(a['uptime'])}, "
                   f"listening on {', '.join(map(str, a['ports'])) or '-'}")
    assocs = doc["associations"]
    if assocs is not None:
        out.append("")
        if assocs:
            out.append(_table(
                ["DIR", "PEER", "AGE", "IN", "OUT", "RECEIVING", "SENDING", "SERVICES"],
                [[x["direction"], _peer(x), age_text(now - x["started_at"]), _size(x["bytes_received"]),
                  _size(x["bytes_sent"]), _transfer(x["receiving"]), _transfer(x["sending"]),
                  ", ".join(x["services"])[:60]] for x in assocs]))
        else:
            out.append("no association open")
    c = doc["counters"]
    if c is not None:
        parts = [f"{c['associations_served']} associations served"]
        if c["instances_received"] is not None:
            parts.append(f"{c['instances_received']} instances received")
        if c["worklist_refreshes"] is not None:
            parts.append(f"{c['worklist_refreshes']} worklist refreshes")
        if c["device_events"] is not None:
            parts.append(f"{c['device_events']} device events")
        out.append("\nsince start: " + ", ".join(parts))
        for name, n in c["requests_served"].items():
            out.append(f"  {n} {name}")
    q = doc["queue"]
    out.append("")
    outbound = (c or {}).get("outbound", {})
    if q["destinations"]:
        out.append(_table(
            ["DESTINATION", "PENDING", "IN PROGRESS", "DEAD", "DONE", "OLDEST PENDING", "NEXT TRY", "SENT", "LAST ERROR"],
            [[n, d["pending"], d["claimed"], d["dead"], d["done"], age_text(d["oldest_pending_age"]),
              "-" if d["next_attempt_at"] is None else ("now" if d["next_attempt_at"] <= now
                                                       else f"in {age_text(d['next_attempt_at'] - now)}"),
              outbound.get(n, {}).get("delivered", "-"), (outbound.get(n, {}).get("last_error") or "")[:50]]
             for n, d in q["destinations"].items()]))
    else:
        out.append("queue: empty")
    out.append(f"\nqueue depth {q['depth']}, dead jobs {q['dead']}"
               + ("  (see: dicom-agent queue list --state dead)" if q["dead"] else ""))
    cm = doc["commitment"]
    out.append("\nstorage commitment:")
    out.append(f"  requests: {cm['requests_pending']} queued, {cm['requests_outstanding']} awaiting report, "
               f"{cm['requests_done']} answered, {cm['requests_expired']} expired (re-requested)")
    if "instances_committed" in cm:
        out.append(f"  instances: {cm['instances_committed']} committed, {cm['instances_awaiting']} awaiting "
                   f"commitment, {cm['instances_uncommitted']} not committed")
    out.append(f"  reports to send (as archive): {cm['reports_pending']} pending, {cm['reports_sent']} sent")
    w = doc["worklist"]
    if w is not None:
        fresh = "never" if w["last_success_at"] is None else f"{age_text(w['age'])} ago ({w['items']} items)"
        line = f"\nworklist from {w['source'] or '(local only)'}: last successful query {fresh}"
        if w["last_error"] and (w["last_success_at"] is None or (w["last_attempt_at"] or 0) > w["last_success_at"]):
            line += f"; last attempt failed: {w['last_error']}"
        out.append(line)
    mpps = doc["mpps"]["in_progress"]
    if mpps:
        out.append(f"\nMPPS in progress: {len(mpps)}")
        for m in mpps[:10]:
            out.append(f"  {m['uid']} from {m['origin']}, since {age_text(now - m['created_at'])}")
    pr = doc["procedures"]
    if pr is not None:
        out.append(f"\nprocedures open: {len(pr['open'])}")
        for r in pr["open"][:10]:
            out.append(f"  {r['procedure_key']} {r['state']} accession {r['accession_number'] or '-'}, "
                       f"{r['images']} image(s), since {age_text(now - r['started_at'])}")
    p = doc["printer"]
    if p is not None:
        jobs = ", ".join(f"{n} {s}" for s, n in sorted(p["jobs"].items())) or "no jobs"
        out.append(f"\nprinter: {p['status'] or 'not read yet'} ({p['info'] or '-'}); print jobs: {jobs}")
    d = doc["device"]
    if d is not None:
        state = {True: "connected", False: "disconnected", None: "no status yet"}[d["connected"]]
        out.append(f"\ndevice ({d['driver']}): {state}{': ' + d['info'] if d['info'] else ''}")
    return "\n".join(out)


def _peer(x: dict[str, Any]) -> str:
    if x["direction"] == "in":
        return f"{x['calling_ae']}@{x['address']}"
    return f"{x['destination']} ({x['called_ae']}@{x['address']})"
