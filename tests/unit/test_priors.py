"""Priors: the `[device] priors_*` keys (a key that would do nothing, or a set-up that cannot receive
or would send the priors back, is a profile error) and the choice of studies to fetch."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag

from agent.errors import ProfileError
from agent.profile import load_profile
from agent.workflow.priors import choose_priors

BASE = """
[agent]
ae_title = "MOD"
bind = "127.0.0.1"
port = 0
data_dir = "data"

[peers.pacs]
ae_title = "PACS"
host = "127.0.0.1"
port = 104
"""


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "p.toml"
    path.write_text(BASE + text)
    return load_profile(path)


def error(tmp_path: Path, text: str) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        load(tmp_path, text)
    return info.value


def test_priors_keys(tmp_path: Path) -> None:
    device = '[device]\ndriver = "sim"\n'
    p = load(tmp_path, "[storage]\n" + device + 'priors_from = "pacs"\n')
    assert (p.device.priors_from, p.device.priors_retrieve, p.device.priors_max) == ("pacs", "move", 3)
    p = load(tmp_path, device + 'priors_from = "pacs"\npriors_retrieve = "get"\npriors_max = 1\n')
    assert (p.device.priors_retrieve, p.device.priors_max) == ("get", 1)
    assert load(tmp_path, device).device.priors_from is None

    e = error(tmp_path, device + 'priors_from = "pacs"\n')  # move, but nothing would receive the priors
    assert e.key == "device.priors_retrieve" and "[storage]" in e.expected
    e = error(tmp_path, '[storage]\nforward_to = ["pacs"]\n' + device + 'priors_from = "pacs"\n')
    assert e.key == "device.priors_retrieve" and "forwarded back" in e.expected
    e = error(tmp_path, device + 'priors_from = "archive"\npriors_retrieve = "get"\n')
    assert e.key == "device.priors_from" and "pacs" in e.expected
    e = error(tmp_path, device + 'priors_max = 2\n')
    assert e.key == "device.priors_max" and "priors_from" in e.expected
    e = error(tmp_path, device + 'priors_from = "pacs"\npriors_retrieve = "fetch"\n')
    assert e.key == "device.priors_retrieve"
    e = error(tmp_path, device + 'priors_from = "pacs"\npriors_retrieve = "get"\npriors_max = 0\n')
    assert e.key == "device.priors_max"


def study(uid: str, date: str, time: str = "", count: str | None = None) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = uid, date, time
    if count is not None:
        ds.NumberOfStudyRelatedInstances = count
    return ds


def test_choose_priors_newest_first_without_the_current_study() -> None:
    matches = [study("1.1", "20200101", count="4"), study("1.2", "20240101", "0900"), study("1.3", "20240101", "1000"),
               study("1.4", "20250101"), study("1.2", "20240101", "0900"), study("", "20990101")]
    assert choose_priors(matches, current="1.4", limit=2) == [("1.3", None), ("1.2", None)]
    assert choose_priors(matches, current="", limit=10) == [("1.4", None), ("1.3", None), ("1.2", None), ("1.1", 4)]
    odd = study("1.5", "20200101")  # a peer's malformed IS value, as it arrives undecoded
    odd[0x00201208] = RawDataElement(BaseTag(0x00201208), "IS", 4, b"many", 0, False, True)
    assert choose_priors([odd], current="", limit=1) == [("1.5", None)]


def test_get_proposals_name_only_storage_classes_with_the_scp_role() -> None:
    """C-GET proposes each default storage class (none lost to a misspelt keyword) twice, with this side
    as SCP (PS3.4 C.4.3.1), and refuses more than 128 contexts with a clear message."""
    from agent.services.query import scu
    from agent.services.query.models import STUDY_ROOT
    from agent.services.storage_classes import STORAGE_KEYWORDS, is_storage_sop_class

    assert all(k in STORAGE_KEYWORDS for k in scu.GET_STORAGE_KEYWORDS)
    contexts = scu.proposals("study", ["find", "get"])
    assert [c.abstract_syntax for c in contexts[:2]] == [STUDY_ROOT.find, STUDY_ROOT.get]
    storage = contexts[2:]
    assert len(storage) == 2 * len(scu.GET_STORAGE_KEYWORDS) and len(contexts) <= 128
    assert all(is_storage_sop_class(c.abstract_syntax) and c.scp_role is True and c.scu_role is False for c in storage)
    too_many = [uid for uid in STORAGE_KEYWORDS.values()][:80]
    with pytest.raises(ValueError, match="at most 63 storage classes"):
        scu.proposals("study", ["find", "get"], storage_classes=too_many)
