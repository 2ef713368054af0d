"""`[tls]` and the peers' `tls*` keys: what a profile may say about TLS, and the errors for what it may not."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ProfileError
from agent.profile import load_profile


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name in ("agent.pem", "agent.key", "ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-----BEGIN PLACEHOLDER-----\n")  # parsed at start-up, not here
    return tmp_path


def load(folder: Path, body: str):
    path = folder / "profile.toml"
    path.write_text('[agent]\nae_title = "TEST"\nport = 11112\ndata_dir = "data"\n' + body)
    return load_profile(path)


def error(folder: Path, body: str) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        load(folder, body)
    return info.value


TLS = '[tls]\nport = 2762\ncertificate = "agent.pem"\nkey = "agent.key"\nca = "ca.pem"\n'


def test_tls_section_defaults(files: Path) -> None:
    p = load(files, TLS)
    assert p.tls is not None
    assert (p.tls.port, p.tls.profile, p.tls.client_certificates, p.tls.plain_listener) == (
        2762, "bcp195-nd", "required", True)
    assert p.tls.certificate == files / "agent.pem" and p.tls.ca == files / "ca.pem"


def test_peer_tls_inherits_the_listener_identity_and_ca(files: Path) -> None:
    p = load(files, TLS + '[peers.pacs]\nae_title = "PACS"\nhost = "pacs.example"\nport = 2762\ntls = true\n'
                          '[peers.plain]\nae_title = "PLAIN"\nhost = "h"\nport = 104\n')
    t = p.peers["pacs"].tls
    assert t is not None and (t.ca, t.certificate, t.key) == (files / "ca.pem", files / "agent.pem", files / "agent.key")
    assert t.profile == "bcp195-nd" and t.server_name is None and t.subject is None
    assert p.peers["plain"].tls is None


def test_peer_tls_own_keys(files: Path) -> None:
    p = load(files, '[peers.pacs]\nae_title = "PACS"\nhost = "10.0.0.5"\nport = 2762\ntls = true\n'
                    'tls_ca = "ca.pem"\ntls_certificate = "client.pem"\ntls_key = "client.key"\n'
                    'tls_profile = "bcp195"\ntls_server_name = "pacs.example"\ntls_subject = "CN=PACS,O=H"\n')
    t = p.peers["pacs"].tls
    assert t is not None and t.certificate == files / "client.pem" and t.profile == "bcp195"
    assert (t.server_name, t.subject) == ("pacs.example", "CN=PACS,O=H")


@pytest.mark.parametrize(
    ("body", "key", "fragment"),
    [
        (TLS + 'profile = "aes"\n', "tls.profile", "'bcp195-nd', 'bcp195', 'bcp195-extended'"),
        (TLS + 'client_certificates = "maybe"\n', "tls.client_certificates", "'required', 'optional', 'none'"),
        (TLS + "ciphers = 'ALL'\n", "tls.ciphers", "a known key"),
        (TLS.replace('certificate = "agent.pem"', 'certificate = "missing.pem"'), "tls.certificate", "does not exist"),
        ('[tls]\nport = 2762\ncertificate = "agent.pem"\nkey = "agent.key"\n', "tls.ca", "a CA bundle"),
        (TLS.replace("2762", "11112"), "tls.port", "a port other than [agent] port 11112"),
        ('[tls]\ncertificate = "agent.pem"\nkey = "agent.key"\nca = "ca.pem"\n', "tls.port", "required"),
        ('[peers.p]\nae_title = "P"\nhost = "h"\nport = 1\ntls_ca = "ca.pem"\n', "peers.p.tls_ca", "tls = true"),
        ('[peers.p]\nae_title = "P"\nhost = "h"\nport = 1\ntls = true\ntls_key = "client.key"\n', "peers.p.tls_certificate",
         "set together"),
        ('[peers.p]\nae_title = "P"\nhost = "h"\nport = 1\ntls = "yes"\n', "peers.p.tls", "true or false"),
        ('[peers.p]\nae_title = "P"\nhost = "h"\nport = 1\ntls = true\ntls_profile = "tls1.0"\n', "peers.p.tls_profile",
         "'bcp195-nd'"),
    ],
)
def test_bad_tls_settings(files: Path, body: str, key: str, fragment: str) -> None:
    err = error(files, body)
    assert err.key == key and fragment in err.expected, err


def test_unusable_certificate_stops_the_start_with_the_key_named(files: Path) -> None:
    from agent.app import Agent

    agent = Agent(load(files, TLS))  # placeholder PEM files: parse fine, cannot be loaded
    agent.open_persistence()
    with pytest.raises(ProfileError) as info:
        agent.build()
    assert info.value.key == "tls.certificate" and "cannot use certificate" in info.value.expected


def test_check_profile_shows_tls(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    load(files, TLS + 'plain_listener = false\n[peers.pacs]\nae_title = "PACS"\nhost = "h"\nport = 2762\ntls = true\n')
    assert main(["check-profile", str(files / "profile.toml")]) == 0
    out = capsys.readouterr().out
    assert "peer pacs: PACS at h:2762 (TLS)" in out
    assert "[tls] port 2762, profile bcp195-nd, client certificates required, plain TCP off" in out
