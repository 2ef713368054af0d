"""Status categories and names (PS3.7 Annex C)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.dimse import Status, StatusCategory, category, describe


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0x0000, StatusCategory.SUCCESS),
        (0xFF00, StatusCategory.PENDING),
        (0xFF01, StatusCategory.PENDING),
        (0xFE00, StatusCategory.CANCEL),
        (0x0001, StatusCategory.WARNING),
        (0x0107, StatusCategory.WARNING),
        (0x0116, StatusCategory.WARNING),
        (0xB000, StatusCategory.WARNING),
        (0xB007, StatusCategory.WARNING),
        (0xB60A, StatusCategory.WARNING),
        (0xBFFF, StatusCategory.WARNING),
        (0xA700, StatusCategory.FAILURE),
        (0xA801, StatusCategory.FAILURE),
        (0xA900, StatusCategory.FAILURE),
        (0xC000, StatusCategory.FAILURE),
        (0xC616, StatusCategory.FAILURE),
        (0x0110, StatusCategory.FAILURE),
        (0x0111, StatusCategory.FAILURE),
        (0x0122, StatusCategory.FAILURE),
        (0x0210, StatusCategory.FAILURE),
        (0x0213, StatusCategory.FAILURE),
        (0x0002, StatusCategory.FAILURE),
        (0xFF02, StatusCategory.FAILURE),
        (0xFE01, StatusCategory.FAILURE),
    ],
)
def test_category(code: int, expected: StatusCategory) -> None:
    assert category(code) is expected


def test_category_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        category(0x10000)
    with pytest.raises(ValueError):
        category(-1)


@settings(deadline=None)
@given(st.integers(0, 0xFFFF))
def test_category_is_total_and_matches_the_rules(code: int) -> None:
    cat = category(code)
    if code == 0:
        assert cat is StatusCategory.SUCCESS
    elif code >> 12 == 0xB or code in (0x0001, 0x0107, 0x0116):
        assert cat is StatusCategory.WARNING
    elif code not in (0xFF00, 0xFF01, 0xFE00):
        assert cat is StatusCategory.FAILURE


def test_status_codes_have_standard_values() -> None:
    assert Status.SUCCESS == 0x0000
    assert Status.PENDING_WARNING == 0xFF01
    assert Status.DUPLICATE_SOP_INSTANCE == 0x0111
    assert Status.NO_SUCH_SOP_INSTANCE == 0x0112
    assert Status.SOP_CLASS_NOT_SUPPORTED == 0x0122
    assert Status.OUT_OF_RESOURCES_SUBOPS == 0xA702
    assert Status.MOVE_DESTINATION_UNKNOWN == 0xA801
    assert Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS == 0xA900
    assert Status.IMAGE_DECIMATED == 0xB60A
    assert Status.UNPRINTED_FILM_BOX_EXISTS == 0xC616
    print_codes = {0xB600, 0xB601, 0xB602, 0xB603, 0xB604, 0xB605, 0xB609, 0xB60A,
                   0xC600, 0xC601, 0xC602, 0xC603, 0xC605, 0xC613, 0xC616}
    assert print_codes <= {int(s) for s in Status}


def test_status_has_no_aliases() -> None:
    assert len({int(s) for s in Status}) == len(list(Status))


def test_every_named_status_is_described_by_name() -> None:
    for status in Status:
        text = describe(status)
        assert text.startswith(f"0x{int(status):04X} ")
        assert not text.endswith("unknown status")


def test_describe_unknown_codes_by_range() -> None:
    assert describe(0xA7FF) == "0xA7FF Refused: out of resources"
    assert describe(0xC123) == "0xC123 Error: cannot understand"
    assert describe(0xB123) == "0xB123 Warning: unknown status"
    assert describe(0x0299) == "0x0299 Failure: unknown status"
    assert "no such object instance" in describe(0x0112)
