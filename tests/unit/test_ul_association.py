"""agent.ul.association: two sans-IO endpoints driven against each other, and every received-PDU cell of
PS3.8 Table 9-10 reached legitimately and checked against the independent transcription."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import ps38_table_9_10 as ps38
from agent.errors import ProtocolError
from agent.ul import pdu as P
from agent.ul.association import (
    Aborted,
    Association,
    AssociationAccepted,
    AssociationRejected,
    AssociationRequested,
    DataReceived,
    Indication,
    ReleaseConfirmed,
    ReleaseRequested,
    Role,
)
from agent.ul.fsm import State
from agent.ul.negotiation import ProposedContext, build_request

ECHO = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"

Deliver = Callable[[Association, bytes], list[Indication]]


def whole(dst: Association, data: bytes) -> list[Indication]:
    return dst.receive_data(data)


def byte_at_a_time(dst: Association, data: bytes) -> list[Indication]:
    out: list[Indication] = []
    for i in range(len(data)):
        out += dst.receive_data(data[i : i + 1])
    return out


def shuttle(src: Association, dst: Association, deliver: Deliver = whole) -> list[Indication]:
    return deliver(dst, src.data_to_send())


def make_rq(**overrides: object) -> P.AAssociateRQ:
    rq = build_request("ECHOSCU", "ANY-SCP", [ProposedContext(ECHO, (IMPLICIT,))], max_pdu_receive=16384)
    if overrides:
        fields = {f: getattr(rq, f) for f in rq.__dataclass_fields__}
        fields.update(overrides)
        rq = P.AAssociateRQ(**fields)  # type: ignore[arg-type]
    return rq


def make_ac(rq: P.AAssociateRQ) -> P.AAssociateAC:
    return P.AAssociateAC(
        called_ae=rq.called_ae,
        calling_ae=rq.calling_ae,
        presentation_contexts=(P.PresentationContextAC(1, P.PC_ACCEPTANCE, IMPLICIT),),
        user_information=(P.MaximumLength(16384), P.ImplementationClassUID("1.2.3.4")),
    )


PDATA = P.PDataTF((P.PDV(1, True, True, b"\x00\x01\x02\x03"),))


def abort_in(data: bytes) -> P.AAbort:
    pdu = P.decode_pdu(data)
    assert isinstance(pdu, P.AAbort), pdu
    return pdu


# ---------------------------------------------------------------- reaching each state legitimately


def connected(deliver: Deliver = whole) -> tuple[Association, Association, list[Indication]]:
    """Requestor in Sta5 (A-ASSOCIATE-RQ sent), acceptor in Sta3 (indication issued)."""
    req, acc = Association(Role.REQUESTOR), Association(Role.ACCEPTOR)
    req.request(make_rq())
    assert req.need_connect and req.state is State.STA4
    req.connection_made()
    assert acc.connection_made() == []
    assert acc.state is State.STA2 and acc.artim_running
    assert req.state is State.STA5
    ind = shuttle(req, acc, deliver)
    return req, acc, ind


def established(deliver: Deliver = whole) -> tuple[Association, Association]:
    req, acc, _ = connected(deliver)
    acc.accept(make_ac(acc.request_pdu))  # type: ignore[arg-type]
    shuttle(acc, req, deliver)
    assert req.state is State.STA6 and acc.state is State.STA6
    return req, acc


def in_state(n: int, role: Role) -> tuple[Association, Association]:
    """(the association in Sta`n` with `role`, its peer). Each path follows the standard's transitions."""
    if n == 2:
        acc = Association(Role.ACCEPTOR)
        acc.connection_made()
        return acc, Association(Role.REQUESTOR)
    if n in (3, 5):
        req, acc, _ = connected()
        if n == 5:
            acc.data_to_send()
            return req, acc
        return acc, req
    req, acc = established()
    me, peer = (req, acc) if role is Role.REQUESTOR else (acc, req)
    if n == 6:
        return me, peer
    if n == 7:
        me.release()
        me.data_to_send()
        return me, peer
    if n == 8:
        peer.release()
        shuttle(peer, me)
        return me, peer
    if n in (9, 10, 11, 12):
        # Release collision: both send A-RELEASE-RQ; requestor → Sta9, acceptor → Sta10 (AR-8).
        req.release()
        acc.release()
        rq_from_req, rq_from_acc = req.data_to_send(), acc.data_to_send()
        req.receive_data(rq_from_acc)
        acc.receive_data(rq_from_req)
        assert (req.state, acc.state) == (State.STA9, State.STA10)
        if n == 9:
            return req, acc
        if n == 10:
            return acc, req
        req.release_response()  # AR-9: requestor sends A-RELEASE-RP → Sta11
        if n == 11:
            req.data_to_send()
            return req, acc
        shuttle(req, acc)  # AR-10: acceptor → Sta12
        return acc, req
    if n == 13:
        me.abort()
        me.data_to_send()
        return me, peer
    raise AssertionError(n)


ROLE_OF_STATE = {2: Role.ACCEPTOR, 3: Role.ACCEPTOR, 5: Role.REQUESTOR, 8: Role.ACCEPTOR, 9: Role.REQUESTOR,
                 10: Role.ACCEPTOR, 11: Role.REQUESTOR, 12: Role.ACCEPTOR}


@pytest.mark.parametrize("n", [2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13])
def test_helpers_reach_their_state(n: int) -> None:
    for role in ([ROLE_OF_STATE[n]] if n in ROLE_OF_STATE else list(Role)):
        me, _ = in_state(n, role)
        assert me.state is State[f"STA{n}"]
        assert me.role is role
        assert me.data_to_send() == b""


# ---------------------------------------------------------------- every received-PDU cell of Table 9-10

_RECEIVED = {
    3: P.encode_pdu(make_ac(make_rq())),
    4: P.encode_pdu(P.AAssociateRJ(1, 1, 1)),
    6: P.encode_pdu(make_rq()),
    10: P.encode_pdu(PDATA),
    12: P.encode_pdu(P.AReleaseRQ()),
    13: P.encode_pdu(P.AReleaseRP()),
    16: P.encode_pdu(P.AAbort(0, 0)),
    19: bytes.fromhex("09 00 00000004 00000000"),  # unrecognized PDU type
}
_SENDS_ABORT = {"AA-1", "AA-7", "AA-8"}
_CELLS = [
    (n, role, evt)
    for n in (2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13)
    for role in ([ROLE_OF_STATE[n]] if n in ROLE_OF_STATE else list(Role))
    for evt in _RECEIVED
]


@pytest.mark.parametrize(
    ("n", "role", "evt"), _CELLS, ids=[f"Sta{n}-{r.value}-Evt{e}" for n, r, e in _CELLS]
)
def test_received_pdu_follows_table_9_10(n: int, role: Role, evt: int) -> None:
    table, next_states = ps38.cells(), ps38.next_states()
    me, _ = in_state(n, role)
    ind = me.receive_data(_RECEIVED[evt])
    action = table.get((n, evt))
    out = me.data_to_send()
    if action is None:
        # No cell: an unexpected PDU is an invalid one (Evt19) for this implementation.
        action = table[(n, 19)]
    expected = next_states[action]
    if action == "AE-6":
        expected = (3,)  # the RQ is acceptable (protocol version 1)
    elif action == "AR-8":
        expected = (9,) if role is Role.REQUESTOR else (10,)
    assert me.state is State[f"STA{expected[0]}"], action
    if action in _SENDS_ABORT:
        assert abort_in(out).source == P.ABORT_SOURCE_PROVIDER
        assert me.artim_running  # AA-1 / AA-8 start ARTIM; AA-7 is only met in Sta13 where it runs
    else:
        assert out == b"", action
    if action == "AA-8":
        assert [type(i) for i in ind] == [Aborted] and ind[0].local
    if action in ("AA-2", "AA-3", "AR-3", "AE-4"):
        assert me.should_close and not (action == "AA-2" and me.artim_running)


# ---------------------------------------------------------------- whole conversations


@pytest.mark.parametrize("deliver", [whole, byte_at_a_time], ids=["whole", "byte-at-a-time"])
def test_establish_transfer_release(deliver: Deliver) -> None:
    req, acc, ind = connected(deliver)
    assert [type(i) for i in ind] == [AssociationRequested]
    assert ind[0].request == make_rq()
    assert acc.state is State.STA3 and not acc.artim_running  # AE-6 stops ARTIM

    ac = make_ac(ind[0].request)
    acc.accept(ac)
    assert shuttle(acc, req, deliver) == [AssociationAccepted(ac)]
    assert req.accept_pdu == ac

    req.send_pdata(PDATA)
    assert shuttle(req, acc, deliver) == [DataReceived(PDATA)]
    acc.send_pdata(P.encode_pdu(PDATA))  # the hot path: pre-encoded bytes
    assert shuttle(acc, req, deliver) == [DataReceived(PDATA)]

    req.release()
    assert req.state is State.STA7
    assert shuttle(req, acc, deliver) == [ReleaseRequested(collision=False)]
    assert acc.state is State.STA8
    acc.send_pdata(PDATA)  # AR-7: the acceptor may still send in Sta8
    assert shuttle(acc, req, deliver) == [DataReceived(PDATA)]  # AR-6 in Sta7
    acc.release_response()
    assert acc.state is State.STA13 and acc.artim_running  # AR-4
    assert shuttle(acc, req, deliver) == [ReleaseConfirmed()]
    assert req.state is State.STA1 and req.should_close  # AR-3
    assert acc.receive_data(None) == []  # AR-5
    assert acc.state is State.STA1 and not acc.artim_running


def _conversation(deliver: Deliver) -> list[tuple[str, Indication]]:
    log: list[tuple[str, Indication]] = []
    req, acc, ind = connected(deliver)
    log += [("acc", i) for i in ind]
    acc.accept(make_ac(acc.request_pdu))  # type: ignore[arg-type]
    log += [("req", i) for i in shuttle(acc, req, deliver)]
    for _ in range(3):
        req.send_pdata(PDATA)
    log += [("acc", i) for i in shuttle(req, acc, deliver)]
    req.release()
    acc.release()
    a, b = req.data_to_send(), acc.data_to_send()
    log += [("req", i) for i in deliver(req, b)]
    log += [("acc", i) for i in deliver(acc, a)]
    return log


def test_byte_at_a_time_gives_the_same_indications() -> None:
    assert _conversation(byte_at_a_time) == _conversation(whole)
    assert len(_conversation(whole)) == 7


@pytest.mark.parametrize("deliver", [whole, byte_at_a_time], ids=["whole", "byte-at-a-time"])
def test_release_collision(deliver: Deliver) -> None:
    """PS3.8 9.2.3 and AR-8..AR-10: both sides release at once; both end released."""
    req, acc = established(deliver)
    req.release()
    acc.release()
    rq_from_req, rq_from_acc = req.data_to_send(), acc.data_to_send()
    assert P.decode_pdu(rq_from_req) == P.AReleaseRQ() == P.decode_pdu(rq_from_acc)

    assert deliver(req, rq_from_acc) == [ReleaseRequested(collision=True)]  # AR-8 → Sta9
    assert deliver(acc, rq_from_req) == [ReleaseRequested(collision=True)]  # AR-8 → Sta10
    assert (req.state, acc.state) == (State.STA9, State.STA10)

    with pytest.raises(ProtocolError):
        acc.release_response()  # the acceptor side must wait for the A-RELEASE-RP first (Sta10)
    assert acc.state is State.STA10

    req.release_response()  # AR-9: send A-RELEASE-RP → Sta11
    assert req.state is State.STA11
    assert shuttle(req, acc, deliver) == [ReleaseConfirmed()]  # AR-10 → Sta12
    assert acc.state is State.STA12
    acc.release_response()  # AR-4: send A-RELEASE-RP, start ARTIM → Sta13
    assert acc.state is State.STA13 and acc.artim_running
    assert shuttle(acc, req, deliver) == [ReleaseConfirmed()]  # AR-3 → Sta1
    assert req.state is State.STA1 and req.should_close
    acc.receive_data(None)
    assert acc.state is State.STA1


def test_rejection() -> None:
    req, acc, _ = connected()
    rj = P.AAssociateRJ(P.RJ_PERMANENT, P.RJ_SOURCE_USER, P.RJ_USER_CALLED_AE_NOT_RECOGNIZED)
    acc.reject(rj)
    assert acc.state is State.STA13 and acc.artim_running  # AE-8
    assert shuttle(acc, req) == [AssociationRejected(rj)]  # AE-4
    assert req.state is State.STA1 and req.should_close
    assert acc.artim_expired() == []  # AA-2 in Sta13: close quietly
    assert acc.state is State.STA1 and acc.should_close


@pytest.mark.parametrize("who", ["requestor", "acceptor"])
def test_abort_from_either_side(who: str) -> None:
    req, acc = established()
    me, peer = (req, acc) if who == "requestor" else (acc, req)
    me.abort(reason=0)
    assert me.state is State.STA13 and me.artim_running  # AA-1
    raw = me.data_to_send()
    assert abort_in(raw) == P.AAbort(P.ABORT_SOURCE_USER, 0)
    [ind] = peer.receive_data(raw)  # AA-3
    assert isinstance(ind, Aborted) and (ind.source, ind.local) == (0, False)
    assert peer.state is State.STA1 and peer.should_close
    assert me.receive_data(None) == []  # AR-5
    assert me.state is State.STA1


def test_abort_while_awaiting_association_response() -> None:
    req, acc, _ = connected()
    req.abort()  # Sta5 + Evt15: AA-1
    assert req.state is State.STA13
    [ind] = shuttle(req, acc)  # Sta3 + Evt16: AA-3
    assert isinstance(ind, Aborted) and acc.state is State.STA1


def test_transport_closed_in_sta6() -> None:
    req, acc = established()
    [ind] = req.receive_data(None)  # AA-4
    assert isinstance(ind, Aborted) and ind.local is False
    assert req.state is State.STA1


def test_transport_closed_in_sta2_is_quiet() -> None:
    acc = Association(Role.ACCEPTOR)
    acc.connection_made()
    assert acc.receive_data(None) == []  # AA-5
    assert acc.state is State.STA1 and not acc.artim_running


def test_artim_expiry_in_sta2() -> None:
    acc = Association(Role.ACCEPTOR)
    acc.connection_made()
    gen = acc.artim_generation
    assert acc.artim_running and gen > 0
    [ind] = acc.artim_expired()  # AA-2
    assert isinstance(ind, Aborted) and ind.local
    assert acc.state is State.STA1 and acc.should_close and not acc.artim_running
    assert acc.data_to_send() == b""


def test_artim_expiry_in_sta13() -> None:
    req, acc = established()
    req.release()
    shuttle(req, acc)
    acc.release_response()
    assert acc.state is State.STA13 and acc.artim_running
    acc.artim_expired()  # AA-2
    assert acc.state is State.STA1 and acc.should_close and not acc.artim_running


def test_artim_expiry_when_not_running_is_ignored() -> None:
    req, acc = established()
    assert acc.artim_expired() == [] and acc.state is State.STA6


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (bytes.fromhex("09 00 00000004 00000000"), P.ABORT_UNRECOGNIZED_PDU),
        (bytes.fromhex("04 00 0000000a 00000006 02 03 aabbccdd"), P.ABORT_INVALID_PARAMETER_VALUE),  # even ID
        (bytes.fromhex("06 00 00000005 0000000000"), P.ABORT_INVALID_PARAMETER_VALUE),
        (P.encode_pdu(make_ac(make_rq())), P.ABORT_UNEXPECTED_PDU),  # valid PDU, wrong state: AA-8
    ],
    ids=["unknown-type", "even-context-id", "bad-length", "unexpected-AC"],
)
@pytest.mark.parametrize("deliver", [whole, byte_at_a_time], ids=["whole", "byte-at-a-time"])
def test_bad_pdu_in_sta6_is_answered_with_an_abort(raw: bytes, reason: int, deliver: Deliver) -> None:
    req, acc = established()
    ind = deliver(acc, raw)
    assert acc.state is State.STA13 and acc.artim_running
    assert abort_in(acc.data_to_send()) == P.AAbort(P.ABORT_SOURCE_PROVIDER, reason)
    assert [type(i) for i in ind] == [Aborted]
    assert (ind[0].source, ind[0].reason, ind[0].local) == (2, reason, True)


def test_pdata_over_our_maximum_length_is_answered_with_an_abort() -> None:
    small = Association(Role.ACCEPTOR, max_pdu_receive=8)
    small.connection_made()
    small.receive_data(P.encode_pdu(make_rq()))
    small.accept(make_ac(make_rq()))
    small.data_to_send()
    small.receive_data(P.encode_pdu(PDATA))  # 10 data bytes > 8
    assert abort_in(small.data_to_send()) == P.AAbort(2, P.ABORT_INVALID_PARAMETER_VALUE)
    assert small.state is State.STA13


@pytest.mark.parametrize(
    ("n", "role", "primitive"),
    [
        (5, Role.REQUESTOR, lambda a: a.send_pdata(PDATA)),
        (5, Role.REQUESTOR, lambda a: a.release()),
        (3, Role.ACCEPTOR, lambda a: a.release_response()),
        (6, Role.REQUESTOR, lambda a: a.accept(make_ac(make_rq()))),
        (6, Role.ACCEPTOR, lambda a: a.release_response()),
        (7, Role.REQUESTOR, lambda a: a.send_pdata(PDATA)),
        (7, Role.REQUESTOR, lambda a: a.release()),
        (13, Role.ACCEPTOR, lambda a: a.send_pdata(PDATA)),
        (3, Role.ACCEPTOR, lambda a: a.request(make_rq())),
    ],
)
def test_local_primitive_in_wrong_state_raises_and_changes_nothing(
    n: int, role: Role, primitive: Callable[[Association], None]
) -> None:
    me, _ = in_state(n, role)
    artim = (me.artim_running, me.artim_generation)
    with pytest.raises(ProtocolError):
        primitive(me)
    assert me.state is State[f"STA{n}"]
    assert me.data_to_send() == b""
    assert (me.artim_running, me.artim_generation) == artim


def test_refused_primitive_keeps_the_received_request() -> None:
    acc, _ = in_state(3, Role.ACCEPTOR)
    received = acc.request_pdu
    with pytest.raises(ProtocolError):
        acc.request(make_rq(calling_ae="SOMEONE_ELSE"))
    assert acc.request_pdu == received


def test_protocol_version_2_only_is_rejected() -> None:
    acc = Association(Role.ACCEPTOR)
    acc.connection_made()
    assert acc.receive_data(P.encode_pdu(make_rq(protocol_version=2))) == []
    assert P.decode_pdu(acc.data_to_send()) == P.AAssociateRJ(1, 2, 2)  # AE-6, not acceptable
    assert acc.state is State.STA13 and acc.artim_running


def test_protocol_version_with_bit_0_and_more_is_accepted() -> None:
    acc = Association(Role.ACCEPTOR)
    acc.connection_made()
    [ind] = acc.receive_data(P.encode_pdu(make_rq(protocol_version=3)))
    assert isinstance(ind, AssociationRequested) and acc.state is State.STA3


def test_unexpected_pdu_in_sta2_reports_the_reason_it_sends() -> None:
    acc = Association(Role.ACCEPTOR)
    acc.connection_made()
    [ind] = acc.receive_data(P.encode_pdu(P.AReleaseRQ()))
    sent = abort_in(acc.data_to_send())
    assert (sent.source, sent.reason) == (2, P.ABORT_UNEXPECTED_PDU)
    assert isinstance(ind, Aborted) and (ind.source, ind.reason) == (sent.source, sent.reason)


def test_abort_request_in_sta4_closes_without_sending() -> None:
    req = Association(Role.REQUESTOR)
    req.request(make_rq())
    req.abort()  # AA-2
    assert req.state is State.STA1 and req.should_close and req.data_to_send() == b""


def test_further_pdus_after_abort_are_ignored() -> None:
    req, acc = established()
    acc.receive_data(bytes.fromhex("09 00 00000004 00000000"))
    acc.data_to_send()
    assert acc.receive_data(P.encode_pdu(PDATA)) == []  # AA-6 in Sta13
    assert acc.data_to_send() == b"" and acc.state is State.STA13
