"""The requestor side: open an association, use it, release it (or abort on error)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import trio

from agent.errors import AssociationAborted, AssociationRejected, TimeoutExpired
from agent.net.connection import DicomConnection, Timeouts
from agent.net.transport import open_tcp, peer_name
from agent.ul import pdu as P
from agent.ul.association import (
    Aborted,
    Association,
    AssociationAccepted,
    AssociationRejected as Rejected,
    Role,
)
from agent.ul.negotiation import ProposedContext, accepted_contexts, build_request


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
) -> DicomConnection:
    """Connect and negotiate. Raises ConnectionFailed, TimeoutExpired, AssociationRejected or
    AssociationAborted; on success the connection is in Sta6 with its accepted contexts."""
    rq = build_request(calling_ae, called_ae, proposals, max_pdu_receive=max_pdu_receive)
    assoc = Association(Role.REQUESTOR, max_pdu_receive=max_pdu_receive)
    assoc.request(rq)
    if stream is None:
        stream = await open_tcp(host, port, timeouts.connect)
    conn = DicomConnection(stream, assoc, timeouts=timeouts, remote=f"{called_ae}@{peer_name(stream)}")
    conn.calling_ae, conn.called_ae = calling_ae, called_ae
    assoc.connection_made()
    try:
        await conn.flush()
        with trio.fail_after(timeouts.artim):
            while True:
                conn._events.clear()
                for ind in assoc.receive_data(await _receive(stream)):
                    if isinstance(ind, AssociationAccepted):
                        conn.contexts = accepted_contexts(rq, ind.accept)
                        conn.peer_max_pdu = ind.accept.max_length or 0
                        return conn
                    if isinstance(ind, Rejected):
                        raise AssociationRejected(ind.reject.result, ind.reject.source, ind.reject.reason)
                    if isinstance(ind, Aborted):
                        raise AssociationAborted(
                            f"{called_ae} at {host}:{port} aborted the association request: {ind.detail}",
                            local=ind.local, source=ind.source, reason=ind.reason,
                        )
                await conn.flush()
    except trio.TooSlowError as exc:
        await conn.abort()
        raise TimeoutExpired(f"{called_ae} at {host}:{port} did not answer the association request") from exc
    except BaseException:
        await conn.aclose()
        raise


async def _receive(stream: trio.abc.Stream) -> bytes | None:
    try:
        data = await stream.receive_some(65536)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return None
    return data or None


@contextlib.asynccontextmanager
async def associate(host: str, port: int, **kwargs: object) -> AsyncIterator[DicomConnection]:
    """`async with associate(...) as conn:` releases on normal exit and aborts on an exception."""
    conn = await open_association(host, port, **kwargs)  # type: ignore[arg-type]
    try:
        yield conn
    except BaseException:
        with trio.CancelScope(shield=True):
            await conn.abort()
        raise
    else:
        await conn.release()


__all__ = ["associate", "open_association", "P"]
