"""`log_level = "debug"` turns on the agent's own wire trace, not every library's debug output."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from agent.logs import setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, agent = logging.getLogger(), logging.getLogger("agent")
    saved = (root.level, list(root.handlers), agent.level)
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    agent.setLevel(saved[2])


def test_debug_is_the_agents_trace_only(restore_logging: None) -> None:
    setup_logging("debug")
    assert logging.getLogger("agent.net").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("some.library").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("some.library").isEnabledFor(logging.INFO)


def test_warning_level_leaves_no_level_on_the_agent_logger(restore_logging: None) -> None:
    setup_logging("warning")
    assert logging.getLogger("agent").level == logging.NOTSET  # later callers (caplog) still decide
    assert not logging.getLogger("agent.net").isEnabledFor(logging.INFO)
