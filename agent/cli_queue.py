"""`dicom-agent queue …` and `dicom-agent status`: the durable queue and commitment state, for service
engineers (tables) and machines (`--json`).

Invariants:
- These commands open the agent's database (`<data_dir>/agent.db` from the profile) with their own
  connection while the agent may be running: reads see the last committed state (WAL), writes take the
  write lock with `BEGIN IMMEDIATE` and wait for the agent's transaction, never the other way round.
- A retried job is due at once; the running agent's worker for that destination picks it up within its
  idle poll (5 s).
- Exit status: 0 done; 1 no such job / nothing to do on it (e.g. `drop` of a claimed job).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from agent.errors import QueueError
from agent.store.commitment import CommitmentStore
from agent.store.db import DB_FILENAME, open_database
from agent.store.queue import Job, JobQueue, JobState

EX_FAILED = 1


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    queue = sub.add_parser("queue", help="list, show, retry or drop durable queue jobs")
    qsub = queue.add_subparsers(dest="queue_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--profile", required=True, help="the agent's profile (TOML): where its database is")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    ls = qsub.add_parser("list", help="jobs, oldest first (pending, claimed and dead unless --all)")
    common(ls)
    ls.add_argument("--state", choices=[s.value for s in JobState], action="append", help="only this state (repeatable)")
    ls.add_argument("--destination", help="only this peer")
    ls.add_argument("--all", action="store_true", help="include done jobs")
    ls.add_argument("--limit", type=int, default=200)
    show = qsub.add_parser("show", help="one job in full")
    common(show)
    show.add_argument("id", type=int)
    retry = qsub.add_parser("retry", help="make a dead (or waiting) job due now; --dead: every dead job")
    common(retry)
    retry.add_argument("id", type=int, nargs="?")
    retry.add_argument("--dead", action="store_true", help="retry every dead job")
    retry.add_argument("--destination", help="with --dead: only this peer's")
    drop = qsub.add_parser("drop", help="delete a job that is not being worked on")
    common(drop)
    drop.add_argument("id", type=int)

    status = sub.add_parser("status", help="queue depth per destination, dead jobs, commitment state")
    common(status)


def _open(profile_path: str) -> tuple[JobQueue, CommitmentStore]:
    from agent.profile import load_profile  # pydicom comes with it: only commands that run pay for it

    profile = load_profile(profile_path)
    db = open_database(profile.agent.data_dir / DB_FILENAME)
    queue = JobQueue(db)
    return queue, CommitmentStore(db)


def _job_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "kind": job.kind, "destination": job.destination, "state": job.state.value,
        "attempts": job.attempts, "next_attempt_at": job.next_attempt_at, "created_at": job.created_at,
        "updated_at": job.updated_at, "group_key": job.group_key, "after_job": job.after_job,
        "last_error": job.last_error, "payload": job.payload,
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _subject(job: Job) -> str:
    p = job.payload
    return str(p.get("uid") or p.get("transaction_uid") or json.dumps(p, separators=(",", ":"))[:60])


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_queue(args: argparse.Namespace) -> int:
    queue, _ = _open(args.profile)
    now = time.time()
    cmd = args.queue_command
    if cmd == "list":
        states = [JobState(s) for s in args.state] if args.state else (
            None if args.all else [JobState.PENDING, JobState.CLAIMED, JobState.DEAD])
        jobs = queue.list(states=states, destination=args.destination, limit=args.limit)
        if args.json:
            print(json.dumps([_job_dict(j) for j in jobs], indent=1))
        elif not jobs:
            print("no jobs")
        else:
            print(_table(
                ["ID", "KIND", "DESTINATION", "STATE", "TRIES", "AGE", "NEXT", "SUBJECT", "LAST ERROR"],
                [[j.id, j.kind, j.destination, j.state.value, j.attempts, _age(now - j.created_at),
                  _age(j.next_attempt_at - now) if j.state is JobState.PENDING else "-", _subject(j),
                  (j.last_error or "").replace(_subject(j), "…")[:90]] for j in jobs]))
        return 0
    if cmd == "show":
        job = queue.get(args.id)
        if job is None:
            print(f"no job {args.id}", file=sys.stderr)
            return EX_FAILED
        d = _job_dict(job)
        if args.json:
            print(json.dumps(d, indent=1))
        else:
            for key, value in d.items():
                if key.endswith("_at") and isinstance(value, float):
                    value = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(value))} ({_age(now - value)} ago)" \
                        if value <= now else f"in {_age(value - now)}"
                print(f"{key:16} {json.dumps(value) if isinstance(value, dict) else value}")
        return 0
    if cmd == "retry":
        if args.dead:
            count = queue.retry_dead(args.destination)
            _say(args, {"retried": count}, f"{count} dead job(s) are due again")
            return 0
        if args.id is None:
            print("dicom-agent queue retry: give a job ID or --dead", file=sys.stderr)
            return 2
        ok = queue.retry(args.id)
        _say(args, {"retried": int(ok), "id": args.id},
             f"job {args.id} is due again" if ok else f"job {args.id} is not dead or pending (or does not exist)")
        return 0 if ok else EX_FAILED
    if cmd == "drop":
        try:
            ok = queue.drop(args.id)
        except QueueError as exc:
            _say(args, {"dropped": 0, "id": args.id, "error": str(exc)}, str(exc))
            return EX_FAILED
        _say(args, {"dropped": int(ok), "id": args.id}, f"job {args.id} dropped" if ok else f"no job {args.id}")
        return 0 if ok else EX_FAILED
    raise AssertionError(cmd)


def _say(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if args.json else text)


def status_data(queue: JobQueue, commitments: CommitmentStore, now: float) -> dict[str, Any]:
    stats = queue.stats()
    destinations = {
        name: {
            "pending": s.pending, "claimed": s.claimed, "dead": s.dead, "done": s.done,
            "oldest_pending_age": None if s.oldest_pending_created_at is None else now - s.oldest_pending_created_at,
        }
        for name, s in stats.items()
    }
    return {
        "destinations": destinations,
        "dead_jobs": sum(d["dead"] for d in destinations.values()),
        "depth": sum(d["pending"] + d["claimed"] for d in destinations.values()),
        "commitment": commitments.summary(),
    }


def run_status(args: argparse.Namespace) -> int:
    queue, commitments = _open(args.profile)
    data = status_data(queue, commitments, time.time())
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    dests = data["destinations"]
    if dests:
        print(_table(["DESTINATION", "PENDING", "IN PROGRESS", "DEAD", "DONE", "OLDEST PENDING"],
                     [[n, d["pending"], d["claimed"], d["dead"], d["done"], _age(d["oldest_pending_age"])]
                      for n, d in dests.items()]))
    else:
        print("queue: empty")
    print(f"\nqueue depth {data['depth']}, dead jobs {data['dead_jobs']}"
          + ("  (see: dicom-agent queue list --state dead)" if data["dead_jobs"] else ""))
    c = data["commitment"]
    print("\nstorage commitment:")
    print(f"  requests: {c['requests_pending']} queued, {c['requests_outstanding']} awaiting report, "
          f"{c['requests_done']} answered, {c['requests_expired']} expired (re-requested)")
    if "instances_committed" in c:
        print(f"  instances: {c['instances_committed']} committed, {c['instances_awaiting']} awaiting commitment, "
              f"{c['instances_uncommitted']} not committed")
    print(f"  reports to send (as archive): {c['reports_pending']} pending, {c['reports_sent']} sent")
    return 0
