"""The DICOM Upper Layer (PS3.8), sans-IO: PDUs, the state machine, negotiation."""

from agent.ul.association import (
    Aborted,
    Association,
    AssociationAccepted,
    AssociationRejected,
    AssociationRequested,
    DataReceived,
    Indication,
    ReleaseConfirmed,
    ReleaseRequested,
    Role,
)
from agent.ul.fsm import Action, Event, State, TRANSITIONS
from agent.ul.negotiation import (
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    UNCOMPRESSED,
    PresentationContext,
    ProposedContext,
    SyntaxSupport,
    accepted_contexts,
    build_accept,
    build_request,
    negotiate_acceptor,
)

__all__ = [
    "Aborted", "Action", "Association", "AssociationAccepted", "AssociationRejected",
    "AssociationRequested", "DataReceived", "EXPLICIT_VR_BE", "EXPLICIT_VR_LE", "Event",
    "IMPLICIT_VR_LE", "Indication", "PresentationContext", "ProposedContext", "ReleaseConfirmed",
    "ReleaseRequested", "Role", "State", "SyntaxSupport", "TRANSITIONS", "UNCOMPRESSED",
    "accepted_contexts", "build_accept", "build_request", "negotiate_acceptor",
]
