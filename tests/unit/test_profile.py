"""Profiles: the shipped examples parse, and every mistake names the file, the dotted key and the fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.errors import ProfileError
from agent.profile import (
    EMBEDDED_SOURCE,
    Profile,
    load_default_profile,
    load_profile,
    parse_duration,
    parse_size,
)

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted((ROOT / "profiles").glob("*.toml"))

MINIMAL = """
[agent]
ae_title = "TEST"
bind = "127.0.0.1"
port = 0

[peers.pacs]
ae_title = "PACS"
host = "127.0.0.1"
port = 11112
"""


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> ProfileError:
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert info.value.file == str(path)
    assert str(info.value).startswith(f"{path}: {info.value.key}: ")
    return info.value


# --- the shipped profiles ----------------------------------------------------------------------------


def test_examples_exist() -> None:
    assert {p.name for p in PROFILES} >= {"default.toml", "modality.toml", "archive.toml", "film-printer.toml"}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_example_profile_parses(path: Path) -> None:
    profile = load_profile(path)
    assert profile.source == str(path)
    for peer in profile.peers.values():
        assert peer.host == "127.0.0.1" or peer.host.endswith("example.org")


def test_embedded_default_parses_and_matches_profiles_default() -> None:
    embedded = load_default_profile()
    assert embedded.source == EMBEDDED_SOURCE
    assert embedded.agent.ae_title == "DICOM_AGENT"
    assert embedded.agent.port == 11112
    assert embedded.storage is not None and embedded.storage.accept_all
    shipped = load_profile(ROOT / "profiles" / "default.toml")
    # The only difference: a relative data_dir is the file's folder's, the embedded copy's is the cwd's.
    assert shipped.agent.data_dir == ROOT / "profiles" / "dicom-agent-data"
    agent = dataclasses.replace(shipped.agent, data_dir=embedded.agent.data_dir)
    assert dataclasses.replace(shipped, source=EMBEDDED_SOURCE, agent=agent) == embedded
    packaged = ROOT / "agent" / "default_profile.toml"
    assert packaged.read_text() == (ROOT / "profiles" / "default.toml").read_text()


def test_modality_example_wiring() -> None:
    p = load_profile(ROOT / "profiles" / "modality.toml")
    assert p.worklist is not None and p.worklist.source == "ris"
    assert p.worklist.station_ae == p.agent.ae_title  # defaulted from [agent]
    assert p.mpps is not None and p.mpps.send_to == ("ris",)
    assert p.storage is not None and p.storage.forward_to == ("pacs",) and p.storage.commit_with == "pacs"
    assert "1.2.840.10008.5.1.4.1.1.6.1" in p.storage.sop_classes  # UltrasoundImageStorage
    assert p.peers["ris"].dimse_timeout == 30.0
    assert p.peers["pacs"].dimse_timeout == p.agent.dimse_timeout  # inherited


def test_film_printer_example_serves_print_with_file_driver() -> None:
    p = load_profile(ROOT / "profiles" / "film-printer.toml")
    assert p.print is not None and p.print.serve and p.print.driver == "file"
    assert p.storage is None and p.worklist is None  # absent sections: services off


# --- values ------------------------------------------------------------------------------------------


def test_minimal_profile_defaults_and_values_are_frozen(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, MINIMAL))
    assert isinstance(p, Profile)
    assert p.agent.max_associations == 16 and p.agent.called_ae_check is False
    assert p.agent.artim_timeout == 30.0 and p.agent.allowed_calling_aes == ()
    assert p.storage is None and p.commitment is None and p.mpps is None and p.print is None
    pacs = p.peers["pacs"]
    assert (pacs.retry_base, pacs.retry_cap, pacs.max_age, pacs.max_attempts) == (5.0, 600.0, 604800.0, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.agent.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.peers["x"] = pacs  # type: ignore[index]
    assert not hasattr(p.agent, "__dict__")  # slotted


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(30, 30.0), (1.5, 1.5), ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("7d", 604800.0),
     ("250ms", 0.25), ("45", 45.0), ("0s", 0.0)],
)  # fmt: skip
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "-1s", "s", "", True, -3, "1w", [1]])
def test_bad_durations(text: object) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize(
    ("text", "size"),
    [(1024, 1024), ("100MB", 100_000_000), ("2GiB", 2 * 2**30), ("512KiB", 524288), ("10kb", 10_000), ("7B", 7)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["100 M", "lots", -1, "1.5XB", False])
def test_bad_sizes(text: object) -> None:
    assert parse_size(text) is None


def test_durations_and_sizes_in_a_profile(tmp_path: Path) -> None:
    p = load_profile(
        write(tmp_path, MINIMAL + '[storage]\nfree_space_floor = "2GiB"\nretention = "30d"\ncommit_idle = 90\n')
    )
    assert p.storage is not None
    assert (p.storage.free_space_floor, p.storage.retention, p.storage.commit_idle) == (2 * 2**30, 2592000.0, 90.0)


def test_relative_paths_resolve_against_the_profiles_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    path = write(site, MINIMAL.replace('port = 0', 'port = 0\ndata_dir = "store/here"')
                 + '[worklist]\nfolder = "../incoming"\n')
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    p = load_profile(Path("..") / "site" / "p.toml")  # a relative profile path, too
    assert p.agent.data_dir == site / "store" / "here"
    assert p.worklist is not None and p.worklist.folder == tmp_path / "incoming"


def test_embedded_default_relative_data_dir_is_the_working_directorys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_default_profile().agent.data_dir == tmp_path / "dicom-agent-data"


def test_home_in_data_dir_expands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(tmp_path, MINIMAL.replace('port = 0', 'port = 0\ndata_dir = "~/agent"'))
    assert load_profile(path).agent.data_dir == tmp_path / "home" / "agent"


def test_sop_class_keywords_and_transfer_syntax_aliases_resolve_to_uids(tmp_path: Path) -> None:
    p = load_profile(
        write(
            tmp_path,
            MINIMAL + '[storage]\naccept = ["CTImageStorage", "1.2.840.10008.5.1.4.1.1.4"]\n'
            'transfer_syntaxes = ["implicit-le", "1.2.840.10008.1.2.1"]\n',
        )
    )
    assert p.storage is not None and not p.storage.accept_all
    assert p.storage.sop_classes == ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4")
    assert p.storage.transfer_syntaxes == ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


# --- errors ------------------------------------------------------------------------------------------


def test_bad_port_type(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL.replace("port = 11112", 'port = "abc"'))
    assert err.key == "peers.pacs.port"
    assert err.expected == "an integer from 1 to 65535, got 'abc'"


def test_port_out_of_range(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL.replace("port = 0", "port = 70000"))
    assert err.key == "agent.port"
    assert "from 0 to 65535" in err.expected and "70000" in err.expected


def test_unknown_key_suggests_and_lists_allowed_keys(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL.replace("host =", "hots ="))
    assert err.key == "peers.pacs.hots"
    assert "did you mean 'host'?" in err.expected
    assert "ae_title" in err.expected and "retry_cap" in err.expected


def test_unknown_section(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL + "[worklsit]\nserve = true\n")
    assert err.key == "worklsit"
    assert "did you mean 'worklist'?" in err.expected and "storage" in err.expected


def test_bad_duration_string(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL + 'retry_base = "5 minutes"\n')
    assert err.key == "peers.pacs.retry_base"
    assert '"30s"' in err.expected and "'5 minutes'" in err.expected


def test_unknown_sop_class_keyword(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL + '[storage]\naccept = ["CTImageStorage", "CTImageStorag"]\n')
    assert err.key == "storage.accept[1]"
    assert "'CTImageStorag'" in err.expected and "did you mean 'CTImageStorage'?" in err.expected


def test_non_storage_sop_class_rejected(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL + '[storage]\naccept = ["1.2.840.10008.1.1"]\n')  # Verification
    assert err.key == "storage.accept[0]" and "Storage SOP Class" in err.expected


def test_peer_reference_to_missing_peer(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL + '[mpps]\nsend_to = ["pacs", "ris"]\n')
    assert err.key == "mpps.send_to[1]"
    assert "'ris'" in err.expected and "known: pacs" in err.expected


def test_commit_with_missing_peer(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL + '[storage]\nforward_to = ["pacs"]\ncommit_with = "pcas"\n')
    assert err.key == "storage.commit_with" and "did you mean 'pacs'?" in err.expected


def test_toml_syntax_error_gives_line(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL + "[storage\naccept = 1\n")
    assert err.key == "(syntax)"
    assert f"line {MINIMAL.count(chr(10)) + 1}" in err.expected


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert (info.value.file, info.value.key) == (str(path), "(file)")
    assert info.value.expected.startswith("a readable TOML file")


@pytest.mark.parametrize(
    ("extra", "key", "fragment"),
    [
        ('ae_title = "THIS_TITLE_IS_TOO_LONG"', "agent.ae_title", "AE title"),
        ('ae_title = "A\\\\B"', "agent.ae_title", "no backslash"),
        ('ae_title = "    "', "agent.ae_title", "not all spaces"),
        ("max_associations = 0", "agent.max_associations", "at least 1"),
        ("max_pdu_length = 100", "agent.max_pdu_length", "0 (unlimited)"),
        ('log_level = "verbose"', "agent.log_level", "'debug'"),
        ("called_ae_check = 1", "agent.called_ae_check", "true or false"),
        ('connect_timeout = "0s"', "agent.connect_timeout", "positive duration"),
    ],
)
def test_agent_value_errors(tmp_path: Path, extra: str, key: str, fragment: str) -> None:
    text = MINIMAL.replace('ae_title = "TEST"\n', "") if key == "agent.ae_title" else MINIMAL
    err = error_for(tmp_path, text.replace("[agent]\n", f"[agent]\n{extra}\n"))
    assert err.key == key and fragment in err.expected


def test_missing_required_peer_key(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL.replace('host = "127.0.0.1"\nport = 11112\n', "port = 11112\n"))
    assert err.key == "peers.pacs.host" and "required" in err.expected


def test_bad_worklist_date(tmp_path: Path) -> None:
    err = error_for(tmp_path, MINIMAL + '[worklist]\ndate = "20240230"\n')
    assert err.key == "worklist.date" and "YYYYMMDD" in err.expected
