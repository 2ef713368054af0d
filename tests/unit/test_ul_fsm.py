"""agent.ul.fsm against an independent transcription of PS3.8 Table 9-10 (and pynetdicom's, as a third)."""

from __future__ import annotations

import itertools

import pytest

import ps38_table_9_10 as ps38
from agent.ul.fsm import BRANCHES, NEXT_STATE, TRANSITIONS, Action, Event, State

STANDARD = ps38.cells()
STANDARD_NEXT = ps38.next_states()
ALL_CELLS = list(itertools.product(range(1, 14), range(1, 20)))


def _state(n: int) -> State:
    return State[f"STA{n}"]


def _event(n: int) -> Event:
    return Event[f"EVT{n}"]


def _action_name(action: Action) -> str:
    return action.name.replace("_", "-")


def test_enums_have_the_standards_sizes() -> None:
    assert len(State) == 13
    assert len(Event) == 19
    assert {_action_name(a) for a in Action} | {"AA-5"} == set(STANDARD_NEXT)


def test_every_action_is_its_own_enum_member() -> None:
    # PS3.8 Tables 9-6..9-9 define 28 distinct actions; an Enum with two equal values silently merges them.
    assert len(Action) == 28
    assert Action.AA_5 is not Action.AR_5
    assert {_action_name(a) for a in Action} == set(STANDARD_NEXT)


def test_transcription_has_the_expected_number_of_cells() -> None:
    # A guard on the transcription itself: Table 9-10 has 123 non-empty cells.
    assert len(STANDARD) == 123
    assert set(STANDARD.values()) <= set(STANDARD_NEXT)


@pytest.mark.parametrize(
    ("sta", "evt"),
    ALL_CELLS,
    ids=[f"Sta{s}-Evt{e}" for s, e in ALL_CELLS],
)
def test_every_cell_matches_the_standard(sta: int, evt: int) -> None:
    ours = TRANSITIONS.get((_state(sta), _event(evt)))
    expected = STANDARD.get((sta, evt))
    assert (None if ours is None else _action_name(ours)) == expected


def test_no_extra_cells() -> None:
    assert {(int(s.name[3:]), int(e.name[3:])) for s, e in TRANSITIONS} == set(STANDARD)


@pytest.mark.parametrize("name", sorted(STANDARD_NEXT))
def test_next_state_of_every_action(name: str) -> None:
    action = Action[name.replace("-", "_")]
    expected = STANDARD_NEXT[name]
    if len(expected) == 1:
        assert NEXT_STATE[action] is _state(expected[0])
        assert action not in BRANCHES
    else:
        assert NEXT_STATE[action] is None
        assert BRANCHES[action] == tuple(_state(n) for n in expected)


def test_branches_are_exactly_ae6_and_ar8() -> None:
    assert BRANCHES == {
        Action.AE_6: (State.STA3, State.STA13),
        Action.AR_8: (State.STA9, State.STA10),
    }


def test_three_way_agreement_with_pynetdicom() -> None:
    """Our table, the transcription and pynetdicom's TRANSITION_TABLE agree on every cell.

    Compared on which cells exist and on the action's *behaviour class* for ours (the Enum alias bug
    makes AA-5 print as AR-5; both stop ARTIM and go to Sta1), exactly for pynetdicom.
    """
    from pynetdicom.fsm import TRANSITION_TABLE

    theirs = {
        (int(sta.removeprefix("Sta")), int(evt.removeprefix("Evt"))): action
        for (evt, sta), action in TRANSITION_TABLE.items()
    }
    ours = {(int(s.name[3:]), int(e.name[3:])): a for (s, e), a in TRANSITIONS.items()}
    assert theirs == STANDARD
    assert set(ours) == set(theirs)
    for cell, action in ours.items():
        assert action is Action[theirs[cell].replace("-", "_")], cell
