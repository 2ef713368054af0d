"""agent.security: password hashes, the User Identity check, access rules and the admission decision,
the profile keys that configure them, and the wire trace that must never show a credential."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from agent.errors import ProfileError
from agent.profile import parse_profile
from agent.security import (
    ALL_SERVICES,
    AccessPolicy,
    AccessRule,
    Authenticator,
    ClientIdentity,
    Outcome,
    hash_password,
    parse_hosts,
    service_of,
    verify_password,
)
from agent.security.admission import REJECT_CALLING_AE, REJECT_IDENTITY, admit
from agent.security.identity import IdentityFileError, PasswordHashError, check_hash_format, read_password_file
from agent.ul import pdu as P
from agent.ul.negotiation import SyntaxSupport, build_accept, negotiate_acceptor
from agent.ul.trace import describe_associate, describe_encoded

CT = "1.2.840.10008.5.1.4.1.1.2"
ECHO = "1.2.840.10008.1.1"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
HASH = hash_password("s3cret-pass")  # one scrypt hash for the whole module (tens of ms each)


def rq_with(*syntaxes: str, identity: P.UserIdentityRQ | None = None, calling: str = "MOD1") -> P.AAssociateRQ:
    items: tuple[P.SubItem, ...] = (P.MaximumLength(16384),) + ((identity,) if identity else ())
    return P.AAssociateRQ(
        called_ae="AGENT", calling_ae=calling, user_information=items,
        presentation_contexts=tuple(
            P.PresentationContextRQ(2 * i + 1, s, ("1.2.840.10008.1.2",)) for i, s in enumerate(syntaxes)
        ),
    )


# ---------------------------------------------------------------- password hashes


def test_scrypt_hash_is_salted_and_verifies_only_the_right_passcode() -> None:
    assert HASH.startswith("scrypt$16384$8$1$")
    assert hash_password("s3cret-pass") != HASH  # a new salt each time
    assert verify_password(HASH, b"s3cret-pass")
    assert not verify_password(HASH, b"s3cret-pasS")
    assert not verify_password(HASH, b"")


def test_pbkdf2_hashes_made_elsewhere_are_read() -> None:
    salt = b"0123456789abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", b"other", salt, 200_000)
    stored = f"pbkdf2-sha256$200000${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    assert verify_password(stored, b"other") and not verify_password(stored, b"Other")


@pytest.mark.parametrize("bad", ["plain-text", "scrypt$16384$8$1$notb64!$AAAA", "scrypt$1000$8$1$AAAA$AAAA",
                                 "pbkdf2-sha256$10$AAAA$AAAA", "md5$abc"])
def test_bad_hash_formats_are_refused(bad: str) -> None:
    with pytest.raises(PasswordHashError):
        check_hash_format(bad)


def test_password_file_lines(tmp_path: Path) -> None:
    f = tmp_path / "users"
    f.write_text(f"# comment\n\nalice:{HASH}\n")
    assert read_password_file(f) == {"alice": HASH}
    f.write_text("alice\n")
    with pytest.raises(ValueError, match="line 1"):
        read_password_file(f)


# ---------------------------------------------------------------- the acceptor's identity check


def test_authenticator_outcomes() -> None:
    auth = Authenticator({"alice": HASH})
    assert auth.check(None).outcome is Outcome.ABSENT
    ok = auth.check(P.UserIdentityRQ(2, True, b"alice", b"s3cret-pass"))
    assert ok.outcome is Outcome.VERIFIED and ok.user == "alice" and ok.positive_response_requested
    assert auth.check(P.UserIdentityRQ(2, False, b"alice", b"wrong")).outcome is Outcome.FAILED
    assert auth.check(P.UserIdentityRQ(2, False, b"mallory", b"s3cret-pass")).outcome is Outcome.FAILED
    # A username alone, or a token we cannot check, is no authenticated user, and no failure either.
    only_name = auth.check(P.UserIdentityRQ(1, True, b"alice"))
    assert only_name.outcome is Outcome.UNVERIFIED and only_name.user is None
    assert auth.check(P.UserIdentityRQ(5, False, b"eyJ.token.sig")).outcome is Outcome.UNVERIFIED
    # Without users nothing can be checked: the identity is ignored, as PS3.7 D.3.3.7 allows.
    assert Authenticator().check(P.UserIdentityRQ(2, False, b"alice", b"x")).outcome is Outcome.UNVERIFIED


# ---------------------------------------------------------------- services and rules


def test_service_of_sop_classes() -> None:
    assert service_of(ECHO) == "verification"
    assert service_of(CT) == "store"
    assert service_of("1.2.840.10008.5.1.4.1.1.7") == "store"
    assert service_of("1.2.3.4.5.6") == "store"  # a private storage class
    assert service_of("1.2.840.10008.1.20.1") == "commitment"
    assert service_of("1.2.840.10008.5.1.4.31") == "worklist"
    assert service_of("1.2.840.10008.3.1.2.3.3") == "mpps"
    assert service_of(STUDY_FIND) == "query"
    assert service_of("1.2.840.10008.5.1.4.1.2.2.2") == "query"  # Study Root MOVE
    assert service_of("1.2.840.10008.5.1.4.1.2.2.3") == "query"  # Study Root GET
    assert service_of("1.2.840.10008.5.1.1.9") == "print"  # Basic Grayscale Print Management Meta


def test_rules_bind_address_certificate_and_user() -> None:
    policy = AccessPolicy((
        AccessRule("MOD1", frozenset({"verification", "store"}), parse_hosts(["10.1.0.0/16"])),
        AccessRule("MOD1", frozenset({"query"}), user="alice"),
        AccessRule("VIEWER", frozenset({"query"}), certificate_subject="CN=viewer, O=Hospital"),
        AccessRule("*", frozenset({"verification"})),
    ))
    assert policy.services_for("MOD1", "10.1.2.3:4000") == {"verification", "store"}
    assert policy.services_for("MOD1", "::ffff:10.1.2.3") == {"verification", "store"}
    assert policy.services_for("MOD1", "10.2.0.1:4000") == {"verification"}
    assert policy.services_for("MOD1", "10.1.2.3:4000", user="alice") == {"verification", "store", "query"}
    assert policy.services_for("VIEWER", "192.0.2.1:1", "O=Hospital,CN=viewer") == {"verification", "query"}
    assert policy.services_for("VIEWER", "192.0.2.1:1", "CN=other,O=Hospital") == {"verification"}
    assert policy.services_for("VIEWER", "192.0.2.1:1", None) == {"verification"}
    assert AccessPolicy().services_for("ANYONE", "") == ALL_SERVICES
    strict = AccessPolicy((AccessRule("MOD1", frozenset({"store"})),))
    assert strict.services_for("STRANGER", "127.0.0.1:1") == frozenset()


def test_admission_decisions() -> None:
    policy = AccessPolicy(
        (AccessRule("MOD1", frozenset({"verification", "store", "query"})),),
        require_identity=frozenset({"store"}),
    )
    auth = Authenticator({"alice": HASH})
    right = P.UserIdentityRQ(2, True, b"alice", b"s3cret-pass")
    wrong = P.UserIdentityRQ(2, True, b"alice", b"nope")

    def decide(rq: P.AAssociateRQ):  # type: ignore[no-untyped-def]
        return admit(rq, auth.check(rq.user_identity), policy, address="127.0.0.1:5000", cert_subject=None)

    failed = decide(rq_with(ECHO, identity=wrong))
    assert failed.reject == REJECT_IDENTITY == P.AAssociateRJ(1, 2, 1)
    assert [e.kind for e in failed.events] == ["authentication-failed"]
    assert "nope" not in repr(failed)

    stranger = decide(rq_with(ECHO, calling="STRANGER"))
    assert stranger.reject == REJECT_CALLING_AE == P.AAssociateRJ(1, 1, 3)
    assert stranger.events[-1].kind == "access-denied"

    # Store needs a user: without one, an association that proposes only store is rejected...
    assert decide(rq_with(CT)).reject == REJECT_IDENTITY
    # ... and with something else usable, only the store context is refused.
    mixed = decide(rq_with(ECHO, CT, "1.2.840.10008.5.1.4.31"))
    assert mixed.reject is None and mixed.refuses(CT) and not mixed.refuses(ECHO)
    assert mixed.refuses("1.2.840.10008.5.1.4.31")  # worklist: not a service of MOD1
    assert {e.kind for e in mixed.events} == {"access-denied", "identity-required"}

    ok = decide(rq_with(CT, identity=right))
    assert ok.reject is None and ok.user == "alice" and not ok.refuses(CT)
    assert ok.identity_response == P.UserIdentityAC(b"")
    assert ok.events[0].kind == "authentication-succeeded" and ok.events[0].user == "alice"
    no_response = decide(rq_with(CT, identity=P.UserIdentityRQ(2, False, b"alice", b"s3cret-pass")))
    assert no_response.identity_response is None


def test_negotiation_refuses_per_context_and_answers_identity() -> None:
    rq = rq_with(ECHO, CT)
    result = negotiate_acceptor(rq, lambda uid: SyntaxSupport(), lambda uid: uid == CT)
    assert [(pc.id, pc.result) for pc in result.contexts_ac] == [(1, P.PC_ACCEPTANCE), (3, P.PC_USER_REJECTION)]
    ac = build_accept(rq, result, max_pdu_receive=16384, identity_response=P.UserIdentityAC(b""))
    decoded = P.decode_pdu(P.encode_pdu(ac))
    assert isinstance(decoded, P.AAssociateAC)
    assert [i for i in decoded.user_information if isinstance(i, P.UserIdentityAC)] == [P.UserIdentityAC(b"")]


def test_extended_negotiation_replies_only_for_accepted_classes() -> None:
    rq = P.AAssociateRQ(
        called_ae="AGENT", calling_ae="MOD1",
        presentation_contexts=(P.PresentationContextRQ(1, STUDY_FIND, ("1.2.840.10008.1.2",)),),
        user_information=(P.SOPClassExtendedNegotiation(STUDY_FIND, b"\x01"),
                          P.SOPClassExtendedNegotiation(CT, b"\x01")),
    )
    support = SyntaxSupport(extended_negotiation=lambda info: info[:1])
    result = negotiate_acceptor(rq, lambda uid: support)
    assert result.extended_replies == (P.SOPClassExtendedNegotiation(STUDY_FIND, b"\x01"),)
    refused = negotiate_acceptor(rq, lambda uid: support, lambda uid: True)
    assert refused.extended_replies == ()


# ---------------------------------------------------------------- requestor side


def test_client_identity_items(tmp_path: Path) -> None:
    pw = ClientIdentity("username-passcode", "alice", "s3cret-pass", positive_response=True)
    assert pw.request_item() == P.UserIdentityRQ(2, True, b"alice", b"s3cret-pass")
    assert "s3cret" not in repr(pw) and "s3cret" not in pw.describe()
    token = tmp_path / "token.jwt"
    token.write_text("eyJhbGciOi.payload.sig\n")
    assert ClientIdentity("jwt", file=token).request_item() == P.UserIdentityRQ(5, False, b"eyJhbGciOi.payload.sig")
    token.unlink()
    with pytest.raises(IdentityFileError, match="token.jwt"):
        ClientIdentity("jwt", file=token).request_item()


def test_wire_trace_never_shows_a_credential() -> None:
    rq = rq_with(ECHO, identity=P.UserIdentityRQ(2, True, b"alice", b"s3cret-pass"))
    text = describe_associate(rq) + " ".join(describe_encoded(P.encode_pdu(rq)))
    assert "alice" in text and "passcode not shown" in text and "s3cret" not in text
    jwt = rq_with(ECHO, identity=P.UserIdentityRQ(5, False, b"eyJhbGciOi.secret-payload.sig"))
    assert "secret-payload" not in describe_associate(jwt) and "JWT" in describe_associate(jwt)


# ---------------------------------------------------------------- profile keys


def profile(**sections: object) -> object:
    return parse_profile({"agent": {"data_dir": "/tmp/x"}, **sections}, source="p.toml")


def test_profile_security_section(tmp_path: Path) -> None:
    (tmp_path / "users").write_text(f"bob:{HASH}\n")
    p = profile(security={
        "users": {"alice": HASH},
        "password_file": str(tmp_path / "users"),
        "require_identity": ["store"],
        "access": [
            {"calling_ae": "MOD1", "services": ["verification", "store"], "hosts": ["127.0.0.1", "10.0.0.0/8"]},
            {"calling_ae": "*", "services": "all", "user": "bob"},
        ],
    })
    sec = p.security  # type: ignore[attr-defined]
    assert set(sec.users) == {"alice", "bob"} and sec.require_identity == {"store"}
    assert sec.access[0].calling_ae == "MOD1" and len(sec.access[0].hosts) == 2
    assert sec.access[1].services == ALL_SERVICES and sec.access[1].user == "bob"


@pytest.mark.parametrize("security, key, words", [
    ({}, "security", "an empty [security] section changes nothing"),
    ({"users": {"alice": "plain"}}, "security.users.alice", "salted password hash"),
    ({"require_identity": ["store"]}, "security.require_identity", "nobody could authenticate"),
    ({"require_identity": ["stores"]}, "security.require_identity[0]", "one of"),
    ({"access": [{"calling_ae": "MOD1"}]}, "security.access[0].services", "required"),
    ({"access": [{"calling_ae": "MOD1", "services": ["store"], "hosts": ["not-an-ip"]}]},
     "security.access[0].hosts", "IP addresses"),
    ({"access": [{"calling_ae": "MOD1", "services": ["store"], "user": "carol"}]},
     "security.access[0].user", "a user of security.users"),
    ({"access": [{"calling_ae": "MOD1", "services": ["store"], "certificate_subject": "CN=x"}]},
     "security.access[0].certificate_subject", "[tls]"),
    ({"acess": []}, "security.acess", "did you mean 'access'"),
    ({"password_file": "/nonexistent/users"}, "security.password_file", "readable file"),
])
def test_profile_security_errors(security: dict, key: str, words: str) -> None:
    with pytest.raises(ProfileError) as info:
        profile(security=security)
    assert info.value.key == key and words in info.value.expected, info.value


def test_allowed_calling_aes_still_works_but_not_next_to_access_rules() -> None:
    assert parse_profile({"agent": {"allowed_calling_aes": ["MOD1"]}}, source="p").agent.allowed_calling_aes == ("MOD1",)
    with pytest.raises(ProfileError) as info:
        parse_profile({"agent": {"allowed_calling_aes": ["MOD1"]},
                       "security": {"access": [{"calling_ae": "MOD1", "services": "all"}]}}, source="p")
    assert info.value.key == "agent.allowed_calling_aes" and "replace it" in info.value.expected


def test_profile_peer_identity(tmp_path: Path) -> None:
    peer = {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}
    p = profile(peers={"pacs": {**peer, "identity": {
        "type": "username-passcode", "username": "agent", "passcode": "pw", "positive_response": True}}})
    ident = p.peers["pacs"].identity  # type: ignore[attr-defined]
    assert ident == ClientIdentity("username-passcode", "agent", "pw", positive_response=True)
    token = tmp_path / "t.saml"
    token.write_text("<Assertion/>")
    p = profile(peers={"pacs": {**peer, "identity": {"type": "saml", "file": str(token)}}})
    assert p.peers["pacs"].identity.file == token  # type: ignore[attr-defined]
    assert profile(peers={"pacs": peer}).peers["pacs"].identity is None  # type: ignore[attr-defined]
    for identity, key in [
        ({"type": "password"}, "peers.pacs.identity.type"),
        ({"type": "username-passcode", "username": "a"}, "peers.pacs.identity.passcode"),
        ({"type": "username", "username": "a", "passcode": "x"}, "peers.pacs.identity.passcode"),
        ({"type": "jwt"}, "peers.pacs.identity.file"),
        ({"type": "kerberos", "file": str(tmp_path / "missing")}, "peers.pacs.identity.file"),
        ({"type": "username", "username": "a", "positive": True}, "peers.pacs.identity.positive"),
    ]:
        with pytest.raises(ProfileError) as info:
            profile(peers={"pacs": {**peer, "identity": identity}})
        assert info.value.key == key, (identity, info.value)


def test_passwd_command_makes_a_hash_the_profile_accepts(tmp_path: Path) -> None:
    import subprocess
    import sys

    made = subprocess.run([sys.executable, "-m", "agent", "passwd", "alice"], input="pass word 1\n",
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    assert line.startswith("alice:scrypt$") and "pass word" not in line
    assert verify_password(line.split(":", 1)[1], b"pass word 1")
    (tmp_path / "users").write_text(line + "\n")
    p = profile(security={"password_file": str(tmp_path / "users"), "require_identity": "all"})
    assert set(p.security.users) == {"alice"}  # type: ignore[attr-defined]
    refused = subprocess.run([sys.executable, "-m", "agent", "passwd", "a:b"], input="x\n",
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "must not contain ':'" in refused.stderr


def test_storage_classes_offered_for_c_get_only_count_as_query() -> None:
    """A caller allowed to query but not to store may still receive its C-GET's sub-operations: the
    storage contexts it proposes with the SCP role only belong to "query"."""
    policy = AccessPolicy((AccessRule("VIEWER", frozenset({"query"})),))
    get = "1.2.840.10008.5.1.4.1.2.2.3"
    items: tuple[P.SubItem, ...] = (P.MaximumLength(16384), P.RoleSelection(CT, False, True))
    rq = P.AAssociateRQ(
        called_ae="AGENT", calling_ae="VIEWER", user_information=items,
        presentation_contexts=(P.PresentationContextRQ(1, get, ("1.2.840.10008.1.2",)),
                               P.PresentationContextRQ(3, CT, ("1.2.840.10008.1.2",)),
                               P.PresentationContextRQ(5, "1.2.840.10008.5.1.4.1.1.7", ("1.2.840.10008.1.2",))),
    )
    decision = admit(rq, Authenticator().check(None), policy, address="127.0.0.1:1", cert_subject=None)
    assert decision.reject is None
    assert not decision.refuses(get) and not decision.refuses(CT)  # CT: SCP role only, for C-GET
    assert decision.refuses("1.2.840.10008.5.1.4.1.1.7")  # no role item: a C-STORE to us, not allowed
    assert [e.services for e in decision.events if e.kind == "access-denied"] == [("store",)]
