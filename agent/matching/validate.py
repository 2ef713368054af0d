"""Identifier validation: refuse a C-FIND request before matching, with the status to answer.

A900 (identifier does not match SOP Class) for a key whose VR is not the dictionary's, a value pydicom
cannot convert, a malformed range, a wildcard or range where the VR allows neither, or a sequence key
with more than one item; C001 (unable to process) for a Specific Character Set pydicom cannot decode.
Private and unknown tags are not checked against the dictionary.
"""

from __future__ import annotations

import re
from typing import Final

from pydicom import Dataset
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement

from agent.matching import values as v
from agent.matching.elements import (
    SPECIFIC_CHARACTER_SET,
    element,
    is_key,
    tag_path,
    text_values,
    value_list,
)
from agent.matching.errors import A900, C001, MatchingError

_AS: Final = re.compile(r"\d{3}[DWMY]")


def validate_identifier(identifier: Dataset) -> None:
    """Raise MatchingError unless every key has its dictionary VR and a value its VR allows.

    C001 for a Specific Character Set term pydicom cannot decode; A900 for everything else (wrong VR,
    undecodable value, malformed range, wildcard or range where the VR allows neither, a sequence key
    with more than one item).
    """
    _validate(identifier, "")


def _validate(ds: Dataset, path: str) -> None:
    if SPECIFIC_CHARACTER_SET in ds:
        elem = element(ds, SPECIFIC_CHARACTER_SET, tag_path(path, SPECIFIC_CHARACTER_SET))
        terms = [str(t).strip() for t in (value_list(elem.value) or [""])]
        for i, term in enumerate(terms):
            if term not in python_encoding or (term == "" and i > 0):
                raise MatchingError(
                    C001, f"{tag_path(path, SPECIFIC_CHARACTER_SET)}: unknown character set {term!r}"
                )
    for tag in list(ds.keys()):
        if not is_key(tag) or tag == SPECIFIC_CHARACTER_SET:
            continue
        where = tag_path(path, tag)
        elem = element(ds, tag, where)
        _check_vr(tag, elem.VR, where)
        if elem.VR == "SQ":
            items = elem.value or []
            if len(items) > 1:
                raise MatchingError(A900, f"{where}: a sequence key holds {len(items)} items, at most 1")
            for item in items:
                _validate(item, f"{where}>")
            continue
        _check_value(elem, ds, where)


def _check_vr(tag: int, vr: str, where: str) -> None:
    try:
        expected = dictionary_VR(tag)
    except KeyError:
        return  # private or unknown: the dictionary has no opinion
    if vr != expected and vr not in expected.split(" or "):
        raise MatchingError(A900, f"{where}: VR {vr} where the dictionary says {expected}")


def _check_value(elem: DataElement, ds: Dataset, where: str) -> None:
    vr = elem.VR
    if vr in ("IS", "DS"):
        # pydicom keeps an unconvertible number read from the wire as text (reading validation warns)
        for item in value_list(elem.value):
            try:
                number = float(str(item))
                if vr == "IS" and not number.is_integer():
                    raise ValueError
            except ValueError:
                raise MatchingError(A900, f"{where}: {str(item)!r} is not a {vr} value") from None
        return
    if vr not in v.TEXT_VRS:
        return  # other numbers were converted (or refused) by pydicom in _element
    for text in text_values(elem, ds):
        if v.has_wildcard(text) and vr not in v.WILDCARD_VRS:
            raise MatchingError(A900, f"{where}: wildcard in a {vr} key")
        try:
            if vr in v.RANGE_VRS:
                if v.split_range(text, vr) is None:
                    v.instant_span(text, vr)
            elif vr == "UI":
                v.check_uid(text, where)
            elif vr == "AS" and _AS.fullmatch(text) is None:
                raise ValueError(f"not an AS value: {text!r}")
            elif vr == "PN" and text.count("=") > 2:
                raise ValueError("more than three component groups")
        except ValueError as exc:
            raise MatchingError(A900, f"{where}: {exc}") from exc

