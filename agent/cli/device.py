"""`dicom-agent device …`: what the agent knows of its acquisition device, and driving the simulated one.

- `device status --profile P [--json]`, for any driver: the profile's driver, what the agent last
  recorded (procedures by state and the latest ones, from its database, when there is one), and the
  driver's own view: for `sim` its progress and command spool, for `folder` the files waiting, the
  procedures moved to done/ and the rejected files with their reasons.
- `device start|image|end|abort|run --profile P ...` queue a command for the simulated device (driver
  `sim`) in `data_dir/device-sim/inbox/`; the running agent's driver takes it within its `poll` time.
  Without `--wait` the command returns once the command file is on disk. With `--wait S` it waits until
  the device delivered every event of the command and the agent acknowledged them (exit 0), the device
  refused the command (exit 1, the reason on stderr), or S seconds passed (exit 75: still queued; it is
  delivered when an agent with this profile runs).

Exit statuses: 0 done; 1 the device refused the command; 2 usage, including a command for a profile
whose [device] driver is not `sim` (or that has no [device]); 75 --wait elapsed; 78 bad profile, also a
bad `[device] options` value of the sim.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.profile import Profile

EX_OK = 0
EX_FAILED = 1
EX_USAGE = 2
EX_TEMPFAIL = 75

SIM_COMMANDS = ("start", "image", "end", "abort", "run")


def _key(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", text):
        raise argparse.ArgumentTypeError(f"1-64 of A-Z a-z 0-9 . _ -, got {text!r}")
    return text


def _count(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        if not (text.isdigit() and low <= int(text) <= high):
            raise argparse.ArgumentTypeError(f"an integer from {low} to {high}, got {text!r}")
        return int(text)

    return parse


def _date(text: str) -> str:
    if not re.fullmatch(r"\d{8}", text):
        raise argparse.ArgumentTypeError(f"YYYYMMDD, got {text!r}")
    return text


def _wait(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"seconds, above 0, got {text!r}")
    return value


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    device = sub.add_parser("device", help="the acquisition device: status, and driving the simulated device")
    dsub = device.add_subparsers(dest="device_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, wait: bool = True) -> None:
        p.add_argument("--profile", required=True, help="the agent's profile (TOML) with a [device] section")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if wait:
            p.add_argument("--wait", type=_wait, metavar="SECONDS",
                           help="wait until the running agent has taken every event of the command")

    common(dsub.add_parser("status", help="the device as the agent and its driver see it"), wait=False)
    start = dsub.add_parser("start", help="sim: start a procedure (for a worklist key, or with patient data)")
    common(start)
    start.add_argument("--procedure", type=_key, help="the device's procedure key [SIM-NNNN]")
    start.add_argument("--worklist", help="the worklist key the device knows (accession number, ...)")
    start.add_argument("--patient-id")
    start.add_argument("--patient-name", help="FAMILY^GIVEN")
    start.add_argument("--birth-date", type=_date, help="YYYYMMDD")
    start.add_argument("--sex", choices=["M", "F", "O"])
    start.add_argument("--description", default="")
    start.add_argument("--operator", default="")
    image = dsub.add_parser("image", help="sim: acquire images in the open procedure")
    common(image)
    image.add_argument("--count", type=_count(1, 10_000), default=1, help="how many images [1]")
    common(dsub.add_parser("end", help="sim: end the open procedure (completed)"))
    abort = dsub.add_parser("abort", help="sim: abort the open procedure (discontinued)")
    common(abort)
    abort.add_argument("--reason", default="aborted at the device", help="why (free text)")
    run = dsub.add_parser("run", help="sim: whole procedures, start to end, with the profile's faults")
    common(run)
    run.add_argument("--procedures", type=_count(1, 10_000), default=1, help="how many [1]")
    run.add_argument("--images", type=_count(0, 10_000), default=None, help="images each [the profile's]")
    run.add_argument("--worklist", help="the worklist key for every procedure [the profile's]")


def _fail(message: str, code: int) -> int:
    print(f"dicom-agent: {message}", file=sys.stderr)
    return code


def run_device(args: argparse.Namespace) -> int:
    from agent.errors import ProfileError
    from agent.profile import load_profile

    profile = load_profile(args.profile)
    if args.device_command == "status":
        return _status(args, profile)
    if profile.device is None:
        return _fail(f"device {args.device_command} drives the simulated device: {profile.source} has no "
                     f"[device] section (it needs [device] driver = \"sim\")", EX_USAGE)
    if profile.device.driver != "sim":
        return _fail(f"device {args.device_command} drives the simulated device only: {profile.source} has "
                     f"[device] driver = {profile.device.driver!r}, not \"sim\"", EX_USAGE)
    from drivers.acquisition import sim
    from drivers.base import DriverOptionError

    try:
        settings = sim.parse_options(profile.device.options)
    except DriverOptionError as exc:  # what the agent would refuse at start-up, said the same way (78)
        raise ProfileError(profile.source, f"device.options.{exc.key}", exc.expected) from None
    from agent.data_dir import prepare_data_dir

    command = _command(args)
    data_dir = profile.agent.data_dir
    prepare_data_dir(data_dir)  # the agent's own folder rules (owner/group only): it will hold patient data
    cid = sim.queue_command(data_dir, command)
    outcome = "queued"
    if args.wait is not None:
        deadline = time.monotonic() + args.wait
        while True:
            outcome = sim.command_outcome(data_dir, cid)
            if outcome == "delivered" or outcome.startswith("rejected") or time.monotonic() >= deadline:
                break
            time.sleep(min(0.1, settings.poll))
    if args.json:
        print(json.dumps({"id": cid, "command": command, "outcome": outcome}))
    if outcome.startswith("rejected"):
        reason = outcome[len("rejected: "):]
        return _fail(f"the simulated device refused {args.device_command} ({cid}): {reason}", EX_FAILED)
    if not args.json:
        where = sim.sim_dir(data_dir) / "inbox"
        if outcome == "delivered":
            print(f"{args.device_command}: delivered ({cid})")
        else:
            print(f"{args.device_command}: queued as {cid} in {where}; an agent running {profile.source} takes it")
    if args.wait is not None and outcome != "delivered":
        return _fail(f"{args.device_command} not delivered within {args.wait:g} s (is the agent running?); "
                     f"it stays queued ({outcome})", EX_TEMPFAIL)
    return EX_OK


def _command(args: argparse.Namespace) -> dict[str, Any]:
    op = args.device_command
    if op == "start":
        patient = {k: v for k, v in (("patient_id", args.patient_id), ("patient_name", args.patient_name),
                                     ("birth_date", args.birth_date), ("sex", args.sex)) if v}
        out: dict[str, Any] = {"op": op, "description": args.description, "operator": args.operator}
        if args.procedure:
            out["procedure"] = args.procedure
        if args.worklist is not None:
            out["worklist"] = args.worklist
        if patient:
            out["patient"] = patient
        return out
    if op == "image":
        return {"op": op, "count": args.count}
    if op == "abort":
        return {"op": op, "reason": args.reason}
    if op == "run":
        out = {"op": op, "procedures": args.procedures}
        if args.images is not None:
            out["images"] = args.images
        if args.worklist is not None:
            out["worklist"] = args.worklist
        return out
    return {"op": op}


# ------------------------------------------------------------------ status


def _status(args: argparse.Namespace, profile: Profile) -> int:
    if profile.device is None:
        return _fail(f"{profile.source} has no [device] section: the acquisition workflow is off", EX_USAGE)
    report: dict[str, Any] = {"driver": profile.device.driver, "recorded": _recorded(profile)}
    data_dir = profile.agent.data_dir
    if profile.device.driver == "sim":
        from drivers.acquisition import sim

        state = sim.read_state(data_dir)
        report["sim"] = {
            "state_dir": str(sim.sim_dir(data_dir)),
            "started": state is not None,
            "acknowledged_events": state["acked"] if state else 0,
            "delivered": state["delivered"] if state else {},
            "pending_events": len(state["pending"]) if state else 0,
            "next_event": _describe(state["pending"][0]) if state and state["pending"] else None,
            "open_procedure": state["open"]["procedure"] if state and state["open"] else None,
            **sim.spool(data_dir),
        }
    elif profile.device.driver == "folder":
        report["folder"] = _folder(profile)
    if args.json:
        print(json.dumps(report, indent=1))
        return EX_OK
    print(f"device: driver {report['driver']!r} ({profile.source})")
    rec = report["recorded"]
    if rec is None:
        print("  recorded: no database yet (the agent has not run with this profile)")
    else:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(rec["counts"].items())) or "none"
        print(f"  procedures recorded: {counts}")
        for p in rec["latest"]:
            print(f"    {p['procedure_key']}: {p['state']}, {p['images']} image(s), "
                  f"accession {p['accession_number'] or '-'}")
    if "sim" in report:
        s = report["sim"]
        if not s["started"]:
            print(f"  simulated device: not started yet (state in {s['state_dir']})")
        else:
            d = s["delivered"]
            print(f"  simulated device: {d['procedures']} procedure(s) started, {d['images']} image(s), "
                  f"{d['ended']} ended, {d['aborted']} aborted; {s['pending_events']} event(s) pending"
                  + (f", next {s['next_event']}" if s["next_event"] else "")
                  + (f"; open procedure {s['open_procedure']}" if s["open_procedure"] else ""))
        print(f"  command inbox: {len(s['inbox'])} queued")
        for line in s["rejected"][-10:]:
            print(f"  rejected command {line}")
    if "folder" in report:
        f = report["folder"]
        if not f["exists"]:
            print(f"  watch folder {f['path']}: MISSING")
        else:
            print(f"  watch folder {f['path']}: {f['waiting']} file(s) waiting, {f['procedures_done']} procedure(s) in "
                  f"{f['done']}, {len(f['rejected'])} rejected in {f['rejected_dir']}")
        for line in f["rejected"][-10:]:
            print(f"  rejected {line}")
    return EX_OK


def _describe(spec: dict[str, Any]) -> str:
    if spec["t"] == "image":
        return f"image {spec['i']} of {spec['p']}"
    if spec["t"] == "end":
        return f"{'abort' if spec['aborted'] else 'end'} of {spec['p']}"
    return f"start of {spec['p']}"


def _recorded(profile: Profile) -> dict[str, Any] | None:
    from agent.data_dir import NoDatabase
    from agent.store.db import DB_FILENAME

    if not (profile.agent.data_dir / DB_FILENAME).exists():
        return None
    from agent.cli.common import open_db
    from agent.store.procedures import ProcedureStore

    try:
        conn = open_db(profile, write=False)
    except NoDatabase:
        return None
    try:
        store = ProcedureStore(conn)
        rows = store.list()
        latest = [{"procedure_key": r.procedure_key, "state": str(r.state), "images": len(r.images),
                   "accession_number": r.accession_number} for r in rows[-5:]]
        return {"counts": {str(k): v for k, v in store.counts().items()}, "latest": latest}
    finally:
        conn.close()


def _folder(profile: Profile) -> dict[str, Any]:
    from drivers.acquisition import folder
    from drivers.base import DriverOptionError

    try:
        s = folder.parse_options(profile.device.options, profile.agent.data_dir)  # type: ignore[union-attr]
    except DriverOptionError as exc:
        return {"path": None, "exists": False, "error": f"options.{exc.key}: {exc.expected}", "waiting": 0,
                "procedures_done": 0, "done": None, "rejected_dir": None, "rejected": []}
    exists = s.path.is_dir()
    waiting = sum(1 for p in s.path.iterdir() if p.is_file() and not p.name.startswith(".")) if exists else 0
    done = sum(1 for p in s.done.iterdir() if p.is_dir()) if s.done.is_dir() else 0
    rejected = []
    if s.rejected.is_dir():
        for p in sorted(s.rejected.glob("*.reason"), key=lambda p: p.stat().st_mtime):
            rejected.append(f"{p.name[:-len('.reason')]}: {p.read_text().strip()}")
    return {"path": str(s.path), "exists": exists, "waiting": waiting, "procedures_done": done,
            "done": str(s.done), "rejected_dir": str(s.rejected), "rejected": rejected}


__all__ = ["add_parsers", "run_device"]
