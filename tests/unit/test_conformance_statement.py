"""`dicom-agent conformance`: the statement's structure (PS3.2 Annex N), its renderings, the command line,
and the committed docs/conformance.md, which must be what the generator produces today."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from agent.cli import main
from agent.conformance import render_html, render_markdown, statement
from agent.profile import load_default_profile
from tests.conftest import write_profile

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "dicom-agent conformance --output docs/conformance.md"


@pytest.fixture(scope="module")
def default_doc():  # type: ignore[no-untyped-def]
    return statement(load_default_profile())


def test_committed_statement_is_current(default_doc) -> None:  # type: ignore[no-untyped-def]
    committed = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
    assert committed == render_markdown(default_doc), (
        f"docs/conformance.md is stale (the agent's services or the default profile changed): run `{REGENERATE}`")


def test_annex_n_sections_in_order_and_na_kept(default_doc) -> None:  # type: ignore[no-untyped-def]
    tops = [s.number for s in default_doc.sections if s.level == 1]
    assert tops == ["1", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]  # N.2 is the table of contents
    md = render_markdown(default_doc)
    assert "## N.2 Table of Contents" in md
    for s in default_doc.sections:
        if s.not_applicable:  # PS3.2: a section that does not apply is kept, marked "- N/A"
            assert re.search(rf"#+ N\.{re.escape(s.number)} {re.escape(s.title)}\n\n- N/A\n", md), s.number
    numbers = [tuple(int(x) for x in s.number.split(".")) for s in default_doc.sections]
    assert numbers == sorted(numbers)


def test_html_is_one_self_contained_file_with_contents(default_doc) -> None:  # type: ignore[no-untyped-def]
    html = render_html(default_doc)

    class Check(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.ids: set[str] = set()
            self.links: list[str] = []
            self.external: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if a.get("id"):
                self.ids.add(a["id"] or "")
            if tag == "a" and a.get("href"):
                self.links.append(a["href"] or "")
            if tag in ("script", "link", "img", "iframe") or (a.get("src")):
                self.external.append(tag)

    c = Check()
    c.feed(html)
    assert not c.external, "the HTML statement must not load anything"
    assert {link.lstrip("#") for link in c.links} == {s.anchor for s in default_doc.sections} <= c.ids
    assert "<style>" in html and html.count("<table>") == html.count("</table>")


def test_statuses_and_timeouts_come_from_the_profile(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, "[storage]\n", agent_extra='dimse_timeout = "17s"\nmax_associations = 3\n')
    doc = statement(profile)
    assert doc.facts.timeouts["dimse"] == 17.0 and doc.facts.max_associations == 3
    md = render_markdown(doc)
    assert "| DIMSE response timeout | 17 s |" in md
    assert "| Associations accepted at once | 3;" in md
    assert "Storage SCP (C-STORE)" in doc.facts.statuses and "Modality Worklist SCP (C-FIND)" not in doc.facts.statuses
    assert not (tmp_path / "data").exists(), "generating a statement must not create the data folder"


def test_cli_writes_markdown_and_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = ROOT / "profiles" / "film-printer.toml"
    assert main(["conformance", "--profile", str(profile)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# DICOM Conformance Statement") and "FILM_PRINTER" in out
    assert "SCP of the Print Management Service\n\n" in out and "Film Size ID" in out
    target = tmp_path / "statement.html"
    assert main(["conformance", "--profile", str(profile), "--format", "html", "--output", str(target)]) == 0
    assert target.read_text().startswith("<!DOCTYPE html>") and capsys.readouterr().out == ""


def test_cli_says_why_it_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "no-such-folder" / "statement.md"
    assert main(["conformance", "--output", str(target)]) == 1
    assert f"cannot write {target}" in capsys.readouterr().err and not target.exists()


def test_cli_refuses_a_bad_profile_and_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[agent]\nport = 'x'\n")
    assert main(["conformance", "--profile", str(bad)]) == 78
    assert "agent.port" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["conformance", "--format", "pdf"])
    assert exc.value.code == 2


def test_security_sections_follow_tls_and_security(tmp_path: Path, tls_pki) -> None:  # type: ignore[no-untyped-def]
    profile = write_profile(tmp_path, f"""
        [tls]
        port = 2762
        certificate = "{tls_pki.server_pem}"
        key = "{tls_pki.server_key}"
        ca = "{tls_pki.ca_pem}"
        plain_listener = false
        [security]
        users = {{ alice = "scrypt$16384$8$1$c2FsdA==$aGFzaA==" }}
        require_identity = ["store"]
        [peers.pacs]
        ae_title = "PACS"
        host = "127.0.0.1"
        port = 104
        tls = true
        [peers.pacs.identity]
        type = "username-passcode"
        username = "bob"
        passcode = "secret-passcode"
        positive_response = true
        [storage]
        forward_to = ["pacs"]
        """)
    doc = statement(profile)
    by_number = {s.number: s for s in doc.sections}
    assert not by_number["8.4"].not_applicable and not by_number["8.5"].not_applicable
    md = render_markdown(doc)
    assert "| 2762 | DICOM over TLS (bcp195-nd) |" in md and "DICOM (plain TCP)" not in md
    assert "| Listener, port 2762 | bcp195-nd | client certificates required |" in md
    assert "| pacs | username-passcode | requested |" in md
    assert "| Services that need an authenticated user | store |" in md
    assert "secret-passcode" not in md and "aGFzaA" not in md  # no secret reaches the statement


def test_statement_does_not_depend_on_what_else_was_imported() -> None:
    """pynetdicom adds the newest transfer syntaxes to pydicom's registry when imported; the agent's
    accepted set, and so its statement, must be the same in a process that never imports it."""
    import subprocess
    import sys

    code = ("{pre}from agent.services.storage import COMPRESSED_TRANSFER_SYNTAXES as C; "
            "from agent.conformance.sections import ts_name; "
            "print('\\n'.join(f'{{ts_name(u)}} ({{u}})' for u in sorted(C)))")
    plain = subprocess.run([sys.executable, "-c", code.format(pre="")], capture_output=True, text=True, check=True)
    after = subprocess.run([sys.executable, "-c", code.format(pre="import pynetdicom; ")], capture_output=True,
                           text=True, check=True)
    assert plain.stdout == after.stdout
    assert "JPEG XL Lossless (1.2.840.10008.1.2.4.110)" in plain.stdout


def test_audit_trail_section_follows_the_profile(tmp_path: Path) -> None:
    doc = statement(write_profile(tmp_path, '[audit]\nhost = "127.0.0.1"\ntransport = "udp"\n'))
    section = next(s for s in doc.sections if s.number == "6.6")
    assert not section.not_applicable
    assert "| Audit repository (syslog) | 127.0.0.1:514 over UDP (RFC 5426) |" in render_markdown(doc)
    assert next(s for s in statement(load_default_profile()).sections if s.number == "6.6").not_applicable
