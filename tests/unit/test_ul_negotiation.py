"""agent.ul.negotiation: presentation context and role negotiation, both sides (PS3.8 9.3.2.2 / 9.3.3.2,
PS3.7 D.3.3.3 and D.3.3.4), and an A-ASSOCIATE-AC that pynetdicom reads back."""

from __future__ import annotations

from agent import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from agent.ul import pdu as P
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

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
ECHO = "1.2.840.10008.1.1"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
JPEG2000 = "1.2.840.10008.1.2.4.90"

#: The seed agent's Table 12 order (S-5/S-6): Big Endian first.
SEED_ORDER = (EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE)


def rq(*proposals: ProposedContext, extra: tuple[P.SubItem, ...] = ()) -> P.AAssociateRQ:
    return build_request("SCU", "SCP", list(proposals), max_pdu_receive=16384, extra_items=extra)


def supports(table: dict[str, SyntaxSupport]):  # type: ignore[no-untyped-def]
    return table.get


def test_build_request_numbers_contexts_and_lists_user_information() -> None:
    r = rq(ProposedContext(CT), ProposedContext(ECHO, (IMPLICIT_VR_LE,)))
    assert [pc.id for pc in r.presentation_contexts] == [1, 3]
    assert r.presentation_contexts[0] == P.PresentationContextRQ(1, CT, UNCOMPRESSED)
    assert r.max_length == 16384
    assert r.implementation_class_uid == IMPLEMENTATION_CLASS_UID
    assert r.implementation_version_name == IMPLEMENTATION_VERSION_NAME
    assert len(IMPLEMENTATION_VERSION_NAME) <= 16
    assert r.role_selections == {}
    assert (r.called_ae, r.calling_ae) == ("SCP", "SCU")


def test_transfer_syntax_follows_the_acceptors_preference() -> None:
    proposal = rq(ProposedContext(CT, (IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE)))
    seed = negotiate_acceptor(proposal, supports({CT: SyntaxSupport(SEED_ORDER)}))
    assert seed.contexts_ac == (P.PresentationContextAC(1, P.PC_ACCEPTANCE, EXPLICIT_VR_BE),)
    ours = negotiate_acceptor(proposal, supports({CT: SyntaxSupport()}))
    assert ours.contexts_ac == (P.PresentationContextAC(1, P.PC_ACCEPTANCE, EXPLICIT_VR_LE),)
    # Only what was proposed can be chosen, whatever the acceptor prefers.
    only_implicit = rq(ProposedContext(CT, (IMPLICIT_VR_LE,)))
    res = negotiate_acceptor(only_implicit, supports({CT: SyntaxSupport(SEED_ORDER)}))
    assert res.contexts_ac[0].transfer_syntax == IMPLICIT_VR_LE


def test_unsupported_abstract_syntax_is_result_3() -> None:
    res = negotiate_acceptor(rq(ProposedContext(MR)), supports({CT: SyntaxSupport()}))
    assert res.contexts_ac == (P.PresentationContextAC(1, P.PC_ABSTRACT_SYNTAX_NOT_SUPPORTED, ""),)
    assert res.accepted == {}


def test_no_common_transfer_syntax_is_result_4() -> None:
    res = negotiate_acceptor(rq(ProposedContext(CT, (JPEG_BASELINE,))), supports({CT: SyntaxSupport()}))
    assert res.contexts_ac == (P.PresentationContextAC(1, P.PC_TRANSFER_SYNTAXES_NOT_SUPPORTED, ""),)


def test_accept_any_other_picks_the_first_proposed_compressed_one() -> None:
    table = supports({CT: SyntaxSupport(accept_any_other=True)})
    res = negotiate_acceptor(rq(ProposedContext(CT, (JPEG2000, JPEG_LOSSLESS))), table)
    assert res.contexts_ac == (P.PresentationContextAC(1, P.PC_ACCEPTANCE, JPEG2000),)
    # A preferred syntax still wins when it was proposed too.
    res = negotiate_acceptor(rq(ProposedContext(CT, (JPEG2000, EXPLICIT_VR_LE))), table)
    assert res.contexts_ac[0].transfer_syntax == EXPLICIT_VR_LE
    # Without accept_any_other the same proposal is refused.
    res = negotiate_acceptor(rq(ProposedContext(CT, (JPEG2000, JPEG_LOSSLESS))), supports({CT: SyntaxSupport()}))
    assert res.contexts_ac[0].result == P.PC_TRANSFER_SYNTAXES_NOT_SUPPORTED


def test_duplicate_abstract_syntaxes_are_negotiated_independently() -> None:
    proposal = rq(
        ProposedContext(CT, (JPEG_BASELINE,)),
        ProposedContext(CT, (IMPLICIT_VR_LE,)),
        ProposedContext(CT, (EXPLICIT_VR_LE,)),
    )
    res = negotiate_acceptor(proposal, supports({CT: SyntaxSupport()}))
    assert res.contexts_ac == (
        P.PresentationContextAC(1, P.PC_TRANSFER_SYNTAXES_NOT_SUPPORTED, ""),
        P.PresentationContextAC(3, P.PC_ACCEPTANCE, IMPLICIT_VR_LE),
        P.PresentationContextAC(5, P.PC_ACCEPTANCE, EXPLICIT_VR_LE),
    )
    assert res.accepted == {
        3: PresentationContext(3, CT, IMPLICIT_VR_LE),
        5: PresentationContext(5, CT, EXPLICIT_VR_LE),
    }


def test_storage_commitment_requestor_as_scp_allowed() -> None:
    proposal = rq(ProposedContext(STORAGE_COMMITMENT, scu_role=False, scp_role=True))
    assert proposal.role_selections[STORAGE_COMMITMENT] == P.RoleSelection(STORAGE_COMMITMENT, False, True)
    res = negotiate_acceptor(
        proposal, supports({STORAGE_COMMITMENT: SyntaxSupport(requestor_may_be_scp=True)})
    )
    assert res.role_replies == (P.RoleSelection(STORAGE_COMMITMENT, False, True),)
    assert res.contexts_ac[0].result == P.PC_ACCEPTANCE
    assert res.accepted[1] == PresentationContext(
        1, STORAGE_COMMITMENT, EXPLICIT_VR_LE, requestor_is_scu=False, requestor_is_scp=True
    )
    ac = build_accept(proposal, res, max_pdu_receive=16384)
    assert accepted_contexts(proposal, ac) == res.accepted  # the requestor sees the same roles


def test_storage_commitment_requestor_as_scp_refused() -> None:
    proposal = rq(ProposedContext(STORAGE_COMMITMENT, scu_role=False, scp_role=True))
    res = negotiate_acceptor(
        proposal, supports({STORAGE_COMMITMENT: SyntaxSupport(requestor_may_be_scp=False)})
    )
    assert res.contexts_ac == (P.PresentationContextAC(1, P.PC_USER_REJECTION, ""),)
    assert res.accepted == {}
    # The acceptor never grants a role that was not proposed.
    assert all(not (r.scu_role or r.scp_role) for r in res.role_replies)


def test_default_roles_refused_where_the_requestor_may_not_be_scu() -> None:
    """Storage classes served only for C-GET sub-operations (the requestor may be SCP only): a context
    without a role selection item makes the requestor SCU (PS3.7 D.3.3.4), which is not allowed, so it
    is rejected by the user rather than accepted for C-STOREs that would all fail."""
    only_scp = SyntaxSupport(requestor_may_be_scu=False, requestor_may_be_scp=True)
    res = negotiate_acceptor(rq(ProposedContext(CT)), supports({CT: only_scp}))
    assert res.contexts_ac == (P.PresentationContextAC(1, P.PC_USER_REJECTION, ""),) and res.accepted == {}
    res = negotiate_acceptor(rq(ProposedContext(CT, scu_role=False, scp_role=True)), supports({CT: only_scp}))
    assert res.accepted[1].requestor_is_scp and not res.accepted[1].requestor_is_scu


def test_role_reply_only_clears_proposed_roles() -> None:
    proposal = rq(ProposedContext(STORAGE_COMMITMENT, scu_role=True, scp_role=True))
    res = negotiate_acceptor(proposal, supports({STORAGE_COMMITMENT: SyntaxSupport()}))
    assert res.role_replies == (P.RoleSelection(STORAGE_COMMITMENT, True, False),)
    assert res.accepted[1].requestor_is_scu and not res.accepted[1].requestor_is_scp


def test_accepted_contexts_on_the_requestor_side() -> None:
    proposal = rq(
        ProposedContext(CT, (EXPLICIT_VR_LE, IMPLICIT_VR_LE)),
        ProposedContext(MR, (EXPLICIT_VR_LE,)),
        ProposedContext(STORAGE_COMMITMENT, scu_role=True, scp_role=True),
    )
    ac = P.AAssociateAC(
        called_ae="SCP",
        calling_ae="SCU",
        presentation_contexts=(
            P.PresentationContextAC(1, P.PC_ACCEPTANCE, IMPLICIT_VR_LE),
            P.PresentationContextAC(3, P.PC_ACCEPTANCE, JPEG_BASELINE),  # not offered: unusable
            P.PresentationContextAC(5, P.PC_ACCEPTANCE, EXPLICIT_VR_LE),
            P.PresentationContextAC(7, P.PC_ACCEPTANCE, EXPLICIT_VR_LE),  # never proposed
        ),
        user_information=(P.MaximumLength(0), P.RoleSelection(STORAGE_COMMITMENT, False, True)),
    )
    assert accepted_contexts(proposal, ac) == {
        1: PresentationContext(1, CT, IMPLICIT_VR_LE),
        5: PresentationContext(5, STORAGE_COMMITMENT, EXPLICIT_VR_LE, False, True),
    }


def test_accepted_contexts_without_role_reply_uses_default_roles() -> None:
    proposal = rq(ProposedContext(STORAGE_COMMITMENT, scu_role=False, scp_role=True))
    ac = P.AAssociateAC(
        called_ae="SCP",
        calling_ae="SCU",
        presentation_contexts=(P.PresentationContextAC(1, P.PC_ACCEPTANCE, EXPLICIT_VR_LE),),
        user_information=(P.MaximumLength(0),),
    )
    # PS3.7 D.3.3.4: no reply item means the default roles (requestor SCU, acceptor SCP).
    assert accepted_contexts(proposal, ac)[1] == PresentationContext(1, STORAGE_COMMITMENT, EXPLICIT_VR_LE)


def test_build_accept_answers_async_window_only_when_proposed() -> None:
    table = supports({CT: SyntaxSupport()})
    plain = rq(ProposedContext(CT))
    ac = build_accept(plain, negotiate_acceptor(plain, table), max_pdu_receive=4096)
    assert ac.async_window is None
    assert ac.max_length == 4096
    assert ac.implementation_class_uid == IMPLEMENTATION_CLASS_UID
    assert ac.implementation_version_name == IMPLEMENTATION_VERSION_NAME
    assert (ac.called_ae, ac.calling_ae) == ("SCP", "SCU")

    with_async = rq(ProposedContext(CT), extra=(P.AsyncOperationsWindow(5, 0),))
    ac = build_accept(with_async, negotiate_acceptor(with_async, table), max_pdu_receive=4096)
    assert ac.async_window == P.AsyncOperationsWindow(1, 1)
    assert isinstance(ac.user_information[0], P.MaximumLength)  # 51H stays first (PS3.7 D.3.3)


def test_our_accept_decodes_with_pynetdicom() -> None:
    from pynetdicom.pdu import A_ASSOCIATE_AC
    from pynetdicom.pdu_primitives import (
        AsynchronousOperationsWindowNegotiation,
        SCP_SCU_RoleSelectionNegotiation,
    )

    proposal = rq(
        ProposedContext(CT, (IMPLICIT_VR_LE, EXPLICIT_VR_LE)),
        ProposedContext(STORAGE_COMMITMENT, scu_role=False, scp_role=True),
        extra=(P.AsyncOperationsWindow(0, 0),),
    )
    res = negotiate_acceptor(
        proposal,
        supports({CT: SyntaxSupport(SEED_ORDER), STORAGE_COMMITMENT: SyntaxSupport(requestor_may_be_scp=True)}),
    )
    raw = P.encode_pdu(build_accept(proposal, res, max_pdu_receive=16384))
    theirs = A_ASSOCIATE_AC()
    theirs.decode(raw)
    prim = theirs.to_primitive()
    assert prim.maximum_length_received == 16384
    assert prim.implementation_class_uid == IMPLEMENTATION_CLASS_UID
    results = {
        cx.context_id: (cx.result, cx.transfer_syntax) for cx in prim.presentation_context_definition_results_list
    }
    assert results == {1: (0, [EXPLICIT_VR_LE]), 3: (0, [EXPLICIT_VR_LE])}
    [role] = [i for i in prim.user_information if isinstance(i, SCP_SCU_RoleSelectionNegotiation)]
    assert (role.sop_class_uid, role.scu_role, role.scp_role) == (STORAGE_COMMITMENT, False, True)
    [window] = [i for i in prim.user_information if isinstance(i, AsynchronousOperationsWindowNegotiation)]
    assert (window.maximum_number_operations_invoked, window.maximum_number_operations_performed) == (1, 1)
    assert theirs.encode() == raw
