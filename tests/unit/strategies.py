"""Hypothesis strategies for the Upper Layer's PDUs and items (agent.ul.pdu), for any test to import.

Values are drawn inside what the codec promises to round-trip exactly (see the pdu module's invariants):
UIDs are digits and dots without padding, AE titles 1..16 characters of the AE VR without a backslash
or leading/trailing spaces, version names printable ASCII without leading/trailing spaces.
"""

from __future__ import annotations

from hypothesis import strategies as st

from agent.ul import pdu as P

_COMPONENT = st.one_of(st.just("0"), st.integers(1, 10**12).map(str))

#: A valid UID (PS3.5 9.1): dotted numeric components without leading zeros, 1..64 characters.
uids = (
    st.lists(_COMPONENT, min_size=2, max_size=12)
    .map(".".join)
    .filter(lambda u: len(u) <= 64)
)

_AE_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\")

#: An AE title: 1..16 printable ASCII characters, no backslash, no leading or trailing space.
ae_titles = st.text(_AE_CHARS, min_size=1, max_size=16).filter(lambda t: t == t.strip(" ") and t != "")

#: An Implementation Version Name: 1..16 printable ASCII characters, not padded.
version_names = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=16
)

context_ids = st.integers(0, 127).map(lambda n: 2 * n + 1)
small_bytes = st.binary(max_size=64)

maximum_lengths = st.builds(P.MaximumLength, st.integers(0, 0xFFFFFFFF))
implementation_class_uids = st.builds(P.ImplementationClassUID, uids)
implementation_version_names = st.builds(P.ImplementationVersionName, version_names)
async_windows = st.builds(P.AsyncOperationsWindow, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
role_selections = st.builds(P.RoleSelection, uids, st.booleans(), st.booleans())
extended_negotiations = st.builds(P.SOPClassExtendedNegotiation, uids, small_bytes)
common_extended_negotiations = st.builds(
    P.SOPClassCommonExtendedNegotiation, uids, uids, st.lists(uids, max_size=3).map(tuple)
)
user_identities_rq = st.builds(
    P.UserIdentityRQ, st.integers(1, 5), st.booleans(), small_bytes, small_bytes
)
user_identities_ac = st.builds(P.UserIdentityAC, small_bytes)
#: Item types PS3.7 Annex D does not define (51H..59H are known, 5AH..FFH are not).
unknown_sub_items = st.builds(P.UnknownSubItem, st.integers(0x5A, 0xFF), small_bytes)

sub_items = st.one_of(
    maximum_lengths,
    implementation_class_uids,
    implementation_version_names,
    async_windows,
    role_selections,
    extended_negotiations,
    common_extended_negotiations,
    user_identities_rq,
    user_identities_ac,
    unknown_sub_items,
)


@st.composite
def presentation_contexts_rq(draw: st.DrawFn, ids: st.SearchStrategy[int] = context_ids) -> P.PresentationContextRQ:
    return P.PresentationContextRQ(
        draw(ids), draw(uids), tuple(draw(st.lists(uids, min_size=1, max_size=4)))
    )


@st.composite
def presentation_contexts_ac(draw: st.DrawFn) -> P.PresentationContextAC:
    result = draw(st.integers(0, 4))
    ts = draw(uids) if result == P.PC_ACCEPTANCE else draw(st.one_of(st.just(""), uids))
    return P.PresentationContextAC(draw(context_ids), result, ts)


@st.composite
def associate_rqs(draw: st.DrawFn) -> P.AAssociateRQ:
    ids = draw(st.lists(context_ids, max_size=6, unique=True))
    contexts = tuple(draw(presentation_contexts_rq(st.just(i))) for i in ids)
    return P.AAssociateRQ(
        called_ae=draw(ae_titles),
        calling_ae=draw(ae_titles),
        user_information=tuple(draw(st.lists(sub_items, max_size=6))),
        application_context=draw(st.one_of(st.just(P.APPLICATION_CONTEXT_NAME), uids)),
        protocol_version=draw(st.integers(1, 0xFFFF)),
        presentation_contexts=contexts,
    )


@st.composite
def associate_acs(draw: st.DrawFn) -> P.AAssociateAC:
    return P.AAssociateAC(
        called_ae=draw(ae_titles),
        calling_ae=draw(ae_titles),
        user_information=tuple(draw(st.lists(sub_items, max_size=6))),
        application_context=draw(st.one_of(st.just(P.APPLICATION_CONTEXT_NAME), uids)),
        protocol_version=draw(st.integers(1, 0xFFFF)),
        presentation_contexts=tuple(draw(st.lists(presentation_contexts_ac(), max_size=6))),
    )


associate_rjs = st.builds(P.AAssociateRJ, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
pdvs = st.builds(P.PDV, context_ids, st.booleans(), st.booleans(), st.binary(max_size=200))
pdata_tfs = st.builds(P.PDataTF, st.lists(pdvs, min_size=1, max_size=4).map(tuple))
release_rqs = st.just(P.AReleaseRQ())
release_rps = st.just(P.AReleaseRP())
aborts = st.builds(P.AAbort, st.sampled_from([0, 1, 2]), st.integers(0, 255))

pdus = st.one_of(
    associate_rqs(), associate_acs(), associate_rjs, pdata_tfs, release_rqs, release_rps, aborts
)
