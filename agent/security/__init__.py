"""Security policy of the agent: who may associate, as which user, for which services.

`access` decides which services a caller may use; `identity` builds and checks User Identity
sub-items (PS3.7 D.3.3.7); `events` is what the listener reports (for the log and the audit trail).
Nothing here touches sockets or trio: the listener (agent.net.server) applies these decisions.
"""

from agent.security.access import ALL_SERVICES, SERVICES, AccessPolicy, AccessRule, parse_hosts, service_of
from agent.security.events import SecurityEvent
from agent.security.identity import (
    Authenticator,
    ClientIdentity,
    IdentityCheck,
    IdentityNotConfirmed,
    Outcome,
    hash_password,
    verify_password,
)

__all__ = [
    "ALL_SERVICES", "AccessPolicy", "AccessRule", "Authenticator", "ClientIdentity", "IdentityCheck",
    "IdentityNotConfirmed", "Outcome", "SERVICES", "SecurityEvent", "hash_password", "parse_hosts", "service_of",
    "verify_password",
]
