"""`dicom-agent queue …`: the durable queue, for service engineers (tables) and machines (`--json`).
(`dicom-agent status` lives in agent/cli/status.py.)

Invariants:
- These commands open the agent's database (`<data_dir>/agent.db` from the profile) with their own
  connection while the agent may be running: reads see the last committed state (WAL), writes take the
  write lock with `BEGIN IMMEDIATE` and wait for the agent's transaction, never the other way round.
- A retried job is due at once; the running agent's worker for that destination picks it up within its
  idle poll (5 s).
- Exit status: 0 done; 1 no such job / nothing to do on it (e.g. `drop` of a claimed job), or no
  database at the profile's data_dir (these commands never create one: "has the agent run?").
- `drop` refuses a job whose group still has unfinished jobs (an MPPS N-CREATE and its N-SET) unless
  `--force`, which drops the job and those partners together in one transaction.
- Messages about a refusal go to stderr; `--json` output always goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import Any

from agent.errors import QueueError
from agent.store.commitment import CommitmentStore
from agent.cli.common import age_text, open_db, profile_from
from agent.store.db import transaction
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
    drop.add_argument("--force", action="store_true",
                      help="drop the job together with the unfinished jobs of its group (an MPPS's N-CREATE and N-SET)")



def _open(profile_path: str) -> tuple[JobQueue, CommitmentStore, sqlite3.Connection]:
    # Every queue command works on jobs the agent made: no database means nothing to show or change,
    # and creating an empty one would answer "queue: empty" for the wrong folder (NoDatabase, exit 1).
    db = open_db(profile_from(profile_path), write=False)
    queue = JobQueue(db)
    return queue, CommitmentStore(db), db


def _job_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "kind": job.kind, "destination": job.destination, "state": job.state.value,
        "attempts": job.attempts, "next_attempt_at": job.next_attempt_at, "created_at": job.created_at,
        "updated_at": job.updated_at, "group_key": job.group_key, "after_job": job.after_job,
        "last_error": job.last_error, "warning": job.warning, "payload": job.payload,
    }


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
    queue, _, db = _open(args.profile)
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
                [[j.id, j.kind, j.destination, j.state.value, j.attempts, age_text(now - j.created_at),
                  age_text(j.next_attempt_at - now) if j.state is JobState.PENDING else "-", _subject(j),
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
                    value = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(value))} ({age_text(now - value)} ago)" \
                        if value <= now else f"in {age_text(value - now)}"
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
            dropped = _drop(queue, db, args.id, force=args.force)
        except QueueError as exc:
            _say(args, {"dropped": 0, "id": args.id, "error": str(exc)}, f"dicom-agent: {exc}", error=True)
            return EX_FAILED
        if not dropped:
            _say(args, {"dropped": 0, "id": args.id}, f"no job {args.id}", error=True)
            return EX_FAILED
        text = (f"job {args.id} dropped" if len(dropped) == 1
                else f"dropped jobs {', '.join(map(str, dropped))} together (--force)")
        _say(args, {"dropped": len(dropped), "id": args.id, "ids": dropped}, text)
        return 0
    raise AssertionError(cmd)


def _say(args: argparse.Namespace, data: dict[str, Any], text: str, *, error: bool = False) -> None:
    if args.json:
        print(json.dumps(data))
    else:
        print(text, file=sys.stderr if error else sys.stdout)


def _partners(db: sqlite3.Connection, job: Job) -> list[tuple[int, str, str]]:
    """(id, kind, state) of the unfinished jobs that go in order with `job`: its group (one MPPS
    instance at one destination: N-CREATE, then N-SET) and the jobs it waits for or that wait for it."""
    rows = db.execute(
        "SELECT id, kind, state FROM queue_jobs WHERE id != :id AND state != 'done' AND ("
        " (:group IS NOT NULL AND group_key = :group) OR after_job = :id OR id = :after) ORDER BY id",
        {"id": job.id, "group": job.group_key, "after": job.after_job},
    ).fetchall()
    return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def _drop(queue: JobQueue, db: sqlite3.Connection, job_id: int, *, force: bool) -> list[int]:
    """Drop one job, or with `force` it and its unfinished partners in one transaction; ids dropped.

    A job is refused alone while partners are unfinished: the queue sends a group in order and treats a
    missing predecessor as done, so dropping an MPPS N-CREATE would send its N-SET for an instance the
    peer never created (0112), and dropping the N-SET would leave the procedure IN PROGRESS there.
    """
    with transaction(db):
        job = queue.get(job_id)
        if job is None:
            return []
        partners = _partners(db, job)
        if partners and not force:
            others = ", ".join(f"job {i} ({kind}, {state})" for i, kind, state in partners)
            raise QueueError(
                f"job {job_id} ({job.kind}) goes in order with {others}: dropping it alone would leave "
                f"{'them' if len(partners) > 1 else 'that job'} orphaned (an MPPS N-SET without its N-CREATE, "
                f"or an N-CREATE never completed); use --force to drop them together")
        ids = sorted([job_id] + [i for i, _k, _s in partners])
        for i in ids:
            queue.drop(i)  # QueueError if one is claimed by a worker: the transaction rolls back
        return ids
