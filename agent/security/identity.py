"""User Identity negotiation (PS3.7 D.3.3.7): what a requestor sends, how an acceptor checks it.

Invariants:
- A passcode never leaves this module in text form: `ClientIdentity` hides it from `repr`, the checks
  report a username and an outcome only, and a stored password is a salted hash (scrypt, or PBKDF2 for
  hashes made elsewhere), compared in constant time.
- The acceptor verifies type 2 (username and passcode) only. A type 1 username, a Kerberos ticket, a SAML
  assertion or a JSON Web Token is *not* verified here: it counts as "no authenticated user" (never as
  a failure), so a service that requires an identity refuses it. This is the Basic User Identity profile
  of PS3.15 B.4 plus passcode checking.
- A positive response (the A-ASSOCIATE-AC sub-item) is only sent for a verified identity that asked for
  one (PS3.7 D.3.3.7: "no response unless a positive response is requested and user authentication
  succeeded"); for types 1 and 2 its server response is empty.
- Nothing here does network I/O. `ClientIdentity.request_item` reads the ticket/assertion/token file at
  each association (they are short-lived and replaced on disk by whoever renews them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from agent.errors import AssociationAborted, ConnectionFailed
from agent.ul import pdu as P

# PS3.7 Table D.3-14: User-Identity-Type.
IDENTITY_TYPES: Mapping[str, int] = {
    "username": 1,
    "username-passcode": 2,
    "kerberos": 3,
    "saml": 4,
    "jwt": 5,
}
_TYPE_NAMES = {v: k for k, v in IDENTITY_TYPES.items()}
FILE_TYPES = frozenset({"kerberos", "saml", "jwt"})  # the identity is the content of a file

# scrypt cost: N=2**14, r=8, p=1 (about 16 MiB and some tens of ms): the checks run in a worker thread.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_PBKDF2_MIN_ITERATIONS = 100_000


class IdentityNotConfirmed(AssociationAborted):
    """The peer accepted the association but did not confirm our user identity, which we asked it to do;
    we aborted it. An abort like any other for the queue: retried with backoff (the peer may be fixed)."""


class IdentityFileError(ConnectionFailed):
    """The ticket, assertion or token file a peer's identity names cannot be used, so no association can
    be requested. Retried like a connection failure: whoever renews the file may be in the middle of it."""


class PasswordHashError(ValueError):
    """A stored password hash is not in a format this module reads."""


def type_name(identity_type: int) -> str:
    return _TYPE_NAMES.get(identity_type, f"type {identity_type}")


# ---------------------------------------------------------------- requestor side


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The identity we send to one peer (`[peers.NAME.identity]`)."""

    kind: str  # a key of IDENTITY_TYPES
    username: str = ""
    passcode: str = field(default="", repr=False)
    file: Path | None = None
    positive_response: bool = False

    def __post_init__(self) -> None:
        if self.kind not in IDENTITY_TYPES:
            raise ValueError(f"unknown user identity type {self.kind!r}")

    def request_item(self) -> P.UserIdentityRQ:
        """The User Identity sub-item (58H) for an A-ASSOCIATE-RQ. Raises IdentityFileError if its file is unusable."""
        if self.kind in FILE_TYPES:
            assert self.file is not None
            try:
                primary, secondary = self.file.read_bytes().strip(), b""
            except OSError as exc:
                raise IdentityFileError(
                    f"cannot read the {self.kind} user identity file {self.file}: {exc.strerror or exc}"
                ) from None
            if not primary or len(primary) > 0xFFFF:
                raise IdentityFileError(f"the {self.kind} user identity file {self.file} is empty or over 65535 bytes")
        else:
            primary = self.username.encode("utf-8")
            secondary = self.passcode.encode("utf-8") if self.kind == "username-passcode" else b""
        return P.UserIdentityRQ(IDENTITY_TYPES[self.kind], self.positive_response, primary, secondary)

    def describe(self) -> str:
        """For log lines: the type and the username, never a passcode or a token."""
        return f"{self.kind} {self.username!r}" if self.username else self.kind


def confirmation_in(ac: P.AAssociateAC) -> P.UserIdentityAC | None:
    """The acceptor's positive response to our User Identity sub-item, if it sent one."""
    return next((i for i in ac.user_information if isinstance(i, P.UserIdentityAC)), None)


# ---------------------------------------------------------------- password hashes


def hash_password(passcode: str) -> str:
    """A salted scrypt hash: `scrypt$N$r$p$SALT$HASH` (SALT and HASH in base64)."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(passcode.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_hash_format(stored: str) -> None:
    """Raise PasswordHashError unless `stored` is a hash `verify_password` can read."""
    _parse_hash(stored)


def verify_password(stored: str, passcode: bytes) -> bool:
    """True when `passcode` (UTF-8 bytes, as on the wire) matches the stored hash."""
    kind, params, salt, expected = _parse_hash(stored)
    if kind == "scrypt":
        n, r, p = params
        got = hashlib.scrypt(passcode, salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=256 * 2**20)
    else:
        got = hashlib.pbkdf2_hmac("sha256", passcode, salt, params[0], dklen=len(expected))
    return hmac.compare_digest(got, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _parse_hash(stored: str) -> tuple[str, tuple[int, ...], bytes, bytes]:
    parts = stored.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(x) for x in parts[1:4])
            if n < 2**10 or n & (n - 1) or not (1 <= r <= 64 and 1 <= p <= 16):
                raise PasswordHashError("scrypt parameters out of range (N a power of two >= 1024)")
            return "scrypt", (n, r, p), base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
        if parts[0] == "pbkdf2-sha256" and len(parts) == 4:
            iterations = int(parts[1])
            if iterations < _PBKDF2_MIN_ITERATIONS:
                raise PasswordHashError(f"PBKDF2 needs at least {_PBKDF2_MIN_ITERATIONS} iterations")
            return "pbkdf2", (iterations,), base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3], validate=True)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, PasswordHashError):
            raise
        raise PasswordHashError("a hash field is not a number or not base64") from None
    raise PasswordHashError(
        "'scrypt$N$r$p$SALT$HASH' or 'pbkdf2-sha256$ITERATIONS$SALT$HASH' (make one with `dicom-agent passwd`)"
    )


# A hash to check unknown usernames against, so that "no such user" takes as long as "wrong passcode".
_DUMMY = "scrypt$16384$8$1$" + _b64(b"\0" * 16) + "$" + _b64(b"\0" * 32)


# ---------------------------------------------------------------- acceptor side


class Outcome(Enum):
    ABSENT = "absent"  # no User Identity sub-item
    VERIFIED = "verified"  # username and passcode matched
    UNVERIFIED = "unverified"  # a type we do not check (or no users configured): no authenticated user
    FAILED = "failed"  # unknown user or wrong passcode: the association is rejected


@dataclass(frozen=True, slots=True)
class IdentityCheck:
    outcome: Outcome
    identity_type: int = 0
    username: str = ""  # as sent (types 1 and 2); never a passcode
    positive_response_requested: bool = False

    @property
    def user(self) -> str | None:
        """The authenticated username, or None."""
        return self.username if self.outcome is Outcome.VERIFIED else None

    def describe(self) -> str:
        who = f" {self.username!r}" if self.username else ""
        return f"{type_name(self.identity_type)}{who}"


@dataclass(frozen=True, slots=True)
class Authenticator:
    """Checks type 2 identities against salted hashes (`users`: username -> hash). Blocking (scrypt):
    call `check` from a worker thread."""

    users: Mapping[str, str] = field(default_factory=dict)

    def check(self, item: P.UserIdentityRQ | None) -> IdentityCheck:
        if item is None:
            return IdentityCheck(Outcome.ABSENT)
        username = item.primary.decode("utf-8", "replace") if item.identity_type in (1, 2) else ""
        base = dict(identity_type=item.identity_type, username=username,
                    positive_response_requested=item.positive_response_requested)
        if item.identity_type != 2 or not self.users:
            return IdentityCheck(Outcome.UNVERIFIED, **base)  # type: ignore[arg-type]
        stored = self.users.get(username)
        ok = verify_password(stored or _DUMMY, item.secondary) and stored is not None
        return IdentityCheck(Outcome.VERIFIED if ok else Outcome.FAILED, **base)  # type: ignore[arg-type]


def read_password_file(path: Path) -> dict[str, str]:
    """`username:hash` lines ('#' starts a comment). Raises ValueError naming the line."""
    users: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"line {number}: expected 'username:hash'")
        try:
            check_hash_format(stored.strip())
        except PasswordHashError as exc:
            raise ValueError(f"line {number}: {exc}") from None
        users[name.strip()] = stored.strip()
    return users


__all__ = [
    "Authenticator", "ClientIdentity", "FILE_TYPES", "IDENTITY_TYPES", "IdentityCheck", "IdentityFileError",
    "IdentityNotConfirmed",
    "Outcome", "PasswordHashError", "check_hash_format", "confirmation_in", "hash_password", "read_password_file",
    "type_name", "verify_password",
]
