"""The DICOM Upper Layer state machine as data: PS3.8 Table 9-10, cell by cell.

Invariants:
- `TRANSITIONS` maps (State, Event) to an Action; the next state of every action lives in `NEXT_STATE`
  (PS3.8 9.2.2 gives one next state per action, except AE-6 and AR-8, whose two outcomes are decided
  by the association and listed in `BRANCHES`).
- A (state, event) pair missing from the table is an impossible input: for an event caused by the peer
  the association answers as for Evt19 would; for a local primitive it is a programming error.
- Nothing here performs I/O or knows about PDUs; `agent.ul.association` carries out the actions.
- State, Event and Action hash by identity (C-level), not by name (a Python call per hash): every
  PDU looks the table up, and members are singletons, so equality and hashing agree.
"""

from __future__ import annotations

from enum import Enum, unique


@unique
class State(Enum):
    """PS3.8 Table 9-1."""

    # Members are singletons compared by identity, so identity hashing is consistent with ==; Enum's
    # own __hash__ (hash of the name) is a Python-level call on every TRANSITIONS lookup.
    __hash__ = object.__hash__

    STA1 = "Idle"
    STA2 = "Transport connection open (awaiting A-ASSOCIATE-RQ PDU)"
    STA3 = "Awaiting local A-ASSOCIATE response primitive"
    STA4 = "Awaiting transport connection opening to complete"
    STA5 = "Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU"
    STA6 = "Association established and ready for data transfer"
    STA7 = "Awaiting A-RELEASE-RP PDU"
    STA8 = "Awaiting local A-RELEASE response primitive"
    STA9 = "Release collision requestor side; awaiting A-RELEASE response"
    STA10 = "Release collision acceptor side; awaiting A-RELEASE-RP PDU"
    STA11 = "Release collision requestor side; awaiting A-RELEASE-RP PDU"
    STA12 = "Release collision acceptor side; awaiting A-RELEASE response primitive"
    STA13 = "Awaiting Transport Connection Close Indication"


@unique
class Event(Enum):
    """PS3.8 Table 9-2."""

    __hash__ = object.__hash__  # identity: see State

    EVT1 = "A-ASSOCIATE request (local user)"
    EVT2 = "Transport connect confirmation (local transport service)"
    EVT3 = "A-ASSOCIATE-AC PDU received"
    EVT4 = "A-ASSOCIATE-RJ PDU received"
    EVT5 = "Transport connection indication (local transport service)"
    EVT6 = "A-ASSOCIATE-RQ PDU received"
    EVT7 = "A-ASSOCIATE response primitive (accept)"
    EVT8 = "A-ASSOCIATE response primitive (reject)"
    EVT9 = "P-DATA request primitive"
    EVT10 = "P-DATA-TF PDU received"
    EVT11 = "A-RELEASE request primitive"
    EVT12 = "A-RELEASE-RQ PDU received"
    EVT13 = "A-RELEASE-RP PDU received"
    EVT14 = "A-RELEASE response primitive"
    EVT15 = "A-ABORT request primitive"
    EVT16 = "A-ABORT PDU received"
    EVT17 = "Transport connection closed indication"
    EVT18 = "ARTIM timer expired"
    EVT19 = "Unrecognized or invalid PDU received"


@unique
class Action(Enum):
    """PS3.8 Tables 9-6 to 9-9 (AE-n, DT-n, AR-n, AA-n)."""

    __hash__ = object.__hash__  # identity: see State

    AE_1 = "Issue TRANSPORT CONNECT request primitive to local transport service"
    AE_2 = "Send A-ASSOCIATE-RQ PDU"
    AE_3 = "Issue A-ASSOCIATE confirmation (accept) primitive"
    AE_4 = "Issue A-ASSOCIATE confirmation (reject) primitive and close transport connection"
    AE_5 = "Issue transport connection response primitive; start ARTIM timer"
    AE_6 = "Stop ARTIM; issue A-ASSOCIATE indication or send A-ASSOCIATE-RJ and start ARTIM"
    AE_7 = "Send A-ASSOCIATE-AC PDU"
    AE_8 = "Send A-ASSOCIATE-RJ PDU and start ARTIM timer"
    DT_1 = "Send P-DATA-TF PDU"
    DT_2 = "Send P-DATA indication primitive"
    AR_1 = "Send A-RELEASE-RQ PDU"
    AR_2 = "Issue A-RELEASE indication primitive"
    AR_3 = "Issue A-RELEASE confirmation primitive, and close transport connection"
    AR_4 = "Issue A-RELEASE-RP PDU and start ARTIM timer"
    AR_5 = "Stop ARTIM timer"
    AR_6 = "Issue P-DATA indication"
    AR_7 = "Issue P-DATA-TF PDU"
    AR_8 = "Issue A-RELEASE indication (release collision)"
    AR_9 = "Send A-RELEASE-RP PDU"
    AR_10 = "Issue A-RELEASE confirmation primitive"
    AA_1 = "Send A-ABORT PDU (service-user source) and start (or restart) ARTIM timer"
    AA_2 = "Stop ARTIM timer if running. Close transport connection"
    AA_3 = "Issue A-ABORT or A-P-ABORT indication and close transport connection"
    AA_4 = "Issue A-P-ABORT indication primitive"
    AA_5 = "Stop ARTIM timer (transport closed before an A-ASSOCIATE-RQ)"
    AA_6 = "Ignore PDU"
    AA_7 = "Send A-ABORT PDU"
    AA_8 = "Send A-ABORT PDU (service-provider source), issue an A-P-ABORT indication, start ARTIM"


S = State
E = Event
A = Action

#: The one next state of each action (PS3.8 9.2.2); AE-6 and AR-8 branch, see BRANCHES.
NEXT_STATE: dict[Action, State | None] = {
    A.AE_1: S.STA4,
    A.AE_2: S.STA5,
    A.AE_3: S.STA6,
    A.AE_4: S.STA1,
    A.AE_5: S.STA2,
    A.AE_6: None,
    A.AE_7: S.STA6,
    A.AE_8: S.STA13,
    A.DT_1: S.STA6,
    A.DT_2: S.STA6,
    A.AR_1: S.STA7,
    A.AR_2: S.STA8,
    A.AR_3: S.STA1,
    A.AR_4: S.STA13,
    A.AR_5: S.STA1,
    A.AR_6: S.STA7,
    A.AR_7: S.STA8,
    A.AR_8: None,
    A.AR_9: S.STA11,
    A.AR_10: S.STA12,
    A.AA_1: S.STA13,
    A.AA_2: S.STA1,
    A.AA_3: S.STA1,
    A.AA_4: S.STA1,
    A.AA_5: S.STA1,
    A.AA_6: S.STA13,
    A.AA_7: S.STA13,
    A.AA_8: S.STA13,
}

#: AE-6: acceptable → Sta3, not acceptable → Sta13. AR-8: requestor → Sta9, acceptor → Sta10.
BRANCHES: dict[Action, tuple[State, State]] = {
    A.AE_6: (S.STA3, S.STA13),
    A.AR_8: (S.STA9, S.STA10),
}


def _row(event: Event, cells: dict[int, Action]) -> dict[tuple[State, Event], Action]:
    return {(State[f"STA{n}"], event): action for n, action in cells.items()}


_STA6_TO_12 = range(6, 13)

#: PS3.8 Table 9-10, one row per event; columns are state numbers.
TRANSITIONS: dict[tuple[State, Event], Action] = {
    **_row(E.EVT1, {1: A.AE_1}),
    **_row(E.EVT2, {4: A.AE_2}),
    **_row(E.EVT3, {2: A.AA_1, 3: A.AA_8, 5: A.AE_3, **{n: A.AA_8 for n in _STA6_TO_12}, 13: A.AA_6}),
    **_row(E.EVT4, {2: A.AA_1, 3: A.AA_8, 5: A.AE_4, **{n: A.AA_8 for n in _STA6_TO_12}, 13: A.AA_6}),
    **_row(E.EVT5, {1: A.AE_5}),
    **_row(E.EVT6, {2: A.AE_6, 3: A.AA_8, 5: A.AA_8, **{n: A.AA_8 for n in _STA6_TO_12}, 13: A.AA_7}),
    **_row(E.EVT7, {3: A.AE_7}),
    **_row(E.EVT8, {3: A.AE_8}),
    **_row(E.EVT9, {6: A.DT_1, 8: A.AR_7}),
    **_row(
        E.EVT10,
        {2: A.AA_1, 3: A.AA_8, 5: A.AA_8, 6: A.DT_2, 7: A.AR_6, **{n: A.AA_8 for n in range(8, 13)}, 13: A.AA_6},
    ),
    **_row(E.EVT11, {6: A.AR_1}),
    **_row(
        E.EVT12,
        {2: A.AA_1, 3: A.AA_8, 5: A.AA_8, 6: A.AR_2, 7: A.AR_8, **{n: A.AA_8 for n in range(8, 13)}, 13: A.AA_6},
    ),
    **_row(
        E.EVT13,
        {
            2: A.AA_1, 3: A.AA_8, 5: A.AA_8, 6: A.AA_8, 7: A.AR_3, 8: A.AA_8, 9: A.AA_8,
            10: A.AR_10, 11: A.AR_3, 12: A.AA_8, 13: A.AA_6,
        },
    ),
    **_row(E.EVT14, {8: A.AR_4, 9: A.AR_9, 12: A.AR_4}),
    **_row(E.EVT15, {3: A.AA_1, 4: A.AA_2, 5: A.AA_1, **{n: A.AA_1 for n in _STA6_TO_12}}),
    **_row(E.EVT16, {2: A.AA_2, 3: A.AA_3, 5: A.AA_3, **{n: A.AA_3 for n in _STA6_TO_12}, 13: A.AA_2}),
    **_row(E.EVT17, {2: A.AA_5, 3: A.AA_4, 4: A.AA_4, 5: A.AA_4, **{n: A.AA_4 for n in _STA6_TO_12}, 13: A.AR_5}),
    **_row(E.EVT18, {2: A.AA_2, 13: A.AA_2}),
    **_row(E.EVT19, {2: A.AA_1, 3: A.AA_8, 5: A.AA_8, **{n: A.AA_8 for n in _STA6_TO_12}, 13: A.AA_7}),
}
