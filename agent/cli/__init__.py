"""The `dicom-agent` command line: the parser, the dispatch and the exit statuses. Each command group
has its module (`queue`, `status`, `store`, `worklist`, `mpps`, `printing` for print and
printer; `common` holds what the database commands share); `run`, `check-profile` and `echo` are small
enough to live here.

Exit statuses (sysexits.h where one fits): 0 success; 1 the DICOM operation failed (a failure status,
a rejection, an abort), or a read-only command found no database; 2 usage; 69 the peer could not be
reached (EX_UNAVAILABLE); 73 the database exists but cannot be opened (EX_CANTCREAT); 78 bad profile or
a data_dir that cannot be used (EX_CONFIG, also told to systemd through RestartPreventExitStatus).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence

from typing import TYPE_CHECKING

import trio

from agent import __version__
from agent.errors import AgentError, ConnectionFailed, ProfileError, TimeoutExpired
from agent.logs import setup_logging

if TYPE_CHECKING:
    from agent.profile import Profile

EX_FAILED = 1
EX_UNAVAILABLE = 69
EX_CONFIG = 78

log = logging.getLogger("agent.cli")


def _profile(path: str | None) -> Profile:
    # Imported here: the profile module pulls in pydicom (~0.3 s), which `echo` and `store` do not need.
    from agent.profile import load_default_profile, load_profile

    return load_default_profile() if path is None else load_profile(path)


def _ae_title(text: str) -> str:
    from agent.ul.vr import AE_TITLE_RULE, is_ae_title  # the profile's rule, not a second copy

    if not is_ae_title(text):
        raise argparse.ArgumentTypeError(f"{AE_TITLE_RULE}, got {text!r}")
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"a positive number of seconds, got {text!r}")
    return value


def _tcp_port(text: str) -> int:
    if not (text.isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"a TCP port from 1 to 65535, got {text!r}")
    return int(text)


def _max_pdu(text: str) -> int:
    # The profile's rule for max_pdu_length: 0 (no limit, PS3.8 D.1) or at least 1024 bytes.
    if not (text.isdigit() and (int(text) == 0 or 1024 <= int(text) <= 2**32 - 1)):
        raise argparse.ArgumentTypeError(f"0 (no limit) or a number of bytes from 1024 to {2**32 - 1}, got {text!r}")
    return int(text)


def _add_association_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aet", type=_ae_title, default="DICOM_AGENT", help="our (calling) AE title [DICOM_AGENT]")
    p.add_argument("--aec", type=_ae_title, default="ANY-SCP", help="the peer's (called) AE title [ANY-SCP]")
    p.add_argument(
        "--timeout", type=_seconds, default=30.0,
        help="seconds for connecting and associating together, and for each response [30]",
    )
    p.add_argument("host", help="peer host name or address")
    p.add_argument("port", type=_tcp_port, help="peer port")
    from agent.cli.tls_options import add_tls_args

    add_tls_args(p)  # --tls, --tls-ca, --tls-cert, --tls-key, ...
    from agent.cli.identity_options import add_identity_args

    add_identity_args(p)  # --user, --passcode-file, --kerberos, --saml, --jwt, --identity-response


#: Commands defined in this module: parsing them needs none of the command groups' modules.
_OWN_COMMANDS = frozenset({"run", "check-profile", "echo", "store"})


def _command_word(argv: Sequence[str] | None) -> str | None:
    """The command named on the command line (the first word that is not an option), if any."""
    words = [w for w in (sys.argv[1:] if argv is None else argv) if not w.startswith("-")]
    return words[0] if words else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; for `command` in _OWN_COMMANDS only what parses it (start-up of `store` and
    `echo`: the command groups' modules pull in sqlite3, the stores and more, for nothing)."""
    parser = argparse.ArgumentParser(
        prog="dicom-agent", description="Embeddable DICOM agent for imaging-device hosts."
    )
    parser.add_argument("--version", action="version", version=f"dicom-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent in the foreground (logs to stderr)")
    run.add_argument("--profile", help="profile file (TOML); default: the embedded default profile")
    run.add_argument("--port", type=int, help="override [agent] port")

    check = sub.add_parser("check-profile", help="validate a profile and print what it turns on")
    check.add_argument("profile", help="profile file (TOML)")

    echo = sub.add_parser("echo", help="C-ECHO a peer (Verification SCU)")
    _add_association_args(echo)

    store = sub.add_parser("store", help="send DICOM files and folders to a peer (Storage SCU)")
    _add_association_args(store)
    store.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (searched recursively)")
    store.add_argument("--max-pdu", type=_max_pdu, default=262144, help="largest PDU we accept, 0 = no limit [262144]")
    if command in _OWN_COMMANDS:
        return parser

    from agent.cli.mpps import add_parsers as add_mpps_parsers
    from agent.cli.worklist import add_parsers as add_worklist_parsers

    add_worklist_parsers(sub)
    add_mpps_parsers(sub)
    from agent.cli.queue import add_parsers as add_queue_parsers

    add_queue_parsers(sub)
    from agent.cli.status import add_parsers as add_status_parsers

    add_status_parsers(sub)
    from agent.cli.printing import add_parsers as add_print_parsers

    add_print_parsers(sub)  # print, printer
    from agent.cli.demo import add_parsers as add_demo_parsers

    add_demo_parsers(sub)
    from agent.cli.procedures import add_parsers as add_procedures_parsers

    add_procedures_parsers(sub)
    from agent.cli.device import add_parsers as add_device_parsers

    add_device_parsers(sub)
    from agent.cli.query import add_parsers as add_query_parsers

    add_query_parsers(sub)  # find, move, get
    from agent.cli.conformance import add_parsers as add_conformance_parsers

    add_conformance_parsers(sub)
    from agent.cli.passwd import add_parsers as add_passwd_parsers

    add_passwd_parsers(sub)
    return parser


#: One-shot network commands a modality's scripts may run once per image: once their status is known
#: (association closed, files closed, output flushed) the process ends at once (see `main`).
_EXIT_AT_ONCE = frozenset({"echo", "store"})


def main(argv: Sequence[str] | None = None) -> int:
    """The program: parse `argv` (None: the process's own arguments) and run the command.

    Called as the program (argv None), `echo` and `store` end the process with `os._exit` once their
    exit status is known and stdout and stderr are flushed: with trio loaded, the interpreter's own
    finalization (module teardown, garbage collection, the worker threads) takes 20-30 ms, about a
    tenth of sending 200 images, and there is nothing left for it to do. Called in process (argv
    given, as the tests do), main returns the status like any function."""
    command = _command_word(argv)
    try:
        status = _main(argv)
    except BrokenPipeError:
        # Whoever read our output has gone (`dicom-agent queue list | head`): say so in one line, not
        # a traceback, and exit 1 as any other failed command; later writes go nowhere.
        _output_gone(command)
        status = 1
    if argv is None and command in _EXIT_AT_ONCE:
        _exit_now(status)
    return status


def _output_gone(command: str | None) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no real file (in process, a test's capture)
        pass
    try:
        who = f"dicom-agent {command}" if command else "dicom-agent"
        print(f"{who}: standard output was closed (broken pipe); stopped", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _exit_now(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said on it
            pass
    os._exit(status)


def _main(argv: Sequence[str] | None) -> int:
    # Patient data: whatever this process creates (database, instances, print spool, temp files) is
    # owner/group only, 0640 files and 0750 folders, whatever umask it was started with.
    os.umask(0o027)
    args = build_parser(_command_word(argv)).parse_args(argv)
    if getattr(args, "tls", None) is not None:  # echo, store: a --tls-* option without --tls exits 2 now
        from agent.cli.tls_options import tls_from_args

        tls_from_args(args)
    if getattr(args, "identity_response", None) is not None:  # echo, store: inconsistent identity options exit 2
        from agent.cli.identity_options import identity_from_args

        identity_from_args(args)
    try:
        return _dispatch(args)
    except AgentError as exc:
        return _report(exc)
    except BaseExceptionGroup as group:
        # trio wraps an error raised inside a nursery (the agent's start-up) in a group: one AgentError
        # inside is still one line on stderr and its exit status, not a traceback.
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], AgentError):
            return _report(leaves[0])
        if leaves and all(isinstance(e, KeyboardInterrupt) for e in leaves):
            return 130
        raise
    except KeyboardInterrupt:
        return 130


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


def _report(exc: AgentError) -> int:
    """One line on stderr and the exit status for an error the agent raised on purpose."""
    if isinstance(exc, ProfileError):
        print(f"dicom-agent: bad profile: {exc}", file=sys.stderr)
        return EX_CONFIG
    print(f"dicom-agent: {exc}", file=sys.stderr)
    if isinstance(exc, ConnectionFailed | TimeoutExpired):
        return EX_UNAVAILABLE
    status = getattr(exc, "exit_status", EX_FAILED)  # agent.data_dir's errors carry theirs (78, 73, 1)
    return status if isinstance(status, int) else EX_FAILED


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        profile = _profile(args.profile)
        if args.port is not None:
            import dataclasses

            profile = dataclasses.replace(profile, agent=dataclasses.replace(profile.agent, port=args.port))
        setup_logging("debug" if args.verbose else profile.agent.log_level)
        from agent.app import Agent, run_until_signalled

        trio.run(run_until_signalled, Agent(profile))
        return 0
    if args.command == "check-profile":
        from agent.data_dir import check_data_dir, check_database
        from agent.store.db import DB_FILENAME

        profile = _profile(args.profile)
        check_data_dir(profile.agent.data_dir)  # creates nothing; exit 78 when the folder cannot be used
        check_database(profile.agent.data_dir / DB_FILENAME)  # an existing one must pass a quick check (73)
        if profile.device is not None:  # a wrong [device.options] value: 78 now, not at start-up
            from agent.workflow.device import open_device_driver

            open_device_driver(profile)  # acquisition factories validate and build; they open nothing
        print(describe_profile(profile))
        return 0
    setup_logging("debug" if args.verbose else "warning")
    if args.command == "queue":
        from agent.cli.queue import run_queue

        return run_queue(args)
    if args.command == "status":
        from agent.cli.status import run_status

        return run_status(args)
    if args.command == "echo":
        return _echo(args)
    if args.command == "store":
        from agent.cli.store import run_store

        return run_store(args)
    if args.command == "worklist":
        from agent.cli.worklist import run_worklist

        return run_worklist(args)
    if args.command == "mpps":
        from agent.cli.mpps import run_mpps

        return run_mpps(args)
    if args.command in ("print", "printer"):
        from agent.cli.printing import run_print, run_printer

        return run_print(args) if args.command == "print" else run_printer(args)
    if args.command == "demo":
        from agent.cli.demo import run_demo

        return run_demo(args)
    if args.command == "procedures":
        from agent.cli.procedures import run_procedures

        return run_procedures(args)
    if args.command == "device":
        from agent.cli.device import run_device

        return run_device(args)
    if args.command in ("find", "move", "get"):
        from agent.cli.query import run_find, run_get, run_move

        return {"find": run_find, "move": run_move, "get": run_get}[args.command](args)
    if args.command == "conformance":
        from agent.cli.conformance import run_conformance

        return run_conformance(args, _profile(args.profile))
    if args.command == "passwd":
        from agent.cli.passwd import run_passwd

        return run_passwd(args)
    raise AssertionError(args.command)


def describe_profile(profile: Profile) -> str:
    a = profile.agent
    lines = [
        f"{profile.source}: OK",
        f"  AE title {a.ae_title}, listening on {a.bind}:{a.port}, data in {a.data_dir}",
        f"  up to {a.max_associations} associations, max PDU {a.max_pdu_length or 'unlimited'}",
    ]
    for name, peer in profile.peers.items():
        lines.append(f"  peer {name}: {peer.ae_title} at {peer.host}:{peer.port}{' (TLS)' if peer.tls else ''}")
    for section in ("storage", "commitment", "worklist", "mpps", "print", "device"):
        lines.append(f"  [{section}] {'on' if getattr(profile, section) is not None else 'off'}")
    q = profile.query
    lines.append("  [query] off" if q is None else
                 f"  [query] {' and '.join(m + ' root' for m in q.models)}: {', '.join(q.operations)}; move to "
                 f"{', '.join(q.move_destinations) if q.move_destinations is not None else 'any peer'}"
                 f"{'; relational' if q.relational else ''}")
    t = profile.tls
    lines.append("  [tls] off" if t is None else
                 f"  [tls] port {t.port}, profile {t.profile}, client certificates {t.client_certificates}"
                 f"{'' if t.plain_listener else ', plain TCP off'}")
    sec = profile.security
    lines.append(
        f"  [security] off ({'calling AEs ' + ', '.join(a.allowed_calling_aes) if a.allowed_calling_aes else 'any calling AE'}"
        " may use every service)" if sec is None else
        f"  [security] {len(sec.users)} user(s), {len(sec.access) or 'no'} access rule(s)"
        f"{' (any calling AE may use every service)' if not sec.access else ''}, identity required for: "
        f"{', '.join(sorted(sec.require_identity)) or 'nothing'}"
    )
    au = profile.audit
    lines.append("  [audit] off" if au is None else
                 f"  [audit] {f'{au.transport} to {au.host}:{au.port}' if au.host else 'no repository'}"
                 f"{f', file {au.local_file}' if au.local_file else ''}; events: {', '.join(sorted(au.events))}")
    return "\n".join(lines)


def _echo(args: argparse.Namespace) -> int:
    from agent.cli.identity_options import identity_from_args
    from agent.cli.tls_options import tls_from_args
    from agent.net.connection import Timeouts
    from agent.services.verification import EchoResult, echo

    t = args.timeout
    tls = tls_from_args(args)

    async def echo_within_timeout() -> EchoResult:
        # One deadline for the whole operation: connect, association and the response.
        with trio.move_on_after(t):
            return await echo(args.host, args.port, calling_ae=args.aet, called_ae=args.aec,
                              timeouts=Timeouts(artim=t, dimse=t, idle=t, connect=t), tls=tls,
                              user_identity=identity_from_args(args))
        raise TimeoutExpired(f"{args.aec} at {args.host}:{args.port} did not complete the C-ECHO within {t:g} s")

    result = trio.run(echo_within_timeout)
    print(f"C-ECHO {args.aec}@{args.host}:{args.port}: {result.describe()}")
    return 0 if result.ok else EX_FAILED
