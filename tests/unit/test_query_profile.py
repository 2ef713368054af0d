"""`[query]`: what the profile accepts, what it refuses (file, key, expectation), and what
`dicom-agent check-profile` says it turns on."""

from __future__ import annotations

import pytest

from agent.cli import describe_profile
from agent.errors import ProfileError
from agent.profile import QuerySettings, parse_profile

BASE = {"agent": {"ae_title": "A", "data_dir": "/tmp/qr-profile"},
        "peers": {"ws": {"ae_title": "WS", "host": "127.0.0.1", "port": 104}}}


def test_defaults_and_check_profile_line() -> None:
    p = parse_profile({**BASE, "query": {}}, source="p.toml")
    assert p.query == QuerySettings()
    assert "[query] patient root and study root: find, move, get; move to any peer; relational" in describe_profile(p)
    p = parse_profile({**BASE, "query": {"models": ["study"], "operations": ["find"], "move_destinations": ["ws"],
                                         "relational": False, "max_results": 5}}, source="p.toml")
    assert (p.query.models, p.query.operations, p.query.move_destinations, p.query.max_results) == (  # type: ignore[union-attr]
        ("study",), ("find",), ("ws",), 5)
    assert "[query] study root: find; move to ws\n" in describe_profile(p) + "\n"
    assert "[query] off" in describe_profile(parse_profile(BASE, source="p.toml"))


@pytest.mark.parametrize(("query", "message"), [
    ({"models": ["worklist"]}, "query.models[0]: one of 'patient', 'study'"),
    ({"models": []}, "query.models: a non-empty array without repeats"),
    ({"operations": ["find", "find"]}, "query.operations: a non-empty array without repeats"),
    ({"move_destinations": ["pacs"]}, "query.move_destinations[0]: the name of a peer defined in [peers]"),
    ({"max_results": 0}, "query.max_results"),
    ({"relational": "yes"}, "query.relational"),
    ({"fuzzy": True}, "query.fuzzy"),  # a key that does nothing is refused, not ignored
])
def test_refused_with_file_and_key(query: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile({**BASE, "query": query}, source="p.toml")
    assert str(caught.value).startswith("p.toml: ") and message in str(caught.value)


def test_extended_negotiation_answer_follows_relational() -> None:
    """PS3.4 C.5.1.1: byte 1 relational, 2 date-time matching, 3 fuzzy, 4 timezone; only the first may
    be granted, and only when the profile allows it."""
    from agent.services.query.scp import extended_negotiation_reply

    assert extended_negotiation_reply(QuerySettings())(b"\x01\x01\x01") == b"\x01\x00\x00"
    assert extended_negotiation_reply(QuerySettings(relational=False))(b"\x01") == b"\x00"
    assert extended_negotiation_reply(QuerySettings())(b"\x00\x01") == b"\x00\x00"
