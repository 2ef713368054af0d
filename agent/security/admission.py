"""The acceptor's security decision for one A-ASSOCIATE-RQ, as a pure function of the request, the
identity check and the caller's address / certificate (the listener does the I/O around it).

Order (each step can end it):
1. A User Identity that fails (unknown user, wrong passcode) rejects the association: A-ASSOCIATE-RJ
   rejected-permanent, source "DICOM UL service-provider (ACSE related function)", reason no-reason-given
   (PS3.7 D.3.3.7 names this answer for an authorization failure). Nothing tells the caller whether
   the user or the passcode was wrong.
2. Access control: no service for this caller at all is A-ASSOCIATE-RJ rejected-permanent, service-user,
   "calling AE title not recognized" (PS3.8 Table 9-21).
3. Per context: a service the caller may not use, or one that requires an authenticated user when there
   is none, is rejected by the user (PS3.8 Table 9-18 result 1). If identity is what left the caller
   with nothing usable, the association is rejected as in step 1 instead: an accepted association on
   which nothing can be done would only hide the reason.

A storage SOP class for which the requestor's role selection offers only the SCP role is "query", not
"store": on such a context the caller can only receive C-STORE sub-operations of its own C-GET
(PS3.4 C.4.3, PS3.7 D.3.3.4), never store anything here.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.security.access import AccessPolicy, service_of
from agent.security.events import SecurityEvent
from agent.security.identity import IdentityCheck, Outcome
from agent.ul import pdu as P

REJECT_IDENTITY = P.AAssociateRJ(P.RJ_PERMANENT, P.RJ_SOURCE_ACSE, P.RJ_ACSE_NO_REASON)
REJECT_CALLING_AE = P.AAssociateRJ(P.RJ_PERMANENT, P.RJ_SOURCE_USER, P.RJ_USER_CALLING_AE_NOT_RECOGNIZED)


@dataclass(frozen=True, slots=True)
class Admission:
    """What the listener does with a request: reject it, or negotiate refusing `refused` contexts."""

    reject: P.AAssociateRJ | None
    why: str  # appended to the association's log line when rejected
    services: frozenset[str]  # what the caller may use
    user: str | None  # the authenticated username
    needs_identity: frozenset[str]  # services refused only because no user is authenticated
    events: tuple[SecurityEvent, ...]
    identity_response: P.UserIdentityAC | None = None  # the positive response for the A-ASSOCIATE-AC
    retrieve_only: frozenset[str] = frozenset()  # storage SOP classes proposed with the SCP role only

    def service(self, abstract_syntax: str) -> str:
        return "query" if abstract_syntax in self.retrieve_only else service_of(abstract_syntax)

    def refuses(self, abstract_syntax: str) -> bool:
        service = self.service(abstract_syntax)
        return service not in self.services or service in self.needs_identity


def _retrieve_only(rq: P.AAssociateRQ) -> frozenset[str]:
    return frozenset(
        uid for uid, role in rq.role_selections.items()
        if role.scp_role and not role.scu_role and service_of(uid) == "store"
    )


def admit(
    rq: P.AAssociateRQ,
    check: IdentityCheck,
    policy: AccessPolicy,
    *,
    address: str,
    cert_subject: str | None,
) -> Admission:
    def event(kind: str, services: tuple[str, ...] = (), detail: str = "") -> SecurityEvent:
        return SecurityEvent(kind, rq.calling_ae, rq.called_ae, address, check.username,  # type: ignore[arg-type]
                             check.outcome is Outcome.VERIFIED, services, detail)

    events: list[SecurityEvent] = []
    if check.outcome is Outcome.FAILED:
        why = f": user identity {check.describe()} not accepted (unknown user or wrong passcode)"
        return Admission(REJECT_IDENTITY, why, frozenset(), None, frozenset(),
                         (event("authentication-failed", detail=why[2:]),))
    if check.outcome is Outcome.VERIFIED:
        events.append(event("authentication-succeeded"))
    services = policy.services_for(rq.calling_ae, address, cert_subject, check.user)
    if not services:
        why = f": calling AE {rq.calling_ae!r} from {address} is not allowed any service"
        events.append(event("access-denied", detail=why[2:]))
        return Admission(REJECT_CALLING_AE, why, services, check.user, frozenset(), tuple(events))
    needs = frozenset(policy.require_identity & services) if check.user is None else frozenset()
    retrieve_only = _retrieve_only(rq)
    proposed = {"query" if pc.abstract_syntax in retrieve_only else service_of(pc.abstract_syntax)
                for pc in rq.presentation_contexts}
    denied = tuple(sorted(proposed - services))
    if denied:
        events.append(event("access-denied", denied, f"services refused: {', '.join(denied)}"))
    wanting = tuple(sorted(proposed & needs))
    if wanting:
        events.append(event("identity-required", wanting, f"no authenticated user for: {', '.join(wanting)}"))
        if not (proposed & services) - needs:
            why = f": no authenticated user for {', '.join(wanting)}, which require one"
            return Admission(REJECT_IDENTITY, why, services, None, needs, tuple(events), None, retrieve_only)
    # PS3.7 D.3.3.7: a response only when asked for and the user was authenticated; for username types
    # its server response is empty.
    response = P.UserIdentityAC(b"") if check.user is not None and check.positive_response_requested else None
    return Admission(None, "", services, check.user, needs, tuple(events), response, retrieve_only)


__all__ = ["Admission", "REJECT_CALLING_AE", "REJECT_IDENTITY", "admit"]
