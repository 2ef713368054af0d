"""Query keys from the command line (`-k KEY=VALUE`) and matches printed back, for `find|move|get`.

- A key is a keyword (`PatientName`), a tag (`0010,0010` or `(0010,0010)`), or a path into a sequence
  (`ReferencedStudySequence[0].ReferencedSOPInstanceUID`, the item index optional for item 0); `KEY`
  alone or `KEY=` asks for the attribute back (a return key, PS3.4 C.2.2.1.2). A tag outside the data
  dictionary, a malformed path or a value that does not fit its VR is a usage error naming the key.
- A value that is not ASCII makes the identifier name ISO_IR 192 (UTF-8) as its Specific Character Set
  unless the keys give one (PS3.5 6.1.2.5.3); pydicom then encodes every text value in it.
- Text output: one row per match, one column per key asked for, in tag order (the Query/Retrieve Level
  and Specific Character Set are left out), values as the peer sent them (decoded with the match's own
  character set), multi-values joined with a backslash.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag

_TAG = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")
_STEP = re.compile(r"^([^\[\]]+)(?:\[(\d+)\])?$")


class KeyError_(ValueError):
    """A `-k` argument that cannot become an identifier key (a usage error)."""


def _tag(name: str, whole: str) -> int:
    m = _TAG.match(name)
    if m:
        tag = int(m.group(1) + m.group(2), 16)
    else:
        found = tag_for_keyword(name)
        if found is None:
            raise KeyError_(f"-k {whole}: {name!r} is neither a DICOM keyword nor a tag gggg,eeee")
        tag = int(found)
    try:
        dictionary_VR(tag)
    except KeyError:
        raise KeyError_(f"-k {whole}: tag ({tag >> 16:04X},{tag & 0xFFFF:04X}) is not in the data dictionary") from None
    return tag


def add_key(ds: Dataset, text: str) -> None:
    """Add one `KEY[=VALUE]` to `ds` (module docstring); raises KeyError_ with a clear message."""
    path, _, value = text.partition("=")
    if not path.strip():
        raise KeyError_(f"-k {text}: no key before '='")
    steps = path.strip().split(".")
    target = ds
    for i, step in enumerate(steps):
        m = _STEP.match(step.strip())
        if m is None:
            raise KeyError_(f"-k {text}: {step!r} is not a key or Key[index]")
        tag = _tag(m.group(1), text)
        vr = dictionary_VR(tag)
        last = i == len(steps) - 1
        if not last:
            if vr != "SQ":
                raise KeyError_(f"-k {text}: {m.group(1)} is not a sequence, so nothing can follow it")
            index = int(m.group(2) or 0)
            if tag not in target:
                target.add_new(tag, "SQ", DicomSequence())
            items = target[tag].value
            while len(items) <= index:
                items.append(Dataset())
            target = items[index]
            continue
        if m.group(2) is not None:
            raise KeyError_(f"-k {text}: an item index belongs to a sequence followed by a key inside it")
        if vr == "SQ":
            if value:
                raise KeyError_(f"-k {text}: a sequence takes no value; give keys inside it (Seq.Key=VALUE)")
            if tag not in target:
                target.add_new(tag, "SQ", DicomSequence())
            return
        vr = vr.split(" or ")[0]  # "US or SS": either serves for a query key
        try:
            target.add_new(tag, vr, _value(vr, value))
        except (ValueError, TypeError, OverflowError) as exc:
            raise KeyError_(f"-k {text}: {value!r} does not fit {keyword_for_tag(tag) or hex(tag)} ({vr}): {exc}") from None


def _value(vr: str, value: str) -> Any:
    if value == "":
        return None
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        parts = [int(v) for v in value.split("\\")]
        return parts[0] if len(parts) == 1 else parts
    if vr in ("FL", "FD"):
        parts_f = [float(v) for v in value.split("\\")]
        return parts_f[0] if len(parts_f) == 1 else parts_f
    if vr in ("OB", "OW", "UN", "OF", "OD", "OL", "OV"):
        raise ValueError("binary values cannot be query keys")
    return value


def build_identifier(keys: Iterable[str], level: str, defaults: Sequence[str] = ()) -> Dataset:
    """The identifier: Query/Retrieve Level, the keys given, then `defaults` not given (as return keys)."""
    ds = Dataset()
    for text in keys:
        if text.partition("=")[0].strip() in ("QueryRetrieveLevel", "0008,0052", "(0008,0052)"):
            raise KeyError_(f"-k {text}: give the level with --level, not as a key")
        add_key(ds, text)
    for keyword in defaults:
        if keyword not in ds:
            setattr(ds, keyword, None)
    ds.QueryRetrieveLevel = level
    if "SpecificCharacterSet" not in ds and not _all_ascii(ds):
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _all_ascii(ds: Dataset) -> bool:
    for elem in ds:
        if elem.VR == "SQ":
            if not all(_all_ascii(item) for item in elem.value):
                return False
        elif elem.value is not None and not str(elem.value).isascii():  # PN values are not str
            return False
    return True


# ------------------------------------------------------------------ output

_HIDDEN = {0x00080005, 0x00080052}


def columns(identifier: Dataset) -> list[int]:
    """The top-level tags asked for, in tag order (level and charset left out)."""
    return [int(e.tag) for e in identifier if int(e.tag) not in _HIDDEN]


def show(ds: Dataset, tag: int) -> str:
    elem = ds.get(Tag(tag))
    if elem is None or elem.value is None:
        return ""
    if elem.VR == "SQ":
        return f"<{len(elem.value)} item(s)>"
    value = elem.value
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _width(text: str) -> int:
    # East Asian wide characters take two columns on a terminal.
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def table(identifier: Dataset, matches: Sequence[Dataset]) -> str:
    tags = columns(identifier)
    heads = [keyword_for_tag(t) or f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in tags]
    rows = [[show(m, t) for t in tags] for m in matches]
    widths = [max([_width(h)] + [_width(r[i]) for r in rows]) for i, h in enumerate(heads)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c + " " * (w - _width(c)) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(heads)] + [line(r) for r in rows])


__all__ = ["KeyError_", "add_key", "build_identifier", "columns", "show", "table"]
