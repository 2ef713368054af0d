"""The User Identity options of the commands that open an association to a host and port (`echo`,
`store`): what a profile peer's `[peers.NAME.identity]` says, PS3.7 D.3.3.7. A passcode is read from
a file, never taken from the command line (where `ps` and shell histories would show it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported in identity_from_args, when an identity is asked for: see below
    from agent.security.identity import ClientIdentity


def _file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"a readable file, got {text!r}")
    return path.absolute()


def add_identity_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("User Identity (PS3.7 D.3.3.7)")
    who = g.add_mutually_exclusive_group()
    who.add_argument("--user", metavar="NAME", help="send this username (with --passcode-file, and its passcode)")
    who.add_argument("--kerberos", type=_file, metavar="FILE", help="send the Kerberos service ticket in FILE")
    who.add_argument("--saml", type=_file, metavar="FILE", help="send the SAML assertion in FILE")
    who.add_argument("--jwt", type=_file, metavar="FILE", help="send the JSON Web Token in FILE")
    g.add_argument("--passcode-file", type=_file, metavar="FILE", help="the passcode for --user: FILE's first line")
    g.add_argument("--identity-response", action="store_true",
                   help="the peer must confirm the identity; if it does not, the association is aborted")


def identity_from_args(args: argparse.Namespace) -> ClientIdentity | None:
    """The ClientIdentity the options ask for, or None; inconsistent options are a usage error (exit 2)."""
    files = {kind: getattr(args, kind, None) for kind in ("kerberos", "saml", "jwt")}
    kind = next((k for k, v in files.items() if v is not None), None)
    if args.passcode_file is not None and args.user is None:
        _usage("--passcode-file needs --user")
    if args.user is None and kind is None:
        if args.identity_response:
            _usage("--identity-response needs --user, --kerberos, --saml or --jwt")
        return None
    # Only now: agent.security costs every run of `store` and `echo` milliseconds, for no identity.
    from agent.security.identity import ClientIdentity

    if kind is not None:
        return ClientIdentity(kind, file=files[kind], positive_response=args.identity_response)
    if not args.user.strip() or len(args.user.encode("utf-8")) > 0xFFFF:
        _usage("--user: a non-empty username of at most 65535 bytes")
    if args.passcode_file is None:
        return ClientIdentity("username", args.user, positive_response=args.identity_response)
    lines = args.passcode_file.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0]:
        _usage(f"--passcode-file {args.passcode_file}: the first line (the passcode) is empty")
    return ClientIdentity("username-passcode", args.user, lines[0], positive_response=args.identity_response)


def _usage(message: str) -> None:
    print(f"dicom-agent: error: {message}", file=sys.stderr)
    raise SystemExit(2)  # a usage error, as argparse's own
