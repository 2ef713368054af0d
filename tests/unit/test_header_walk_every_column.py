"""The one-pass header walk against pydicom for hypothesis-made data sets that carry EVERY index column
(issue 11: "same values for every file of the test data and for hypothesis-made data sets").

tests/unit/test_dicomfile_index.py makes data sets with the original sixteen index attributes; the
Query/Retrieve columns added since (series, image, presentation state and SR attributes, binary US
values, multi-valued LO, DT, and the six sequence keys with nested items, in any character set) are
only met there through pydicom's own test files. Here each column is present or absent at random, empty
or with a value of its VR, in every character set and transfer syntax of that test; the reference and
our values are compared with the same functions.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from agent.store.index_columns import INDEX_COLUMNS
from tests.unit.test_dicomfile_index import _ASCII, CHARSETS, _word, ours, reference, save_made

_CS = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ "), min_size=1, max_size=16).map(str.strip)
_DATE = st.dates(date(1900, 1, 1), date(2099, 12, 31)).map(lambda d: d.strftime("%Y%m%d"))
_TIME = st.sampled_from(["10", "1015", "101530", "235959.123456", "000000.1"])
_UID = st.lists(st.integers(0, 10**8), min_size=2, max_size=6).map(lambda p: "1.2." + ".".join(map(str, p)))


def _name(draw: st.DrawFn, alphabet: st.SearchStrategy[str], ideographic: st.SearchStrategy[str] | None) -> str:
    name = "^".join(draw(st.lists(_word(alphabet, 8), min_size=1, max_size=3)))
    if ideographic is not None and draw(st.booleans()):
        name += "=" + "^".join(draw(st.lists(st.text(ideographic, min_size=1, max_size=4), min_size=1, max_size=2)))
    return name


def _value(draw: st.DrawFn, vr: str, alphabet: st.SearchStrategy[str],
           ideographic: st.SearchStrategy[str] | None) -> object:
    if draw(st.integers(0, 5)) == 0:
        return None if vr in ("US", "IS") else ""  # present, empty
    if vr == "PN":
        return _name(draw, alphabet, ideographic)
    if vr in ("LO", "SH"):
        values = draw(st.lists(_word(alphabet, 16), min_size=1, max_size=3 if vr == "LO" else 1))
        return values if len(values) > 1 else values[0]
    if vr == "CS":
        return draw(_CS) or "X"
    if vr == "DA":
        return draw(_DATE)
    if vr == "TM":
        return draw(_TIME)
    if vr == "DT":
        return draw(_DATE) + draw(st.sampled_from(["", "1015", "101530.5", "101530+0100"]))
    if vr == "IS":
        return draw(st.integers(-(2**31), 2**31 - 1))
    if vr == "US":
        return draw(st.integers(0, 65535))
    if vr == "UI":
        return draw(_UID)
    raise AssertionError(f"no strategy for VR {vr}")


def _item(draw: st.DrawFn, alphabet: st.SearchStrategy[str], ideographic: st.SearchStrategy[str] | None,
          depth: int = 0) -> Dataset:
    item = Dataset()
    item.CodeValue = draw(_word(_ASCII, 16))
    if draw(st.booleans()):
        item.CodeMeaning = draw(_word(alphabet, 40))
    if draw(st.booleans()):
        item.VerifyingObserverName = _name(draw, alphabet, ideographic)
    if draw(st.booleans()):
        item.ReferencedSOPInstanceUID = draw(_UID)
    if depth == 0 and draw(st.booleans()):
        item.ReferencedImageSequence = Sequence([_item(draw, alphabet, ideographic, 1)
                                                 for _ in range(draw(st.integers(1, 2)))])
        item["ReferencedImageSequence"].is_undefined_length = draw(st.booleans())
    item.is_undefined_length_sequence_item = draw(st.booleans())
    return item


@st.composite
def every_column(draw: st.DrawFn) -> tuple[Dataset, str]:
    charset, alphabet, ideographic = draw(st.sampled_from(CHARSETS))
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    ds.SOPInstanceUID = draw(_UID)
    for column in INDEX_COLUMNS:
        if column.keyword == "SpecificCharacterSet" or not draw(st.booleans()):
            continue
        vr = dictionary_VR(column.tag)
        if vr == "SQ":
            items = [_item(draw, alphabet, ideographic) for _ in range(draw(st.integers(0, 3)))]
            setattr(ds, column.keyword, Sequence(items))
            ds[column.keyword].is_undefined_length = draw(st.booleans())
        else:
            setattr(ds, column.keyword, _value(draw, vr, alphabet, ideographic))
    if draw(st.booleans()):
        ds.PixelData = b"\0" * 8
        ds["PixelData"].VR = "OB"
    return ds, draw(st.sampled_from([ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(made=every_column())
def test_every_index_column_same_as_pydicom(tmp_path: Path, made: tuple[Dataset, str]) -> None:
    path = save_made(tmp_path, *made)
    assert ours(path) == reference(path)


def test_the_strategy_reaches_every_column() -> None:
    """Each column is made with a value by some example (else the test above would prove nothing for it)."""
    seen: set[str] = set()

    @settings(max_examples=150, deadline=None, database=None)
    @given(made=every_column())
    def collect(made: tuple[Dataset, str]) -> None:
        ds, _ = made
        seen.update(c.column for c in INDEX_COLUMNS if ds.get(c.keyword) not in (None, "", []))

    collect()
    assert seen == {c.column for c in INDEX_COLUMNS}
