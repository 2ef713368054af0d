"""The statuses the conformance statement lists come from one constant next to each handler; this test
keeps the constant honest: every status a handler module names is in it (and nothing else is)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from agent.dimse.status import Status

ROOT = Path(__file__).resolve().parents[2]

# (modules whose code answers the requests, the constant's module, its name(s))
HANDLERS = [
    (["agent/services/verification.py"], "agent.services.verification", ["SCP_STATUSES"]),
    (["agent/services/storage.py"], "agent.services.storage", ["SCP_STATUSES"]),
    (["agent/services/worklist.py", "agent/matching/errors.py"], "agent.services.worklist", ["SCP_STATUSES"]),
    (["agent/services/mpps.py"], "agent.services.mpps", ["SCP_STATUSES"]),
    (["agent/services/commitment.py"], "agent.services.commitment", ["ACTION_STATUSES", "REPORT_STATUSES"]),
    (
        ["agent/services/print/scp.py", "agent/services/print/session.py", "agent/services/print/attributes.py"],
        "agent.services.print.scp",
        ["SCP_STATUSES"],
    ),
]


def named_statuses(path: Path) -> set[int]:
    """`Status.NAME` references, and module-level integer constants of the 0xA000-0xCFFF failure ranges
    (a status written as a number, like the matcher's A900/C001)."""
    tree = ast.parse(path.read_text())
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Status":
            found.add(int(Status[node.attr]))
        elif isinstance(node, ast.Constant) and type(node.value) is int and 0xA000 <= node.value <= 0xCFFF:
            found.add(node.value)
    return found


@pytest.mark.parametrize("paths, module, names", HANDLERS, ids=[h[1] for h in HANDLERS])
def test_status_constant_is_what_the_handlers_answer(paths: list[str], module: str, names: list[str]) -> None:
    declared: set[int] = set()
    for name in names:
        declared |= set(getattr(importlib.import_module(module), name))
    used: set[int] = set()
    for p in paths:
        used |= named_statuses(ROOT / p)
    missing = sorted(f"{s:04X}" for s in used - declared)
    assert not missing, f"{module}: handlers answer {missing} but {names} do not list them (the statement would lie)"
    unused = sorted(f"{s:04X}" for s in declared - used)
    assert not unused, f"{module}: {names} list {unused}, which no handler answers"
