"""A sans-IO DICOM Upper Layer association endpoint (PS3.8 9.2), in the manner of h2's connection.

Invariants:
- Inputs are bytes from the transport (`receive_data`; `None` means the transport closed, Evt17), the
  ARTIM expiry (`artim_expired`, Evt18) and local primitives (`request`, `accept`, `reject`,
  `send_pdata`, `release`, `release_response`, `abort`). Outputs are indications returned from the
  inputs, bytes from `data_to_send()`, and three flags the runner obeys: `need_connect`,
  `artim_running` (with `artim_generation`, bumped on every start or restart) and `should_close`.
- Every transition goes through `fsm.TRANSITIONS`; the next state is the action's, never chosen here
  except for the two branching actions AE-6 and AR-8. One shortcut: a P-DATA-TF received in Sta6
  (the hot path, ~32 PDUs per 0.5 MB image) does what its cell, DT-2, does (a DataReceived; no
  timer, no flag, the state stays) without the look-ups; the cell is checked at import.
- A peer event that has no cell in its state is treated as Evt19 (invalid PDU); a local primitive that
  has no cell raises `ProtocolError` without changing state (the service code asked for something the
  association cannot do now, e.g. sending after the peer aborted).
- A malformed PDU is answered by the state machine itself: the A-ABORT lands in the outbound buffer.
"""

from __future__ import annotations

from enum import Enum

from agent.errors import ProtocolError
from agent.ul import pdu as P
from agent.ul.fsm import BRANCHES, NEXT_STATE, TRANSITIONS, Action, Event, State
from agent.ul.values import value


class Role(Enum):
    REQUESTOR = "requestor"
    ACCEPTOR = "acceptor"


# ---------------------------------------------------------------- indications (events out)


@value
class AssociationRequested:
    """A-ASSOCIATE indication: answer with `accept()` or `reject()`."""

    request: P.AAssociateRQ


@value
class AssociationAccepted:
    """A-ASSOCIATE confirmation (accept)."""

    accept: P.AAssociateAC


@value
class AssociationRejected:
    """A-ASSOCIATE confirmation (reject), from the peer's A-ASSOCIATE-RJ."""

    reject: P.AAssociateRJ


@value
class DataReceived:
    """P-DATA indication."""

    pdata: P.PDataTF


@value
class ReleaseRequested:
    """A-RELEASE indication; answer with `release_response()`. `collision` per PS3.8 9.2.3 AR-8."""

    collision: bool = False


@value
class ReleaseConfirmed:
    """A-RELEASE confirmation: the association ended normally."""


@value
class Aborted:
    """A-ABORT or A-P-ABORT indication. `local` is True when this side detected the fault."""

    source: int
    reason: int
    local: bool
    detail: str = ""


Indication = (
    AssociationRequested
    | AssociationAccepted
    | AssociationRejected
    | DataReceived
    | ReleaseRequested
    | ReleaseConfirmed
    | Aborted
)

_PEER_EVENTS = {
    P.AAssociateAC: Event.EVT3,
    P.AAssociateRJ: Event.EVT4,
    P.AAssociateRQ: Event.EVT6,
    P.PDataTF: Event.EVT10,
    P.AReleaseRQ: Event.EVT12,
    P.AReleaseRP: Event.EVT13,
    P.AAbort: Event.EVT16,
}

_PDATA = P.PDataTF
_STA6 = State.STA6
assert TRANSITIONS[(_STA6, Event.EVT10)] is Action.DT_2 and NEXT_STATE[Action.DT_2] is _STA6

_ARTIM_START = {Action.AE_5, Action.AE_8, Action.AR_4, Action.AA_1, Action.AA_8}
_ARTIM_STOP = {Action.AE_6, Action.AR_5, Action.AA_2, Action.AA_5}
_CLOSE = {Action.AE_4, Action.AR_3, Action.AA_2, Action.AA_3, Action.AA_4, Action.AA_5, Action.AR_5}


class Association:
    """One association, either side, as a state machine over bytes."""

    def __init__(self, role: Role, *, max_pdu_receive: int = 0) -> None:
        self.role = role
        self.state = State.STA1
        self.reader = P.PDUReader(max_pdata_length=max_pdu_receive)
        self.artim_running = False
        self.artim_generation = 0
        self.need_connect = False
        self.should_close = False
        self.request_pdu: P.AAssociateRQ | None = None
        self.accept_pdu: P.AAssociateAC | None = None
        self._out: list[bytes | memoryview] = []
        self._pending_pdu: P.PDU | None = None  # the PDU that triggered the current event
        self._fault = ""
        self._pending_raw: bytes = b""
        self._abort_reason = 0

    # ------------------------------------------------------------ outputs

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        data = bytes(self._out[0]) if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        return data

    @property
    def established(self) -> bool:
        return self.state is State.STA6

    @property
    def finished(self) -> bool:
        """True once the association no longer exists (Sta1 after it began, or awaiting close)."""
        return self.state in (State.STA1, State.STA13)

    # ------------------------------------------------------------ transport inputs

    def connection_made(self) -> list[Indication]:
        """The transport connection is open: Evt2 for the requestor, Evt5 for the acceptor."""
        if self.role is Role.REQUESTOR:
            self.need_connect = False
            return self._fire(Event.EVT2)
        return self._fire(Event.EVT5)

    def receive_data(self, data: bytes | bytearray | memoryview | None) -> list[Indication]:
        """Bytes from the peer; `None` when the transport closed (Evt17)."""
        if data is None:
            return self._fire(Event.EVT17)
        self.reader.feed(data)
        out: list[Indication] = []
        while not self.should_close:
            try:
                pdu = self.reader.next_pdu()
            except P.PDUDecodeError as exc:
                self.reader = P.PDUReader(self.reader.max_pdata_length)  # discard the garbage
                self._fault = str(exc)
                out += self._fire(Event.EVT19, abort_reason=exc.reason)
                break
            if pdu is None:
                break
            if pdu.__class__ is _PDATA and self.state is _STA6:
                # Evt10 in Sta6 is DT-2: a P-DATA indication, no timer, no flag, the state stays
                # (what `_peer_pdu` would do, without its table look-ups: ~32 PDUs per 0.5 MB image).
                out.append(DataReceived(pdu))
                continue
            out += self._peer_pdu(pdu)
        return out

    def artim_expired(self) -> list[Indication]:
        """The runner's ARTIM deadline passed (Evt18)."""
        if not self.artim_running:
            return []
        return self._fire(Event.EVT18)

    # ------------------------------------------------------------ local primitives

    def request(self, rq: P.AAssociateRQ) -> None:
        """A-ASSOCIATE request: the runner must connect (`need_connect`) and then call connection_made."""
        self._check_local(Event.EVT1)
        self.request_pdu = rq
        self._fire(Event.EVT1, local=True)

    def accept(self, ac: P.AAssociateAC) -> None:
        self._check_local(Event.EVT7)
        self.accept_pdu = ac
        self._pending_pdu = ac
        self._fire(Event.EVT7, local=True)

    def reject(self, rj: P.AAssociateRJ) -> None:
        self._check_local(Event.EVT8)
        self._pending_pdu = rj
        self._fire(Event.EVT8, local=True)

    def _check_local(self, event: Event) -> None:
        """Refuse a local primitive before it changes anything (the state stays as it was)."""
        if (self.state, event) not in TRANSITIONS:
            raise ProtocolError(f"{event.value} is not possible in {self.state.name} ({self.state.value})")

    def send_pdata(self, pdata: P.PDataTF | bytes) -> None:
        """P-DATA request: a PDataTF, or the already-encoded bytes of one (the hot path)."""
        self._pending_pdu = None
        self._pending_raw = pdata if isinstance(pdata, (bytes, bytearray)) else P.encode_pdu(pdata)
        self._fire(Event.EVT9, local=True)

    def send_pdata_many(self, encoded: list[bytes | memoryview]) -> None:
        """Several already-encoded P-DATA-TF PDUs (the data-set hot path).

        Equivalent to calling `send_pdata` for each, but the table is consulted once: Evt9 leaves
        the state unchanged in both states that allow it (DT-1 stays in Sta6, AR-7 in Sta8)."""
        if (self.state, Event.EVT9) not in TRANSITIONS:
            raise ProtocolError(f"{Event.EVT9.value} is not possible in {self.state.name} ({self.state.value})")
        self._out.extend(encoded)

    def release(self) -> None:
        self._fire(Event.EVT11, local=True)

    def release_response(self) -> None:
        self._fire(Event.EVT14, local=True)

    def abort(self, reason: int = 0) -> None:
        """A-ABORT request (service-user source). A no-op once the association is gone."""
        if self.state in (State.STA1, State.STA13, State.STA2):
            if self.state is State.STA2:
                self._send(P.AAbort(P.ABORT_SOURCE_USER, reason))
                self._enter(State.STA13)
                self._start_artim()
            return
        self._abort_reason = reason
        self._fire(Event.EVT15, local=True)

    # ------------------------------------------------------------ machinery

    def _peer_pdu(self, pdu: P.PDU) -> list[Indication]:
        event = _PEER_EVENTS[type(pdu)]
        self._pending_pdu = pdu
        if (self.state, event) not in TRANSITIONS:
            self._fault = f"unexpected {type(pdu).__name__} in {self.state.name}"
            return self._fire(Event.EVT19, abort_reason=P.ABORT_UNEXPECTED_PDU)
        return self._fire(event)

    def _fire(self, event: Event, *, local: bool = False, abort_reason: int = 0) -> list[Indication]:
        action = TRANSITIONS.get((self.state, event))
        if action is None:
            if local:
                raise ProtocolError(
                    f"{event.value} is not possible in {self.state.name} ({self.state.value})"
                )
            # Evt17/Evt18 in a state with no cell (Sta1): nothing to do.
            return []
        return self._perform(action, event, abort_reason)

    def _enter(self, state: State) -> None:
        self.state = state

    def _start_artim(self) -> None:
        self.artim_running = True
        self.artim_generation += 1

    def _send(self, pdu: P.PDU) -> None:
        self._out.append(P.encode_pdu(pdu))

    def _perform(self, action: Action, event: Event, abort_reason: int) -> list[Indication]:
        out: list[Indication] = []
        pdu = self._pending_pdu
        nxt = NEXT_STATE[action]
        if action in _ARTIM_STOP:
            self.artim_running = False
        if action is Action.AE_1:
            self.need_connect = True
        elif action is Action.AE_2:
            assert self.request_pdu is not None
            self._send(self.request_pdu)
        elif action is Action.AE_3:
            assert isinstance(pdu, P.AAssociateAC)
            self.accept_pdu = pdu
            out.append(AssociationAccepted(pdu))
        elif action is Action.AE_4:
            assert isinstance(pdu, P.AAssociateRJ)
            out.append(AssociationRejected(pdu))
        elif action is Action.AE_6:
            assert isinstance(pdu, P.AAssociateRQ)
            acceptable, rejected = BRANCHES[action]
            if pdu.protocol_version & 1:
                self.request_pdu = pdu
                nxt = acceptable
                out.append(AssociationRequested(pdu))
            else:  # PS3.8 9.3.2: bit 0 is protocol version 1, the only one we speak
                self._send(P.AAssociateRJ(P.RJ_PERMANENT, P.RJ_SOURCE_ACSE, P.RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED))
                nxt = rejected
        elif action in (Action.AE_7, Action.AE_8):
            assert pdu is not None
            self._send(pdu)
        elif action in (Action.DT_1, Action.AR_7):
            self._out.append(self._pending_raw)
        elif action in (Action.DT_2, Action.AR_6):
            assert isinstance(pdu, P.PDataTF)
            out.append(DataReceived(pdu))
        elif action is Action.AR_1:
            self._send(P.AReleaseRQ())
        elif action is Action.AR_2:
            out.append(ReleaseRequested())
        elif action in (Action.AR_3, Action.AR_10):
            out.append(ReleaseConfirmed())
        elif action in (Action.AR_4, Action.AR_9):
            self._send(P.AReleaseRP())
        elif action is Action.AR_8:
            requestor_side, acceptor_side = BRANCHES[action]
            nxt = requestor_side if self.role is Role.REQUESTOR else acceptor_side
            out.append(ReleaseRequested(collision=True))
        elif action is Action.AA_1:
            if event is Event.EVT15:
                self._send(P.AAbort(P.ABORT_SOURCE_USER, self._abort_reason))
            else:
                # A PDU the peer should not have sent in Sta2: we detected it, so say so.
                reason = abort_reason or P.ABORT_UNEXPECTED_PDU
                self._send(P.AAbort(P.ABORT_SOURCE_PROVIDER, reason))
                out.append(Aborted(P.ABORT_SOURCE_PROVIDER, reason, True, self._fault or "unexpected PDU"))
        elif action is Action.AA_3:
            assert isinstance(pdu, P.AAbort)
            out.append(Aborted(pdu.source, pdu.reason, False, "A-ABORT received from the peer"))
        elif action is Action.AA_4:
            out.append(Aborted(P.ABORT_SOURCE_PROVIDER, 0, False, "connection closed by the peer"))
        elif action is Action.AA_7:
            self._send(P.AAbort(P.ABORT_SOURCE_PROVIDER, abort_reason or P.ABORT_UNEXPECTED_PDU))
        elif action is Action.AA_8:
            reason = abort_reason or P.ABORT_UNEXPECTED_PDU
            self._send(P.AAbort(P.ABORT_SOURCE_PROVIDER, reason))
            out.append(Aborted(P.ABORT_SOURCE_PROVIDER, reason, True, self._fault))
        elif action is Action.AA_2 and event is Event.EVT18 and self.state is State.STA2:
            out.append(Aborted(P.ABORT_SOURCE_PROVIDER, 0, True, "no A-ASSOCIATE-RQ within ARTIM"))
        # AE-5, AR-5, AA-2, AA-5, AA-6: nothing beyond the timer and close flags.
        if action in _ARTIM_START:
            self._start_artim()
        if action is Action.AE_6 and nxt is State.STA13:
            self._start_artim()
        if action in _CLOSE:
            self.should_close = True
        assert nxt is not None
        self._enter(nxt)
        self._pending_pdu = None
        self._fault = ""
        return out
