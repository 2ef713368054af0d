"""`dicom-agent print …` (Print SCU, on a modality) and `dicom-agent printer …` (the printer host's
service engineer: status, jobs, retry, and driving the simulated printer).

Invariants:
- `print` checks every option and every image before anything is queued (a bad option: exit 2; a file
  that is not a printable image: exit 65), queues one durable `print` job in the profile's database,
  and then, unless `--queue-only`, claims that job and runs its print session in this process,
  printing progress lines. The outcome is the job's: done (exit 0), dead after a refusal (exit 1), or
  still queued because the printer is down, busy or in FAILURE (exit 75, EX_TEMPFAIL): the running
  agent (`dicom-agent run` with the same profile) sends it when the printer is back.
- A job already claimed by the running agent is left to it (exit 0, "queued").
- `printer …` commands read the agent's database with their own connection while the agent may run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from agent.profile import Profile

EX_OK = 0
EX_FAILED = 1
EX_USAGE = 2
EX_DATAERR = 65
EX_TEMPFAIL = 75
EX_CONFIG = 78


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("print", help="print images on a DICOM printer (Print SCU, through the queue)")
    p.add_argument("--profile", required=True, help="the agent's profile (TOML): its database and peers")
    p.add_argument("--printer", help="the printer's peer name in [peers] (default: [print] printer)")
    p.add_argument("--format", default="STANDARD\\1,1", dest="display_format",
                   help="Image Display Format, e.g. STANDARD\\2,2, ROW\\2,1, COL\\1,2 [STANDARD\\1,1]")
    p.add_argument("--film-size", help="Film Size ID, e.g. 14INX17IN, 8INX10IN, A4 (default: the printer's)")
    p.add_argument("--orientation", help="PORTRAIT or LANDSCAPE (default: the printer's)")
    p.add_argument("--magnification", help="REPLICATE, BILINEAR, CUBIC or NONE (default: the printer's)")
    p.add_argument("--smoothing", help="Smoothing Type, printer-specific (with CUBIC)")
    p.add_argument("--border-density", help="BLACK, WHITE or hundredths of OD")
    p.add_argument("--empty-image-density", help="BLACK, WHITE or hundredths of OD")
    p.add_argument("--min-density", type=int, help="hundredths of OD")
    p.add_argument("--max-density", type=int, help="hundredths of OD")
    p.add_argument("--trim", choices=["yes", "no"], help="a frame around each image")
    p.add_argument("--resolution", help="Requested Resolution ID: STANDARD or HIGH")
    p.add_argument("--configuration", help="Configuration Information (printer-specific text)")
    p.add_argument("--illumination", type=int, help="L0 in cd/m² (with a Presentation LUT)")
    p.add_argument("--reflected-ambient-light", type=int, help="La in cd/m² (with a Presentation LUT)")
    p.add_argument("--copies", type=int, help="Number of Copies, 1-99 (default: the printer's, usually 1)")
    p.add_argument("--priority", help="HIGH, MED or LOW")
    p.add_argument("--medium", dest="medium_type", help="PAPER, CLEAR FILM, BLUE FILM, MAMMO CLEAR FILM, MAMMO BLUE FILM")
    p.add_argument("--destination", dest="film_destination", help="MAGAZINE, PROCESSOR or BIN_i")
    p.add_argument("--label", help="Film Session Label")
    p.add_argument("--polarity", help="NORMAL or REVERSE (every image box)")
    p.add_argument("--decimate-crop", help="Requested Decimate/Crop Behavior: DECIMATE, CROP or FAIL")
    p.add_argument("--annotation", action="append", default=[], dest="annotations", metavar="TEXT",
                   help="annotation text, one box per use (when the printer supports Basic Annotation Box)")
    p.add_argument("--annotation-format", help="Annotation Display Format ID (default: the number of --annotation)")
    p.add_argument("--bits", type=int, choices=[8, 12], default=8, help="bits stored per P-value [8]")
    p.add_argument("--no-presentation-lut", action="store_true", help="do not send a Presentation LUT")
    p.add_argument("--queue-only", action="store_true", help="queue the job for the running agent and return")
    p.add_argument("--json", action="store_true", help="machine-readable outcome")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="DICOM image files")

    printer = sub.add_parser("printer", help="the printer host: driver status, print jobs, the simulated printer")
    psub = printer.add_subparsers(dest="printer_command", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--profile", required=True, help="the agent's profile (TOML)")
        q.add_argument("--json", action="store_true", help="machine-readable output")

    common(psub.add_parser("status", help="the printer driver's status and capabilities, and job counts"))
    jobs = psub.add_parser("jobs", help="the durable print jobs, newest first")
    common(jobs)
    jobs.add_argument("--state", help="only jobs in this state (pending, submitting, printing, done, failed)")
    jobs.add_argument("--limit", type=int, default=100)
    retry = psub.add_parser("retry", help="a failed print job goes back to pending")
    common(retry)
    retry.add_argument("id", help="the print job id (Print Job SOP Instance UID)")
    sim = psub.add_parser("sim", help="change the state of the simulated printer (driver 'sim')")
    common(sim)
    sim.add_argument("--supply", type=int, help="films left in the supply")
    jam = sim.add_mutually_exclusive_group()
    jam.add_argument("--jam", action="store_true", help="jam the film transport")
    jam.add_argument("--clear", action="store_true", help="clear a jam")
    sim.add_argument("--cover", choices=["open", "closed"])
    online = sim.add_mutually_exclusive_group()
    online.add_argument("--offline", action="store_true")
    online.add_argument("--online", action="store_true")


def _fail(message: str, code: int) -> int:
    print(f"dicom-agent: {message}", file=sys.stderr)
    return code


# ------------------------------------------------------------------ print


def run_print(args: argparse.Namespace) -> int:
    from agent.profile import load_profile
    from agent.services.print.scu_images import ImageError
    from agent.services.print.scu_options import FilmOptions, PrintOptionError

    profile = load_profile(args.profile)
    printer = args.printer or (profile.print.printer if profile.print is not None else None)
    if printer is None:
        return _fail("no printer: give --printer PEER or set [print] printer in the profile", EX_USAGE)
    if printer not in profile.peers:
        known = ", ".join(sorted(profile.peers)) or "none"
        return _fail(f"--printer {printer!r} is not a peer of {profile.source} (peers: {known})", EX_USAGE)
    try:
        options = FilmOptions(
            display_format=args.display_format, copies=args.copies, priority=args.priority,
            medium_type=args.medium_type, film_destination=args.film_destination, label=args.label,
            film_size=args.film_size, orientation=args.orientation, magnification=args.magnification,
            smoothing=args.smoothing, border_density=args.border_density,
            empty_image_density=args.empty_image_density, min_density=args.min_density,
            max_density=args.max_density, trim=None if args.trim is None else args.trim == "yes",
            resolution=args.resolution, configuration=args.configuration, illumination=args.illumination,
            reflected_ambient_light=args.reflected_ambient_light, polarity=args.polarity,
            decimate_crop=args.decimate_crop, annotations=tuple(args.annotations),
            annotation_format=args.annotation_format, bits=args.bits,
            presentation_lut=not args.no_presentation_lut,
        ).validated()
    except PrintOptionError as exc:
        return _fail(str(exc), EX_USAGE)
    for path in args.images:
        if not Path(path).is_file():
            return _fail(f"{path}: no such file", EX_USAGE)
    from agent.services.print.scu import queue_print
    from agent.store.db import DB_FILENAME, open_database
    from agent.store.queue import JobQueue

    data_dir = profile.agent.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    queue = JobQueue(open_database(data_dir / DB_FILENAME))
    try:
        # Run now: not due for the running agent for a minute, time enough for this command to claim it
        # (a command that dies before that leaves it to the agent).
        hold = None if args.queue_only else time.time() + 60
        job_id = queue_print(queue, data_dir, printer, args.images, options, not_before=hold)
    except ImageError as exc:
        return _fail(str(exc), EX_DATAERR)
    peer = profile.peers[printer]
    say = (lambda line: None) if args.json else (lambda line: print(line, flush=True))
    say(f"print job {job_id} queued for {printer} ({peer.ae_title} at {peer.host}:{peer.port}), "
        f"{len(args.images)} image(s)")
    if args.queue_only:
        return _report(args, {"job": job_id, "state": "queued"}, EX_OK)
    result = trio.run(run_print_job, profile, queue, job_id, say)
    return _report(args, result, result.pop("exit"))


def _report(args: argparse.Namespace, result: dict[str, Any], code: int) -> int:
    if args.json:
        print(json.dumps(result, indent=2))
    return code


async def run_print_job(profile: Profile, queue: Any, job_id: int, say: Any = print) -> dict[str, Any]:
    """Claim queued print job `job_id` and run it now, in this process; the job ends done, dead or
    pending (due after the peer's backoff). Returns the outcome with the exit status under "exit"."""
    from agent.errors import AssociationAborted, AssociationRejected, ConnectionFailed, TimeoutExpired
    from agent.net.client import open_association
    from agent.net.connection import Timeouts
    from agent.services.outbound import JobFailed
    from agent.services.print.scu import PrintPerformer
    from agent.store.queue import JobState, RetryPolicy

    job = queue.claim_job(job_id, lease=max(600.0, profile.agent.dimse_timeout * 10))
    if job is None:
        say(f"print job {job_id} is being sent by the running agent")
        return {"job": job_id, "state": "queued", "exit": EX_OK}
    peer = profile.peers[job.destination]
    performer = PrintPerformer(profile.agent.data_dir, progress=say)
    a = profile.agent
    timeouts = Timeouts(artim=a.artim_timeout, dimse=peer.dimse_timeout, idle=a.idle_timeout, connect=a.connect_timeout)
    error, permanent = "", False
    try:
        conn = await open_association(
            peer.host, peer.port, calling_ae=profile.agent.ae_title, called_ae=peer.ae_title,
            proposals=list(performer.contexts(job)), timeouts=timeouts, max_pdu_receive=profile.agent.max_pdu_length,
            tls=peer.tls, user_identity=peer.identity,
        )
        try:
            await performer.perform(conn, job)
        except JobFailed:
            await _release(conn)  # a verdict (printer in FAILURE, a refusal): the association itself is fine
            raise
        except BaseException:
            with trio.CancelScope(shield=True):
                await conn.abort()
            raise
        await _release(conn)
    except JobFailed as exc:
        error, permanent = str(exc), exc.permanent
    except AssociationRejected as exc:
        error, permanent = str(exc), not exc.transient
    except (ConnectionFailed, TimeoutExpired, AssociationAborted) as exc:
        error, permanent = str(exc), False
    except BaseException:
        with trio.CancelScope(shield=True):
            queue.release(job_id)  # interrupted: back to the queue, untouched
        raise
    outcome = performer.last
    detail: dict[str, Any] = {"job": job_id, "printer": job.destination}
    if outcome is not None:
        detail.update(films=outcome.films, print_jobs=outcome.print_jobs, warnings=outcome.warnings,
                      printer_status=outcome.printer_status, events=[e[2] for e in outcome.events])
    if not error:
        queue.complete(job_id)
        say(f"print job {job_id}: done")
        return {**detail, "state": "done", "exit": EX_OK}
    policy = RetryPolicy(base=peer.retry_base, cap=peer.retry_cap, max_age=peer.max_age,
                         max_attempts=peer.max_attempts)
    state = queue.fail(job_id, error, permanent=permanent, policy=policy)
    detail["error"] = error
    if state is JobState.DEAD:
        print(f"dicom-agent: print job {job_id} failed: {error}", file=sys.stderr)
        return {**detail, "state": "dead", "exit": EX_FAILED}
    after = queue.get(job_id)
    wait = max(0.0, (after.next_attempt_at if after else time.time()) - time.time())
    print(f"dicom-agent: print job {job_id} not printed yet: {error}; it stays queued and the running agent "
          f"tries again in {wait:.0f} s", file=sys.stderr)
    return {**detail, "state": "queued", "retry_in": round(wait, 1), "exit": EX_TEMPFAIL}


async def _release(conn: Any) -> None:
    from agent.errors import AgentError

    try:
        await conn.release()
    except AgentError:
        pass  # the outcome is decided already: a release that goes wrong changes nothing


# ------------------------------------------------------------------ printer


def run_printer(args: argparse.Namespace) -> int:
    from agent.profile import load_profile

    profile = load_profile(args.profile)
    if args.printer_command == "sim":
        return _sim(args, profile)
    from agent.store.db import DB_FILENAME, open_database
    from agent.store.printjobs import PrintJobError, PrintJobStore

    db_path = profile.agent.data_dir / DB_FILENAME
    # Read-only commands create nothing: without a database the agent has not run, so there are no jobs.
    store: Any = PrintJobStore(open_database(db_path)) if db_path.exists() else _NoDatabase(db_path)
    if args.printer_command == "jobs":
        jobs = store.list(args.state, limit=args.limit)
        rows = [_job_dict(j) for j in jobs]
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print("no print jobs")
        else:
            print(f"{'id':<64} {'state':<10} {'copies':>6} {'film size':<10} {'from':<16} {'age':>6}  info / error")
            for r in rows:
                info = r["info"] + (f" / {r['last_error']}" if r["last_error"] else "")
                print(f"{r['id']:<64} {r['state']:<10} {r['copies']:>6} {r['film_size_id']:<10} "
                      f"{r['calling_ae']:<16} {_age(r['created_at']):>6}  {info}")
        return EX_OK
    if args.printer_command == "retry":
        try:
            job = store.retry(args.id)
        except PrintJobError as exc:
            return _fail(str(exc), EX_FAILED)
        if args.json:
            print(json.dumps(_job_dict(job), indent=2))
        else:
            print(f"print job {job.id}: {job.state.value}; the running agent prints it within its poll interval")
        return EX_OK
    assert args.printer_command == "status"
    return _status(args, profile, store)


class _NoDatabase:
    """The print job store of an agent that has never run: empty."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def list(self, state: str | None = None, limit: int = 100) -> list[Any]:
        return []

    def retry(self, job_id: str) -> Any:
        from agent.store.printjobs import PrintJobError

        raise PrintJobError(f"no print job {job_id}: no database at {self.path} (has the agent run?)")

    def counts(self) -> dict[str, int]:
        return {}

    def printer_status(self) -> None:
        return None


def _job_dict(job: Any) -> dict[str, Any]:
    return {"id": job.id, "state": str(job.state.value), "copies": job.copies, "priority": job.priority,
            "label": job.label, "film_size_id": job.film_size_id, "calling_ae": job.calling_ae,
            "driver_ref": job.driver_ref, "info": job.info, "attempts": job.attempts,
            "last_error": job.last_error, "created_at": job.created_at, "updated_at": job.updated_at}


def _age(t: float) -> str:
    s = max(0.0, time.time() - t)
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.0f}h"


def _open_driver(profile: Profile) -> Any:
    from drivers.base import DriverOptionError, driver_names, open_printer

    from agent.errors import ProfileError

    settings = profile.print
    if settings is None:
        raise ProfileError(profile.source, "print", "no [print] section: this profile drives no printer")
    try:
        return open_printer(settings.driver, settings.options, profile.agent.data_dir)
    except KeyError:
        raise ProfileError(profile.source, "print.driver",
                           f"one of {', '.join(driver_names('printer'))}, got {settings.driver!r}") from None
    except DriverOptionError as exc:
        raise ProfileError(profile.source, f"print.options.{exc.key}", exc.expected) from None


def _status(args: argparse.Namespace, profile: Profile, store: Any) -> int:
    from drivers.base import DriverError

    driver = _open_driver(profile)
    try:
        status, caps = driver.status(), driver.capabilities()
    except DriverError as exc:
        return _fail(f"printer driver {profile.print.driver!r}: {exc}", EX_FAILED)  # type: ignore[union-attr]
    finally:
        driver.close()
    seen = store.printer_status()
    out = {
        "driver": profile.print.driver,  # type: ignore[union-attr]
        "status": status.state.value, "info": status.info,
        "agent_last_seen": None if seen is None else {"status": seen[0], "info": seen[1], "at": seen[2]},
        "jobs": store.counts(),
        "capabilities": {"film_sizes": list(caps.film_sizes), "dpi": caps.dpi, "min_density": caps.min_density,
                         "max_density": caps.max_density, "color": caps.color, "drive_bits": caps.drive_bits},
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return EX_OK
    print(f"printer driver {out['driver']}: {out['status']} ({out['info']})")
    if seen is not None:
        print(f"  the agent last saw {seen[0]} ({seen[1]}) {_age(seen[2])} ago")
    c = out["capabilities"]
    print(f"  film sizes {', '.join(c['film_sizes'])}; {c['dpi']} dpi; density {c['min_density']}-{c['max_density']} "
          f"(1/100 OD); {'color' if c['color'] else 'grayscale'}, {c['drive_bits']} bits")
    counts = out["jobs"]
    print("  jobs: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"))
    return EX_OK


def _sim(args: argparse.Namespace, profile: Profile) -> int:
    """Drive the simulated printer's state (drivers/printer/sim.py), kept in the data directory so that
    the running agent's sim driver sees it."""
    if profile.print is None or profile.print.driver != "sim":
        got = "no [print] section" if profile.print is None else f"driver {profile.print.driver!r}"
        return _fail(f"printer sim needs [print] driver = \"sim\" in {profile.source} ({got})", EX_USAGE)
    from drivers.printer import sim

    changes: dict[str, Any] = {}
    if args.supply is not None:
        if args.supply < 0:
            return _fail("--supply must be 0 or more", EX_USAGE)
        changes["supply"] = args.supply
    if args.jam or args.clear:
        changes["jammed"] = bool(args.jam)
    if args.cover is not None:
        changes["cover_open"] = args.cover == "open"
    if args.offline or args.online:
        changes["online"] = bool(args.online)
    from drivers.base import DriverOptionError

    try:
        state = sim.set_state(profile.print.options, profile.agent.data_dir, **changes)
    except DriverOptionError as exc:
        return _fail(f"printer sim: {exc}", EX_USAGE)
    driver = _open_driver(profile)
    try:
        status = driver.status()
    finally:
        driver.close()
    if args.json:
        print(json.dumps({"state": state, "status": status.state.value, "info": status.info}, indent=2, default=str))
    else:
        print(f"sim printer: {status.state.value} ({status.info}); {state}")
    return EX_OK


__all__ = ["add_parsers", "run_print", "run_print_job", "run_printer"]
