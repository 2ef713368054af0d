"""The project's exception hierarchy: one root, one branch per concern.

Errors from trio, sqlite3, pydicom and the OS are translated into these at the edge of each layer so
that callers (the CLI, the workflows) only ever need to handle `AgentError`.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class ProtocolError(AgentError):
    """A DICOM Upper Layer or DIMSE protocol violation.

    `local` is True when *we* detected the problem (and will send or have sent an A-ABORT), False when
    the peer aborted.  `source` and `reason` are the A-ABORT source and reason/diag values (PS3.8 9.3.8).
    """

    def __init__(self, message: str, *, local: bool = True, source: int = 2, reason: int = 0) -> None:
        super().__init__(message)
        self.local = local
        self.source = source
        self.reason = reason


class AssociationRejected(AgentError):
    """The peer answered A-ASSOCIATE-RJ (PS3.8 9.3.4)."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        from agent.ul.pdu import describe_rejection

        super().__init__(describe_rejection(result, source, reason))
        self.result = result
        self.source = source
        self.reason = reason

    @property
    def transient(self) -> bool:
        return self.result == 2


class AssociationAborted(ProtocolError):
    """The association ended with an A-ABORT or an unexpected close."""


class ConnectionFailed(AgentError):
    """TCP connection could not be made, or broke (refused, reset, unreachable)."""


class TimeoutExpired(AgentError):
    """A deadline from the profile (connect, ARTIM, DIMSE, idle) expired."""


class ProfileError(AgentError):
    """A profile file is wrong: names the file, the key and what was expected."""

    def __init__(self, file: str, key: str, expected: str) -> None:
        super().__init__(f"{file}: {key}: {expected}")
        self.file = file
        self.key = key
        self.expected = expected


class QueueError(AgentError):
    """The durable job queue failed or was used wrongly."""


class StoreError(AgentError):
    """The local instance store refused or failed an operation."""


class DriverError(AgentError):
    """A hardware driver failed."""
