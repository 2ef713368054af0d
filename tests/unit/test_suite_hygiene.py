"""The test suite's own promises: every test against a real third-party peer is marked `interop`, so
`-m interop` selects all of them and `-m "not interop"` none of them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

INTEROP = Path(__file__).resolve().parents[1] / "interop"
MODULES = sorted(INTEROP.glob("test_*.py"))


def _module_marks(path: Path) -> set[str]:
    """Names of the marks in the module's `pytestmark` (a mark or a list of marks)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            values = node.value.elts if isinstance(node.value, ast.List | ast.Tuple) else [node.value]
            return {v.attr for v in values if isinstance(v, ast.Attribute)}
    return set()


def test_there_are_interop_modules() -> None:
    assert {p.name for p in MODULES} >= {"test_worklist_interop.py", "test_mpps_interop.py", "test_storage_interop.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_interop_module_is_marked_interop(path: Path) -> None:
    assert "interop" in _module_marks(path), f"{path.name}: pytestmark lacks pytest.mark.interop"
