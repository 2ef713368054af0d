"""Identifier validation and compilation into a `Matcher` (PS3.4 C.2.2.2).

An identifier is validated and parsed once (`compile_identifier`); the `Matcher` it yields is a flat list
of small predicates over candidate datasets, so a query over a large worklist costs a dictionary look-up
and a comparison per key and candidate.

`compile_identifier` validates first (agent.matching.validate), so it and `matches` raise MatchingError
for an identifier the SCP must refuse.

Choices this module makes where PS3.4 leaves room (each is what a peer can observe):
- A candidate that lacks an attribute, or has it empty, matches only a universal key for it.
- Single value matching is exact and case-sensitive after dropping insignificant spaces (PS3.5 6.2),
  except PN: always case-insensitive and accent-sensitive; `fuzzy_pn=True` also ignores accents
  (C.2.2.2.1 allows literal PN matching insensitive to "case, position, accent").
- PN: a key with '=' is matched group by group (alphabetic, ideographic, phonetic); an empty or '*' group
  matches anything. A key without '=' matches when any of the candidate's groups matches, so a console
  may type a name in whichever script it has. pydicom drops trailing empty groups, so "X==" is "X".
- A multi-valued candidate matches when any of its values matches (C.2.2.2.7); a multi-valued key other
  than a UID list (C.2.2.2.2) matches when any key value matches.
- TM and DT keys with missing trailing components cover the whole span they name ("10" is 10:00:00 to
  10:59:59.999999); an upper range bound is widened the same way. A partial candidate value is its
  earliest instant. DT UTC offsets are ignored.
- Combined date-time matching (C.2.2.2.5.1) is always on: when both keys of a DA/TM pair below are
  ranges they form one datetime range ("20240101-20240102" with "2200-0600" is 1 Jan 22:00 to 2 Jan
  06:00:59.999999). A candidate with the date but no time is then matched on the date alone.
- Sequence keys (C.2.2.2.6): zero items, or one empty item, is universal; one item matches when any
  candidate item matches every key of it; more than one item is refused (A900).
- Specific Character Set (0008,0005), Query/Retrieve Level (0008,0052) and group lengths are not keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.tag import BaseTag

from agent.matching import values as v
from agent.matching.elements import is_key, text_values, value_list
from agent.matching.validate import validate_identifier

DATE_TIME_PAIRS: Final = (
    (0x00080020, 0x00080030),  # Study Date / Time
    (0x00080021, 0x00080031),  # Series Date / Time
    (0x00080022, 0x00080032),  # Acquisition Date / Time
    (0x00080023, 0x00080033),  # Content Date / Time
    (0x00400002, 0x00400003),  # Scheduled Procedure Step Start Date / Time
    (0x00400004, 0x00400005),  # Scheduled Procedure Step End Date / Time
    (0x00400244, 0x00400245),  # Performed Procedure Step Start Date / Time
)

Test = Callable[[Dataset], bool]


class Matcher:
    """A compiled identifier: `matches(candidate)` applies every key's test (PS3.4 C.2.2.2)."""

    __slots__ = ("_tests",)

    def __init__(self, tests: list[Test]) -> None:
        self._tests = tests

    @property
    def universal(self) -> bool:
        """True when no key restricts the match (every candidate matches)."""
        return not self._tests

    def matches(self, candidate: Dataset) -> bool:
        for test in self._tests:
            if not test(candidate):
                return False
        return True

    def filter(self, candidates: Iterator[Dataset] | list[Dataset]) -> Iterator[Dataset]:
        """The candidates that match, in order."""
        test = self.matches
        return (c for c in candidates if test(c))


def compile_identifier(identifier: Dataset, *, fuzzy_pn: bool = False) -> Matcher:
    """Validate `identifier` (raising MatchingError) and compile it into a reusable Matcher."""
    validate_identifier(identifier)
    return compile_unchecked(identifier, fuzzy_pn)


def matches(identifier: Dataset, candidate: Dataset, *, fuzzy_pn: bool = False) -> bool:
    """True when `candidate` matches every key of `identifier`; see the module notes for the rules."""
    return compile_identifier(identifier, fuzzy_pn=fuzzy_pn).matches(candidate)


def compile_unchecked(ds: Dataset, fuzzy_pn: bool = False) -> Matcher:
    """Compile an identifier already validated (or a sequence item of one)."""
    tests: list[Test] = []
    sequence_tests: list[Test] = []
    combined = _combined_ranges(ds, tests)
    for tag in ds.keys():
        if not is_key(tag) or tag in combined:
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            test = _sequence_test(BaseTag(tag), elem, fuzzy_pn)
            if test is not None:
                sequence_tests.append(test)
            continue
        test = _value_test(BaseTag(tag), elem, ds, fuzzy_pn)
        if test is not None:
            tests.append(test)
    return Matcher(tests + sequence_tests)  # sequences last: the costliest tests run least often


def _sequence_test(tag: BaseTag, elem: DataElement, fuzzy_pn: bool) -> Test | None:
    items = elem.value or []
    if not items:
        return None
    sub = compile_unchecked(items[0], fuzzy_pn)
    if sub.universal:
        return None
    sub_matches = sub.matches

    def test(candidate: Dataset) -> bool:
        found = candidate.get(tag)
        if found is None or found.VR != "SQ" or not found.value:
            return False
        return any(sub_matches(item) for item in found.value)

    return test


def _value_test(tag: BaseTag, elem: DataElement, ds: Dataset, fuzzy_pn: bool) -> Test | None:
    vr = elem.VR
    if vr in v.TEXT_VRS:
        keys = text_values(elem, ds)
        if not keys:
            return None
        predicate = _text_predicate(keys, vr, fuzzy_pn)
        if predicate is None:
            return None

        def test(candidate: Dataset) -> bool:
            found = candidate.get(tag)
            if found is None:
                return False
            for value in text_values(found, candidate):
                if predicate(value):
                    return True
            return False

        return test

    wanted = value_list(elem.value)
    if not wanted:
        return None

    def test_value(candidate: Dataset) -> bool:
        found = candidate.get(tag)
        if found is None:
            return False
        return any(value in wanted for value in value_list(found.value))

    return test_value


def _text_predicate(keys: list[str], vr: str, fuzzy_pn: bool) -> v.Predicate | None:
    if vr == "UI":
        uids = frozenset(keys)
        return uids.__contains__
    predicates = []
    for key in keys:
        if vr == "PN":
            predicate = _pn_predicate(key, fuzzy_pn)
        elif vr in v.RANGE_VRS:
            predicate = _instant_predicate(key, vr)
        elif vr in v.WILDCARD_VRS and v.has_wildcard(key):
            if key.strip("*") == "":
                return None  # '*' alone is universal (C.2.2.2.4)
            predicate = v.wildcard_regex(key).fullmatch
        else:
            predicate = key.__eq__
        if predicate is None:
            return None  # one universal value makes the whole key universal
        predicates.append(predicate)
    if len(predicates) == 1:
        return predicates[0]
    return lambda value: any(p(value) for p in predicates)


def _instant_predicate(key: str, vr: str) -> v.Predicate:
    ends = v.split_range(key, vr)
    span = v.range_span(*ends, vr) if ends else v.instant_span(key, vr)

    def predicate(value: str) -> bool:
        try:
            return v.instant_point(value, vr) in span
        except ValueError:
            return False  # a candidate with an unreadable value matches nothing but universal keys

    return predicate


def _pn_group_predicate(group: str, accents: bool) -> v.Predicate | None:
    if group.strip("*") == "":
        return None
    folded = v.fold_pn(group, accents=accents)
    if v.has_wildcard(folded):
        regex = v.wildcard_regex(folded)
        return lambda value: regex.fullmatch(v.fold_pn(value, accents=accents)) is not None
    return lambda value: v.fold_pn(value, accents=accents) == folded


def _pn_predicate(key: str, fuzzy_pn: bool) -> v.Predicate | None:
    accents = not fuzzy_pn
    groups = key.split("=")
    if len(groups) == 1:
        one = _pn_group_predicate(groups[0], accents)
        if one is None:
            return None

        def any_group(value: str) -> bool:
            if "=" not in value:  # one component group: the usual case
                return bool(value) and one(value)
            return any(one(g) for g in value.split("=") if g)

        return any_group
    per_group = [(i, p) for i, g in enumerate(groups) if (p := _pn_group_predicate(g, accents))]
    if not per_group:
        return None

    def predicate(value: str) -> bool:
        have = value.split("=")
        for i, p in per_group:
            if not p(have[i] if i < len(have) else ""):
                return False
        return True

    return predicate


def _combined_ranges(ds: Dataset, tests: list[Test]) -> set[int]:
    """Add one test per DA/TM pair whose keys are both ranges; return the tags it consumed."""
    consumed: set[int] = set()
    for date_tag, time_tag in DATE_TIME_PAIRS:
        if date_tag not in ds or time_tag not in ds:
            continue
        dates = text_values(ds[date_tag], ds)
        times = text_values(ds[time_tag], ds)
        if len(dates) != 1 or len(times) != 1:
            continue
        date_ends = v.split_range(dates[0], "DA")
        time_ends = v.split_range(times[0], "TM")
        if date_ends is None or time_ends is None:
            continue
        tests.append(_combined_test(date_tag, time_tag, date_ends, time_ends))
        consumed.update((date_tag, time_tag))
    return consumed


def _combined_test(
    date_tag: int, time_tag: int, date_ends: tuple[str, str], time_ends: tuple[str, str]
) -> Test:
    (date_lo, date_hi), (time_lo, time_hi) = date_ends, time_ends
    lo = v.parse_da(date_lo) * v.DAY + (v.parse_tm(time_lo) if time_lo else 0) if date_lo else v.NEG_INF
    hi = (
        v.parse_da(date_hi) * v.DAY + (v.parse_tm(time_hi, upper=True) if time_hi else v.END_OF_DAY)
        if date_hi
        else v.POS_INF
    )
    date_span = v.Span(
        v.parse_da(date_lo) if date_lo else v.NEG_INF, v.parse_da(date_hi) if date_hi else v.POS_INF
    )
    date_key, time_key = BaseTag(date_tag), BaseTag(time_tag)

    def test(candidate: Dataset) -> bool:
        found = candidate.get(date_key)
        if found is None:
            return False
        found_time = candidate.get(time_key)
        times = text_values(found_time, candidate) if found_time is not None else []
        for date_text in text_values(found, candidate):
            try:
                day = v.parse_da(date_text)
                if not times:
                    if day in date_span:
                        return True
                    continue
                for time_text in times:
                    if lo <= day * v.DAY + v.parse_tm(time_text) <= hi:
                        return True
            except ValueError:
                continue
        return False

    return test
