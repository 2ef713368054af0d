"""`dicom-agent find`, `move` and `get`: the Query/Retrieve SCU from the command line.

- The peer is a name from the profile's `[peers]` (`find pacs ...`, with its tls keys) or a host and port
  (`find 127.0.0.1 104 --aec PACS [--tls ...]`). Our AE title is `--aet`, else the profile's
  `[agent] ae_title`.
- `--root study|patient` picks the information model (PS3.4 C.6.1, C.6.2), `--level` the level (default:
  STUDY, or PATIENT for the patient root); a level the root has not is a usage error (exit 2).
- `find` prints a table of the matches (or `--json`: `{"status", "matches": [DICOM JSON model, PS3.18
  F.2]}`); `--cancel-after N` sends a C-CANCEL after N matches (the answer is then FE00, exit 0).
- `move --dest AE` asks the peer to send to AE; without `--dest` the destination is ourselves and the
  instances go into the profile's local store: received by a temporary Storage SCP that listens on
  `--port` (default: the profile's `[agent] port`) for the time of the move, or, when that port is taken
  (the agent is running with this profile), by the running agent. The peer must know our AE title's
  host and port.
- `get` (C-GET, PS3.4 C.4.3) receives the instances on the same association into the profile's local
  store, through the same durable path as the Storage SCP; `--sop-class` adds storage classes to the
  proposed ones.
- move and get print progress on stderr (a rewritten line on a terminal, a line per 10 s or 100
  sub-operations otherwise) and a summary; Ctrl-C sends a C-CANCEL once (the peer answers FE00 with the
  counts) and a second Ctrl-C aborts.
- Exit statuses: 0 success (and every sub-operation completed); 1 a failure status, failed
  sub-operations, a rejection or an abort; 2 usage; 69 the peer cannot be reached; 130 after a
  cancellation by Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from agent.errors import AgentError, AssociationAborted, AssociationRejected, ConnectionFailed, TimeoutExpired

if TYPE_CHECKING:
    from pydicom import Dataset

    from agent.profile import Profile
    from agent.services.query.scu import RetrieveOutcome

EX_OK = 0
EX_FAILED = 1
EX_USAGE = 2
EX_UNAVAILABLE = 69
EX_INTERRUPTED = 130
PROGRESS_SUBOPS = 100
PROGRESS_SECONDS = 10.0

#: Return keys asked for by default at each level, so a bare `find` prints something readable.
DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "PATIENT": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    "STUDY": ("PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
              "StudyDescription", "StudyInstanceUID"),
    "SERIES": ("Modality", "SeriesNumber", "SeriesDescription", "SeriesInstanceUID"),
    "IMAGE": ("InstanceNumber", "SOPClassUID", "SOPInstanceUID"),
}


def add_parsers(sub: Any) -> None:
    from agent.cli import _ae_title, _seconds, _tcp_port
    from agent.cli.tls_options import add_tls_args

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("peer", metavar="PEER|HOST", help="a peer name of the profile, or a host with PORT")
        p.add_argument("port", nargs="?", type=_tcp_port, metavar="PORT", help="the host's port (then use --aec)")
        p.add_argument("--profile", help="profile file (TOML): peers, our AE title, the local store")
        p.add_argument("--aet", type=_ae_title, help="our (calling) AE title [the profile's]")
        p.add_argument("--aec", type=_ae_title, help="the peer's AE title, with HOST PORT [ANY-SCP]")
        p.add_argument("--timeout", type=_seconds, default=30.0,
                       help="seconds for connecting and associating, and for each message [30]")
        p.add_argument("--root", choices=("study", "patient"), default="study",
                       help="information model: Study Root or Patient Root [study]")
        p.add_argument("--level", type=str.upper, choices=("PATIENT", "STUDY", "SERIES", "IMAGE"),
                       help="query/retrieve level [STUDY; PATIENT for --root patient]")
        p.add_argument("-k", "--key", action="append", default=[], dest="keys", metavar="KEY[=VALUE]",
                       help="a matching key (KEY=VALUE) or a return key (KEY); keyword or gggg,eeee; repeat")
        add_tls_args(p)  # with HOST PORT; a profile peer has its own tls keys

    find = sub.add_parser("find", help="query a peer (C-FIND SCU), like findscu")
    common(find)
    find.add_argument("--json", action="store_true", help="print JSON (DICOM JSON model) instead of a table")
    find.add_argument("--cancel-after", type=_count, metavar="N", help="send a C-CANCEL after N matches")

    move = sub.add_parser("move", help="ask a peer to send instances to an AE (C-MOVE SCU), by default to us")
    common(move)
    move.add_argument("--dest", type=_ae_title, help="move destination AE title [ours: into the local store]")
    move.add_argument("--port", dest="listen_port", type=_tcp_port,
                      help="listen on this port for the moved instances [the profile's port]")

    get = sub.add_parser("get", help="retrieve instances into the local store (C-GET SCU)")
    common(get)
    get.add_argument("--sop-class", action="append", default=[], dest="sop_classes", metavar="UID|KEYWORD",
                     help="a storage SOP Class to accept besides the usual ones; repeat")


def _count(text: str) -> int:
    if not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"a positive whole number, got {text!r}")
    return int(text)


def _fail(message: str, code: int) -> int:
    print(f"dicom-agent: {message}", file=sys.stderr)
    return code


# ------------------------------------------------------------------ the peer and the identifier


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    called_ae: str
    calling_ae: str
    profile: Profile
    tls: Any = None  # agent.net.tls.PeerTls | None
    identity: Any = None  # agent.security.ClientIdentity | None: the peer's [peers.NAME.identity]


class Usage(Exception):
    """A usage error found after parsing (exit 2)."""


def _target(args: argparse.Namespace) -> Target:
    from agent.cli.common import profile_from
    from agent.cli.tls_options import tls_from_args

    profile = profile_from(args.profile)
    calling = args.aet or profile.agent.ae_title
    tls = tls_from_args(args)
    if args.port is not None:
        return Target(args.peer, args.port, args.aec or "ANY-SCP", calling, profile, tls)
    peer = profile.peers.get(args.peer)
    if peer is None:
        known = ", ".join(sorted(profile.peers)) or "none"
        raise Usage(f"{args.peer!r} is not a peer of {profile.source} (peers: {known}); "
                    "or give HOST PORT")
    if args.aec is not None or tls is not None:
        raise Usage(f"--{'aec' if args.aec is not None else 'tls'} goes with HOST PORT; a profile peer has its "
                    "own AE title and tls keys")
    return Target(peer.host, peer.port, peer.ae_title, calling, profile, peer.tls, peer.identity)


def _identifier(args: argparse.Namespace, *, defaults: bool) -> Dataset:
    from agent.cli.query_keys import KeyError_, build_identifier
    from agent.services.query.models import MODELS
    from agent.services.query.scu import unique_key

    level = args.level or ("PATIENT" if args.root == "patient" else "STUDY")
    levels = MODELS[args.root].levels
    if level not in levels:
        raise Usage(f"--level {level} is not a level of the {args.root} root (levels: {', '.join(levels)})")
    keys = DEFAULT_KEYS[level] if defaults and not any("=" not in k for k in args.keys) else ()
    try:
        ds = build_identifier(args.keys, level, (*keys, unique_key(level)) if defaults else ())
    except KeyError_ as exc:
        raise Usage(str(exc)) from None
    if not defaults and len(ds) == 1:  # only the level: a retrieve needs its unique key(s)
        raise Usage(f"give what to retrieve with -k, e.g. -k {unique_key(level)}=UID")
    return ds


def _associate(target: Target, timeout: float, proposals: Any) -> Any:
    """The association to the Q/R peer: its AE titles, TLS and identity, our maximum PDU length, and
    `timeout` for connecting and associating together, then for each response."""
    from agent.net.client import associate

    return associate(
        target.host, target.port, calling_ae=target.calling_ae, called_ae=target.called_ae,
        proposals=proposals, timeouts=_timeouts(timeout), deadline=trio.current_time() + timeout,
        tls=target.tls, user_identity=target.identity, max_pdu_receive=target.profile.agent.max_pdu_length,
    )


def _timeouts(t: float) -> Any:
    from agent.net.connection import Timeouts

    return Timeouts(artim=t, dimse=t, idle=max(t, 300.0), connect=t)


def _run(args: argparse.Namespace, body: Callable[[Target, Dataset], int], *, defaults: bool) -> int:
    try:
        target = _target(args)
        identifier = _identifier(args, defaults=defaults)
    except Usage as exc:
        return _fail(str(exc), EX_USAGE)
    try:
        return body(target, identifier)
    except Usage as exc:
        return _fail(str(exc), EX_USAGE)
    except (ConnectionFailed, TimeoutExpired) as exc:
        return _fail(str(exc), EX_UNAVAILABLE)
    except (AssociationRejected, AssociationAborted) as exc:
        return _fail(str(exc), EX_FAILED)


# ------------------------------------------------------------------ find


def run_find(args: argparse.Namespace) -> int:
    return _run(args, lambda target, ident: _find(args, target, ident), defaults=True)


def _find(args: argparse.Namespace, target: Target, identifier: Dataset) -> int:
    from agent.cli.query_keys import table
    from agent.services.query import scu
    from agent.services.query.models import MODELS

    sop = MODELS[args.root].find
    interrupt = trio.Event()

    async def main() -> tuple[scu.FindOutcome, list[Dataset]]:
        async with _associate(target, args.timeout, scu.proposals(args.root, ["find"])) as conn:
            return await _with_interrupt(
                lambda cancel: scu.find(conn, sop, identifier, cancel=cancel, cancel_after=args.cancel_after),
                interrupt)

    try:
        outcome, matches = trio.run(main)
    except scu.QueryError as exc:
        return _fail(str(exc), EX_FAILED)
    if args.json:
        print(json.dumps({
            "status": f"{outcome.status:04X}", "status_text": outcome.describe(),
            "cancelled": outcome.cancel_sent, "matches": [m.to_json_dict() for m in matches],
        }, ensure_ascii=False, indent=1))
    else:
        if matches:
            print(table(identifier, matches))
        print(f"{len(matches)} match(es); {outcome.describe()}"
              + (" (C-CANCEL sent)" if outcome.cancel_sent else ""), file=sys.stderr)
    if interrupt.is_set():
        return EX_INTERRUPTED
    return EX_OK if outcome.ok else EX_FAILED


async def _with_interrupt(op: Callable[[trio.Event], Any], cancel: trio.Event) -> Any:
    """Run `op(cancel)`; the first SIGINT sets `cancel` (a C-CANCEL goes out: only SIGINT sets it, so the
    caller knows afterwards whether the user interrupted), the second aborts."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        return await op(cancel)
    try:
        return await _watching_sigint(op, cancel)
    except BaseExceptionGroup as group:  # the watcher's nursery wraps the operation's error: unwrap it
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def _watching_sigint(op: Callable[[trio.Event], Any], cancel: trio.Event) -> Any:
    async with trio.open_nursery() as nursery:
        async def watch() -> None:
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    if not cancel.is_set():
                        print("\ninterrupted: C-CANCEL sent (Ctrl-C again to abort)", file=sys.stderr)
                        cancel.set()
                    else:
                        raise KeyboardInterrupt

        nursery.start_soon(watch)
        try:
            result = await op(cancel)
        finally:
            nursery.cancel_scope.cancel()
    return result


# ------------------------------------------------------------------ move and get


class _Progress:
    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.tty = sys.stderr.isatty()
        self.start = self.last = time.monotonic()
        self.last_done = 0
        self.on_screen = False

    def __call__(self, o: RetrieveOutcome) -> None:
        done = o.completed + o.failed + o.warning
        total = done + (o.remaining or 0)
        now = time.monotonic()
        text = (f"{done}/{total} {self.verb} ({o.completed} completed, {o.warning} warning, {o.failed} failed), "
                f"{now - self.start:.1f} s")
        if self.tty:
            sys.stderr.write(f"\r  {text}\x1b[K")
            self.on_screen = True
        elif o.remaining and (done - self.last_done >= PROGRESS_SUBOPS or now - self.last >= PROGRESS_SECONDS):
            sys.stderr.write(f"progress: {text}\n")
            self.last, self.last_done = now, done
        else:
            return
        sys.stderr.flush()

    def end(self) -> None:
        if self.on_screen:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _summary(verb: str, o: RetrieveOutcome, seconds: float, interrupted: bool) -> int:
    for uid in o.failed_uids:
        print(f"failed {uid}", file=sys.stderr)
    cancelled = " (cancelled)" if o.cancel_sent else ""
    print(f"{verb}: {o.completed} completed, {o.warning} with warnings, {o.failed} failed"
          f"{f', {o.remaining} not attempted' if o.remaining else ''} in {seconds:.2f} s; {o.describe()}{cancelled}")
    if interrupted:
        return EX_INTERRUPTED
    return EX_OK if o.ok else EX_FAILED


def run_move(args: argparse.Namespace) -> int:
    return _run(args, lambda target, ident: _move(args, target, ident), defaults=False)


def run_get(args: argparse.Namespace) -> int:
    return _run(args, lambda target, ident: _get(args, target, ident), defaults=False)


def _local_store(profile: Profile) -> tuple[Any, Any]:
    """The profile's instance store (created if need be) and the blocking bridge to its database."""
    from agent.cli.common import open_db
    from agent.services.blocking import Blocking
    from agent.store.instances import InstanceStore

    s = profile.storage
    db = open_db(profile, write=True)
    store = InstanceStore(profile.agent.data_dir, db, free_space_floor=s.free_space_floor if s else 0,
                          duplicate=s.duplicate if s else "replace")
    return store, Blocking()


def _storage_scp(profile: Profile) -> Any:
    from agent.services.storage import StorageSCP

    store, blocking = _local_store(profile)
    return StorageSCP(store, blocking)


def _get(args: argparse.Namespace, target: Target, identifier: Dataset) -> int:
    from agent.services.query import scu
    from agent.services.query.models import MODELS

    extra = [_sop_class(s) for s in args.sop_classes]
    storage_scp = _storage_scp(target.profile)
    interrupt = trio.Event()
    progress = _Progress("sub-operations")
    start = time.monotonic()

    async def main() -> scu.RetrieveOutcome:
        proposals = scu.proposals(args.root, ["get"], storage_classes=scu.get_storage_classes(extra))
        async with _associate(target, args.timeout, proposals) as conn:
            return await _with_interrupt(lambda cancel: scu.get(
                conn, MODELS[args.root].get, identifier, store=storage_scp.handle,
                on_progress=progress, cancel=cancel), interrupt)

    try:
        outcome = trio.run(main)
    except scu.QueryError as exc:
        return _fail(str(exc), EX_FAILED)
    finally:
        progress.end()
    code = _summary("get", outcome, time.monotonic() - start, interrupt.is_set())
    print(f"stored {outcome.stored} instance(s) in {target.profile.agent.data_dir}", file=sys.stderr)
    return code


def _sop_class(text: str) -> str:
    from agent.services.storage_classes import STORAGE_KEYWORDS, is_storage_sop_class

    uid = STORAGE_KEYWORDS.get(text, text)
    if not is_storage_sop_class(uid):
        raise Usage(f"--sop-class {text}: not a storage SOP Class UID or keyword")
    return uid


def _move(args: argparse.Namespace, target: Target, identifier: Dataset) -> int:
    from agent.services.query import scu
    from agent.services.query.models import MODELS

    profile = target.profile
    dest = args.dest or target.calling_ae
    to_us = dest == target.calling_ae
    if args.listen_port is not None and not to_us:
        raise Usage("--port is for moves to ourselves; with --dest another AE receives them")
    interrupt = trio.Event()
    progress = _Progress("sub-operations")
    start = time.monotonic()

    async def move_it() -> scu.RetrieveOutcome:
        async with _associate(target, args.timeout, scu.proposals(args.root, ["move"])) as conn:
            return await _with_interrupt(lambda cancel: scu.move(
                conn, MODELS[args.root].move, identifier, dest, on_progress=progress, cancel=cancel), interrupt)

    async def main() -> scu.RetrieveOutcome:
        if not to_us:
            return await move_it()
        port = args.listen_port or profile.agent.port
        async with trio.open_nursery() as nursery:
            listening = await _temporary_listener(nursery, profile, target.calling_ae, port,
                                                  explicit=args.listen_port is not None)
            print(f"receiving on port {port} " + ("(a temporary Storage SCP)" if listening
                                                  else "(the running agent's listener)"), file=sys.stderr)
            result = await move_it()
            nursery.cancel_scope.cancel()
        return result

    try:
        outcome = trio.run(main)
    except scu.QueryError as exc:
        return _fail(str(exc), EX_FAILED)
    finally:
        progress.end()
    return _summary(f"move to {dest}", outcome, time.monotonic() - start, interrupt.is_set())


async def _temporary_listener(nursery: trio.Nursery, profile: Profile, ae_title: str, port: int, *,
                              explicit: bool) -> bool:
    """Serve a Storage SCP on `port` into the local store; False when the port is taken and was not
    asked for explicitly (the running agent receives); with `--port` a taken port is an error."""
    import errno

    from agent.app import timeouts_of
    from agent.net.server import AcceptorPolicy, Listener, ServiceRegistry

    registry = ServiceRegistry()
    _storage_scp(profile).register(registry)
    listener = Listener(AcceptorPolicy(ae_title=ae_title, timeouts=timeouts_of(profile),
                                       max_pdu_receive=profile.agent.max_pdu_length), registry)
    try:
        await nursery.start(listener.serve_tcp, profile.agent.bind, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and not explicit:
            return False
        raise AgentError(f"cannot listen on {profile.agent.bind}:{port} for the moved instances: "
                         f"{exc.strerror or exc}") from None
    return True


__all__ = ["add_parsers", "run_find", "run_get", "run_move"]
