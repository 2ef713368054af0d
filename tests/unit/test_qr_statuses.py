"""The Q/R SCP's status constants (what the conformance statement lists for C-FIND, C-MOVE and C-GET) are
what its handlers answer: tests/unit/test_conformance_statuses.py checks every other SCP this way, the
Q/R SCP (agent/services/query/scp.py, with the A900 / C001 of its engine) was not in its list."""

from __future__ import annotations

from agent.services.query import scp
from tests.unit.test_conformance_statuses import ROOT, named_statuses

HANDLER_MODULES = ["agent/services/query/scp.py", "agent/services/query/engine.py"]


def test_qr_status_constants_are_what_the_handlers_answer() -> None:
    used: set[int] = set()
    for path in HANDLER_MODULES:
        used |= named_statuses(ROOT / path)
    declared = set(scp.SCP_STATUSES)
    assert declared == set(scp.FIND_STATUSES) | set(scp.MOVE_STATUSES) | set(scp.GET_STATUSES)
    assert not used - declared, f"answered but not listed: {sorted(f'{s:04X}' for s in used - declared)}"
    assert not declared - used, f"listed but never answered: {sorted(f'{s:04X}' for s in declared - used)}"


def test_each_operation_lists_the_statuses_of_its_table() -> None:
    """PS3.4 C.4.1.1.4 (C-FIND), C.4.2.1.5 (C-MOVE), C.4.3.1.4 (C-GET): A801 belongs to C-MOVE only,
    FF01 and A700 to C-FIND only, B000 / A701 / A702 to the retrieves."""
    assert 0xA801 in scp.MOVE_STATUSES and 0xA801 not in scp.GET_STATUSES + scp.FIND_STATUSES
    assert {0xFF01, 0xA700} <= set(scp.FIND_STATUSES)
    assert not {0xFF01, 0xA700} & set(scp.MOVE_STATUSES + scp.GET_STATUSES)
    for statuses in (scp.MOVE_STATUSES, scp.GET_STATUSES):
        assert {0x0000, 0xFF00, 0xFE00, 0xB000, 0xA701, 0xA702, 0xA900, 0xC001} <= set(statuses)
