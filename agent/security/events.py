"""What the listener reports about authentication and access decisions.

One value per decision, handed to `Listener.on_security_event` (the audit trail hooks there: PS3.15 A.5.3.11
Security Alert, A.5.3.14 User Authentication) and logged by the listener. A passcode is never part of an
event; `user` is the username the caller claimed (verified or not, `authenticated` says which).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EventKind = Literal[
    "authentication-succeeded",  # a username and passcode matched
    "authentication-failed",  # unknown user or wrong passcode: association rejected
    "identity-required",  # no authenticated user for a service that requires one
    "access-denied",  # calling AE not recognized (association rejected) or a service refused
]


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    kind: EventKind
    calling_ae: str
    called_ae: str
    address: str  # the caller's "host:port"
    user: str = ""  # the username sent, if any
    authenticated: bool = False
    services: tuple[str, ...] = ()  # the services concerned (refused ones for access-denied)
    detail: str = ""


__all__ = ["EventKind", "SecurityEvent"]
