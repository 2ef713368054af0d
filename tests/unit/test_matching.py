"""C-FIND attribute matching (PS3.4 C.2.2.2): agent.matching."""

from __future__ import annotations

import struct
import warnings
from io import BytesIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from agent.errors import AgentError
from agent.matching import (
    A900,
    C001,
    MatchingError,
    build_response,
    compile_identifier,
    matches,
    validate_identifier,
)

POLISH_JAPANESE = "Wałęsa^Łucja=山田^太郎=やまだ^たろう"


def make(**attrs: object) -> Dataset:
    ds = Dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some tests build deliberately invalid keys
        for keyword, value in attrs.items():
            setattr(ds, keyword, value)
    return ds


def seq(*items: Dataset) -> Sequence:
    return Sequence(list(items))


def wire(ds: Dataset, *, implicit: bool = False) -> Dataset:
    """`ds` encoded as a peer would send it, and decoded again (values stay raw until accessed)."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return from_bytes(fp.getvalue(), implicit=implicit)


def from_bytes(data: bytes, *, implicit: bool = False) -> Dataset:
    return read_dataset(BytesIO(data), implicit, True)


def explicit_element(group: int, elem: int, vr: str, value: bytes) -> bytes:
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def status_of(identifier: Dataset) -> int:
    with pytest.raises(MatchingError) as caught:
        validate_identifier(identifier)
    return caught.value.status


# -- single value, universal, wildcard, UID list --------------------------------------------------------


def test_single_value_is_exact_and_case_sensitive() -> None:
    assert matches(make(PatientID="ABC123"), make(PatientID="ABC123"))
    assert not matches(make(PatientID="ABC123"), make(PatientID="abc123"))
    assert not matches(make(PatientID="ABC123"), make(PatientID="ABC1234"))


def test_trailing_padding_is_not_significant() -> None:
    assert matches(make(Modality="CT"), make(Modality="CT "))
    assert matches(make(PatientID="ABC "), make(PatientID="ABC"))


def test_universal_key_matches_anything_even_a_missing_attribute() -> None:
    assert matches(make(PatientID=""), make(PatientID="X"))
    assert matches(make(PatientID="", StudyDate=""), make(Modality="CT"))
    assert matches(make(PatientName="*"), make(Modality="CT"))


def test_non_universal_key_needs_the_attribute() -> None:
    assert not matches(make(PatientID="X"), make(Modality="CT"))
    assert not matches(make(PatientID="X"), make(PatientID=""))


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("AB*", "ABC", True),
        ("AB*", "AB", True),
        ("AB*", "XABC", False),
        ("A?C", "ABC", True),
        ("A?C", "ABBC", False),
        ("*B*", "ABC", True),
        ("*B*", "ACD", False),
        ("A.C", "ABC", False),  # regex metacharacters are literal
        ("A.C*", "A.CD", True),
    ],
)
def test_wildcard_matching(pattern: str, value: str, expected: bool) -> None:
    assert matches(make(PatientID=pattern), make(PatientID=value)) is expected


def test_wildcard_on_cs_and_ae() -> None:
    assert matches(make(Modality="C?"), make(Modality="CT"))
    assert not matches(make(Modality="C?"), make(Modality="MR"))
    assert matches(make(ScheduledStationAETitle="CT*"), make(ScheduledStationAETitle="CT_ROOM1"))
    assert not matches(make(ScheduledStationAETitle="CT*"), make(ScheduledStationAETitle="MR_ROOM1"))


def test_uid_list_matching() -> None:
    key = make(StudyInstanceUID=["1.2.3", "1.2.4"])
    assert matches(key, make(StudyInstanceUID="1.2.4"))
    assert matches(key, make(StudyInstanceUID="1.2.3"))
    assert not matches(key, make(StudyInstanceUID="1.2.5"))
    assert not matches(make(StudyInstanceUID="1.2.3"), make(StudyInstanceUID="1.2.30"))


def test_multi_valued_candidate_matches_when_any_value_does() -> None:
    candidate = make(ModalitiesInStudy=["CT", "MR"])
    assert matches(make(ModalitiesInStudy="MR"), candidate)
    assert matches(make(ModalitiesInStudy="CT"), candidate)
    assert not matches(make(ModalitiesInStudy="US"), candidate)


def test_numeric_keys_compare_as_numbers() -> None:
    assert matches(make(NumberOfFrames="10"), make(NumberOfFrames=10))
    assert not matches(make(NumberOfFrames="10"), make(NumberOfFrames=11))


def test_every_key_must_match() -> None:
    key = make(PatientID="P1", Modality="CT")
    assert matches(key, make(PatientID="P1", Modality="CT"))
    assert not matches(key, make(PatientID="P1", Modality="MR"))
    assert not matches(key, make(PatientID="P2", Modality="CT"))


def test_charset_and_query_level_are_not_keys() -> None:
    key = make(SpecificCharacterSet="ISO_IR 100", QueryRetrieveLevel="STUDY", PatientID="P1")
    assert matches(key, make(PatientID="P1"))
    assert not matches(key, make(PatientID="P2"))


# -- ranges -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("20240101-20240131", "20240115", True),
        ("20240101-20240131", "20240101", True),
        ("20240101-20240131", "20240131", True),
        ("20240101-20240131", "20231231", False),
        ("20240101-20240131", "20240201", False),
        ("20240101-", "20991231", True),
        ("20240101-", "20231231", False),
        ("-20240101", "19000101", True),
        ("-20240101", "20240102", False),
        ("20240101", "20240101", True),
        ("20240101", "20240102", False),
    ],
)
def test_date_ranges(key: str, value: str, expected: bool) -> None:
    assert matches(make(StudyDate=key), make(StudyDate=value)) is expected


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("1000-1200", "110000", True),
        ("1000-1200", "095959", False),
        ("1000-1200", "120059", True),  # an upper bound names the whole minute
        ("1000-1200", "120100", False),
        ("1000-", "235959", True),
        ("1000-", "095959.999", False),
        ("-1000", "000000", True),
        ("-1000", "100059.999999", True),
        ("-1000", "100100", False),
        ("-10", "105959.999999", True),
        ("-10", "110000", False),
        ("10", "103000", True),  # partial time: the whole hour
        ("10", "105959.5", True),
        ("10", "100000", True),
        ("10", "110000", False),
        ("10", "095959", False),
        ("1030", "103045", True),
        ("1030", "103100", False),
        ("10:30", "103045", True),
    ],
)
def test_time_ranges_and_partial_precision(key: str, value: str, expected: bool) -> None:
    assert matches(make(StudyTime=key), make(StudyTime=value)) is expected


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("20240101120000-20240101130000", "20240101123000", True),
        ("20240101120000-20240101130000", "20240101140000", False),
        ("2024-", "20240601", True),
        ("2024-", "20231231235959", False),
        ("-2023", "20231231235959", True),
        ("-2023", "20240101", False),
        ("2024", "20240615101010", True),
        ("2024", "20250101", False),
    ],
)
def test_datetime_ranges(key: str, value: str, expected: bool) -> None:
    assert matches(make(AcquisitionDateTime=key), make(AcquisitionDateTime=value)) is expected


def test_date_and_time_ranges_combine_into_one_datetime_range() -> None:
    # 1 Jan 08:00 to 3 Jan 17:00:59.999999; separately the time range would exclude 06:00 on 2 Jan.
    key = make(StudyDate="20240101-20240103", StudyTime="0800-1700")
    assert matches(key, make(StudyDate="20240102", StudyTime="060000"))
    assert matches(key, make(StudyDate="20240101", StudyTime="080000"))
    assert matches(key, make(StudyDate="20240103", StudyTime="170059"))
    assert not matches(key, make(StudyDate="20240101", StudyTime="075959"))
    assert not matches(key, make(StudyDate="20240103", StudyTime="170100"))
    assert not matches(key, make(StudyDate="20240104", StudyTime="090000"))


def test_combined_range_over_the_night_shift() -> None:
    key = make(
        ScheduledProcedureStepStartDate="20240101-20240102", ScheduledProcedureStepStartTime="2200-0600"
    )
    night = make(ScheduledProcedureStepStartDate="20240101", ScheduledProcedureStepStartTime="230000")
    early = make(ScheduledProcedureStepStartDate="20240102", ScheduledProcedureStepStartTime="050000")
    before = make(ScheduledProcedureStepStartDate="20240101", ScheduledProcedureStepStartTime="210000")
    after = make(ScheduledProcedureStepStartDate="20240102", ScheduledProcedureStepStartTime="070000")
    assert matches(key, night) and matches(key, early)
    assert not matches(key, before) and not matches(key, after)


def test_combined_range_with_open_ends_and_date_only_candidate() -> None:
    key = make(StudyDate="20240102-", StudyTime="1200-")
    assert matches(key, make(StudyDate="20240102", StudyTime="120000"))
    assert matches(key, make(StudyDate="20240103", StudyTime="000000"))
    assert not matches(key, make(StudyDate="20240102", StudyTime="115959"))
    assert matches(key, make(StudyDate="20240102"))  # no time: the date alone decides
    assert not matches(key, make(StudyDate="20240101"))


def test_single_date_with_time_range_matches_each_separately() -> None:
    key = make(StudyDate="20240102", StudyTime="0800-1000")
    assert matches(key, make(StudyDate="20240102", StudyTime="090000"))
    assert not matches(key, make(StudyDate="20240102", StudyTime="110000"))
    assert not matches(key, make(StudyDate="20240103", StudyTime="090000"))


# -- person names -------------------------------------------------------------------------------------


def test_pn_is_case_insensitive_but_accent_sensitive_by_default() -> None:
    assert matches(make(PatientName="doe^john"), make(PatientName="DOE^JOHN"))
    assert matches(make(PatientName="DOE^JOHN"), make(PatientName="DOE^JOHN^^^"))
    assert not matches(make(PatientName="MULLER^JURGEN"), make(PatientName="MÜLLER^JÜRGEN"))
    assert not matches(make(PatientName="DOE^JANE"), make(PatientName="DOE^JOHN"))


def test_fuzzy_pn_ignores_accents() -> None:
    key, candidate = make(PatientName="muller*"), make(PatientName="MÜLLER^JÜRGEN")
    assert matches(key, candidate, fuzzy_pn=True)
    assert not matches(key, candidate)
    assert not matches(make(PatientName="MILLER*"), candidate, fuzzy_pn=True)


def test_pn_component_groups_match_separately() -> None:
    candidate = make(PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう")
    assert matches(make(PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう"), candidate)
    assert matches(make(PatientName="=山田*"), candidate)
    assert matches(make(PatientName="Yamada*=="), candidate)
    assert matches(make(PatientName="==やまだ^たろう"), candidate)
    assert not matches(make(PatientName="=山本*"), candidate)
    assert not matches(make(PatientName="Yamada^Tarou=山本^太郎"), candidate)
    # with '=' each group is compared with its own group only
    assert not matches(make(PatientName="=Yamada^Tarou"), candidate)
    assert not matches(make(PatientName="やまだ^たろう=山田^太郎"), candidate)


def test_pn_key_without_groups_matches_any_group() -> None:
    candidate = make(PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう")
    assert matches(make(PatientName="山田^太郎"), candidate)
    assert matches(make(PatientName="YAMADA*"), candidate)
    assert not matches(make(PatientName="山本*"), candidate)


# -- character sets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key_charset", ["ISO_IR 100", "ISO_IR 192"])
@pytest.mark.parametrize("candidate_charset", ["ISO_IR 100", "ISO_IR 192"])
def test_latin1_and_utf8_names_match_across_charsets(key_charset: str, candidate_charset: str) -> None:
    key = wire(make(SpecificCharacterSet=key_charset, PatientName="MÜLLER*"))
    candidate = wire(make(SpecificCharacterSet=candidate_charset, PatientName="MÜLLER^JÜRGEN"))
    other = wire(make(SpecificCharacterSet=candidate_charset, PatientName="MULLER^JURGEN"))
    assert matches(key, candidate)
    assert not matches(key, other)


def test_encoded_bytes_differ_but_names_match() -> None:
    # Guard against a test that passes by accident: the two encodings really differ on the wire.
    fp1, fp2 = DicomBytesIO(), DicomBytesIO()
    for fp, charset in ((fp1, "ISO_IR 100"), (fp2, "ISO_IR 192")):
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_dataset(fp, make(SpecificCharacterSet=charset, PatientName="MÜLLER^JÜRGEN"))
    assert b"M\xdcLLER" in fp1.getvalue() and b"M\xc3\x9cLLER" in fp2.getvalue()
    key = from_bytes(fp1.getvalue())
    assert matches(key, from_bytes(fp2.getvalue()))


@pytest.mark.parametrize(
    "candidate_charset",
    [["", "ISO 2022 IR 101", "ISO 2022 IR 87"], "ISO_IR 192"],
)
def test_polish_japanese_name_in_utf8_and_iso2022(candidate_charset: object) -> None:
    candidate = wire(make(SpecificCharacterSet=candidate_charset, PatientName=POLISH_JAPANESE))
    assert matches(wire(make(SpecificCharacterSet="ISO_IR 192", PatientName=POLISH_JAPANESE)), candidate)
    assert matches(wire(make(SpecificCharacterSet="ISO_IR 192", PatientName="wałęsa*=山田*")), candidate)
    assert matches(
        wire(make(SpecificCharacterSet=["", "ISO 2022 IR 87"], PatientName="=山田^太郎")), candidate
    )
    assert not matches(wire(make(SpecificCharacterSet="ISO_IR 192", PatientName="walesa*")), candidate)
    assert matches(
        wire(make(SpecificCharacterSet="ISO_IR 192", PatientName="walesa*")), candidate, fuzzy_pn=True
    )


# -- sequences ----------------------------------------------------------------------------------------


def mwl_item(modality: str, station: str, date: str, time: str = "090000", name: str = "DOE^JANE") -> Dataset:
    step = make(
        Modality=modality,
        ScheduledStationAETitle=station,
        ScheduledProcedureStepStartDate=date,
        ScheduledProcedureStepStartTime=time,
        ScheduledProcedureStepID="SPS1",
    )
    return make(
        SpecificCharacterSet="ISO_IR 100",
        PatientName=name,
        PatientID="P1",
        AccessionNumber="ACC1",
        ScheduledProcedureStepSequence=seq(step),
    )


def mwl_query(modality: str = "", station: str = "", date: str = "") -> Dataset:
    step = make(
        Modality=modality,
        ScheduledStationAETitle=station,
        ScheduledProcedureStepStartDate=date,
        ScheduledProcedureStepStartTime="",
    )
    return make(PatientName="", PatientID="", ScheduledProcedureStepSequence=seq(step))


def test_mwl_sequence_matching() -> None:
    item = wire(mwl_item("CT", "CT_ROOM1", "20240105"))
    assert matches(mwl_query("CT", "CT_ROOM1", "20240101-20240110"), item)
    assert matches(mwl_query("CT", "", "20240105"), item)
    assert matches(mwl_query(), item)
    assert not matches(mwl_query("MR", "CT_ROOM1", "20240101-20240110"), item)
    assert not matches(mwl_query("CT", "MR_ROOM1", "20240101-20240110"), item)
    assert not matches(mwl_query("CT", "CT_ROOM1", "20240106-"), item)


def test_sequence_item_must_match_all_keys_in_one_candidate_item() -> None:
    candidate = make(
        ScheduledProcedureStepSequence=seq(
            make(Modality="CT", ScheduledStationAETitle="ROOM_A"),
            make(Modality="MR", ScheduledStationAETitle="ROOM_B"),
        )
    )
    def key(station: str) -> Dataset:
        return make(ScheduledProcedureStepSequence=seq(make(Modality="MR", ScheduledStationAETitle=station)))

    assert matches(key("ROOM_B"), candidate)
    assert not matches(key("ROOM_A"), candidate)


def test_empty_sequence_key_is_universal() -> None:
    assert matches(make(ScheduledProcedureStepSequence=seq()), make(PatientID="P1"))
    assert matches(make(ScheduledProcedureStepSequence=seq(Dataset())), make(PatientID="P1"))
    assert not matches(make(ScheduledProcedureStepSequence=seq(make(Modality="CT"))), make(PatientID="P1"))


def test_compiled_matcher_is_reusable() -> None:
    matcher = compile_identifier(mwl_query("CT", "", "20240101-20240110"))
    items = [mwl_item(m, "ROOM", d) for m, d in [("CT", "20240102"), ("MR", "20240102"), ("CT", "20240201")]]
    assert [matcher.matches(i) for i in items] == [True, False, False]
    assert list(matcher.filter(items)) == items[:1]


# -- validation ---------------------------------------------------------------------------------------


def test_refused_identifier_is_an_agent_error_carrying_its_status() -> None:
    with pytest.raises(AgentError) as caught:  # what the SCP's and the CLI's handlers catch
        validate_identifier(make(StudyDate="abc-"))
    assert isinstance(caught.value, MatchingError) and caught.value.status == A900
    assert str(caught.value).endswith("(status A900H)")


def test_valid_identifiers_pass() -> None:
    validate_identifier(mwl_query("CT", "CT*", "20240101-"))
    validate_identifier(
        make(SpecificCharacterSet=["", "ISO 2022 IR 87"], StudyTime="-1200", StudyInstanceUID=["1.2", "1.3"])
    )
    validate_identifier(wire(mwl_query("CT", "", "-20240101"), implicit=True))


def test_wrong_vr_from_the_wire_is_a900() -> None:
    data = explicit_element(0x0010, 0x0010, "LO", b"DOE^JOHN")  # Patient's Name is PN
    with pytest.raises(MatchingError) as caught:
        validate_identifier(from_bytes(data))
    assert caught.value.status == A900
    assert "(0010,0010)" in str(caught.value)
    validate_identifier(from_bytes(explicit_element(0x0010, 0x0010, "PN", b"DOE^JOHN")))


def test_value_that_cannot_be_converted_is_a900() -> None:
    assert status_of(from_bytes(explicit_element(0x0020, 0x0013, "IS", b"1-5 "))) == A900


@pytest.mark.parametrize(
    "attrs",
    [
        {"StudyDate": "2024-01-01-2024"},
        {"StudyDate": "abc-"},
        {"StudyDate": "-"},
        {"StudyDate": "20241301"},
        {"StudyDate": "2024*"},
        {"StudyTime": "25-"},
        {"StudyTime": "10-11-12"},
        {"AcquisitionDateTime": "2024x-"},
        {"StudyInstanceUID": "1.2.*"},
        {"StudyInstanceUID": "1.2-1.3"},
        {"PatientAge": "4*"},
    ],
)
def test_bad_range_or_wildcard_is_a900(attrs: dict[str, str]) -> None:
    assert status_of(make(**attrs)) == A900


def test_error_names_the_offending_tag() -> None:
    with pytest.raises(MatchingError, match=r"\(0008,0020\)"):
        validate_identifier(make(PatientID="", StudyDate="abc-"))


def test_unknown_character_set_is_c001() -> None:
    assert status_of(make(SpecificCharacterSet="ISO_IR 999", PatientName="X")) == C001
    assert status_of(make(SpecificCharacterSet=["", "ISO 2022 IR 999"])) == C001


def test_sequence_key_with_several_items_is_a900() -> None:
    key = make(ScheduledProcedureStepSequence=seq(make(Modality="CT"), make(Modality="MR")))
    assert status_of(key) == A900
    nested = make(
        ScheduledProcedureStepSequence=seq(
            make(ScheduledProtocolCodeSequence=seq(make(CodeValue="A"), make(CodeValue="B")))
        )
    )
    assert status_of(nested) == A900


def test_bad_key_inside_a_sequence_item_is_a900() -> None:
    assert status_of(mwl_query("CT", "", "2024-01-01-2024")) == A900


def test_compile_and_matches_validate_too() -> None:
    with pytest.raises(MatchingError):
        compile_identifier(make(StudyDate="abc-"))
    with pytest.raises(MatchingError):
        matches(make(StudyDate="abc-"), make(StudyDate="20240101"))


# -- responses ----------------------------------------------------------------------------------------


def test_response_has_exactly_the_requested_keys() -> None:
    candidate = make(PatientName="DOE^JOHN", PatientID="P1", PatientBirthDate="19700101", PatientSex="M")
    response = build_response(make(PatientName="DOE*", PatientID=""), candidate)
    assert sorted(response.keys()) == [0x00100010, 0x00100020]
    assert str(response.PatientName) == "DOE^JOHN" and response.PatientID == "P1"


def test_response_has_empty_values_for_missing_attributes() -> None:
    identifier = make(PatientID="", AccessionNumber="", OtherPatientIDsSequence=seq())
    response = build_response(identifier, make(PatientID="P1"))
    assert response["AccessionNumber"].is_empty and response["AccessionNumber"].VR == "SH"
    assert response["OtherPatientIDsSequence"].VR == "SQ" and len(response.OtherPatientIDsSequence) == 0
    assert response.PatientID == "P1"


def test_response_adds_always_tags_and_the_candidates_charset() -> None:
    candidate = make(
        SpecificCharacterSet="ISO_IR 100", PatientID="P1", StudyInstanceUID="1.2.3", Modality="CT"
    )
    response = build_response(make(PatientID=""), candidate, always=[0x0020000D, 0x00080080])
    assert sorted(response.keys()) == [0x00080005, 0x00100020, 0x0020000D]
    assert response.SpecificCharacterSet == "ISO_IR 100"


def test_response_echoes_query_retrieve_level() -> None:
    identifier = make(QueryRetrieveLevel="STUDY", StudyInstanceUID="")
    response = build_response(identifier, make(StudyInstanceUID="1.2"))
    assert response.QueryRetrieveLevel == "STUDY" and response.StudyInstanceUID == "1.2"


def test_response_without_candidate_charset_gets_utf8_only_when_needed() -> None:
    assert build_response(make(PatientName=""), make(PatientName="MÜLLER")).SpecificCharacterSet == "ISO_IR 192"
    assert "SpecificCharacterSet" not in build_response(make(PatientName=""), make(PatientName="MULLER"))


def test_response_projects_sequence_items() -> None:
    candidate = make(
        ScheduledProcedureStepSequence=seq(
            make(Modality="CT", ScheduledStationAETitle="ROOM_A", ScheduledProcedureStepID="S1"),
            make(Modality="MR", ScheduledStationAETitle="ROOM_B", ScheduledProcedureStepID="S2"),
        )
    )
    key_item = make(Modality="MR", ScheduledProcedureStepStartDate="")
    response = build_response(make(ScheduledProcedureStepSequence=seq(key_item)), candidate)
    (item,) = response.ScheduledProcedureStepSequence
    assert sorted(item.keys()) == [0x00080060, 0x00400002]
    assert item.Modality == "MR" and item["ScheduledProcedureStepStartDate"].is_empty


def test_response_returns_whole_items_for_an_empty_sequence_key() -> None:
    candidate = make(ScheduledProcedureStepSequence=seq(make(Modality="CT", ScheduledProcedureStepID="S1")))
    for key in (seq(), seq(Dataset())):
        response = build_response(make(ScheduledProcedureStepSequence=key), candidate)
        (item,) = response.ScheduledProcedureStepSequence
        assert item.Modality == "CT" and item.ScheduledProcedureStepID == "S1"


def test_response_reencodes_in_the_candidates_charset() -> None:
    candidate = wire(mwl_item("CT", "ROOM", "20240101", name="MÜLLER^JÜRGEN"))
    response = build_response(wire(make(SpecificCharacterSet="ISO_IR 192", PatientName="MÜL*")), candidate)
    again = wire(response)
    assert again.SpecificCharacterSet == "ISO_IR 100" and str(again.PatientName) == "MÜLLER^JÜRGEN"


def test_response_is_detached_from_the_candidate() -> None:
    candidate = mwl_item("CT", "ROOM", "20240101")
    response = build_response(make(ScheduledProcedureStepSequence=seq()), candidate)
    response.ScheduledProcedureStepSequence[0].Modality = "MR"
    assert candidate.ScheduledProcedureStepSequence[0].Modality == "CT"


# -- properties ---------------------------------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(
        categories=("Lu", "Ll", "Nd"), include_characters="ÄÖÜäöüßéłŁ山田太郎やまだ", exclude_characters="\\=^*?"
    ),
    min_size=1,
    max_size=12,
)
_code = st.from_regex(r"[A-Z0-9_]{1,16}", fullmatch=True)
_date = st.dates().map(lambda d: f"{d.year:04d}{d.month:02d}{d.day:02d}").filter(lambda s: len(s) == 8)
_time = st.times().map(lambda t: f"{t.hour:02d}{t.minute:02d}{t.second:02d}")
_uid = st.lists(st.integers(1, 10**6), min_size=2, max_size=6).map(lambda parts: ".".join(map(str, parts)))
_names = st.tuples(_text, _text).map("^".join)

_STRATEGIES = {
    "PatientName": _names,
    "PatientID": _text,
    "Modality": _code,
    "StudyDate": _date,
    "StudyTime": _time,
    "StudyInstanceUID": _uid,
}
_KEYWORDS = st.sampled_from(sorted(_STRATEGIES))
_CANDIDATES = st.fixed_dictionaries(_STRATEGIES)


@settings(max_examples=150, deadline=None)
@given(attrs=_CANDIDATES, keys=st.sets(_KEYWORDS, min_size=1), universal=st.sets(_KEYWORDS))
def test_candidate_matches_an_identifier_built_from_its_own_values(
    attrs: dict[str, str], keys: set[str], universal: set[str]
) -> None:
    candidate = wire(make(SpecificCharacterSet="ISO_IR 192", **attrs))
    identifier = make(**{k: ("" if k in universal else attrs[k]) for k in keys | universal})
    assert matches(identifier, candidate)


@settings(max_examples=100, deadline=None)
@given(attrs=_CANDIDATES, present=st.sets(_KEYWORDS))
def test_universal_keys_never_exclude(attrs: dict[str, str], present: set[str]) -> None:
    candidate = make(**{k: attrs[k] for k in present})
    identifier = make(**{k: "" for k in attrs}, ScheduledProcedureStepSequence=seq())
    assert matches(identifier, candidate)
    assert set(build_response(identifier, candidate).keys()) - {0x00080005} == set(identifier.keys())


@settings(max_examples=100, deadline=None)
@given(
    attrs=_CANDIDATES,
    other=_CANDIDATES,
    key=st.sampled_from(["PatientID", "Modality", "StudyDate", "StudyInstanceUID"]),
)
def test_a_different_single_value_excludes(attrs: dict[str, str], other: dict[str, str], key: str) -> None:
    if attrs[key] == other[key]:
        return
    assert not matches(make(**{key: other[key]}), make(**attrs))
