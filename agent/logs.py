"""Logging to stderr in a journald-friendly form.

Under systemd (JOURNAL_STREAM is set) each line starts with its syslog priority `<N>` so journald
records the level; on a terminal lines carry a timestamp instead. At "debug" only the agent's own
loggers (`agent.*`) go below info: the wire trace of `agent.net`, not the libraries' chatter.
"""

from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    wanted = getattr(logging, level.upper(), logging.INFO)
    # "debug" means the agent's own trace (PDUs, DIMSE commands, decisions), not every library's.
    root.setLevel(max(wanted, logging.INFO))
    logging.getLogger("agent").setLevel(wanted if wanted < logging.INFO else logging.NOTSET)
