"""Verification SOP Class (PS3.4 Annex A), SCU and SCP; seed Table 1, statuses S-21."""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent.dimse import CEchoRQ
from agent.dimse.status import Status, describe
from agent.errors import AssociationAborted
from agent.net.client import associate
from agent.net.connection import DicomConnection, Timeouts
from agent.net.requests import request
from agent.net.server import ServiceRegistry
from agent.net.tls import PeerTls
from agent.security.identity import ClientIdentity
from agent.ul.negotiation import PresentationContext, ProposedContext, SyntaxSupport

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

#: Every status the C-ECHO SCP answers (PS3.4 A.4.2); the conformance statement lists these.
SCP_STATUSES: tuple[int, ...] = (Status.SUCCESS,)


async def handle_echo(conn: DicomConnection, ctx: PresentationContext, message: CEchoRQ) -> None:  # type: ignore[override]
    await conn.send_message(ctx.id, message.response(Status.SUCCESS))


def register(registry: ServiceRegistry, transfer_syntaxes: tuple[str, ...] | None = None) -> None:
    support = SyntaxSupport(transfer_syntaxes) if transfer_syntaxes else SyntaxSupport()
    registry.add([VERIFICATION_SOP_CLASS], support, {CEchoRQ: handle_echo})  # type: ignore[dict-item]


@dataclass(frozen=True, slots=True)
class EchoResult:
    status: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == Status.SUCCESS

    def describe(self) -> str:
        return f"{describe(self.status)} in {self.seconds * 1000:.0f} ms"


async def echo(
    host: str, port: int, *, calling_ae: str, called_ae: str, timeouts: Timeouts = Timeouts(),
    tls: PeerTls | None = None, user_identity: ClientIdentity | None = None,
) -> EchoResult:
    """C-ECHO over a fresh association (over TLS with `tls`). Raises the usual AgentError subclasses."""
    start = time.monotonic()
    async with associate(
        host, port, calling_ae=calling_ae, called_ae=called_ae,
        proposals=[ProposedContext(VERIFICATION_SOP_CLASS)], timeouts=timeouts, tls=tls,
        user_identity=user_identity,
    ) as conn:
        ctx = conn.context_for(VERIFICATION_SOP_CLASS)
        if ctx is None:
            raise AssociationAborted(f"{called_ae} did not accept the Verification SOP Class")
        reply = await request(conn, ctx.id, CEchoRQ(message_id=conn.next_message_id(), affected_sop_class_uid=VERIFICATION_SOP_CLASS))
    return EchoResult(reply.status, time.monotonic() - start)
