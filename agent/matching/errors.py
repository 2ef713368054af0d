"""The one error the matching engine raises, carrying the C-FIND failure status to answer with."""

from __future__ import annotations

from typing import Final

from agent.errors import AgentError

#: Identifier does not match SOP Class: a key with the wrong VR or an invalid value (PS3.4 C.4.1.1.4).
A900: Final = 0xA900
#: Unable to process: e.g. a Specific Character Set the agent cannot decode.
C001: Final = 0xC001


class MatchingError(AgentError):
    """A C-FIND identifier the engine refuses; `status` is the C-FIND-RSP status to send back."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (status {status:04X}H)")
        self.status = status
