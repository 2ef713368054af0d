"""TLS for DICOM associations: the secure transport connection profiles of PS3.15 Annex B.

Invariants:
- Only TLS 1.2 and 1.3 are ever negotiated, whatever the profile: TLS 1.0/1.1 (RFC 8996) and SSL are
  refused, and so are weak cipher suites (no NULL, export, RC4, 3DES, DES, MD5, anonymous or PSK
  suite is in any profile's list), TLS compression and renegotiation.
- The profiles (PS3.15 B.9-B.11, built on BCP 195 / RFC 7525):
  * "bcp195-nd" (Non-downgrading BCP 195, B.10, the default): only the four suites BCP 195 recommends,
    TLS_{ECDHE,DHE}_RSA_WITH_AES_{128_GCM_SHA256,256_GCM_SHA384}, and the TLS 1.3 suites.
  * "bcp195" (BCP 195, B.9): those, plus the older AES suites BCP 195 still tolerates for peers that
    lack the recommended ones (ECDHE/DHE with AES-CBC and SHA-2, and RSA key transport with AES-GCM
    or AES-128-CBC-SHA). The 1.2 floor stays.
  * "bcp195-extended" (Extended BCP 195, B.11): ECDHE only (ECDSA or RSA certificates), AES-GCM and
    ChaCha20-Poly1305, and the TLS 1.3 suites.
- Certificates are read when a context is built: a listener builds one at start-up and again on
  `TlsServer.reload()` (SIGHUP); handshakes already done keep the context they began with. A client
  builds its context for every new connection, so a changed file is used by the next association.
- The handshake runs in the task of the connection it belongs to, bounded by the caller's deadline
  (ARTIM on the listener, the connect timeout on the client); a failure is reported with its reason
  through `TlsEvents` (the one place an audit trail hooks in) and logged, and ends that connection only.
- Closing never waits on the peer: the close_notify alert gets `CLOSE_NOTIFY_GRACE` seconds to be
  written, then the TCP connection is closed anyway (a peer that stopped reading must not hold an
  association task, or the agent's stop, forever; RFC 8446 6.1 lets us close without its reply).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import trio

from agent.errors import AgentError, ConnectionFailed

log = logging.getLogger("agent.net.tls")

TlsProfileName = Literal["bcp195-nd", "bcp195", "bcp195-extended"]
ClientCertificates = Literal["required", "optional", "none"]
DEFAULT_PROFILE: TlsProfileName = "bcp195-nd"

# OpenSSL names of the TLS 1.2 suites of each profile (the TLS 1.3 suites are all AEAD and stay on).
_RECOMMENDED = (
    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",  # TLS_ECDHE_RSA_WITH_AES_*_GCM_*
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",  # TLS_DHE_RSA_WITH_AES_*_GCM_*
)
_TOLERATED = (
    "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA384", "DHE-RSA-AES128-SHA256", "DHE-RSA-AES256-SHA256",
    "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA",
)
_EXTENDED = (
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
)
PROFILE_CIPHERS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "bcp195-nd": _RECOMMENDED,
    "bcp195": _RECOMMENDED + _TOLERATED,
    "bcp195-extended": _EXTENDED,
})
PROFILE_NAMES: tuple[str, ...] = tuple(PROFILE_CIPHERS)
CLOSE_NOTIFY_GRACE = 2.0  # seconds (module docstring)


class TlsSetupError(AgentError):
    """A certificate, key or CA file cannot be used; `key` names the setting it came from."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class TlsHandshakeFailed(ConnectionFailed):
    """The TLS handshake, or the check of the peer's certificate against its profile entry, failed."""


@dataclass(frozen=True, slots=True)
class ListenerTls:
    """`[tls]`: the listener's TLS port, its own certificate and how callers are authenticated."""

    port: int
    certificate: Path
    key: Path
    ca: Path | None = None  # trusted CAs for client certificates (and the default for peers)
    profile: TlsProfileName = DEFAULT_PROFILE
    client_certificates: ClientCertificates = "required"
    plain_listener: bool = True  # also serve plain TCP on [agent] port


@dataclass(frozen=True, slots=True)
class PeerTls:
    """A peer's `tls = true` and its `tls_*` keys: how we connect to it over TLS.

    `server_name` is the name checked against the peer certificate's subjectAltName (RFC 6125; default
    the peer's host); `subject`, when set, must equal the certificate's subject too (any RDN order)."""

    ca: Path | None = None  # None: the system's trusted CAs
    certificate: Path | None = None  # our client certificate (mutual authentication)
    key: Path | None = None
    profile: TlsProfileName = DEFAULT_PROFILE
    server_name: str | None = None
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What the peer proved in the handshake: its certificate's subject (RFC 4514, most specific RDN
    first, e.g. "CN=modality1,O=Hospital"), DNS/IP subjectAltNames, and the negotiated parameters."""

    subject: str | None
    san: tuple[str, ...]
    version: str
    cipher: str


@dataclass
class TlsEvents:
    """Where handshake outcomes are reported, listener and client side alike.

    Subscribe either with callbacks on the instance a listener or a call uses:
    `failed(remote, reason, subject)`: a handshake or certificate check failed (subject when known);
    `succeeded(remote, certificate)`: a handshake completed and the peer's certificate was accepted;
    or process-wide with a logging handler on the "agent.net.tls" logger: every outcome is one record
    whose `tls_event` attribute is "failed" or "succeeded", with `remote`, `reason`, `subject` and
    (succeeded) `certificate` attributes."""

    failed: list[Callable[[str, str, str | None], None]] = field(default_factory=list)
    succeeded: list[Callable[[str, PeerCertificate], None]] = field(default_factory=list)

    def report_failure(self, remote: str, reason: str, subject: str | None = None) -> None:
        who = f" (certificate subject {subject})" if subject else ""
        log.warning("%s: TLS handshake failed%s: %s", remote, who, reason,
                    extra={"tls_event": "failed", "remote": remote, "reason": reason, "subject": subject})
        for callback in self.failed:
            _safely(callback, remote, reason, subject)

    def report_success(self, remote: str, certificate: PeerCertificate) -> None:
        log.debug("%s: TLS %s %s, peer certificate %s", remote, certificate.version, certificate.cipher,
                  certificate.subject or "none",
                  extra={"tls_event": "succeeded", "remote": remote, "reason": "", "subject": certificate.subject,
                         "certificate": certificate})
        for callback in self.succeeded:
            _safely(callback, remote, certificate)


def _safely(callback: Callable[..., None], *args: object) -> None:
    try:
        callback(*args)
    except Exception:  # a subscriber's bug must not decide whether an association proceeds
        log.exception("TLS event subscriber %r failed", callback)


# ------------------------------------------------------------------------------------- contexts


def _base_context(purpose: int, profile: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996; PS3.15 B.9-B.11 all start at 1.2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.set_ciphers(":".join(PROFILE_CIPHERS[profile]))
    except (KeyError, ssl.SSLError) as exc:
        raise TlsSetupError(key, f"a TLS profile this OpenSSL supports ({', '.join(PROFILE_NAMES)}): {exc}") from None
    return ctx


def _load_chain(ctx: ssl.SSLContext, certificate: Path, private_key: Path, key: str) -> None:
    try:
        ctx.load_cert_chain(certificate, private_key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(key, f"cannot use certificate {certificate} with key {private_key}: {_why(exc)}") from None


def _load_ca(ctx: ssl.SSLContext, ca: Path, key: str) -> None:
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(key, f"cannot use CA bundle {ca}: {_why(exc)}") from None


def server_context(settings: ListenerTls) -> ssl.SSLContext:
    """The listener's context; raises TlsSetupError naming the `[tls]` key at fault."""
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, settings.profile, "tls.profile")
    _load_chain(ctx, settings.certificate, settings.key, "tls.certificate")
    if settings.client_certificates != "none":
        if settings.ca is None:
            raise TlsSetupError("tls.ca", "a CA bundle to check client certificates against")
        _load_ca(ctx, settings.ca, "tls.ca")
        ctx.verify_mode = ssl.CERT_REQUIRED if settings.client_certificates == "required" else ssl.CERT_OPTIONAL
    return ctx


def client_context(settings: PeerTls, key_prefix: str = "tls") -> ssl.SSLContext:
    """A context for one connection to a peer: the peer's certificate is always verified."""
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, settings.profile, f"{key_prefix}_profile")
    if settings.ca is not None:
        _load_ca(ctx, settings.ca, f"{key_prefix}_ca")
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if settings.certificate is not None and settings.key is not None:
        _load_chain(ctx, settings.certificate, settings.key, f"{key_prefix}_certificate")
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


# ------------------------------------------------------------------------------------- certificates


_RDN_NAMES = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
    "stateOrProvinceName": "ST", "localityName": "L", "emailAddress": "emailAddress",
    "domainComponent": "DC", "serialNumber": "serialNumber",
}


def peer_certificate(stream: trio.SSLStream) -> PeerCertificate:
    """The verified peer certificate of a completed handshake (subject None when the peer sent none)."""
    cert = stream.getpeercert() or {}
    rdns = [f"{_RDN_NAMES.get(k, k)}={v}" for rdn in cert.get("subject", ()) for k, v in rdn]
    san = tuple(v for k, v in cert.get("subjectAltName", ()) if k in ("DNS", "IP Address"))
    cipher = stream.cipher()
    return PeerCertificate(
        subject=",".join(reversed(rdns)) if rdns else None,  # RFC 4514 order: most specific first
        san=san, version=stream.version() or "?", cipher=cipher[0] if cipher else "?",
    )


def _rdn_set(dn: str) -> frozenset[tuple[str, str]]:
    """A DN as a set of (attribute, value) pairs, for a comparison that ignores order and spacing.
    Accepts "CN=a,O=b", "CN = a, O = b" and OpenSSL's "/O=b/CN=a"."""
    text = dn.strip()
    parts = text.strip("/").split("/") if text.startswith("/") else text.split(",")
    pairs = set()
    for part in parts:
        name, _, value = part.partition("=")
        pairs.add((name.strip().upper(), value.strip()))
    return frozenset(pairs)


def subject_matches(expected: str, subject: str | None) -> bool:
    return subject is not None and _rdn_set(expected) == _rdn_set(subject)


def _why(exc: BaseException) -> str:
    """The concrete reason of an ssl error ("certificate verify failed: certificate has expired")."""
    inner: BaseException | None = exc
    while inner is not None and not isinstance(inner, (ssl.SSLError, OSError)):
        inner = inner.__cause__ or inner.__context__
    if isinstance(inner, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {inner.verify_message}"
    if isinstance(inner, ssl.SSLError):
        reason = (inner.reason or "").replace("_", " ").lower()
        return reason or str(inner)
    if isinstance(inner, OSError):
        return (inner.strerror or str(inner)).lower()
    return str(exc) or "the peer closed the connection during the handshake"


# ------------------------------------------------------------------------------------- the stream


class TlsStream(trio.abc.Stream):
    """A trio.SSLStream after its handshake, whose `aclose` is bounded (module docstring).

    `transport_stream` is the TCP stream underneath (for the peer's address)."""

    def __init__(self, ssl_stream: trio.SSLStream) -> None:
        self.ssl_stream = ssl_stream

    @property
    def transport_stream(self) -> trio.abc.Stream:
        return self.ssl_stream.transport_stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.ssl_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.ssl_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.ssl_stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        with trio.move_on_after(CLOSE_NOTIFY_GRACE):
            await self.ssl_stream.aclose()  # close_notify, then the TCP close
            return
        await trio.aclose_forcefully(self.ssl_stream.transport_stream)


# ------------------------------------------------------------------------------------- handshakes


class TlsServer:
    """The listener's TLS side: the current context (replaced by `reload`) and the handshake."""

    def __init__(self, settings: ListenerTls, events: TlsEvents | None = None) -> None:
        self.settings = settings
        self.events = events if events is not None else TlsEvents()
        self.context = server_context(settings)

    def reload(self) -> bool:
        """Re-read the certificate, key and CA files. On an error the old context stays in use
        (associations keep being accepted) and the error is logged; True when reloaded."""
        try:
            self.context = server_context(self.settings)
        except TlsSetupError as exc:
            log.error("TLS reload failed, keeping the previous certificate: %s: %s", exc.key, exc)
            return False
        log.info("TLS certificate, key and CA bundle reloaded from %s", self.settings.certificate)
        return True

    async def handshake(self, stream: trio.abc.Stream, remote: str) -> tuple[TlsStream, PeerCertificate] | None:
        """Wrap an accepted stream and complete the handshake (the caller bounds it with its deadline).
        None when the handshake failed: reported, logged, the transport closed."""
        tls = trio.SSLStream(stream, self.context, server_side=True)
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError) as exc:
            self.events.report_failure(remote, _why(exc))
            await trio.aclose_forcefully(stream)
            return None
        except BaseException:  # the deadline (ARTIM) or the agent stopping
            await trio.aclose_forcefully(stream)
            raise
        certificate = peer_certificate(tls)
        self.events.report_success(remote, certificate)
        return TlsStream(tls), certificate


async def client_handshake(
    stream: trio.abc.Stream, settings: PeerTls, host: str, port: int, events: TlsEvents | None = None
) -> tuple[TlsStream, PeerCertificate]:
    """Our side of a handshake with a peer: the certificate must chain to the CA, name `server_name`
    (or `host`), and carry `subject` when one is configured. Raises TlsHandshakeFailed (a
    ConnectionFailed: the queue retries) with the reason; raises TlsSetupError for our own bad files."""
    events = events if events is not None else TlsEvents()
    remote = f"{host}:{port}"
    ctx = client_context(settings, "peers.tls")
    tls = trio.SSLStream(stream, ctx, server_hostname=settings.server_name or host)
    try:
        await tls.do_handshake()
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError) as exc:
        reason = _why(exc)
        events.report_failure(remote, reason)
        await trio.aclose_forcefully(stream)
        raise TlsHandshakeFailed(f"TLS handshake with {remote} failed: {reason}") from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    certificate = peer_certificate(tls)
    if settings.subject is not None and not subject_matches(settings.subject, certificate.subject):
        reason = f"certificate subject {certificate.subject!r} is not the expected {settings.subject!r}"
        events.report_failure(remote, reason, certificate.subject)
        await trio.aclose_forcefully(tls)
        raise TlsHandshakeFailed(f"TLS peer {remote} refused: {reason}")
    events.report_success(remote, certificate)
    return TlsStream(tls), certificate


__all__ = [
    "ClientCertificates", "DEFAULT_PROFILE", "ListenerTls", "PROFILE_CIPHERS", "PROFILE_NAMES", "PeerCertificate",
    "PeerTls", "TlsEvents", "TlsHandshakeFailed", "TlsProfileName", "TlsServer", "TlsSetupError", "TlsStream",
    "client_context", "client_handshake", "peer_certificate", "server_context", "subject_matches",
]
