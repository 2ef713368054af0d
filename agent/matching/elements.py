"""Reading identifier and candidate elements: which tags are keys, and values as clean Unicode text.

Values are read through pydicom, which decodes text with the dataset's own Specific Character Set (an
item inherits its parent's); all comparisons therefore happen on Unicode, whatever each side's encoding.
"""

from __future__ import annotations

import warnings
from typing import Any, Final

from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from agent.matching import values as v
from agent.matching.errors import A900, MatchingError

SPECIFIC_CHARACTER_SET: Final = 0x00080005
QUERY_RETRIEVE_LEVEL: Final = 0x00080052
_NOT_KEYS: Final = frozenset({SPECIFIC_CHARACTER_SET, QUERY_RETRIEVE_LEVEL})
#: Text VRs whose values are split on backslash (the others may contain one).
_SPLIT_VRS: Final = v.TEXT_VRS - {"LT", "ST", "UT", "UR"}


def is_key(tag: int) -> bool:
    return tag not in _NOT_KEYS and tag & 0xFFFF != 0


def element(ds: Dataset, tag: int, where: str) -> DataElement:
    """`ds[tag]` converted from its raw form; a value pydicom cannot convert is an invalid key."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            elem = ds[tag]
    except Exception as exc:  # pydicom raises ValueError, TypeError, LookupError... on bad values
        raise MatchingError(A900, f"{where}: value cannot be decoded ({exc})") from exc
    if isinstance(elem, RawDataElement):
        raise MatchingError(A900, f"{where}: value cannot be decoded")
    return elem


def value_list(value: Any) -> list[Any]:
    if value is None or value == "" or value == b"":
        return []
    if isinstance(value, (MultiValue, list, tuple)):
        return list(value)
    return [value]


def text_values(elem: DataElement, ds: Dataset) -> list[str]:
    """A text element's values as cleaned `str` (PersonName and bytes decoded with the dataset's charset)."""
    value = elem.value
    if type(value) is str and ("\\" not in value or elem.VR not in _SPLIT_VRS):
        one = v.clean(value, elem.VR)  # the usual case (a C-FIND candidate from the index): one value
        return [one] if one else []
    out = []
    for item in value_list(elem.value):
        if isinstance(item, bytes):
            from pydicom.charset import convert_encodings, decode_bytes

            encodings = convert_encodings(ds.get("SpecificCharacterSet"))
            item = decode_bytes(item, encodings, set())
        item = str(item)
        if "\\" in item and elem.VR in _SPLIT_VRS:
            out.extend(v.clean(part, elem.VR) for part in item.split("\\"))
        else:
            out.append(v.clean(item, elem.VR))
    return [item for item in out if item]


def tag_path(path: str, tag: int) -> str:
    return f"{path}{Tag(tag)}"

