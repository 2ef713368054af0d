"""A statement must never contradict itself (the hand-written ones do: a class in the overview and not
in the acceptance tables, one timeout in one section and another elsewhere). Checked for the statement
of every shipped profile, in-process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.conformance import render_markdown, statement
from agent.conformance.model import Statement, Table
from agent.profile import load_default_profile, load_profile

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ["embedded"] + sorted(p.name for p in (ROOT / "profiles").glob("*.toml"))


@pytest.fixture(scope="module", params=PROFILES)
def doc(request: pytest.FixtureRequest) -> Statement:
    name = request.param
    return statement(load_default_profile() if name == "embedded" else load_profile(ROOT / "profiles" / name))


def _tables(doc: Statement, number_prefix: str) -> list[Table]:
    return [b for s in doc.sections if s.number.startswith(number_prefix) for b in s.blocks if isinstance(b, Table)]


def _rows(doc: Statement, caption: str) -> list[tuple[str, ...]]:
    return [row for t in _tables(doc, "") if t.caption.startswith(caption) for row in t.rows]


def test_accepted_classes_agree_in_every_section(doc: Statement) -> None:
    accepted = {c.uid for c in doc.facts.accepted}
    in_5 = {row[1] for s in doc.sections if s.title.startswith("SCP of") for b in s.blocks
            if isinstance(b, Table) and "SOP Class UID" in b.head for row in b.rows}
    assert in_5 == accepted
    rows_7 = _rows(doc, "Accepted presentation contexts")
    listed_7 = {r[1] for r in rows_7 if r[1] != "(all)"}
    counted = sum(int(r[0].split()[0]) for r in rows_7 if r[1] == "(all)")
    assert len(listed_7) + counted == len(accepted) and listed_7 <= accepted
    overview = _rows(doc, "Table N.1-1")
    scp_yes = [r for r in overview if r[2] == "Yes"]
    n_overview = sum(int(m.group(1)) if (m := re.search(r": (\d+) Storage SOP Classes", r[0])) else 1 for r in scp_yes)
    assert n_overview == len([c for c in doc.facts.accepted if c.operations])


def test_services_on_agree_between_overview_mapping_and_sections(doc: Statement) -> None:
    mapping = {r[1]: r[2] for r in _rows(doc, "Table N.5-1")}
    by_title = {s.title: s for s in doc.sections}
    for service, roles in mapping.items():
        scp = by_title.get(f"SCP of the {service} Service")
        if scp is not None:
            assert ("SCP" in roles) == (not scp.not_applicable), service
    overview_services = {r[0].split(":")[0] for r in _rows(doc, "Table N.1-1")}
    assert overview_services == set(mapping)


def test_one_value_per_parameter(doc: Statement) -> None:
    md = render_markdown(doc)
    config = {r[0]: r[2] for r in _rows(doc, "Table N.6-1")}
    general = {r[0]: r[1] for r in _rows(doc, "Table N.7-1")}
    pairs = {"[agent] artim_timeout": "ARTIM timeout (association request and release)",
             "[agent] dimse_timeout": "DIMSE response timeout", "[agent] idle_timeout": "Network idle timeout",
             "[agent] connect_timeout": "TCP connect timeout", "[agent] max_pdu_length": "Maximum PDU length received",
             "Implementation Class UID": "Implementation Class UID"}
    for key, label in pairs.items():
        assert general[label] == config[key] or (config[key] == "0 (unlimited)" and general[label] == "unlimited (0)"), key
    assert general["Associations accepted at once"].startswith(config["[agent] max_associations"] + ";")
    assert f"TCP port {doc.facts.port}" in md and f"| {doc.facts.port} | DICOM" in md
    for row in _rows(doc, "Ports"):
        assert row[0] in {str(doc.facts.port), config.get("[tls] port", "")}


def test_na_sections_are_empty_of_facts(doc: Statement) -> None:
    for s in doc.sections:
        if s.not_applicable:
            assert not any(isinstance(b, Table) for b in s.blocks), s.number
