"""The one-pass header walk yields the same index values as pydicom, the reference.

`scan_dataset` + `header.index_values` (what the Storage SCP indexes) against `dcmread` + `Dataset.get`
for every Part 10 file of pydicom's own test data, and for hypothesis-made data sets: names and texts in
the default repertoire, ISO_IR 100, ISO_IR 192, ISO_IR 144 and ISO 2022 IR 87 (Japanese with escape
sequences), explicit and implicit VR, big endian, multiple values, sequences of undefined length before
the indexed elements.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from agent.store.dicomfile import DataSetError, read_meta, scan_dataset
from agent.store.header import index_values
from agent.store.index_columns import INDEX_COLUMNS, INDEX_TAGS
from agent.store.sequences import unpack

#: pydicom test files the walker refuses, and why: a received data set like these gets A900/C000.
REFUSED = {
    "rtplan_truncated.dcm": "truncated",
    "MR_truncated.dcm": "truncated",
    # The meta says Explicit VR but the data set is Implicit VR; pydicom guesses, a receiver must not.
    "SC_rgb_jpeg.dcm": "data set not in its transfer syntax",
}


def reference(path: str | Path) -> tuple[dict[str, Any], Any, Any]:
    """What the index held when it was filled from pydicom (the previous implementation)."""
    ds = dcmread(path, stop_before_pixels=True)

    def text(value: Any) -> str | None:
        if value is None:
            return None
        joined = "\\".join(str(v) for v in value) if isinstance(value, MultiValue | list) else str(value)
        return joined or None

    def integer(value: Any) -> int | None:
        if isinstance(value, MultiValue | list):
            value = value[0] if value else None
        try:
            return None if value in (None, "") else int(value)
        except ValueError:  # an invalid IS ('1A') is kept by pydicom as text; the index has no number
            return None

    def convert(column: Any) -> Any:
        if column.kind == "sequence":
            return items(ds.get(column.keyword))
        return (integer if column.kind == "int" else text)(ds.get(column.keyword))

    out = {c.column: convert(c) for c in INDEX_COLUMNS}
    return out, text(ds.get("SOPClassUID")), text(ds.get("SOPInstanceUID"))


def items(seq: Any) -> Any:
    """A sequence's items as nested lists of (tag, text) for comparison; None when absent or empty."""
    if not seq:
        return None
    return [[(int(e.tag), items(e.value) if e.VR == "SQ" else str(e.value)) for e in item] for item in seq]


def ours(path: str | Path) -> tuple[dict[str, Any], Any, Any]:
    """Our index values; a sequence column decoded back (agent.store.sequences) to compare its items."""
    meta = read_meta(path)
    values, sop_class, sop_instance = index_values(
        scan_dataset(path, meta.dataset_offset, meta.transfer_syntax_uid, INDEX_TAGS))
    for c in INDEX_COLUMNS:
        if c.kind == "sequence":
            values[c.column] = items(unpack(values[c.column], c.tag, values["specific_character_set"]))
    return values, sop_class, sop_instance


def _part10_test_files() -> list[str]:
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in pydicom.data.get_testdata_files():
            try:
                read_meta(name)
                dcmread(name, stop_before_pixels=True)
            except Exception:  # not Part 10, or pydicom itself cannot read it: no reference
                continue
            found.append(name)
    return found


def test_same_values_as_pydicom_for_every_pydicom_test_file() -> None:
    files = _part10_test_files()
    assert len(files) > 100, "pydicom's test data is not installed"
    compared = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in files:
            if Path(name).name in REFUSED:
                with pytest.raises(DataSetError):
                    ours(name)
                continue
            assert ours(name) == reference(name), name
            compared += 1
    assert compared > 100


# -- hypothesis-made data sets ---------------------------------------------------------------------

_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\^=")
_LATIN1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\\^=\x7f",
                        exclude_categories=("Cc",))
_ANY = st.characters(exclude_categories=("Cc", "Cs", "Co", "Cn", "Zl", "Zp"), exclude_characters="\\^=")
_CYRILLIC = st.sampled_from("АБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЭЮЯабвгдежзийклмнопрстуфхцчшщэюя ABCxyz")
_KANJI = st.sampled_from("山田太郎花子やまだたろうはなこ")

#: (Specific Character Set, alphabet of the texts, alphabet of a name's ideographic group)
CHARSETS = [
    (None, _ASCII, None),
    ("ISO_IR 100", _LATIN1, None),
    ("ISO_IR 192", _ANY, None),
    ("ISO_IR 144", _CYRILLIC, None),
    (["", "ISO 2022 IR 87"], _ASCII, _KANJI),
]


def _word(alphabet: st.SearchStrategy[str], max_size: int = 12) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=1, max_size=max_size).map(str.strip).filter(bool)


@st.composite
def datasets(draw: st.DrawFn) -> tuple[Dataset, str]:
    charset, alphabet, ideographic = draw(st.sampled_from(CHARSETS))
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498." + str(draw(st.integers(1, 10**9)))
    if draw(st.booleans()):
        # A sequence of undefined length with an undefined-length item, before the indexed elements.
        item = Dataset()
        item.CodeMeaning = draw(_word(alphabet))
        ds.ProcedureCodeSequence = Sequence([item])
        ds["ProcedureCodeSequence"].is_undefined_length = True
        item.is_undefined_length_sequence_item = True
    name = "^".join(draw(st.lists(_word(alphabet, 8), min_size=1, max_size=3)))
    if ideographic is not None and draw(st.booleans()):
        name += "=" + "^".join(draw(st.lists(st.text(ideographic, min_size=1, max_size=4), min_size=1,
                                              max_size=2)))
    ds.PatientName = name
    ds.PatientID = draw(_word(_ASCII, 16))
    if draw(st.booleans()):
        ds.StudyDescription = draw(_word(alphabet, 40))
    if draw(st.booleans()):
        ds.ReferringPhysicianName = "^".join(draw(st.lists(_word(alphabet, 8), min_size=1, max_size=2)))
    ds.Modality = draw(st.sampled_from(["CT", "MR", "OT", ""]))
    ds.StudyDate = draw(st.sampled_from(["20240102", "", "19991231"]))
    ds.StudyTime = draw(st.sampled_from(["101500", "0930", "235959.123456"]))
    ds.PatientSex = draw(st.sampled_from(["F", "M", "O", ""]))
    ds.AccessionNumber = draw(st.text(_ASCII, max_size=16).map(str.strip))
    ds.StudyID = draw(st.text(_ASCII, max_size=16).map(str.strip))
    ds.StudyInstanceUID = "1.2.3." + str(draw(st.integers(0, 10**6)))
    ds.SeriesInstanceUID = "1.2.3.4." + str(draw(st.integers(0, 10**6)))
    numbers = st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1))
    if (n := draw(numbers)) is not None:
        ds.SeriesNumber = n
    if draw(st.booleans()):
        ds.InstanceNumber = draw(st.lists(st.integers(0, 10**6), min_size=1, max_size=3))
    if draw(st.booleans()):
        ds.PixelData = b"\0" * 8
        ds["PixelData"].VR = "OB"
    ts = draw(st.sampled_from([ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]))
    return ds, ts



def save_made(tmp_path: Path, ds: Dataset, ts: str) -> Path:
    """`ds` written as a Part 10 file in transfer syntax `ts` (its File Meta made from its SOP UIDs)."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "made.dcm"
    ds.save_as(path, enforce_file_format=True, little_endian=ts != ExplicitVRBigEndian,
               implicit_vr=ts == ImplicitVRLittleEndian)
    return path


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(made=datasets())
def test_same_values_as_pydicom_for_made_data_sets(tmp_path: Path, made: tuple[Dataset, str]) -> None:
    path = save_made(tmp_path, *made)
    assert ours(path) == reference(path)


def test_a_value_inside_a_sequence_is_not_taken_for_the_top_level_one(tmp_path: Path) -> None:
    ds = Dataset()
    item = Dataset()
    item.PatientID = "NESTED"
    ds.OtherPatientIDsSequence = Sequence([item])
    ds.PatientName = "Top^Level"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    path = tmp_path / "nested.dcm"
    ds.save_as(path, enforce_file_format=True)
    values, _, _ = ours(path)
    assert values["patient_id"] is None and values["patient_name"] == "Top^Level"
