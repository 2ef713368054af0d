"""The `--tls*` options of the commands that open an association to a host and port (`echo`, `store`):
the same settings a profile's peer has with `tls = true` (agent/net/tls.py, PS3.15 Annex B)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.net.tls import DEFAULT_PROFILE, PROFILE_NAMES, PeerTls


def _file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"a readable file, got {text!r}")
    return path.absolute()


def add_tls_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TLS (PS3.15 Annex B secure transport)")
    g.add_argument("--tls", action="store_true", help="connect with TLS; the peer's certificate is verified")
    g.add_argument("--tls-ca", type=_file, metavar="PEM", help="CA bundle the peer's certificate must chain to "
                                                              "[the system's trusted CAs]")
    g.add_argument("--tls-cert", type=_file, metavar="PEM", help="our client certificate (mutual authentication)")
    g.add_argument("--tls-key", type=_file, metavar="PEM", help="the private key of --tls-cert")
    g.add_argument("--tls-profile", choices=PROFILE_NAMES, default=DEFAULT_PROFILE,
                   help=f"TLS profile [{DEFAULT_PROFILE}: Non-downgrading BCP 195]")
    g.add_argument("--tls-server-name", metavar="NAME",
                   help="the name the peer's certificate must carry [the host argument]")
    g.add_argument("--tls-subject", metavar="DN", help='the subject the peer\'s certificate must have, e.g. "CN=pacs,O=Hospital"')


def tls_from_args(args: argparse.Namespace) -> PeerTls | None:
    """The PeerTls the options ask for, or None; a --tls-* option without --tls is a usage error."""
    given = [name for name in ("tls_ca", "tls_cert", "tls_key", "tls_server_name", "tls_subject")
             if getattr(args, name, None) is not None]
    if args.tls_profile != DEFAULT_PROFILE:
        given.append("tls_profile")
    if not getattr(args, "tls", False):
        if given:
            _usage(f"--{given[0].replace('_', '-')} needs --tls")
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        _usage("--tls-cert and --tls-key go together")
    return PeerTls(ca=args.tls_ca, certificate=args.tls_cert, key=args.tls_key, profile=args.tls_profile,
                   server_name=args.tls_server_name, subject=args.tls_subject)


def _usage(message: str) -> None:
    print(f"dicom-agent: error: {message}", file=sys.stderr)
    raise SystemExit(2)  # a usage error, as argparse's own
