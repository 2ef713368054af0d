"""Presentation context and SCP/SCU role negotiation, both sides (PS3.8 9.3.2.2, 9.3.3.2; PS3.7 D.3.3.4).

Invariants:
- The acceptor picks, for each proposed context, the first transfer syntax in *its own* preference order
  that the requestor proposed (the seed agent's rule, S-6); duplicate abstract syntaxes in different
  contexts are negotiated independently (S-7).
- Roles: without a role selection item the requestor is SCU and the acceptor SCP (PS3.7 D.3.3.4), and
  the context is rejected (user rejection) where the requestor may not be SCU. With one, the acceptor
  may only keep or clear what was proposed, never set a role the requestor did not offer; if neither
  role survives the context is rejected (user rejection).
- A context the acceptor's policy refuses (`refuse`: access control, a service that needs an
  authenticated user) is rejected by the user (result 1, PS3.8 Table 9-18) before anything else is
  looked at: the caller learns the context was refused, not that the syntax is unknown.
- SOP Class Extended Negotiation (PS3.7 D.3.3.5): a syntax whose support has `extended_negotiation`
  gets a reply item when the requestor sent one for it and the context was accepted.
- Nothing here does I/O; the results are plain values the services read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from agent import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from agent.ul import pdu as P
from agent.ul.values import value

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
UNCOMPRESSED = (EXPLICIT_VR_LE, IMPLICIT_VR_LE, EXPLICIT_VR_BE)


@value
class PresentationContext:
    """A negotiated (accepted) presentation context, with the roles of each side."""

    id: int
    abstract_syntax: str
    transfer_syntax: str
    requestor_is_scu: bool = True
    requestor_is_scp: bool = False


@value
class SyntaxSupport:
    """What the acceptor supports for one abstract syntax.

    `transfer_syntaxes`: accepted ones in preference order. `accept_any_other`: also accept any other
    proposed transfer syntax (compressed ones, stored as received) after the preferred ones.
    `compressed`: further (compressed) transfer syntaxes accepted as they are; when the requestor lists
    one of them *first* in a context it is taken (the object is stored as received, no transcoding).
    `requestor_may_be_scu/scp`: the roles the acceptor lets the requestor take.
    """

    transfer_syntaxes: tuple[str, ...] = UNCOMPRESSED
    accept_any_other: bool = False
    compressed: frozenset[str] = frozenset()
    requestor_may_be_scu: bool = True
    requestor_may_be_scp: bool = False
    # PS3.7 D.3.3.5: the requestor's service-class-application-information for this SOP class ->
    # our reply (None: send no reply item for it).
    extended_negotiation: Callable[[bytes], bytes | None] | None = None


@value
class AcceptorResult:
    contexts_ac: tuple[P.PresentationContextAC, ...]
    accepted: Mapping[int, PresentationContext]
    role_replies: tuple[P.RoleSelection, ...]
    extended_replies: tuple[P.SOPClassExtendedNegotiation, ...] = ()


def negotiate_acceptor(
    rq: P.AAssociateRQ,
    support: Callable[[str], SyntaxSupport | None],
    refuse: Callable[[str], bool] | None = None,
) -> AcceptorResult:
    """Decide every proposed presentation context of `rq`; `refuse(abstract_syntax)` True rejects it."""
    proposed_roles = rq.role_selections
    contexts: list[P.PresentationContextAC] = []
    accepted: dict[int, PresentationContext] = {}
    replies: dict[str, P.RoleSelection] = {}
    for pc in rq.presentation_contexts:
        if refuse is not None and refuse(pc.abstract_syntax):
            contexts.append(P.PresentationContextAC(pc.id, P.PC_USER_REJECTION, ""))
            continue
        sup = support(pc.abstract_syntax)
        if sup is None:
            contexts.append(P.PresentationContextAC(pc.id, P.PC_ABSTRACT_SYNTAX_NOT_SUPPORTED, ""))
            continue
        if pc.transfer_syntaxes[0] in sup.compressed:
            chosen: str | None = pc.transfer_syntaxes[0]
        else:
            chosen = next((ts for ts in sup.transfer_syntaxes if ts in pc.transfer_syntaxes), None)
        if chosen is None and sup.compressed:
            chosen = next((ts for ts in pc.transfer_syntaxes if ts in sup.compressed), None)
        if chosen is None and sup.accept_any_other:
            chosen = next(iter(pc.transfer_syntaxes), None)
        if chosen is None:
            contexts.append(P.PresentationContextAC(pc.id, P.PC_TRANSFER_SYNTAXES_NOT_SUPPORTED, ""))
            continue
        role = proposed_roles.get(pc.abstract_syntax)
        if role is None and not sup.requestor_may_be_scu:
            # The default roles make the requestor SCU, which this syntax does not allow (a storage class
            # served only for C-GET sub-operations): refused now rather than failing every request.
            contexts.append(P.PresentationContextAC(pc.id, P.PC_USER_REJECTION, ""))
            continue
        if role is None:
            scu, scp = True, False
        else:
            scu = role.scu_role and sup.requestor_may_be_scu
            scp = role.scp_role and sup.requestor_may_be_scp
            replies[pc.abstract_syntax] = P.RoleSelection(pc.abstract_syntax, scu, scp)
        if role is not None and not (scu or scp):
            contexts.append(P.PresentationContextAC(pc.id, P.PC_USER_REJECTION, ""))
            continue
        contexts.append(P.PresentationContextAC(pc.id, P.PC_ACCEPTANCE, chosen))
        accepted[pc.id] = PresentationContext(pc.id, pc.abstract_syntax, chosen, scu, scp)
    return AcceptorResult(
        tuple(contexts), accepted, tuple(replies.values()), _extended_replies(rq, accepted, support)
    )


def _extended_replies(
    rq: P.AAssociateRQ, accepted: Mapping[int, PresentationContext], support: Callable[[str], SyntaxSupport | None]
) -> tuple[P.SOPClassExtendedNegotiation, ...]:
    """One reply per SOP class the requestor sent an item for, if one of its contexts was accepted."""
    taken = {ctx.abstract_syntax for ctx in accepted.values()}
    out: dict[str, P.SOPClassExtendedNegotiation] = {}
    for item in rq.user_information:
        if not isinstance(item, P.SOPClassExtendedNegotiation) or item.sop_class_uid not in taken:
            continue
        sup = support(item.sop_class_uid)
        if sup is None or sup.extended_negotiation is None or item.sop_class_uid in out:
            continue
        reply = sup.extended_negotiation(item.info)
        if reply is not None:
            out[item.sop_class_uid] = P.SOPClassExtendedNegotiation(item.sop_class_uid, reply)
    return tuple(out.values())


@value
class ProposedContext:
    """What a requestor proposes: an abstract syntax, its transfer syntaxes, optional roles."""

    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...] = UNCOMPRESSED
    scu_role: bool | None = None  # None: no role selection item for this SOP class
    scp_role: bool | None = None


def build_request(
    calling_ae: str,
    called_ae: str,
    proposals: Sequence[ProposedContext],
    *,
    max_pdu_receive: int,
    extra_items: Iterable[P.SubItem] = (),
) -> P.AAssociateRQ:
    """An A-ASSOCIATE-RQ proposing `proposals` with odd context IDs 1, 3, 5, …"""
    if len(proposals) > 128:
        raise ValueError("at most 128 presentation contexts can be proposed")
    contexts = tuple(
        P.PresentationContextRQ(2 * i + 1, p.abstract_syntax, tuple(p.transfer_syntaxes))
        for i, p in enumerate(proposals)
    )
    roles: dict[str, P.RoleSelection] = {}
    for p in proposals:
        if p.scu_role is not None or p.scp_role is not None:
            roles[p.abstract_syntax] = P.RoleSelection(p.abstract_syntax, bool(p.scu_role), bool(p.scp_role))
    user: list[P.SubItem] = [
        P.MaximumLength(max_pdu_receive),
        P.ImplementationClassUID(IMPLEMENTATION_CLASS_UID),
        *roles.values(),
        P.ImplementationVersionName(IMPLEMENTATION_VERSION_NAME),
        *extra_items,
    ]
    return P.AAssociateRQ(
        called_ae=called_ae,
        calling_ae=calling_ae,
        presentation_contexts=contexts,
        user_information=tuple(user),
    )


def build_accept(
    rq: P.AAssociateRQ,
    result: AcceptorResult,
    *,
    max_pdu_receive: int,
    identity_response: P.UserIdentityAC | None = None,
) -> P.AAssociateAC:
    """The A-ASSOCIATE-AC; `identity_response` is the positive User Identity response (PS3.7 D.3.3.7),
    sent only when the requestor asked for one and was authenticated."""
    user: list[P.SubItem] = [
        P.MaximumLength(max_pdu_receive),
        P.ImplementationClassUID(IMPLEMENTATION_CLASS_UID),
        *result.role_replies,
        P.ImplementationVersionName(IMPLEMENTATION_VERSION_NAME),
        *result.extended_replies,
    ]
    if identity_response is not None:
        user.append(identity_response)
    if rq.async_window is not None:
        # PS3.7 D.3.3.3: we perform one operation at a time (seed S-4).
        user.insert(2, P.AsyncOperationsWindow(1, 1))
    return P.AAssociateAC(
        called_ae=rq.called_ae,
        calling_ae=rq.calling_ae,
        presentation_contexts=result.contexts_ac,
        user_information=tuple(user),
    )


def accepted_contexts(rq: P.AAssociateRQ, ac: P.AAssociateAC) -> dict[int, PresentationContext]:
    """The requestor's view of what the acceptor accepted, with the roles it agreed to."""
    proposed = {pc.id: pc for pc in rq.presentation_contexts}
    replies = ac.role_selections
    out: dict[int, PresentationContext] = {}
    for pc in ac.presentation_contexts:
        if pc.result != P.PC_ACCEPTANCE or pc.id not in proposed:
            continue
        abstract = proposed[pc.id].abstract_syntax
        if pc.transfer_syntax not in proposed[pc.id].transfer_syntaxes:
            continue  # the acceptor chose something we did not offer: unusable
        reply = replies.get(abstract)
        asked = rq.role_selections.get(abstract)
        if reply is None or asked is None:
            scu, scp = True, False
        else:
            scu, scp = reply.scu_role and asked.scu_role, reply.scp_role and asked.scp_role
        out[pc.id] = PresentationContext(pc.id, abstract, pc.transfer_syntax, scu, scp)
    return out
