"""One DICOM association over a trio stream: the only place where protocol bytes meet the network.

Invariants:
- Pull model: the connection reads from the socket only inside `next_event()`; there is no background
  task per association, so a handler that does not ask for data applies TCP backpressure to the peer.
- Every PDU the association produces is flushed with one write per DIMSE message (or per batch of
  messages a sender queues with `queue_encoded`, such as C-FIND pending responses) or per 256 KiB of
  data (never a small write after a large one: TCP_NODELAY is set and writes are batched).
- Bytes off and onto a plain TCP socket (a trio.SocketStream) take no detour through Python
  objects: a non-blocking `readv` straight into the rest of a large PDU's own buffer (whose data set
  fragments are then handed on as views, never copied) or into one reused buffer for the small PDUs,
  and a gathered `writev` of the PDU headers and the data set's buffers. Reads and writes that find
  the socket ready use no trio machinery; only waiting does (with its deadline). Any other stream
  (TLS, memory streams) goes through `receive_some` / `send_all`, with the same PDUs and events.
- Every wait has a deadline: ARTIM while the state machine runs it, `idle_timeout` otherwise.
  A deadline that passes aborts the association (or, for ARTIM, closes the transport, PS3.8 AA-2).
  ARTIM is one deadline per start of the timer (PS3.8 AE-5 starts it at the transport connection,
  AE-6 stops it at the A-ASSOCIATE-RQ): bytes that arrive in between do not push it back, so a peer
  trickling a byte at a time is closed when ARTIM expires like a silent one.
- Once the association is finished (Sta1/Sta13) every send raises `AssociationAborted`; `next_event`
  returns the final indication once and then raises.
- Logging: when the transport closes, one INFO line on `agent.net` says who (calling and called AE,
  the peer's address), how it ended (the first cause recorded: released, aborted by the peer, aborted
  by us and why, ARTIM expired, rejected), how long it lasted and how many requests of each kind on
  which SOP class went either way. At DEBUG every PDU in and out (type, length, association details,
  PDV headers) and every DIMSE command's fields are traced; never data set bytes.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
import os
import select
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

import trio

from agent.dimse import (
    CommandReceived,
    DataSetFragment,
    DIMSEError,
    MessageAssembler,
    MessageComplete,
    command_name,
    describe_command,
    encode_message,
    fragment,
    is_request,
)
from agent.dimse.messages import Message
from agent.errors import AssociationAborted
from agent.ul import pdu as P
from agent.ul.association import (
    Aborted,
    Association,
    AssociationAccepted,
    AssociationRejected,
    AssociationRequested,
    DataReceived,
    ReleaseConfirmed,
    ReleaseRequested,
    Role,
)
from agent.ul.fsm import State
from agent.ul.negotiation import PresentationContext, accepted_contexts
from agent.ul.trace import describe_associate, describe_encoded, uid_name

log = logging.getLogger("agent.net")

#: PDV payload size when the peer advertises no maximum (0 = unlimited).
UNLIMITED_PDV_CHUNK = 1024 * 1024
#: Flush the outbound buffer once this many bytes are waiting.
FLUSH_BYTES = 256 * 1024
#: Bytes read from a file at once when sending a data set from disk.
READ_BLOCK = 1024 * 1024
#: Bytes asked of the socket per read.
RECEIVE_SIZE = 256 * 1024
#: Buffers per sendmsg (Linux's IOV_MAX is 1024).
IOV_MAX = 1024

_EMPTY = memoryview(b"")
_WOULD_BLOCK = object()
_PARTIAL = object()  # a read that went into a large PDU's own buffer, the PDU not whole yet
#: States in which DIMSE messages may still be sent (a tuple: compared by identity, no Enum hashing).
_OPEN_STATES = (State.STA6, State.STA7, State.STA8)
#: Reads that found data waiting in a row before the event loop is visited anyway.
FAST_READS = 16

DimseEvent = CommandReceived | DataSetFragment | MessageComplete
ConnectionEvent = DimseEvent | ReleaseRequested | ReleaseConfirmed | Aborted


@dataclass(slots=True)
class Transfer:
    """The DIMSE message going one way right now, for the live view: plain fields, updated in place.

    `command` is the command's name (C-STORE-RQ ...), `sop_class` the presentation context's abstract
    syntax, `dataset_bytes` the bytes of its data set received or sent so far, `dataset_total` its size
    when known in advance (None otherwise: a received data set's length is not announced, PS3.8 E.2)."""

    command: str
    sop_class: str
    dataset_bytes: int = 0
    dataset_total: int | None = None  # the data set's size when known (sending from a file)


@dataclass(frozen=True, slots=True)
class ReadAhead:
    """The first block of a data set read from a file ahead of its send (`DicomConnection.read_ahead`),
    laid out as P-DATA-TF PDUs in the connection's read-ahead buffer."""

    context_id: int
    fd: int
    offset: int
    length: int
    step: int
    block: memoryview
    message: Message | None = None  # the command it will follow, encoded ahead too
    command: bytes | None = None  # that command set, encoded ahead (`encode_message(message)`)


@dataclass(frozen=True, slots=True)
class Timeouts:
    artim: float = 30.0
    dimse: float = 60.0
    idle: float = 300.0
    connect: float = 10.0


class DicomConnection:
    """An established (or establishing) association with its DIMSE reassembly."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        association: Association,
        *,
        timeouts: Timeouts,
        remote: str = "",
    ) -> None:
        self.stream = stream
        self.assoc = association
        self.timeouts = timeouts
        self.remote = remote
        self.assembler = MessageAssembler()
        self.contexts: Mapping[int, PresentationContext] = {}
        self.peer_max_pdu = 0
        self.calling_ae = ""
        self.called_ae = ""
        # A plain TCP stream is read with recv_into and written with sendmsg (no intermediate bytes
        # objects); any other stream (TLS, memory streams in tests) through receive_some/send_all.
        self._sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._fd = self._sock.fileno() if self._sock is not None else -1  # non-blocking, as trio keeps it
        self._fast_reads = 0
        self._rview = memoryview(bytearray(RECEIVE_SIZE)) if self._sock is not None else memoryview(b"")
        self._file_buffer = bytearray()  # reused for data sets sent from files, see send_message_from_file
        self._ahead_buffer = bytearray()  # the next file's first block, see read_ahead
        self._events: deque[ConnectionEvent] = deque()
        self._out_pending = 0
        self._parts: list[bytes | memoryview] = []
        self._closed = False
        self._ended: ConnectionEvent | None = None
        self._message_id = 0
        # Another task may send on this association while its serving task answers (a Print SCP's
        # N-EVENT-REPORTs): writes are taken from the state machine in order and sent one at a time.
        self._send_lock = trio.Lock()
        self._artim_generation = -1  # the ARTIM start that `_artim_deadline` belongs to
        self._artim_deadline = math.inf
        # For the one line logged at the end (module docstring).
        self.address = remote.rsplit("@", 1)[-1]
        self.started = trio.current_time()
        self.ending = ""
        self.requests: Counter[tuple[str, str]] = Counter()  # (command name, SOP class UID) -> count
        # For the live view (status): read from other tasks, only ever updated by plain assignments
        # on the hot path. `started_at` is wall-clock (epoch seconds), `started` the trio clock.
        self.started_at = time.time()
        self.bytes_received = 0
        self.bytes_sent = 0
        self.receiving: Transfer | None = None
        self.sending: Transfer | None = None
        # Set by the listener / TLS handshake when they apply (agent/net/tls.py, agent/security/access.py).
        self.peer_certificate_subject: str | None = None  # RFC 4514 subject of the peer's certificate
        self.user: str | None = None  # authenticated User Identity username
        self.services: frozenset[str] = frozenset()  # services this caller may use (acceptor side)

    # ------------------------------------------------------------ the log

    def note_end(self, how: str) -> None:
        """Record how the association ended; the first cause recorded is the one reported."""
        if not self.ending:
            self.ending = how

    def summary(self) -> str:
        """The association's one line: who, how it ended, how long, which requests on which SOP class."""
        incoming = self.assoc.role is Role.ACCEPTOR
        if self.calling_ae or self.called_ae:
            who = f"{self.calling_ae} -> {self.called_ae}, {'from' if incoming else 'to'} {self.address}"
        else:
            who = f"(no A-ASSOCIATE-RQ) {'from' if incoming else 'to'} {self.address}"
        counts = "; ".join(
            f"{n} {name} ({uid_name(sop)})" for (name, sop), n in sorted(self.requests.items())
        ) or "no DIMSE requests"
        duration = trio.current_time() - self.started
        return f"association ended: {who}: {self.ending or 'closed'}; {duration:.3f} s; {counts}"

    def _trace(self, direction: str, text: str) -> None:
        log.debug("%s: %s %s", self.remote, direction, text)

    def _count(self, context_id: int, message: object) -> None:
        if is_request(message):  # type: ignore[arg-type]
            ctx = self.contexts.get(context_id)
            self.requests[(command_name(message), ctx.abstract_syntax if ctx else "?")] += 1  # type: ignore[arg-type]

    # ------------------------------------------------------------ identity

    def next_message_id(self) -> int:
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def context_for(self, abstract_syntax: str, transfer_syntax: str | None = None) -> PresentationContext | None:
        for ctx in self.contexts.values():
            if ctx.abstract_syntax == abstract_syntax and (
                transfer_syntax is None or ctx.transfer_syntax == transfer_syntax
            ):
                return ctx
        return None

    @property
    def max_pdv_data(self) -> int:
        """Message bytes per PDV under the peer's Maximum Length (PS3.8 D.1); commands and data sets
        are both cut to it. The association is refused for a maximum that cannot carry a PDV."""
        return P.max_pdv_data(self.peer_max_pdu) or UNLIMITED_PDV_CHUNK

    @property
    def is_open(self) -> bool:
        return not self._closed and self.assoc.state in _OPEN_STATES

    # ------------------------------------------------------------ low level I/O

    async def flush(self) -> None:
        parts: list[bytes | memoryview] = []
        if self._parts:
            parts, self._parts = self._parts, []
            self.assoc.send_pdata_many([])  # the state check: P-DATA must be allowed now (PS3.8 DT-1)
        # Whatever the state machine queued before (it answers some input by itself) goes first.
        head = self.assoc.data_to_send()
        if head:
            parts.insert(0, head)
        self._out_pending = 0
        if parts and log.isEnabledFor(logging.DEBUG):
            for text in describe_encoded(b"".join(parts)):
                self._trace("out", text)
        if parts and not self._closed:
            try:
                lock = self._send_lock
                try:  # uncontended (the usual case): taken without the scheduler round trip of acquire()
                    lock.acquire_nowait()
                except trio.WouldBlock:
                    await lock.acquire()
                try:
                    self.bytes_sent += await self._send_parts(parts)
                finally:
                    lock.release()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                await self._close_transport()
                raise AssociationAborted(f"connection to {self.remote} broke: {exc}", local=False) from exc
        if self.assoc.should_close:
            await self._close_transport()

    async def _send_parts(self, parts: list[bytes | memoryview]) -> int:
        """Write `parts` in order as one write: one writev (gather, no join) on a TCP socket, else
        one send_all of their concatenation. Returns the number of bytes written."""
        if self._sock is None:
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            await self.stream.send_all(data)
            return len(data)
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        total = sum(len(v) for v in views)
        first = 0
        while first < len(views):
            if self._closed:  # closed by another task meanwhile: its descriptor may be reused already
                raise trio.ClosedResourceError("the association's transport was closed")
            try:
                # Non-blocking (trio keeps the socket so); the loop is only entered when it is full.
                n = os.writev(self._fd, views[first : first + IOV_MAX])
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._sock)
                continue
            # Drop what the kernel took; a partial write leaves the rest of one view.
            while n:
                if n >= len(views[first]):
                    n -= len(views[first])
                    first += 1
                else:
                    views[first] = views[first][n:]
                    n = 0
        return total

    async def _close_transport(self) -> None:
        if not self._closed:
            self._closed = True
            if log.isEnabledFor(logging.INFO):
                log.info("%s", self.summary())
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    def _deadline(self) -> float:
        now = trio.current_time()
        if self.assoc.artim_running:
            # Fixed when the timer starts (the association bumps the generation on every start or
            # restart), never moved by a read.
            if self._artim_generation != self.assoc.artim_generation:
                self._artim_generation = self.assoc.artim_generation
                self._artim_deadline = now + self.timeouts.artim
            return self._artim_deadline
        return now + self.timeouts.idle if self.timeouts.idle > 0 else math.inf

    async def _receive_some(self) -> bool:
        """Read once from the socket and feed the association. False on a deadline."""
        artim_gen = self.assoc.artim_generation
        artim = self.assoc.artim_running
        data: bytes | memoryview | None | object = _WOULD_BLOCK  # None: the transport closed (PS3.8 Evt17)
        if self._sock is not None and not artim:
            # Bytes already waiting are read without trio's machinery (no cancel scope, no
            # registration): most reads of a busy association find data there. The event loop is
            # still visited every FAST_READS reads, so other associations are served.
            data = self._recv_now()
            if data is not _WOULD_BLOCK:
                self._fast_reads += 1
                if self._fast_reads >= FAST_READS:
                    self._fast_reads = 0
                    await trio.lowlevel.checkpoint()
        if data is _WOULD_BLOCK:
            self._fast_reads = 0
            if self._parts:  # messages queued without a flush never wait behind a read
                await self.flush()
            with trio.move_on_at(self._deadline()) as scope:
                try:
                    if self._sock is None:
                        data = await self.stream.receive_some(RECEIVE_SIZE) or None
                        self.bytes_received += len(data or b"")  # type: ignore[arg-type]
                    else:
                        await trio.lowlevel.checkpoint_if_cancelled()  # a deadline already past counts
                        while (data := self._recv_now()) is _WOULD_BLOCK:
                            await trio.lowlevel.wait_readable(self._sock)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = None
            if scope.cancelled_caught:
                if artim and self.assoc.artim_generation == artim_gen:
                    self._absorb(self.assoc.artim_expired())
                else:
                    self.note_end(f"aborted by us: no traffic for {self.timeouts.idle:g} s")
                    self.assoc.abort()
                    self._events.append(Aborted(0, 0, True, "network idle timeout"))
                await self.flush()
                await self._close_transport()
                return False
        if data is _PARTIAL:
            return True  # bytes went into a large PDU's own buffer and it is not whole: nothing to parse
        self._absorb(self.assoc.receive_data(data))  # type: ignore[arg-type]
        await self.flush()
        return True

    def _recv_now(self) -> memoryview | None | object:
        """One non-blocking read from the TCP socket, without a temporary `bytes`: straight into the
        rest of a large PDU whose header is in (the PDU's own buffer, so its data is never copied
        again), or else into the connection's reusable buffer, which the association copies what it
        keeps from. _WOULD_BLOCK when nothing is waiting; None at the end of the stream (or an
        error); when the bytes went into the PDU's own buffer, _PARTIAL while that PDU is incomplete
        (so the caller reads on without asking the association to parse) and an empty view once it
        is whole."""
        assert self._sock is not None
        reader = self.assoc.reader  # looked up each time: the association replaces it after garbage
        target = reader.receive_buffer()
        direct = target is not None
        if target is None:
            # Never past the next PDU's header: the body of a large PDU then goes the direct way.
            target = self._rview[: min(RECEIVE_SIZE, reader.wanted())]
        try:
            n = os.readv(self._fd, [target])
        except BlockingIOError:
            return _WOULD_BLOCK
        except OSError:
            return None
        if n == 0:
            return None
        self.bytes_received += n
        if direct:
            reader.received_into(n)
            # `wanted()` is the rest of the PDU plus the next PDU's header: more than a header while
            # the PDU is still incomplete, when the association would find nothing to parse.
            return _PARTIAL if reader.wanted() > 6 else _EMPTY
        return target[:n]

    def _absorb(self, indications: list) -> None:
        for ind in indications:
            self._note_indication(ind)
            if isinstance(ind, AssociationAccepted) and self.assoc.request_pdu is not None:
                # Before anything later in the same read: P-DATA may follow the AC at once.
                self.contexts = accepted_contexts(self.assoc.request_pdu, ind.accept)
                self.peer_max_pdu = ind.accept.max_length or 0
            if isinstance(ind, DataReceived):
                for pdv in ind.pdata.pdvs:
                    if pdv.context_id not in self.contexts:
                        self.note_end(f"aborted by us: PDV on presentation context {pdv.context_id}, not accepted")
                        self.assoc.abort()
                        self._events.append(
                            Aborted(2, 0, True, f"PDV on presentation context {pdv.context_id} not accepted")
                        )
                        return
                    try:
                        events = self.assembler.receive_pdv(pdv.context_id, pdv.is_command, pdv.is_last, pdv.data)
                    except DIMSEError as exc:
                        self.note_end(f"aborted by us: DIMSE protocol error: {exc}")
                        self.assoc.abort(P.ABORT_REASON_NOT_SPECIFIED)
                        self._events.append(Aborted(2, 0, True, f"DIMSE protocol error: {exc}"))
                        return
                    for event in events:
                        if isinstance(event, DataSetFragment):
                            if self.receiving is not None:
                                self.receiving.dataset_bytes += len(event.data)
                        elif isinstance(event, CommandReceived):
                            self._count(event.context_id, event.message)
                            ctx = self.contexts.get(event.context_id)
                            self.receiving = Transfer(
                                command_name(event.message), ctx.abstract_syntax if ctx else ""
                            )
                            if log.isEnabledFor(logging.DEBUG):
                                self._trace("in", f"{command_name(event.message)} on context {event.context_id}: "
                                                  f"{describe_command(event.message)}")
                        else:  # MessageComplete
                            self.receiving = None
                    self._events.extend(events)
            else:
                self._events.append(ind)

    def _note_indication(self, ind: object) -> None:
        """The debug trace of an incoming PDU, and how the association ended if it did."""
        debug = log.isEnabledFor(logging.DEBUG)
        if isinstance(ind, DataReceived):
            if debug:
                size = sum(6 + len(pdv.data) for pdv in ind.pdata.pdvs)
                pdvs = "; ".join(
                    f"PDV context {p.context_id} {'command' if p.is_command else 'data set'}"
                    f"{', last' if p.is_last else ''} {len(p.data)} bytes"
                    for p in ind.pdata.pdvs
                )
                self._trace("in", f"P-DATA-TF length {size}: {pdvs}")
        elif isinstance(ind, (AssociationRequested, AssociationAccepted)):
            if isinstance(ind, AssociationRequested) and self.assoc.role is Role.ACCEPTOR:
                self.calling_ae, self.called_ae = ind.request.calling_ae, ind.request.called_ae
                self.remote = f"{self.calling_ae}@{self.address}"
            if debug:
                pdu = ind.request if isinstance(ind, AssociationRequested) else ind.accept
                name = "A-ASSOCIATE-RQ" if isinstance(ind, AssociationRequested) else "A-ASSOCIATE-AC"
                self._trace("in", f"{name}: {describe_associate(pdu)}")
        elif isinstance(ind, AssociationRejected):
            if debug:
                self._trace("in", f"A-ASSOCIATE-RJ: {ind.reject.describe()}")
            self.note_end(f"rejected by the peer: {ind.reject.describe()}")
        elif isinstance(ind, ReleaseRequested):
            if debug:
                self._trace("in", "A-RELEASE-RQ")
        elif isinstance(ind, ReleaseConfirmed):
            if debug:
                self._trace("in", "A-RELEASE-RP")
            self.note_end("released")
        elif isinstance(ind, Aborted):
            if ind.local and self.assoc.role is Role.ACCEPTOR and not self.calling_ae and "ARTIM" in ind.detail:
                self.note_end(f"ARTIM expired: no A-ASSOCIATE-RQ within {self.timeouts.artim:g} s")
            elif ind.local:
                self.note_end(f"aborted by us: {ind.detail}")
            elif ind.detail.startswith("A-ABORT"):
                if debug:
                    self._trace("in", f"A-ABORT: source {ind.source}, reason {ind.reason}")
                self.note_end(f"aborted by the peer (A-ABORT source {ind.source}, reason {ind.reason})")
            else:
                self.note_end(f"aborted: {ind.detail}")

    # ------------------------------------------------------------ events

    async def next_event(self) -> ConnectionEvent:
        """The next DIMSE or association event. Raises AssociationAborted after the end."""
        while not self._events:
            if self._ended is not None or self._closed:
                raise AssociationAborted(f"association with {self.remote} has ended", local=False)
            await self._receive_some()
        event = self._events.popleft()
        if isinstance(event, (Aborted, ReleaseConfirmed)):
            self._ended = event
            self._events.clear()
            await self._close_transport()
        return event

    async def poll_event(self) -> ConnectionEvent | None:
        """An event that is available *now*, or None; never waits for the peer.

        For an SCP streaming many responses (C-FIND pending responses) that must notice a C-CANCEL-RQ
        (PS3.7 9.3.2.3) without blocking. An already-buffered event is returned first; otherwise the
        socket is read only if it is readable right now (a zero-timeout `select` on a TCP stream; on
        other streams, such as TLS or memory streams in tests, a read bounded by 1 ms). A partial PDU
        stays buffered in the association and yields None. End-of-association events are handled as
        in `next_event`.
        """
        if not self._events:
            if self._ended is not None or self._closed:
                return None
            sock = getattr(self.stream, "socket", None)
            if sock is not None and hasattr(sock, "fileno"):
                readable, _, _ = select.select([sock.fileno()], [], [], 0)
                if readable:
                    await self._receive_some()
            else:
                with trio.move_on_after(0.001):
                    await self._receive_some()
            if not self._events:
                return None
        return await self.next_event()

    async def read_dataset(self, context_id: int, *, limit: int = 64 * 1024 * 1024) -> bytes:
        """Collect the data set that follows a command (for small, non-streamed data sets)."""
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self.next_event()
            if isinstance(event, DataSetFragment):
                size += len(event.data)
                if size > limit:
                    await self.abort(why=f"data set larger than {limit} bytes")
                    raise AssociationAborted(f"data set larger than {limit} bytes", local=True)
                parts.append(event.data)
            elif isinstance(event, MessageComplete):
                return b"".join(parts)
            else:
                raise unexpected_event(event, "a data set")

    async def discard_dataset(self) -> None:
        """Read the data set that follows a command and throw it away, in constant memory."""
        while True:
            event = await self.next_event()
            if isinstance(event, MessageComplete):
                return
            if not isinstance(event, DataSetFragment):
                raise unexpected_event(event, "the rest of a refused data set")

    # ------------------------------------------------------------ sending

    def _queue_pdv(self, context_id: int, is_command: bool, is_last: bool, chunk: bytes | memoryview) -> None:
        # Header and data go out as two parts joined once at flush: no copy of the data per PDU.
        self._parts.append(P.encode_pdata_header(context_id, is_command, is_last, len(chunk)))
        self._parts.append(chunk)
        self._out_pending += len(chunk) + 12

    def _queue_command(self, context_id: int, message: Message, command: bytes | None = None) -> None:
        """The command set (`command`, or `message` encoded now), in as many PDVs as the peer's Maximum
        Length needs (PS3.7 6.3.1)."""
        self._count(context_id, message)
        if log.isEnabledFor(logging.DEBUG):
            self._trace("out", f"{command_name(message)} on context {context_id}: {describe_command(message)}")
        for chunk, last in fragment(encode_message(message) if command is None else command, self.max_pdv_data):
            self._queue_pdv(context_id, True, last, chunk)

    async def send_message(
        self, context_id: int, message: Message, dataset: bytes | memoryview | None = None, *,
        command: bytes | None = None,
    ) -> None:
        """Send a DIMSE message (command and optional data set) on `context_id`, flushed. `command`:
        the message's command set already encoded (`encode_message(message)`), made by the caller when
        it had time (a C-STORE's success response while its data set still arrives)."""
        self._check_can_send()
        transfer = self.sending = self._transfer(context_id, message)
        try:
            self._queue_command(context_id, message, command)
            if dataset is not None:
                view = memoryview(dataset)
                transfer.dataset_total = len(view)
                step = self.max_pdv_data
                if len(view) == 0:
                    self._queue_pdv(context_id, False, True, b"")
                for start in range(0, len(view), step):
                    chunk = view[start : start + step]
                    self._queue_pdv(context_id, False, start + step >= len(view), chunk)
                    transfer.dataset_bytes += len(chunk)
                    if self._out_pending >= FLUSH_BYTES:
                        await self.flush()
            await self.flush()
        finally:
            self.sending = None

    def queue_encoded(self, context_id: int, message: Message, command: bytes,
                      datasets: list[bytes] | list[bytes | memoryview]) -> None:
        """Queue one message per data set of `datasets`, all with the command set `command` of
        `message` (`encode_message(message)`, made once by a caller that sends the same command many
        times: a C-FIND's pending responses differ only in their data sets): the PDUs `send_message`
        would write for each. The command's PDUs are made once for all, and a
        data set that fits one PDV goes into one buffer with them (one iovec per message at the
        write, not four). Nothing is written: the caller flushes, and bounds what it queues."""
        self._check_can_send()
        step = self.max_pdv_data
        head = b"".join(P.encode_pdata_header(context_id, True, last, len(chunk)) + chunk
                        for chunk, last in fragment(command, step))
        counted = is_request(message)
        debug = log.isEnabledFor(logging.DEBUG)
        parts = self._parts
        for dataset in datasets:
            if counted:
                self._count(context_id, message)
            if debug:
                self._trace("out", f"{command_name(message)} on context {context_id}: {describe_command(message)}")
            size = len(dataset)
            if size <= step:
                parts.append(b"".join((head, P.encode_pdata_header(context_id, False, True, size), dataset)))
                self._out_pending += len(head) + 12 + size
                continue
            parts.append(head)
            self._out_pending += len(head)
            for chunk, last in fragment(dataset, step):
                self._queue_pdv(context_id, False, last, chunk)

    async def send_message_from_file(
        self, context_id: int, message: Message, fileobj: BinaryIO, offset: int, length: int,
        *, ahead: ReadAhead | None = None,
    ) -> None:
        """Send a command and then `length` data-set bytes read from `fileobj` at `offset`, streaming.

        The file is read one block (READ_BLOCK) at a time with one `preadv` straight into the block's
        PDUs laid out in a reused buffer, the PDU headers written in the gaps: one read syscall and one
        write per block whatever the PDU size, no per-PDU copy (with 16 KiB PDUs a 0.5 MB image is 32
        PDUs). The block is written before the buffer is reused. `ahead`, from `read_ahead` on the
        same file, is used as the first block (it was read while the previous message's response was
        awaited).
        """
        self._check_can_send()
        transfer = self.sending = self._transfer(context_id, message)
        transfer.dataset_total = length
        try:
            fd = fileobj.fileno()
            step = self.max_pdv_data
            if ahead is not None and (ahead.context_id, ahead.fd, ahead.offset, ahead.length, ahead.step) != (
                    context_id, fd, offset, length, step):
                ahead = None  # not this file's, or the association's PDU size differs: read it now
            self._queue_command(context_id, message,
                                ahead.command if ahead is not None and ahead.message is message else None)
            if length == 0:
                self._queue_pdv(context_id, False, True, b"")
            pdus_per_block = max(1, READ_BLOCK // step)
            block_size = pdus_per_block * step
            sent = 0
            while sent < length:
                size = min(block_size, length - sent)
                if ahead is not None:
                    block, got, ahead = ahead.block, size, None
                else:
                    block = self._lay_out_block("_file_buffer", context_id, step, size, last=sent + size >= length)
                    got = self._read_block(fd, block, step, size, offset + sent)
                if got != size:
                    self._parts.clear()
                    await self.abort(why="file shrank while it was being sent")
                    raise AssociationAborted("file shrank while it was being sent", local=True)
                self._parts.append(block)
                self._out_pending += len(block)
                sent += size
                transfer.dataset_bytes = sent
                await self.flush()  # before the buffer is reused for the next block
            await self.flush()
        finally:
            self.sending = None

    def read_ahead(
        self, context_id: int, fileobj: BinaryIO, offset: int, length: int, message: Message | None = None
    ) -> ReadAhead | None:
        """Read the first block of a data set that `send_message_from_file` will send next, now: call it
        after a message went out and before its response is awaited, so that the read overlaps the
        peer's work (and with `message`, its command is encoded now too). None when the file is
        shorter than `length` (the send then reports it)."""
        step = self.max_pdv_data
        size = min(max(1, READ_BLOCK // step) * step, length)
        if size == 0:
            return None
        block = self._lay_out_block("_ahead_buffer", context_id, step, size, last=size >= length)
        fd = fileobj.fileno()
        if self._read_block(fd, block, step, size, offset) != size:
            return None
        command = None if message is None else encode_message(message)
        return ReadAhead(context_id, fd, offset, length, step, block, message, command)

    @staticmethod
    def _read_block(fd: int, block: memoryview, step: int, size: int, offset: int) -> int:
        """One preadv of `size` bytes into the data slots between the PDU headers of `block`."""
        slots = [block[start + 12 : start + 12 + min(step, size - k * step)]
                 for k, start in enumerate(range(0, len(block), step + 12))]
        return os.preadv(fd, slots, offset)

    def _lay_out_block(self, which: str, context_id: int, step: int, size: int, *, last: bool) -> memoryview:
        """A view of the buffer named `which` (replaced by a larger one when too small: views of the old
        one may still exist) holding the P-DATA-TF headers of `size` data bytes cut into PDUs of `step`
        bytes, with room for the data between them (PS3.8 9.3.5: one PDV per PDU)."""
        count = -(-size // step)
        need = size + 12 * count
        buf: bytearray = getattr(self, which)
        if len(buf) < need:
            buf = bytearray(need)
            setattr(self, which, buf)
        full = P.encode_pdata_header(context_id, False, False, step)
        pos = 0
        for k in range(count):
            n = min(step, size - k * step)
            header = full if n == step and not (last and k == count - 1) else P.encode_pdata_header(
                context_id, False, last and k == count - 1, n)
            buf[pos : pos + 12] = header
            pos += 12 + n
        return memoryview(buf)[:need]

    def _transfer(self, context_id: int, message: Message) -> Transfer:
        ctx = self.contexts.get(context_id)
        return Transfer(command_name(message), ctx.abstract_syntax if ctx else "")

    def _check_can_send(self) -> None:
        if not self.is_open:
            raise AssociationAborted(f"association with {self.remote} is no longer open", local=False)

    # ------------------------------------------------------------ ending

    async def release(self) -> None:
        """A-RELEASE as requestor; waits for the RP within ARTIM, else aborts."""
        if not self.is_open or self.assoc.state is not State.STA6:
            await self._close_transport()
            return
        self.assoc.release()
        await self.flush()
        with trio.move_on_after(self.timeouts.artim) as scope:
            while True:
                try:
                    event = await self.next_event()
                except AssociationAborted:
                    return
                if isinstance(event, ReleaseRequested):  # release collision, PS3.8 AR-8
                    self.assoc.release_response()
                    await self.flush()
                elif isinstance(event, (ReleaseConfirmed, Aborted)):
                    if isinstance(event, ReleaseConfirmed) and self.assoc.state is State.STA12:
                        self.assoc.release_response()
                        await self.flush()
                    break
        if scope.cancelled_caught:
            await self.abort(why=f"no A-RELEASE-RP within {self.timeouts.artim:g} s")
        await self._close_transport()

    async def answer_release(self) -> None:
        """Answer the peer's A-RELEASE-RQ, then wait (ARTIM) for it to close the transport."""
        self.note_end("released by the peer")
        self.assoc.release_response()
        await self.flush()
        await self.drain()

    async def abort(self, reason: int = 0, *, linger: float | None = None, why: str = "") -> None:
        """A-ABORT (service user), then wait up to `linger` seconds for the peer to close.

        PS3.8 AA-1 starts ARTIM and waits for the peer to close, so that the A-ABORT is not lost to
        a reset; the default wait is ARTIM capped at 5 s. A caller that is giving up on a silent
        peer (a deadline of its own has passed) passes `linger=0`: the A-ABORT is already in the
        kernel's send buffer and the peer has sent nothing we could be resetting it for.
        """
        if self._closed:
            return
        self.note_end(f"aborted by us: {why}" if why else "aborted by us")
        self._parts.clear()  # no P-DATA after an A-ABORT
        self.assoc.abort(reason)
        try:
            await self.flush()
        except AssociationAborted:
            return
        await self.drain(linger)

    async def reject(self, rj: P.AAssociateRJ, why: str = "") -> None:
        """A-ASSOCIATE-RJ to the request being answered, then wait (ARTIM) for the peer to close."""
        self.note_end(f"rejected: {rj.describe()}{why}")
        self.assoc.reject(rj)
        await self.flush()
        await self.drain()

    async def drain(self, linger: float | None = None) -> None:
        """Read and discard until the peer closes (Sta13), at most `linger` s (default ARTIM, <= 5 s)."""
        if self._closed:
            return
        wait = min(self.timeouts.artim, 5.0) if linger is None else linger
        with trio.move_on_after(wait):
            while wait > 0 and not self._closed and not self.assoc.should_close:
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = b""
                self.assoc.receive_data(data or None)
                if not data:
                    break
        await self._close_transport()

    async def aclose(self) -> None:
        await self._close_transport()


def unexpected_event(event: object, wanted: str) -> AssociationAborted:
    """The error to raise when `event` arrived while the caller waited for `wanted`."""
    if isinstance(event, Aborted):
        return AssociationAborted(f"association aborted while waiting for {wanted}: {event.detail}", local=False)
    if isinstance(event, ReleaseRequested):
        return AssociationAborted(f"peer asked to release while we waited for {wanted}", local=False)
    return AssociationAborted(f"unexpected {type(event).__name__} while waiting for {wanted}", local=False)
