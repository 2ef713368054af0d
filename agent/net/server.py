"""The acceptor side: a listener, association admission and DIMSE dispatch to service handlers.

Invariants:
- One task per connection, all in one nursery. `max_associations` bounds the *established*
  associations only: a caller past it still gets a proper answer when its A-ASSOCIATE-RQ arrives
  (A-ASSOCIATE-RJ, transient, presentation-related, local limit exceeded, PS3.8 Table 9-21).
- A connection that has not sent its A-ASSOCIATE-RQ yet is "waiting": it lives at most ARTIM
  (PS3.8 AE-5 to AE-6) and waiting connections have their own bound, in total
  (`max_pending_connections`) and per source address (`max_pending_per_address`). A new connection
  past either bound closes the oldest waiting one (of the same address when that address is over
  its share; otherwise of the address holding the most), as ARTIM expiry would (PS3.8 AA-2: the
  transport is closed, nothing is sent). Established associations are never closed to make room,
  so silent or trickling sockets cannot lock callers out.
- A fault in one association (malformed PDU, handler exception, peer vanishing) ends that association
  with an A-ABORT and is logged; the listener and every other association keep running.
- TLS (agent/net/tls.py), on a listener that has it: the handshake runs in the connection's own task,
  while the connection is "waiting" (so it is under the same bounds and may be evicted like one) and
  within ARTIM counted from the TCP accept: the A-ASSOCIATE-RQ must arrive within what the handshake
  left of it. A failed handshake is reported and logged, and closes that connection only.
- Services never see sockets: they get the `DicomConnection`, the negotiated `PresentationContext`
  and the decoded request, read the data set themselves (streamed or buffered) and send responses.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable, Iterable
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace

import trio

from agent.dimse import CommandReceived, DataSetFragment, MessageComplete, UnusableRequest
from agent.dimse.messages import Message
from agent.dimse.status import Status
from agent.errors import AssociationAborted
from agent.net.connection import DicomConnection, Timeouts
from agent.net.tls import PeerCertificate, TlsServer, TlsStream
from agent.net.transport import peer_name, set_nodelay
from agent.ul import pdu as P
from agent.ul.fsm import State
from agent.ul.association import (
    Aborted,
    Association,
    AssociationRequested,
    ReleaseConfirmed,
    ReleaseRequested,
    Role,
)
from agent.security.access import AccessPolicy
from agent.security.admission import Admission, admit
from agent.security.events import SecurityEvent
from agent.security.identity import Authenticator
from agent.ul.negotiation import PresentationContext, SyntaxSupport, build_accept, negotiate_acceptor

log = logging.getLogger("agent.net")

Handler = Callable[[DicomConnection, PresentationContext, Message], Awaitable[None]]


@dataclass
class ServiceRegistry:
    """Which abstract syntaxes we accept, and who handles each request type on them."""

    _support: dict[str, SyntaxSupport] = field(default_factory=dict)
    _handlers: dict[tuple[str, type], Handler] = field(default_factory=dict)

    def add(
        self,
        sop_classes: Iterable[str],
        support: SyntaxSupport,
        handlers: dict[type, Handler],
    ) -> None:
        for uid in sop_classes:
            self._support[uid] = support
            for message_type, handler in handlers.items():
                self._handlers[(uid, message_type)] = handler

    def support(self, abstract_syntax: str) -> SyntaxSupport | None:
        return self._support.get(abstract_syntax)

    def handler(self, abstract_syntax: str, message_type: type) -> Handler | None:
        return self._handlers.get((abstract_syntax, message_type))

    @property
    def sop_classes(self) -> list[str]:
        return list(self._support)


@dataclass(frozen=True, slots=True)
class AcceptorPolicy:
    ae_title: str
    called_ae_check: bool = False
    allowed_calling_aes: tuple[str, ...] = ()  # the older form of `access`: these titles, every service
    access: AccessPolicy = AccessPolicy()  # who may use which service (agent/security/access.py)
    users: Authenticator = Authenticator()  # User Identity check (agent/security/identity.py)
    max_pdu_receive: int = 262144
    timeouts: Timeouts = Timeouts()
    max_associations: int = 16
    max_pending_connections: int = 64
    max_pending_per_address: int = 16


@dataclass(eq=False)
class _Waiting:
    """A connection that has not sent its A-ASSOCIATE-RQ yet; `scope` closes it early."""

    address: str
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    evicted: bool = False


def refreeze() -> None:
    """Collect the cyclic garbage, then move everything alive out of the collector's reach (gc.freeze).

    At listener start, and again after a SIGHUP reload (`Agent.reload`): objects frozen while alive that
    became garbage later (a replaced TLS context, the old access policy) would otherwise never be freed,
    since frozen objects are never collected. Costs one full collection."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass
class Listener:
    """Serves associations on a stream listener (TCP or, in tests, memory).

    `active` counts established associations (the number `max_associations` bounds and systemd's
    STATUS reports); `connections` counts every open connection, waiting ones included."""

    policy: AcceptorPolicy
    registry: ServiceRegistry
    active: int = 0
    served: int = 0
    connections: int = 0
    on_association: Callable[[DicomConnection], None] | None = None
    on_security_event: Callable[[SecurityEvent], None] | None = None  # authentication and access decisions
    on_association_end: Callable[[DicomConnection], None] | None = None  # an established association ended
    # For the live view (`dicom-agent status`): the established associations, and the DIMSE requests
    # (command, SOP class UID) of those that ended, added up since start.
    open: set[DicomConnection] = field(default_factory=set)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    _waiting: OrderedDict[_Waiting, None] = field(default_factory=OrderedDict)  # oldest first
    _password_limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(1))

    @property
    def waiting(self) -> int:
        """Connections that have not sent an A-ASSOCIATE-RQ yet."""
        return len(self._waiting)

    def _admit(self, address: str) -> _Waiting:
        """Register a new waiting connection, closing the oldest one(s) beyond the bounds."""
        policy = self.policy
        same = [w for w in self._waiting if w.address == address]
        if len(same) >= policy.max_pending_per_address:
            self._evict(same[0])
        if len(self._waiting) >= policy.max_pending_connections:
            counts: dict[str, int] = {}
            for w in self._waiting:
                counts[w.address] = counts.get(w.address, 0) + 1
            heaviest = max(counts, key=counts.__getitem__)
            self._evict(next(w for w in self._waiting if w.address == heaviest))
        waiting = _Waiting(address)
        self._waiting[waiting] = None
        return waiting

    def _evict(self, waiting: _Waiting) -> None:
        self._waiting.pop(waiting, None)
        waiting.evicted = True
        waiting.scope.cancel()

    async def serve_tcp(
        self, host: str, port: int, *, tls: TlsServer | None = None,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on `host`:`port`; with `tls` every connection starts with a TLS handshake."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        log.info(
            "listening as %s on %s%s",
            self.policy.ae_title,
            ", ".join(f"{l.socket.getsockname()[0]}:{l.socket.getsockname()[1]}" for l in listeners),
            f" (TLS, profile {tls.settings.profile})" if tls is not None else "",
        )
        # Everything alive now (modules, pydicom's dictionaries, the profile) lives as long as the
        # process: moved out of the collector's reach, so the full collections that receiving
        # triggers no longer walk it (they were ~7% of the receive path's CPU, perf). Garbage is
        # collected first: frozen, it would never be freed, nor what it holds (files, sockets).
        refreeze()
        async with trio.open_nursery() as nursery:
            task_status.started(listeners)
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery, tls)

    async def _accept_loop(
        self, listener: trio.SocketListener, nursery: trio.Nursery, tls: TlsServer | None = None
    ) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # EMFILE and friends: log, breathe, go on
                    log.error("accept failed: %s", exc)
                    await trio.sleep(0.1)
                    continue
                set_nodelay(stream)
                nursery.start_soon(self.handle_stream, stream, tls)

    async def handle_stream(self, stream: trio.abc.Stream, tls: TlsServer | None = None) -> None:
        """Run one association from its first byte to its close. Never raises (except Cancelled)."""
        remote = peer_name(stream)
        waiting = self._admit(remote.rsplit(":", 1)[0])
        self.connections += 1
        timeouts = self.policy.timeouts
        certificate: PeerCertificate | None = None
        if tls is not None:
            artim_by = trio.current_time() + timeouts.artim
            try:
                secured = await self._handshake(tls, stream, remote, waiting, artim_by)
            except BaseException:
                self._forget(waiting)
                raise
            if secured is None:
                self._forget(waiting)
                return
            stream, certificate = secured
            # The A-ASSOCIATE-RQ gets what the handshake left of ARTIM; `_negotiate` restores it.
            timeouts = replace(timeouts, artim=max(artim_by - trio.current_time(), 0.001))
        assoc = Association(Role.ACCEPTOR, max_pdu_receive=self.policy.max_pdu_receive)
        conn = DicomConnection(stream, assoc, timeouts=timeouts, remote=remote)
        if certificate is not None:
            conn.peer_certificate_subject = certificate.subject
        assoc.connection_made()
        established = False
        try:
            established = await self._negotiate(conn, waiting)
            if established:
                self.open.add(conn)
                if self.on_association is not None:
                    self.on_association(conn)
                await serve_association(conn, self.registry)
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    await conn.abort(why="the agent is stopping")
            raise
        except AssociationAborted as exc:
            # A service gave up (an unexpected PDU while it read a data set, ...): if the association
            # is still up, the peer must hear so (A-ABORT), not see its connection silently closed.
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await conn.abort(why=str(exc))
            conn.note_end(f"aborted: {exc}")  # unless the cause was recorded when it happened
        except Exception as exc:  # a handler bug must not take the listener down
            log.exception("%s: association failed: %s", conn.remote, exc)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await conn.abort(why=f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._forget(waiting)
            if established:
                self.active -= 1
                self.open.discard(conn)
                self.requests.update(conn.requests)
                if self.on_association_end is not None:
                    self.on_association_end(conn)
            with trio.CancelScope(shield=True):
                await conn.aclose()

    def _forget(self, waiting: _Waiting) -> None:
        """A connection has ended: it no longer waits nor counts as open."""
        self._waiting.pop(waiting, None)
        self.connections -= 1
        self.served += 1

    async def _handshake(
        self, tls: TlsServer, stream: trio.abc.Stream, remote: str, waiting: _Waiting, artim_by: float
    ) -> tuple[TlsStream, PeerCertificate] | None:
        """The TLS handshake of a waiting connection, within ARTIM (PS3.8 AA-2 on expiry: the transport is
        closed, nothing is sent) and evictable as any waiting connection; None if it did not complete."""
        with waiting.scope, trio.move_on_at(artim_by):
            secured = await tls.handshake(stream, remote)
            if secured is not None:
                waiting.scope = trio.CancelScope()  # for the A-ASSOCIATE-RQ wait: a scope is entered once
            return secured  # None: failed, already reported
        why = ("too many connections waiting to associate" if waiting.evicted
               else f"no TLS handshake within ARTIM ({self.policy.timeouts.artim:g} s)")
        tls.events.report_failure(remote, why)
        return None

    async def _negotiate(self, conn: DicomConnection, waiting: _Waiting) -> bool:
        """Wait for the A-ASSOCIATE-RQ (ARTIM runs in Sta2) and answer it. True once established."""
        with waiting.scope:
            event = await conn.next_event()
        conn.timeouts = self.policy.timeouts  # a TLS handshake's share of ARTIM no longer applies
        self._waiting.pop(waiting, None)
        if waiting.evicted:
            conn.note_end("closed before its A-ASSOCIATE-RQ: too many connections waiting to associate")
            await conn.aclose()
            return False
        if not isinstance(event, AssociationRequested):
            return False
        if conn.assoc.state is not State.STA3:
            # More bytes came with the request (e.g. P-DATA before our answer) and the state machine
            # has already aborted: nothing is left to accept or reject.
            return False
        rq = event.request  # the connection took the AE titles from it (calling_ae, called_ae, remote)
        policy = self.policy
        rj: P.AAssociateRJ | None = None
        why = ""
        if self.active >= policy.max_associations:
            rj = P.AAssociateRJ(P.RJ_TRANSIENT, P.RJ_SOURCE_PRESENTATION, P.RJ_PRESENTATION_LOCAL_LIMIT_EXCEEDED)
        elif rq.application_context != P.APPLICATION_CONTEXT_NAME:
            rj = P.AAssociateRJ(P.RJ_PERMANENT, P.RJ_SOURCE_USER, P.RJ_USER_APPLICATION_CONTEXT_NOT_SUPPORTED)
        elif not rq.presentation_contexts:
            # Nothing could ever be used on it (PS3.8 9.3.2 asks for one or more contexts).
            why = ": it proposes no presentation context"
            rj = P.AAssociateRJ(P.RJ_PERMANENT, P.RJ_SOURCE_USER, P.RJ_USER_NO_REASON)
        elif 0 < (rq.max_length or 0) < P.MIN_USABLE_MAX_LENGTH:
            # No DIMSE message could ever be sent to this peer (PS3.8 D.1, 9.3.5.1).
            why = f": its maximum PDU length {rq.max_length} cannot carry a PDV"
            rj = P.AAssociateRJ(P.RJ_PERMANENT, P.RJ_SOURCE_USER, P.RJ_USER_NO_REASON)
        elif policy.called_ae_check and rq.called_ae != policy.ae_title:
            rj = P.AAssociateRJ(P.RJ_PERMANENT, P.RJ_SOURCE_USER, P.RJ_USER_CALLED_AE_NOT_RECOGNIZED)
        if rj is not None:
            await conn.reject(rj, why)  # the association's log line says why
            return False
        admission = await self._admission(conn, rq)
        if admission.reject is not None:
            await conn.reject(admission.reject, admission.why)
            return False
        if self.active >= policy.max_associations:  # reached while the passcode was being checked
            await conn.reject(P.AAssociateRJ(P.RJ_TRANSIENT, P.RJ_SOURCE_PRESENTATION,
                                             P.RJ_PRESENTATION_LOCAL_LIMIT_EXCEEDED))
            return False
        result = negotiate_acceptor(rq, self.registry.support, admission.refuses)
        conn.contexts = result.accepted
        conn.peer_max_pdu = rq.max_length or 0
        conn.user, conn.services = admission.user, admission.services
        conn.assoc.accept(build_accept(
            rq, result, max_pdu_receive=policy.max_pdu_receive, identity_response=admission.identity_response,
        ))
        self.active += 1  # counted before the next await: the limit check just above stays exact
        try:
            await conn.flush()
        except BaseException:
            self.active -= 1
            raise
        log.debug(
            "%s: association accepted (%d of %d contexts)%s",
            conn.remote, len(result.accepted), len(rq.presentation_contexts),
            f" for user {admission.user!r}" if admission.user else "",
        )
        return True

    async def _admission(self, conn: DicomConnection, rq: P.AAssociateRQ) -> Admission:
        """The security decision (agent/security/admission.py); the passcode check runs in a thread
        (scrypt takes tens of milliseconds), one at a time so that a flood of guesses cannot take
        every core."""
        policy = self.policy
        item = rq.user_identity
        if item is not None and item.identity_type == 2 and policy.users.users:
            check = await trio.to_thread.run_sync(policy.users.check, item, limiter=self._password_limiter)
        else:
            check = policy.users.check(item)
        access = policy.access
        if policy.allowed_calling_aes and access.is_open:  # the older `[agent] allowed_calling_aes`
            rules = AccessPolicy.from_calling_aes(policy.allowed_calling_aes).rules
            access = AccessPolicy(rules, access.require_identity)
        admission = admit(rq, check, access, address=conn.address,
                          cert_subject=conn.peer_certificate_subject)
        for event in admission.events:
            # Warnings name the caller and the user, never a passcode (PS3.15 A.5.3.11 for the audit).
            level = logging.DEBUG if event.kind == "authentication-succeeded" else logging.WARNING
            log.log(level, "%s: %s%s: %s", conn.remote, event.kind,
                    f" (user {event.user!r})" if event.user else "", event.detail or "user authenticated")
            if self.on_security_event is not None:
                self.on_security_event(event)
        return admission


async def serve_association(conn: DicomConnection, registry: ServiceRegistry) -> None:
    """Dispatch requests until the peer releases or the association ends."""
    while True:
        event = await conn.next_event()
        if isinstance(event, CommandReceived):
            ctx = conn.contexts[event.context_id]
            message = event.message
            handler = registry.handler(ctx.abstract_syntax, type(message))
            if handler is None:
                await refuse_request(conn, ctx, message)
            else:
                await handler(conn, ctx, message)
        elif isinstance(event, ReleaseRequested):
            if conn.assoc.state in (State.STA8, State.STA12):
                await conn.answer_release()
                return
            # A later PDU in the same read already aborted the association: its Aborted follows.
        elif isinstance(event, (Aborted, ReleaseConfirmed)):
            return  # the connection logs how it ended
        elif isinstance(event, (DataSetFragment, MessageComplete)):
            continue  # the tail of a message whose handler chose not to read it


async def refuse_request(
    conn: DicomConnection, ctx: PresentationContext, message: Message | UnusableRequest
) -> None:
    """A request we will not handle: discard its data set (whatever its size) and answer it.

    An `UnusableRequest` (a UID in its command that is not one) gets the failure status the DIMSE
    layer chose for it (PS3.7 C.5); a request with no handler gets 'unrecognized operation' (0211).
    """
    if message.has_dataset:
        await conn.discard_dataset()
    if isinstance(message, UnusableRequest):
        log.warning(
            "%s: %s refused with %04X: %s", conn.remote, message.request_type.__name__,
            message.response.status, message.problem,
        )
        await conn.send_message(ctx.id, message.response)
        return
    respond = getattr(message, "response", None)
    if respond is None:  # C-CANCEL and responses: nothing to answer
        return
    log.warning("%s: no handler for %s on %s", conn.remote, type(message).__name__, ctx.abstract_syntax)
    await conn.send_message(ctx.id, respond(Status.UNRECOGNIZED_OPERATION))


__all__ = [
    "AcceptorPolicy", "Handler", "Listener", "ServiceRegistry", "refuse_request", "serve_association",
]
