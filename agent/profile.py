"""Profile files (TOML) parsed into frozen configuration values.

Invariants this module keeps:
- A `Profile` is a value: frozen, slotted dataclasses all the way down, tuples instead of lists,
  read-only mappings instead of dicts. Nothing here is module-level mutable state; the profile is passed
  explicitly to whoever needs it (docs/architecture.md "Profiles").
- Every problem raises `ProfileError(file, key, expected)` with the dotted key (`peers.pacs.port`) and
  what was expected, including the value found. Unknown keys and sections are errors: a typo must never
  silently leave a service on its default.
- Durations are float seconds, sizes are int bytes, paths are absolute `Path`s (a relative one is taken
  from the profile file's folder), UIDs are strings.
- A key this version does not implement is an error, never silently accepted.
- A section that is absent is `None` (the service is off), except `[agent]`, which always exists.
- Every peer name referenced anywhere exists in `[peers]`.
"""

from __future__ import annotations

import datetime
import difflib
import importlib.resources
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeVar, get_args

from pydicom.uid import UID, UID_dictionary

from agent.errors import ProfileError
from agent.net.tls import DEFAULT_PROFILE as DEFAULT_TLS_PROFILE, PROFILE_NAMES as TLS_PROFILES, ListenerTls, PeerTls
from agent.security.access import SERVICES, AccessRule, parse_hosts
from agent.security.audit import EVENT_NAMES as AUDIT_EVENTS, AuditSettings
from agent.security.identity import (
    IDENTITY_TYPES, ClientIdentity, PasswordHashError, check_hash_format, read_password_file,
)
from agent.ul.vr import AE_TITLE_RULE, is_ae_title

__all__ = [
    "AgentSettings",
    "CommitmentSettings",
    "DeviceSettings",
    "MppsSettings",
    "Peer",
    "PrintSettings",
    "Profile",
    "QuerySettings",
    "SecuritySettings",
    "StorageSettings",
    "WorklistSettings",
    "EMBEDDED_SOURCE",
    "TRANSFER_SYNTAX_ALIASES",
    "load_default_profile",
    "open_driver",
    "load_profile",
    "parse_profile",
    "parse_duration",
    "parse_size",
]

EMBEDDED_SOURCE = "<embedded default>"

# The uncompressed transfer syntaxes (PS3.5 10.1-10.3) the profile may rank, by short name.
TRANSFER_SYNTAX_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "explicit-le": "1.2.840.10008.1.2.1",
        "implicit-le": "1.2.840.10008.1.2",
        "explicit-be": "1.2.840.10008.1.2.2",
    }
)

LogLevel = Literal["debug", "info", "warning", "error"]
Duplicate = Literal["replace", "keep-first"]
ReportOn = Literal["same-association", "new-association"]


# --------------------------------------------------------------------------------------------------
# The values


def _no_options() -> Mapping[str, object]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """`[agent]`: this AE, its listener and its timeouts (seconds)."""

    ae_title: str = "DICOM_AGENT"
    bind: str = "0.0.0.0"
    port: int = 11112  # 0: let the OS pick a free port (tests)
    data_dir: Path = Path("dicom-agent-data")
    max_associations: int = 16
    max_pending_connections: int = 64  # connections that have not sent an A-ASSOCIATE-RQ yet
    max_pending_per_address: int = 16  # ... of them from one source address
    max_pdu_length: int = 262144  # 0: unlimited (PS3.8 D.1)
    called_ae_check: bool = False
    allowed_calling_aes: tuple[str, ...] = ()  # empty: any calling AE
    connect_timeout: float = 10.0
    artim_timeout: float = 30.0
    dimse_timeout: float = 60.0
    idle_timeout: float = 300.0
    log_level: LogLevel = "info"


@dataclass(frozen=True, slots=True)
class Peer:
    """`[peers.NAME]`: a remote AE, with the retry policy of the queue worker that talks to it."""

    name: str
    ae_title: str
    host: str
    port: int
    retry_base: float = 5.0
    retry_cap: float = 600.0
    max_age: float = 7 * 86400.0
    max_attempts: int | None = None  # None: bounded by max_age only
    linger: float = 5.0  # keep an idle outgoing association open this long
    max_pdu_length: int = 262144
    dimse_timeout: float = 60.0  # inherited from [agent] when the profile leaves it out
    tls: PeerTls | None = None  # `tls = true` and the `tls_*` keys (PEER_TLS_KEYS); None: plain TCP
    identity: ClientIdentity | None = None  # `[peers.NAME.identity]`: User Identity we send (PS3.7 D.3.3.7)


# A peer's TLS keys (`tls = true` turns them on); the CA, certificate and key default to [tls]'s.
PEER_TLS_KEYS = ("tls_ca", "tls_certificate", "tls_key", "tls_profile", "tls_server_name", "tls_subject")


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """`[storage]`: Storage SCP, store-and-forward and Storage Commitment SCU."""

    accept_all: bool = True  # accept = "all-storage"
    sop_classes: tuple[str, ...] = ()  # the UIDs listed when accept_all is False
    transfer_syntaxes: tuple[str, ...] = tuple(TRANSFER_SYNTAX_ALIASES.values())
    accept_compressed: bool = True
    duplicate: Duplicate = "replace"
    free_space_floor: int = 100 * 10**6
    forward_to: tuple[str, ...] = ()
    commit_with: str | None = None
    commit_batch: Literal["study"] | int = "study"
    commit_idle: float = 30.0
    commit_timeout: float = 600.0
    commit_max_rerequests: int = 3
    retention: float | None = None  # None: keep forever
    commit_report_wait: float = 2.0  # after N-ACTION-RSP, read the same association this long for the report


@dataclass(frozen=True, slots=True)
class CommitmentSettings:
    """`[commitment]`: Storage Commitment SCP (PS3.4 J)."""

    report_on: ReportOn = "same-association"
    report_delay: float = 0.0
    max_report_attempts: int | None = None


@dataclass(frozen=True, slots=True)
class WorklistSettings:
    """`[worklist]`: MWL SCU (from `source`) and MWL SCP (over the cache and `folder`)."""

    station_ae: str
    source: str | None = None
    refresh: float = 60.0
    stale_after: float = 600.0
    modality: str | None = None
    date: str = "today"  # "today" | "any" | "YYYYMMDD"
    folder: Path | None = None
    serve: bool = True


@dataclass(frozen=True, slots=True)
class MppsSettings:
    """`[mpps]`: MPPS SCU (`send_to`) and SCP (`serve`, forwarding to `forward_to`)."""

    send_to: tuple[str, ...] = ()
    serve: bool = False
    forward_to: tuple[str, ...] = ()
    instance_lifetime: float = 7 * 86400.0
    coerce_from_worklist: bool = True


@dataclass(frozen=True, slots=True)
class PrintSettings:
    """`[print]`: Print SCU (to `printer`) and Print SCP (`serve`, rendering through `driver`)."""

    driver: str = "file"
    options: Mapping[str, object] = field(default_factory=_no_options)
    printer: str | None = None
    serve: bool = False
    # Print SCP: Image Display Format kinds accepted (PS3.3 C.13.3), and how often the printer's status
    # is polled (jobs held by a FAILURE go out within this time of the printer being NORMAL again).
    formats: tuple[str, ...] = ("STANDARD", "ROW", "COL")
    poll_interval: float = 3.0


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """`[device]`: the acquisition driver (options validated by its factory when the agent opens it) and
    the modality workflow (agent.workflow.modality): worklist selection, the unscheduled case, the SOP
    class made, and where the images go (C-STORE, Storage Commitment, film)."""

    driver: str
    options: Mapping[str, object] = field(default_factory=_no_options)
    sop_class: str = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    modality: str | None = None  # None: the worklist item's SPS Modality, else [worklist] modality, else OT
    station_name: str = ""
    select: Literal["accession", "patient-id", "key", "first"] = "accession"
    unscheduled: Literal["allow", "refuse"] = "allow"
    send_to: tuple[str, ...] = ()
    commit_with: str | None = None
    print_to: str | None = None
    print_format: str = "STANDARD\\1,1"
    series_description: str = ""
    # Priors (agent/workflow/priors.py): when a procedure starts, the patient's `priors_max` most recent
    # earlier studies at peer `priors_from` are fetched into the local store through the queue.
    priors_from: str | None = None
    priors_retrieve: Literal["move", "get"] = "move"
    priors_max: int = 3


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """`[security]`: who may use which service (`access` rules; none: everyone, everything), the users
    whose passcodes the listener checks (salted hashes from `users` and `password_file`), and the services
    that need an authenticated user (`require_identity`)."""

    users: Mapping[str, str] = field(default_factory=_no_options)  # type: ignore[assignment]
    password_file: Path | None = None
    require_identity: frozenset[str] = frozenset()
    access: tuple[AccessRule, ...] = ()


@dataclass(frozen=True, slots=True)
class QuerySettings:
    """`[query]`: the Query/Retrieve SCP over the local store (agent/services/query)."""

    models: tuple[str, ...] = ("patient", "study")  # Patient Root, Study Root
    operations: tuple[str, ...] = ("find", "move", "get")
    move_destinations: tuple[str, ...] | None = None  # peer names; None: every peer in [peers]
    max_results: int = 10000  # C-FIND matches per query; more: the first ones, then A700
    relational: bool = True  # accept relational queries when the SCU asks (PS3.4 C.5.1.1)


@dataclass(frozen=True, slots=True)
class Profile:
    """One agent instance's whole configuration. `source` is the file path or `<embedded default>`."""

    source: str
    agent: AgentSettings
    peers: Mapping[str, Peer]
    storage: StorageSettings | None = None
    commitment: CommitmentSettings | None = None
    worklist: WorklistSettings | None = None
    mpps: MppsSettings | None = None
    print: PrintSettings | None = None
    device: DeviceSettings | None = None
    tls: ListenerTls | None = None  # `[tls]`: the TLS listener; peers' TLS is on each Peer
    query: QuerySettings | None = None  # `[query]`: Query/Retrieve SCP (off when absent)
    security: SecuritySettings | None = None  # `[security]`: users, required identity, access rules
    audit: AuditSettings | None = None  # `[audit]`: audit trail (PS3.15 A.5) to a repository and/or a file


# --------------------------------------------------------------------------------------------------
# Entry points


def load_profile(path: str | Path) -> Profile:
    """Read and parse the profile at `path`."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ProfileError(source, "(file)", f"a readable TOML file, got: {reason}") from None
    return _parse_bytes(raw, source, Path(os.path.abspath(path)).parent)


def open_driver(profile: Profile, section: Literal["print", "device"]) -> object:
    """Open the driver that `[print]` or `[device]` names, with its options. Every driver error is a
    ProfileError naming the file and the key (exit 78): a bad option `SECTION.options.KEY` (the factory
    validates its options), a driver that is gone or cannot start `SECTION.driver`."""
    from drivers.base import DriverError, DriverOptionError, driver_names, open_device, open_printer

    settings = profile.print if section == "print" else profile.device
    assert settings is not None, section
    kind, noun, opener = (
        ("printer", "printer", open_printer) if section == "print" else ("acquisition", "device", open_device)
    )
    try:
        return opener(settings.driver, settings.options, profile.agent.data_dir)
    except DriverOptionError as exc:
        raise ProfileError(profile.source, f"{section}.options.{exc.key}", exc.expected) from None
    except KeyError:
        raise ProfileError(profile.source, f"{section}.driver",
                           f"an installed {kind} driver (known: {', '.join(driver_names(kind)) or 'none'}), "
                           f"got {settings.driver!r}") from None
    except DriverError as exc:
        raise ProfileError(profile.source, f"{section}.driver", f"a {noun} that can be opened: {exc}") from None


def load_default_profile() -> Profile:
    """The profile embedded in the package (`agent/default_profile.toml`)."""
    raw = importlib.resources.files("agent").joinpath("default_profile.toml").read_bytes()
    return _parse_bytes(raw, EMBEDDED_SOURCE)


def parse_profile(data: Mapping[str, object], *, source: str, base_dir: Path | None = None) -> Profile:
    """Validate the output of `tomllib` and turn it into a `Profile`.

    Relative paths resolve against `base_dir` (the profile file's folder); without one (the embedded
    default profile, which has no folder) against the working directory.
    """
    return _Parser(source, base_dir).profile(data)


def _parse_bytes(raw: bytes, source: str, base_dir: Path | None = None) -> Profile:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(source, "(syntax)", f"UTF-8 text, got an invalid byte at offset {exc.start}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)".
        raise ProfileError(source, "(syntax)", f"valid TOML: {exc}") from None
    return parse_profile(data, source=source, base_dir=base_dir)


# --------------------------------------------------------------------------------------------------
# Units

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*", re.IGNORECASE)


def parse_duration(value: object) -> float | None:
    """Seconds from a number or a string like "30s", "5m", "2h", "7d" ("250ms" too); None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.fullmatch(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "s").lower()]
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def parse_size(value: object) -> int | None:
    """Bytes from an integer or a string like "100MB" (10**6) or "2GiB" (2**30); None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and (m := _SIZE_RE.fullmatch(value)):
        return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    return None


# --------------------------------------------------------------------------------------------------
# The parser

_SECTIONS = ("agent", "peers", "storage", "commitment", "worklist", "mpps", "print", "device", "tls", "security",
             "query", "audit")
# Sections of services this version does not implement: refused even when empty, because a profile
# that names them expects something to happen (an acquisition driver to run, TLS to protect the wire).
_UNSUPPORTED: dict[str, str] = {}
_PEER_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")
_T = TypeVar("_T")
_MISSING = object()


def _show(value: object) -> str:
    """A found value as the error message shows it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _suggest(word: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(word, allowed, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _storage_keyword_index() -> dict[str, str]:
    return {v[4]: uid for uid, v in UID_dictionary.items() if v[1] == "SOP Class" and v[4]}


def _is_storage_class(uid: str) -> bool:
    """The Storage SCP's own rule (agent.services.storage_classes), so profile and SCP agree."""
    from agent.services.storage_classes import is_storage_sop_class

    return is_storage_sop_class(uid)


class _Parser:
    """Holds the file name so every error can name it; no state beyond that."""

    def __init__(self, source: str, base_dir: Path | None = None) -> None:
        self.source = source
        self.base_dir = base_dir

    def fail(self, key: str, expected: str) -> ProfileError:
        return ProfileError(self.source, key, expected)

    # --- structure ---------------------------------------------------------------------------------

    def table(self, value: object, key: str) -> dict[str, object]:
        if not isinstance(value, dict):
            raise self.fail(key, f"a table, got {_show(value)}")
        return value

    def check_keys(self, table: Mapping[str, object], prefix: str, allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                names = sorted(allowed)
                raise self.fail(
                    f"{prefix}.{key}",
                    f"a known key ({_suggest(key, names)}allowed: {', '.join(names)})",
                )

    def get(
        self,
        table: Mapping[str, object],
        prefix: str,
        key: str,
        convert: Callable[[object, str], _T],
        default: object = _MISSING,
    ) -> _T:
        full = f"{prefix}.{key}"
        if key not in table:
            if default is _MISSING:
                raise self.fail(full, "a value (this key is required)")
            return default  # type: ignore[return-value]
        return convert(table[key], full)

    # --- scalar converters (value, dotted key) -> value ---------------------------------------------

    def integer(self, low: int, high: int | None = None) -> Callable[[object, str], int]:
        def convert(value: object, key: str) -> int:
            if isinstance(value, int) and not isinstance(value, bool):
                if value >= low and (high is None or value <= high):
                    return value
            span = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise self.fail(key, f"an integer {span}, got {_show(value)}")

        return convert

    def boolean(self, value: object, key: str) -> bool:
        if isinstance(value, bool):
            return value
        raise self.fail(key, f"true or false, got {_show(value)}")

    def string(self, value: object, key: str) -> str:
        if isinstance(value, str) and value.strip():
            return value
        raise self.fail(key, f"a non-empty string, got {_show(value)}")

    def choice(self, *options: str) -> Callable[[object, str], str]:
        def convert(value: object, key: str) -> str:
            if isinstance(value, str) and value in options:
                return value
            raise self.fail(key, f"one of {', '.join(map(repr, options))}, got {_show(value)}")

        return convert

    def duration(self, *, zero: bool = False) -> Callable[[object, str], float]:
        def convert(value: object, key: str) -> float:
            seconds = parse_duration(value)
            if seconds is not None and (zero or seconds > 0):
                return seconds
            what = "a duration" if zero else "a positive duration"
            raise self.fail(key, f'{what} (seconds, or a string like "30s", "5m", "2h", "7d"), got {_show(value)}')

        return convert

    def size(self, value: object, key: str) -> int:
        size = parse_size(value)
        if size is not None:
            return size
        raise self.fail(key, f'a size (bytes, or a string like "100MB", "2GiB"), got {_show(value)}')

    def ae_title(self, value: object, key: str) -> str:
        if is_ae_title(value):  # the one AE title rule (PS3.5 6.2), shared with the command line
            return value  # type: ignore[return-value]
        raise self.fail(key, f"{AE_TITLE_RULE}, got {_show(value)}")

    def pdu_length(self, value: object, key: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and (value == 0 or 1024 <= value <= 2**32 - 1):
            return value
        raise self.fail(key, f"0 (unlimited) or an integer from 1024 to {2**32 - 1}, got {_show(value)}")

    def path(self, value: object, key: str) -> Path:
        # "~" expands; a relative path is the profile file's folder's (so `status --profile site/p.toml`
        # run from anywhere finds the database the agent uses), or the working directory's for a
        # profile that has no file (the embedded default).
        text = os.path.expanduser(self.string(value, key))
        base = self.base_dir if self.base_dir is not None else Path.cwd()
        return Path(os.path.abspath(base / text))

    def list_of(self, item: Callable[[object, str], _T]) -> Callable[[object, str], tuple[_T, ...]]:
        def convert(value: object, key: str) -> tuple[_T, ...]:
            if not isinstance(value, list):
                raise self.fail(key, f"an array, got {_show(value)}")
            return tuple(item(v, f"{key}[{i}]") for i, v in enumerate(value))

        return convert

    def frozen_options(self, value: object, key: str) -> Mapping[str, object]:
        return _freeze(self.table(value, key))  # type: ignore[return-value]

    # --- sections ----------------------------------------------------------------------------------

    def profile(self, data: Mapping[str, object]) -> Profile:
        for name in data:
            if name not in _SECTIONS:
                hint = _suggest(name, list(_SECTIONS))
                raise self.fail(name, f"a known section ({hint}allowed: {', '.join(_SECTIONS)})")
        for name, why in _UNSUPPORTED.items():
            if name in data:
                raise self.fail(name, f"no [{name}] section: {why}")

        agent = self.agent(self.table(data.get("agent", {}), "agent"))
        tls = self.tls(self.table(data["tls"], "tls"), agent) if "tls" in data else None
        peers = self.peers(self.table(data.get("peers", {}), "peers"), agent, tls)

        def section(name: str, build: Callable[[dict[str, object]], _T]) -> _T | None:
            return build(self.table(data[name], name)) if name in data else None

        profile = Profile(
            source=self.source,
            agent=agent,
            peers=MappingProxyType(peers),
            storage=section("storage", self.storage),
            commitment=section("commitment", self.commitment),
            worklist=section("worklist", lambda t: self.worklist(t, agent)),
            mpps=section("mpps", self.mpps),
            print=section("print", self.print_),
            device=section("device", self.device),
            tls=tls,
            query=section("query", self.query),
            security=section("security", self.security),
            audit=section("audit", self.audit),
        )
        self.check_references(profile)
        self.check_security(profile)
        return profile

    def agent(self, t: dict[str, object]) -> AgentSettings:
        d = AgentSettings()
        self.check_keys(t, "agent", _keys(AgentSettings))
        g = self.get
        return AgentSettings(
            ae_title=g(t, "agent", "ae_title", self.ae_title, d.ae_title),
            bind=g(t, "agent", "bind", self.string, d.bind),
            port=g(t, "agent", "port", self.integer(0, 65535), d.port),
            data_dir=self.path(t.get("data_dir", "./dicom-agent-data"), "agent.data_dir"),
            max_associations=g(t, "agent", "max_associations", self.integer(1), d.max_associations),
            max_pending_connections=g(
                t, "agent", "max_pending_connections", self.integer(1), d.max_pending_connections
            ),
            max_pending_per_address=g(
                t, "agent", "max_pending_per_address", self.integer(1), d.max_pending_per_address
            ),
            max_pdu_length=g(t, "agent", "max_pdu_length", self.pdu_length, d.max_pdu_length),
            called_ae_check=g(t, "agent", "called_ae_check", self.boolean, d.called_ae_check),
            allowed_calling_aes=g(t, "agent", "allowed_calling_aes", self.list_of(self.ae_title), ()),
            connect_timeout=g(t, "agent", "connect_timeout", self.duration(), d.connect_timeout),
            artim_timeout=g(t, "agent", "artim_timeout", self.duration(), d.artim_timeout),
            dimse_timeout=g(t, "agent", "dimse_timeout", self.duration(), d.dimse_timeout),
            idle_timeout=g(t, "agent", "idle_timeout", self.duration(), d.idle_timeout),
            log_level=g(t, "agent", "log_level", self.choice(*get_args(LogLevel)), d.log_level),  # type: ignore[arg-type]
        )

    def existing_file(self, value: object, key: str) -> Path:
        path = self.path(value, key)
        if not path.is_file():
            raise self.fail(key, f"a readable file, got {_show(value)} ({path} does not exist or is not a file)")
        return path

    def tls(self, t: dict[str, object], agent: AgentSettings) -> ListenerTls:
        """`[tls]`: the TLS listener (PS3.15 Annex B). The files are loaded when the agent starts."""
        allowed = ("port", "certificate", "key", "ca", "profile", "client_certificates", "plain_listener")
        self.check_keys(t, "tls", allowed)
        g = self.get
        settings = ListenerTls(
            port=g(t, "tls", "port", self.integer(0, 65535)),
            certificate=g(t, "tls", "certificate", self.existing_file),
            key=g(t, "tls", "key", self.existing_file),
            ca=g(t, "tls", "ca", self.existing_file, None),
            profile=g(t, "tls", "profile", self.choice(*TLS_PROFILES), DEFAULT_TLS_PROFILE),
            client_certificates=g(t, "tls", "client_certificates", self.choice("required", "optional", "none"),
                                  "required"),
            plain_listener=g(t, "tls", "plain_listener", self.boolean, True),
        )
        if settings.client_certificates != "none" and settings.ca is None:
            raise self.fail("tls.ca", f"a CA bundle (PEM) to check client certificates against, since "
                                      f"client_certificates = {settings.client_certificates!r}")
        if settings.plain_listener and settings.port != 0 and settings.port == agent.port:
            raise self.fail("tls.port", f"a port other than [agent] port {agent.port} (the plain listener; "
                                        f"set plain_listener = false for TLS only), got {settings.port}")
        return settings  # type: ignore[return-value]

    def peer_tls(self, p: dict[str, object], prefix: str, listener: ListenerTls | None) -> PeerTls | None:
        g = self.get
        on = g(p, prefix, "tls", self.boolean, False)
        if not on:
            for key in PEER_TLS_KEYS:
                if key in p:
                    raise self.fail(f"{prefix}.{key}", "tls = true in this peer too (this key only applies to TLS)")
            return None
        certificate = g(p, prefix, "tls_certificate", self.existing_file, None)
        key = g(p, prefix, "tls_key", self.existing_file, None)
        if (certificate is None) != (key is None):
            raise self.fail(f"{prefix}.tls_key" if key is None else f"{prefix}.tls_certificate",
                            "tls_certificate and tls_key set together (our client certificate and its key)")
        if certificate is None and listener is not None:
            certificate, key = listener.certificate, listener.key  # our identity both ways by default
        return PeerTls(
            ca=g(p, prefix, "tls_ca", self.existing_file, listener.ca if listener is not None else None),
            certificate=certificate,
            key=key,
            profile=g(p, prefix, "tls_profile", self.choice(*TLS_PROFILES),
                      listener.profile if listener is not None else DEFAULT_TLS_PROFILE),
            server_name=g(p, prefix, "tls_server_name", self.string, None),
            subject=g(p, prefix, "tls_subject", self.string, None),
        )  # type: ignore[arg-type]

    def peers(self, t: dict[str, object], agent: AgentSettings, tls: ListenerTls | None = None) -> dict[str, Peer]:
        peers: dict[str, Peer] = {}
        allowed = _keys(Peer, exclude="name") + PEER_TLS_KEYS
        for name, value in t.items():
            prefix = f"peers.{name}"
            if not _PEER_NAME_RE.fullmatch(name):
                raise self.fail(prefix, f"a peer name of letters, digits, '_' and '-', got {name!r}")
            p = self.table(value, prefix)
            self.check_keys(p, prefix, allowed)
            g = self.get
            retry_base = g(p, prefix, "retry_base", self.duration(), 5.0)
            retry_cap = g(p, prefix, "retry_cap", self.duration(), 600.0)
            if retry_cap < retry_base:
                found = _show(p.get("retry_cap", retry_cap))
                raise self.fail(f"{prefix}.retry_cap", f"a duration not below retry_base ({retry_base:g}s), got {found}")
            peers[name] = Peer(
                name=name,
                ae_title=g(p, prefix, "ae_title", self.ae_title),
                host=g(p, prefix, "host", self.string),
                port=g(p, prefix, "port", self.integer(1, 65535)),
                retry_base=retry_base,
                retry_cap=retry_cap,
                max_age=g(p, prefix, "max_age", self.duration(), 7 * 86400.0),
                max_attempts=g(p, prefix, "max_attempts", self.integer(1), None),
                linger=g(p, prefix, "linger", self.duration(zero=True), 5.0),
                max_pdu_length=g(p, prefix, "max_pdu_length", self.pdu_length, 262144),
                dimse_timeout=g(p, prefix, "dimse_timeout", self.duration(), agent.dimse_timeout),
                tls=self.peer_tls(p, prefix, tls),
                identity=g(p, prefix, "identity", self.peer_identity, None),
            )
        return peers

    # --- security ([security], [peers.NAME.identity]) -----------------------------------------------

    def peer_identity(self, value: object, key: str) -> ClientIdentity:
        """`[peers.NAME.identity]`: type, username / passcode or file, positive_response."""
        t = self.table(value, key)
        self.check_keys(t, key, ("type", "username", "passcode", "file", "positive_response"))
        kind = self.get(t, key, "type", self.choice(*IDENTITY_TYPES))
        needs = {"username": ("username",), "username-passcode": ("username", "passcode")}.get(kind, ("file",))
        for name in ("username", "passcode", "file"):
            if name in needs and name not in t:
                raise self.fail(f"{key}.{name}", f"a value (type {kind!r} needs {' and '.join(needs)})")
            if name not in needs and name in t:
                raise self.fail(f"{key}.{name}", f"no {name} for type {kind!r} (it sends {' and '.join(needs)} only)")
        path = self.get(t, key, "file", self.path, None)
        if path is not None and not path.is_file():
            raise self.fail(f"{key}.file", f"a readable {kind} file, got {_show(t['file'])} ({path} is not a file)")
        username = self.get(t, key, "username", self.string, "")
        if len(username.encode("utf-8")) > 0xFFFF:
            raise self.fail(f"{key}.username", "at most 65535 bytes in UTF-8")
        return ClientIdentity(
            kind=kind,
            username=username,
            passcode=self.get(t, key, "passcode", self.string, ""),
            file=path,
            positive_response=self.get(t, key, "positive_response", self.boolean, False),
        )

    def service_names(self, value: object, key: str) -> frozenset[str]:
        if value == "all":
            return frozenset(SERVICES)
        names = self.list_of(self.choice(*SERVICES))(value, key)
        return frozenset(names)

    def password_hash(self, value: object, key: str) -> str:
        text = self.string(value, key)
        try:
            check_hash_format(text)
        except PasswordHashError as exc:
            raise self.fail(key, f"a salted password hash: {exc}") from None
        return text

    def security(self, t: dict[str, object]) -> SecuritySettings:
        self.check_keys(t, "security", ("users", "password_file", "require_identity", "access"))
        if not t:
            raise self.fail("security", "at least one of users, password_file, require_identity, access "
                            "(an empty [security] section changes nothing)")
        g = self.get
        users: dict[str, str] = {}
        for name, value in self.table(t.get("users", {}), "security.users").items():
            users[name] = self.password_hash(value, f"security.users.{name}")
        password_file = g(t, "security", "password_file", self.path, None)
        if password_file is not None:
            try:
                from_file = read_password_file(password_file)
            except OSError as exc:
                raise self.fail("security.password_file", f"a readable file of 'username:hash' lines, got "
                                f"{_show(t['password_file'])}: {exc.strerror or exc}") from None
            except ValueError as exc:
                raise self.fail("security.password_file", f"'username:hash' lines ({password_file}: {exc})") from None
            for name in from_file.keys() & users.keys():
                raise self.fail(f"security.users.{name}", f"a user defined once, but {password_file} defines it too")
            users.update(from_file)
        require = g(t, "security", "require_identity", self.service_names, frozenset())
        if require and not users:
            raise self.fail("security.require_identity",
                            "security.users or security.password_file too (nobody could authenticate), "
                            f"got {sorted(require)}")
        rules = []
        access = t.get("access", [])
        if not isinstance(access, list):
            raise self.fail("security.access", f"an array of tables ([[security.access]]), got {_show(access)}")
        for i, value in enumerate(access):
            key = f"security.access[{i}]"
            r = self.table(value, key)
            self.check_keys(r, key, ("calling_ae", "services", "hosts", "certificate_subject", "user"))

            def calling_ae(v: object, k: str) -> str:
                return "*" if v == "*" else self.ae_title(v, k).strip()

            def hosts(v: object, k: str) -> tuple[object, ...]:
                items = self.list_of(self.string)(v, k)
                try:
                    return parse_hosts(items)
                except ValueError as exc:
                    raise self.fail(k, f"IP addresses or networks such as '192.0.2.7' or '10.1.0.0/16' ({exc})") from None

            user = g(r, key, "user", self.string, None)
            if user is not None and user not in users:
                known = ", ".join(sorted(users)) or "none defined"
                raise self.fail(f"{key}.user", f"a user of security.users or security.password_file "
                                f"({_suggest(user, sorted(users))}known: {known}), got {user!r}")
            rules.append(AccessRule(
                calling_ae=g(r, key, "calling_ae", calling_ae),
                services=g(r, key, "services", self.service_names),
                hosts=g(r, key, "hosts", hosts, ()),  # type: ignore[arg-type]
                certificate_subject=g(r, key, "certificate_subject", self.string, None),
                user=user,
            ))
        return SecuritySettings(MappingProxyType(users), password_file, require, tuple(rules))

    def audit(self, t: dict[str, object]) -> AuditSettings:
        """`[audit]`: audit messages (PS3.15 A.5) as syslog to `host` (RFC 5426 UDP or RFC 5425 TLS)
        and/or appended to `local_file`; at least one of the two, since an empty section audits nothing."""
        allowed = ("host", "port", "transport", "ca", "certificate", "key", "server_name", "local_file", "events",
                   "source_id", "enterprise_site")
        self.check_keys(t, "audit", allowed)
        g = self.get
        if "host" not in t and "local_file" not in t:
            raise self.fail("audit", "host (an audit repository) or local_file, or both")
        transport = g(t, "audit", "transport", self.choice("udp", "tls"), "udp")
        if "host" not in t:
            for key in ("port", "transport", "ca", "certificate", "key", "server_name"):
                if key in t:
                    raise self.fail(f"audit.{key}", "an audit.host too (it configures the repository)")
        if transport == "udp":
            for key in ("ca", "certificate", "key", "server_name"):
                if key in t:
                    raise self.fail(f"audit.{key}", "transport = \"tls\" (it is a TLS setting)")
        if ("certificate" in t) != ("key" in t):
            raise self.fail("audit.key" if "certificate" in t else "audit.certificate",
                            "audit.certificate and audit.key together (the client certificate and its key)")

        def event_names(value: object, key: str) -> frozenset[str]:
            names = self.list_of(self.choice(*AUDIT_EVENTS))(value, key)
            if not names:
                raise self.fail(key, f"at least one of {', '.join(AUDIT_EVENTS)} (remove [audit] to audit nothing)")
            return frozenset(names)

        return AuditSettings(
            host=g(t, "audit", "host", self.string, None),
            port=g(t, "audit", "port", self.integer(1, 65535), 6514 if transport == "tls" else 514),
            transport=transport,  # type: ignore[arg-type]
            ca=g(t, "audit", "ca", self.existing_file, None),
            certificate=g(t, "audit", "certificate", self.existing_file, None),
            key=g(t, "audit", "key", self.existing_file, None),
            server_name=g(t, "audit", "server_name", self.string, None),
            local_file=g(t, "audit", "local_file", self.path, None),
            events=g(t, "audit", "events", event_names, frozenset(AUDIT_EVENTS)),
            source_id=g(t, "audit", "source_id", self.string, ""),
            enterprise_site=g(t, "audit", "enterprise_site", self.string, ""),
        )

    def check_security(self, p: Profile) -> None:
        sec = p.security
        if sec is None:
            return
        if sec.access and p.agent.allowed_calling_aes:
            raise self.fail("agent.allowed_calling_aes",
                            "no allowed_calling_aes next to [[security.access]] rules, which replace it "
                            "(a title in allowed_calling_aes is a rule with calling_ae = TITLE, services = \"all\")")
        for i, rule in enumerate(sec.access):
            if rule.certificate_subject is not None and p.tls is None:
                raise self.fail(f"security.access[{i}].certificate_subject",
                                "a [tls] listener too (without TLS no caller presents a certificate)")

    def sop_class(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"a Storage SOP Class UID or keyword, got {_show(value)}")
        if _UID_RE.fullmatch(value):
            if not UID(value).is_valid:
                raise self.fail(key, f"a valid UID (PS3.5 9.1), got {value!r}")
            if value in UID_dictionary and not _is_storage_class(value):
                raise self.fail(key, f"a Storage SOP Class, got {value!r} ({UID(value).name})")
            return value  # a private SOP class is allowed by UID
        index = _storage_keyword_index()
        uid = index.get(value)
        if uid is None or not _is_storage_class(uid):
            storage = [k for k, u in index.items() if _is_storage_class(u)]
            raise self.fail(
                key,
                f"a Storage SOP Class UID or pydicom keyword such as 'CTImageStorage' "
                f"({_suggest(value, storage)}unknown: {value!r})",
            )
        return uid

    def transfer_syntax(self, value: object, key: str) -> str:
        if isinstance(value, str):
            if value in TRANSFER_SYNTAX_ALIASES:
                return TRANSFER_SYNTAX_ALIASES[value]
            if value in TRANSFER_SYNTAX_ALIASES.values():
                return value
        names = ", ".join(map(repr, TRANSFER_SYNTAX_ALIASES))
        raise self.fail(key, f"one of {names} or its UID, got {_show(value)}")

    def storage(self, t: dict[str, object]) -> StorageSettings:
        d = StorageSettings()
        allowed = (
            "accept", "transfer_syntaxes", "accept_compressed", "duplicate", "free_space_floor", "forward_to",
            "commit_with", "commit_batch", "commit_idle", "commit_timeout", "commit_max_rerequests", "retention",
            "commit_report_wait",
        )  # fmt: skip
        self.check_keys(t, "storage", allowed)
        g = self.get
        accept = t.get("accept", "all-storage")
        if accept == "all-storage":
            accept_all, sop_classes = True, ()
        elif isinstance(accept, list) and accept:
            accept_all, sop_classes = False, self.list_of(self.sop_class)(accept, "storage.accept")
        else:
            raise self.fail(
                "storage.accept",
                f"'all-storage' or a non-empty array of SOP Class UIDs or keywords, got {_show(accept)}",
            )
        syntaxes = g(t, "storage", "transfer_syntaxes", self.list_of(self.transfer_syntax), d.transfer_syntaxes)
        if not syntaxes or len(set(syntaxes)) != len(syntaxes):
            raise self.fail("storage.transfer_syntaxes", "a non-empty array without repeats")

        def batch(value: object, key: str) -> Literal["study"] | int:
            if value == "study":
                return "study"
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                return value
            raise self.fail(key, f"'study' or an integer of at least 1, got {_show(value)}")

        return StorageSettings(
            accept_all=accept_all,
            sop_classes=sop_classes,
            transfer_syntaxes=syntaxes,
            accept_compressed=g(t, "storage", "accept_compressed", self.boolean, d.accept_compressed),
            duplicate=g(t, "storage", "duplicate", self.choice(*get_args(Duplicate)), d.duplicate),  # type: ignore[arg-type]
            free_space_floor=g(t, "storage", "free_space_floor", self.size, d.free_space_floor),
            forward_to=g(t, "storage", "forward_to", self.list_of(self.string), ()),
            commit_with=g(t, "storage", "commit_with", self.string, None),
            commit_batch=g(t, "storage", "commit_batch", batch, d.commit_batch),
            commit_idle=g(t, "storage", "commit_idle", self.duration(zero=True), d.commit_idle),
            commit_timeout=g(t, "storage", "commit_timeout", self.duration(), d.commit_timeout),
            commit_max_rerequests=g(t, "storage", "commit_max_rerequests", self.integer(0), d.commit_max_rerequests),
            retention=g(t, "storage", "retention", self.duration(), None),
            commit_report_wait=g(t, "storage", "commit_report_wait", self.duration(zero=True), d.commit_report_wait),
        )

    def commitment(self, t: dict[str, object]) -> CommitmentSettings:
        d = CommitmentSettings()
        self.check_keys(t, "commitment", _keys(CommitmentSettings))
        g = self.get
        return CommitmentSettings(
            report_on=g(t, "commitment", "report_on", self.choice(*get_args(ReportOn)), d.report_on),  # type: ignore[arg-type]
            report_delay=g(t, "commitment", "report_delay", self.duration(zero=True), d.report_delay),
            max_report_attempts=g(t, "commitment", "max_report_attempts", self.integer(1), None),
        )

    def worklist(self, t: dict[str, object], agent: AgentSettings) -> WorklistSettings:
        self.check_keys(t, "worklist", _keys(WorklistSettings))
        g = self.get

        def date(value: object, key: str) -> str:
            if value in ("today", "any"):
                return str(value)
            if isinstance(value, str) and re.fullmatch(r"\d{8}", value):
                try:
                    datetime.date(int(value[:4]), int(value[4:6]), int(value[6:]))
                    return value
                except ValueError:
                    pass
            raise self.fail(key, f"'today', 'any' or a date as YYYYMMDD, got {_show(value)}")

        def modality(value: object, key: str) -> str:
            # PS3.5 6.2 CS: uppercase letters, digits, space, underscore; up to 16 characters.
            if isinstance(value, str) and re.fullmatch(r"[A-Z0-9_ ]{1,16}", value) and value.strip():
                return value
            raise self.fail(key, f"a modality code such as 'CT' or 'US' (1-16 of A-Z, 0-9, '_'), got {_show(value)}")

        return WorklistSettings(
            station_ae=g(t, "worklist", "station_ae", self.ae_title, agent.ae_title),
            source=g(t, "worklist", "source", self.string, None),
            refresh=g(t, "worklist", "refresh", self.duration(), 60.0),
            stale_after=g(t, "worklist", "stale_after", self.duration(), 600.0),
            modality=g(t, "worklist", "modality", modality, None),
            date=g(t, "worklist", "date", date, "today"),
            folder=g(t, "worklist", "folder", self.path, None),
            serve=g(t, "worklist", "serve", self.boolean, True),
        )

    def mpps(self, t: dict[str, object]) -> MppsSettings:
        d = MppsSettings()
        self.check_keys(t, "mpps", _keys(MppsSettings))
        g = self.get
        return MppsSettings(
            send_to=g(t, "mpps", "send_to", self.list_of(self.string), ()),
            serve=g(t, "mpps", "serve", self.boolean, d.serve),
            forward_to=g(t, "mpps", "forward_to", self.list_of(self.string), ()),
            instance_lifetime=g(t, "mpps", "instance_lifetime", self.duration(), d.instance_lifetime),
            coerce_from_worklist=g(t, "mpps", "coerce_from_worklist", self.boolean, d.coerce_from_worklist),
        )

    def print_(self, t: dict[str, object]) -> PrintSettings:
        self.check_keys(t, "print", _keys(PrintSettings))
        g = self.get
        return PrintSettings(
            driver=g(t, "print", "driver", self.printer_driver, "file"),
            options=g(t, "print", "options", self.frozen_options, MappingProxyType({})),
            printer=g(t, "print", "printer", self.string, None),
            serve=g(t, "print", "serve", self.boolean, False),
            formats=g(t, "print", "formats", self.list_of(self.display_format_kind), PrintSettings().formats),
            poll_interval=g(t, "print", "poll_interval", self.duration(), PrintSettings().poll_interval),
        )

    def query(self, t: dict[str, object]) -> QuerySettings:
        self.check_keys(t, "query", _keys(QuerySettings))
        d, g = QuerySettings(), self.get

        def distinct(item: Callable[[object, str], str]) -> Callable[[object, str], tuple[str, ...]]:
            def convert(value: object, key: str) -> tuple[str, ...]:
                values = self.list_of(item)(value, key)
                if not values or len(set(values)) != len(values):
                    raise self.fail(key, f"a non-empty array without repeats, got {_show(value)}")
                return values

            return convert

        return QuerySettings(
            models=g(t, "query", "models", distinct(self.choice("patient", "study")), d.models),
            operations=g(t, "query", "operations", distinct(self.choice("find", "move", "get")), d.operations),
            move_destinations=g(t, "query", "move_destinations", self.list_of(self.string), None),
            max_results=g(t, "query", "max_results", self.integer(1), d.max_results),
            relational=g(t, "query", "relational", self.boolean, d.relational),
        )

    def device(self, t: dict[str, object]) -> DeviceSettings:
        self.check_keys(t, "device", _keys(DeviceSettings))
        g, d = self.get, DeviceSettings(driver="")

        def modality(value: object, key: str) -> str:
            if isinstance(value, str) and re.fullmatch(r"[A-Z0-9_ ]{1,16}", value) and value.strip():
                return value
            raise self.fail(key, f"a modality code such as 'OT' or 'US' (1-16 of A-Z, 0-9, '_'), got {_show(value)}")

        def display_format(value: object, key: str) -> str:
            from agent.services.print.scu_options import FilmOptions, PrintOptionError

            if isinstance(value, str):
                try:
                    return FilmOptions(display_format=value).validated().display_format
                except (PrintOptionError, ValueError) as exc:
                    raise self.fail(key, f"an Image Display Format such as 'STANDARD\\2,2' ({exc})") from None
            raise self.fail(key, f"an Image Display Format such as 'STANDARD\\2,2', got {_show(value)}")

        def short(limit: int) -> Callable[[object, str], str]:
            def convert(value: object, key: str) -> str:
                if isinstance(value, str) and len(value) <= limit and "\\" not in value:
                    return value
                raise self.fail(key, f"a string of at most {limit} characters without a backslash, got {_show(value)}")

            return convert

        for key in ("priors_retrieve", "priors_max"):
            if key in t and "priors_from" not in t:  # a key that would do nothing
                raise self.fail(f"device.{key}", "device.priors_from too (without it no priors are fetched)")
        return DeviceSettings(
            driver=g(t, "device", "driver", self.acquisition_driver),
            options=g(t, "device", "options", self.frozen_options, MappingProxyType({})),
            sop_class=g(t, "device", "sop_class", self.sop_class, d.sop_class),
            modality=g(t, "device", "modality", modality, None),
            station_name=g(t, "device", "station_name", short(16), ""),
            select=g(t, "device", "select", self.choice("accession", "patient-id", "key", "first"), d.select),  # type: ignore[arg-type]
            unscheduled=g(t, "device", "unscheduled", self.choice("allow", "refuse"), d.unscheduled),  # type: ignore[arg-type]
            send_to=g(t, "device", "send_to", self.list_of(self.string), ()),
            commit_with=g(t, "device", "commit_with", self.string, None),
            print_to=g(t, "device", "print_to", self.string, None),
            print_format=g(t, "device", "print_format", display_format, d.print_format),
            series_description=g(t, "device", "series_description", short(64), ""),
            priors_from=g(t, "device", "priors_from", self.string, None),
            priors_retrieve=g(t, "device", "priors_retrieve", self.choice("move", "get"), d.priors_retrieve),  # type: ignore[arg-type]
            priors_max=g(t, "device", "priors_max", self.integer(1, 100), d.priors_max),
        )

    def acquisition_driver(self, value: object, key: str) -> str:
        return self._driver("acquisition", value, key)

    def printer_driver(self, value: object, key: str) -> str:
        return self._driver("printer", value, key)

    def _driver(self, kind: str, value: object, key: str) -> str:
        from drivers.base import driver_names

        known = driver_names(kind)
        if isinstance(value, str) and value in known:
            return value
        hint = _suggest(value, known) if isinstance(value, str) else ""
        raise self.fail(key, f"an installed {kind} driver ({hint}known: {', '.join(known) or 'none'}), got {_show(value)}")

    def display_format_kind(self, value: object, key: str) -> str:
        # Image Display Format kinds (PS3.3 C.13.3) the renderer lays out; SLIDE, SUPERSLIDE and CUSTOM\\i
        # are printer-defined layouts this version does not have.
        kinds = ("STANDARD", "ROW", "COL")
        if isinstance(value, str) and value in kinds:
            return value
        raise self.fail(key, f"one of {', '.join(map(repr, kinds))}, got {_show(value)}")

    # --- cross-checks ------------------------------------------------------------------------------

    def check_references(self, p: Profile) -> None:
        refs: list[tuple[str, str]] = []
        if p.storage is not None:
            refs += [(f"storage.forward_to[{i}]", n) for i, n in enumerate(p.storage.forward_to)]
            if p.storage.commit_with is not None:
                refs.append(("storage.commit_with", p.storage.commit_with))
        if p.worklist is not None and p.worklist.source is not None:
            refs.append(("worklist.source", p.worklist.source))
        if p.mpps is not None:
            refs += [(f"mpps.send_to[{i}]", n) for i, n in enumerate(p.mpps.send_to)]
            refs += [(f"mpps.forward_to[{i}]", n) for i, n in enumerate(p.mpps.forward_to)]
        if p.print is not None and p.print.printer is not None:
            refs.append(("print.printer", p.print.printer))
        if p.query is not None and p.query.move_destinations is not None:
            refs += [(f"query.move_destinations[{i}]", n) for i, n in enumerate(p.query.move_destinations)]
        if p.device is not None:
            refs += [(f"device.send_to[{i}]", n) for i, n in enumerate(p.device.send_to)]
            refs += [(f"device.{k}", n) for k in ("commit_with", "print_to", "priors_from") if (n := getattr(p.device, k))]
        known = ", ".join(sorted(p.peers)) or "none defined"
        for key, name in refs:
            if name not in p.peers:
                hint = _suggest(name, sorted(p.peers))
                raise self.fail(key, f"the name of a peer defined in [peers] ({hint}known: {known}), got {name!r}")
        s = p.storage
        if s is not None and s.commit_with is not None and not s.forward_to:
            # commit_with may be a peer outside forward_to (an archive whose commitment SCP is another
            # AE): commitment is then asked once the instance reached every forward_to destination.
            raise self.fail(
                "storage.commit_with",
                f"storage.forward_to to be set too (commitment follows forwarding), got {s.commit_with!r}",
            )
        dev = p.device
        if dev is not None and dev.commit_with is not None:
            if not dev.send_to:
                raise self.fail("device.commit_with",
                                f"device.send_to to be set too (commitment follows sending), got {dev.commit_with!r}")
            if s is not None and s.commit_with is not None and s.commit_with != dev.commit_with:
                raise self.fail("device.commit_with",
                                f"the same peer as storage.commit_with ({s.commit_with!r}: the agent has one "
                                f"Storage Commitment requester), got {dev.commit_with!r}")
        if dev is not None and dev.priors_from is not None and dev.priors_retrieve == "move":
            # C-MOVE priors arrive through our Storage SCP, which must exist and must not send them back.
            if s is None:
                raise self.fail("device.priors_retrieve", "\"get\", or a [storage] section to receive the "
                                "moved priors (C-MOVE sends them to our listener), got \"move\"")
            if dev.priors_from in s.forward_to:
                raise self.fail("device.priors_retrieve", f"\"get\" while storage.forward_to names "
                                f"{dev.priors_from!r} (moved priors would be forwarded back to it), got \"move\"")


def _keys(cls: type, exclude: str = "") -> tuple[str, ...]:
    """The profile keys of a section: its dataclass's field names."""
    return tuple(f.name for f in fields(cls) if f.name != exclude)


def _freeze(value: object) -> object:
    """Deep read-only copy of a free-form TOML table (driver options)."""
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value
