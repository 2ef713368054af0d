"""The requestor side: open an association, use it, release it (or abort on error)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import trio

from agent.errors import AssociationAborted, AssociationRejected, TimeoutExpired
from agent.net.connection import DicomConnection, Timeouts
from agent.net.tls import PeerTls, TlsEvents, TlsHandshakeFailed, client_handshake
from agent.net.transport import open_tcp, peer_name
from agent.ul.association import (
    Aborted,
    Association,
    AssociationAccepted,
    AssociationRejected as Rejected,
    Role,
)
from agent.ul import pdu as P
from agent.ul.negotiation import ProposedContext, build_request

if TYPE_CHECKING:
    # Imported where used: agent.security (access rules, identity checks) costs every `dicom-agent
    # store` run several milliseconds, and only a peer with a configured user identity needs it.
    from agent.security.identity import ClientIdentity


async def open_association(
    host: str,
    port: int,
    *,
    calling_ae: str,
    called_ae: str,
    proposals: Sequence[ProposedContext],
    timeouts: Timeouts = Timeouts(),
    max_pdu_receive: int = 262144,
    stream: trio.abc.Stream | None = None,
    deadline: float | None = None,
    tls: PeerTls | None = None,
    tls_events: TlsEvents | None = None,
    user_identity: ClientIdentity | None = None,
) -> DicomConnection:
    """Connect and negotiate. Raises ConnectionFailed, TimeoutExpired, AssociationRejected or
    AssociationAborted; on success the connection is in Sta6 with its accepted contexts.

    Connecting is bounded by `timeouts.connect` and the wait for the A-ASSOCIATE-AC by
    `timeouts.artim`; `deadline` (trio clock), when given, bounds both together. With `tls` (the
    peer's `tls = true`) the TLS handshake follows the TCP connect within the same connect timeout;
    a failed handshake or a peer certificate that is not the expected one raises TlsHandshakeFailed
    (a ConnectionFailed); our own unusable certificate files raise TlsSetupError."""
    try:
        with trio.fail_at(math.inf if deadline is None else deadline):
            return await _open(
                host, port, calling_ae=calling_ae, called_ae=called_ae, proposals=proposals,
                timeouts=timeouts, max_pdu_receive=max_pdu_receive, stream=stream, tls=tls,
                tls_events=tls_events, user_identity=user_identity,
            )
    except trio.TooSlowError as exc:
        raise TimeoutExpired(f"{called_ae} at {host}:{port}: no association within the time allowed") from exc


async def _open(
    host: str,
    port: int,
    *,
    calling_ae: str,
    called_ae: str,
    proposals: Sequence[ProposedContext],
    timeouts: Timeouts,
    max_pdu_receive: int,
    stream: trio.abc.Stream | None,
    tls: PeerTls | None = None,
    tls_events: TlsEvents | None = None,
    user_identity: ClientIdentity | None = None,
) -> DicomConnection:
    # PS3.7 D.3.3.7: the peer's configured identity goes into the request (an unreadable ticket or token
    # file raises OSError here, before anything is sent).
    identity_items = (user_identity.request_item(),) if user_identity is not None else ()
    rq = build_request(calling_ae, called_ae, proposals, max_pdu_receive=max_pdu_receive, extra_items=identity_items)
    assoc = Association(Role.REQUESTOR, max_pdu_receive=max_pdu_receive)
    assoc.request(rq)
    connect_by = trio.current_time() + timeouts.connect
    if stream is None:
        stream = await open_tcp(host, port, timeouts.connect)
    certificate = None
    if tls is not None:
        try:
            with trio.fail_at(connect_by):  # the handshake counts against the connect timeout
                stream, certificate = await client_handshake(stream, tls, host, port, tls_events)
        except trio.TooSlowError as exc:
            raise TimeoutExpired(
                f"connecting to {host}:{port} with TLS took longer than {timeouts.connect:g} s"
            ) from exc
    conn = DicomConnection(stream, assoc, timeouts=timeouts, remote=f"{called_ae}@{peer_name(stream)}")
    if certificate is not None:
        conn.peer_certificate_subject = certificate.subject
    conn.calling_ae, conn.called_ae = calling_ae, called_ae
    assoc.connection_made()
    try:
        await conn.flush()
        with trio.fail_after(timeouts.artim):
            event = await conn.next_event()
        if isinstance(event, AssociationAccepted):
            if 0 < conn.peer_max_pdu < P.MIN_USABLE_MAX_LENGTH:
                # Nothing could be sent within it (PS3.8 D.1, 9.3.5.1): end it now, not mid-message.
                raise AssociationAborted(
                    f"{called_ae} at {host}:{port} accepted with a maximum PDU length of "
                    f"{conn.peer_max_pdu}, too small to carry a PDV", local=True,
                )
            if user_identity is not None and user_identity.positive_response:
                _check_confirmed(user_identity, event, called_ae, host, port)
            return conn  # the connection recorded the accepted contexts and the peer's max PDU
        if isinstance(event, Rejected):
            raise AssociationRejected(event.reject.result, event.reject.source, event.reject.reason)
        detail = event.detail if isinstance(event, Aborted) else f"unexpected {type(event).__name__}"
        raise AssociationAborted(
            f"{called_ae} at {host}:{port} aborted the association request: {detail}",
            local=getattr(event, "local", True), source=getattr(event, "source", 2),
            reason=getattr(event, "reason", 0),
        )
    except trio.TooSlowError as exc:
        # We give up on a silent peer: A-ABORT and close now, no ARTIM wait for it to close.
        with trio.CancelScope(shield=True):
            await conn.abort(linger=0)
        raise TimeoutExpired(
            f"{called_ae} at {host}:{port} did not answer the association request within {timeouts.artim:g} s"
        ) from exc
    except AssociationAborted as exc:
        with trio.CancelScope(shield=True):
            await conn.abort(linger=0)
        if certificate is not None and certificate.version == "TLSv1.3" and conn.bytes_received == 0:
            # TLS 1.3: the server judges our certificate after our side of the handshake is done; a
            # refusal shows as the connection closing before any answer (RFC 8446 4.4.2.4).
            raise TlsHandshakeFailed(
                f"{called_ae} at {host}:{port} closed the TLS connection before answering the association "
                f"request: it probably refused our client certificate ({exc})"
            ) from exc
        raise
    except BaseException:
        with trio.CancelScope(shield=True):
            await conn.abort(linger=0)
        raise


def _check_confirmed(user_identity: ClientIdentity, event: AssociationAccepted, called_ae: str, host: str,
                     port: int) -> None:
    from agent.security.identity import IdentityNotConfirmed, confirmation_in

    if confirmation_in(event.accept) is None:
        # We asked the peer to confirm our identity and it did not (it ignored the sub-item or
        # does not authenticate): PS3.7 D.3.3.7 leaves it to us to go on or not; we do not.
        raise IdentityNotConfirmed(
            f"{called_ae} at {host}:{port} accepted the association without confirming the user "
            f"identity ({user_identity.describe()}) that we asked it to confirm; association aborted"
        )


@contextlib.asynccontextmanager
async def associate(host: str, port: int, **kwargs: object) -> AsyncIterator[DicomConnection]:
    """`async with associate(...) as conn:` releases on normal exit and aborts on an exception.

    Aborting after a cancellation (a caller's deadline passed) does not wait for the peer to close."""
    conn = await open_association(host, port, **kwargs)  # type: ignore[arg-type]
    try:
        yield conn
    except BaseException as exc:
        linger = 0.0 if isinstance(exc, (trio.Cancelled, trio.TooSlowError)) else None
        with trio.CancelScope(shield=True):
            await conn.abort(linger=linger)
        raise
    else:
        await conn.release()
