"""Building a C-FIND response identifier from a matching candidate (PS3.4 C.4.1.1.3.2, K.2.1.1.3.2).

Choices (observable by a peer):
- The response holds exactly the identifier's keys, with the candidate's values, or zero length when the
  candidate lacks them, plus the `always` tags the candidate has. Query/Retrieve Level (0008,0052) is
  echoed from the identifier, since candidates do not carry it.
- A sequence key with one non-empty item returns, for each candidate item that matches that item, only
  the sub-keys it lists (recursively); if no candidate item matches (the key item had only universal
  keys, or the caller skipped matching) every item is returned, projected the same way. A sequence key
  with zero items, or one empty item, returns the candidate's items in full.
- Specific Character Set (0008,0005) is the candidate's, so that every value can be re-encoded as it
  was stored; a candidate without one gets 'ISO_IR 192' when some value is not ASCII.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

from agent.matching.compiler import compile_unchecked
from agent.matching.elements import QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET


def build_response(identifier: Dataset, candidate: Dataset, *, always: Iterable[int] = ()) -> Dataset:
    """The identifier's keys filled from `candidate`, plus `always` tags and the candidate's charset."""
    response = _project(identifier, candidate)
    for tag in always:
        if tag in candidate and tag not in response:
            response.add(_copy(candidate[tag]))
    if SPECIFIC_CHARACTER_SET in candidate:
        response.add(_copy(candidate[SPECIFIC_CHARACTER_SET]))
    elif not _is_ascii(response):
        response.SpecificCharacterSet = "ISO_IR 192"
    return response


def _project(identifier: Dataset, candidate: Dataset) -> Dataset:
    out = Dataset()
    for tag in identifier.keys():
        if tag == SPECIFIC_CHARACTER_SET or tag & 0xFFFF == 0:
            continue
        key = identifier[tag]
        if tag == QUERY_RETRIEVE_LEVEL and tag not in candidate:
            out.add(_copy(key))
            continue
        found = candidate.get(tag)
        if found is None:
            out.add(DataElement(tag, key.VR, Sequence() if key.VR == "SQ" else None))
        elif key.VR == "SQ" and found.VR == "SQ":
            out.add(DataElement(tag, "SQ", _project_items(key.value, found.value)))
        else:
            out.add(_copy(found))
    return out


def _project_items(key_items: Sequence, items: Sequence) -> Sequence:
    if not key_items or len(key_items[0]) == 0:
        return Sequence([copy.deepcopy(item) for item in items])
    template = key_items[0]
    matcher = compile_unchecked(template)
    chosen = [item for item in items if matcher.matches(item)] or list(items)
    return Sequence([_project(template, item) for item in chosen])


def _copy(elem: DataElement) -> DataElement:
    """A detached copy; PersonName values become plain text so they re-encode in the response's charset."""
    value: Any = elem.value
    if elem.VR == "SQ":
        value = Sequence([copy.deepcopy(item) for item in value])
    elif isinstance(value, PersonName):
        value = str(value)
    elif isinstance(value, MultiValue):
        value = [str(x) if isinstance(x, PersonName) else x for x in value]
    return DataElement(elem.tag, elem.VR, value)


def _is_ascii(ds: Dataset) -> bool:
    for elem in ds:
        if elem.VR == "SQ":
            if not all(_is_ascii(item) for item in elem.value):
                return False
            continue
        for value in elem.value if isinstance(elem.value, MultiValue) else [elem.value]:
            if isinstance(value, (str, PersonName)) and not str(value).isascii():
                return False
    return True
