"""`dicom-agent passwd USER`: a `USER:HASH` line for `[security] password_file` (or the hash alone for
`[security] users`), from a passcode read without echo (twice, on a terminal) or from stdin.

The passcode never appears on the command line (where `ps` would show it) nor in the output: the
hash is salted scrypt (agent/security/identity.py), checked by the listener for User Identity type 2
(PS3.7 D.3.3.7).
"""

from __future__ import annotations

import argparse
import getpass
import sys

EX_FAILED = 1


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    passwd = sub.add_parser(
        "passwd", help="print a salted passcode hash for [security] (USER:HASH for password_file)")
    passwd.add_argument("user", help="the username the peer sends (User Identity type 2)")
    passwd.add_argument("--hash-only", action="store_true", help="print the hash alone (for [security] users)")


def run_passwd(args: argparse.Namespace) -> int:
    from agent.security.identity import hash_password

    if ":" in args.user or not args.user.strip():
        print("dicom-agent: passwd: the username must be non-empty and must not contain ':'", file=sys.stderr)
        return EX_FAILED
    if sys.stdin.isatty():
        first = getpass.getpass(f"passcode for {args.user}: ")
        if getpass.getpass("again: ") != first:
            print("dicom-agent: passwd: the two passcodes differ; nothing printed", file=sys.stderr)
            return EX_FAILED
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if not first:
        print("dicom-agent: passwd: an empty passcode is refused", file=sys.stderr)
        return EX_FAILED
    stored = hash_password(first)
    print(stored if args.hash_only else f"{args.user}:{stored}")
    return 0
