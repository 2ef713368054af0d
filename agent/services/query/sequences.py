"""C-FIND sequence keys over the index (PS3.4 C.2.2.2.6): the Q/R SCP's side of agent.store.sequences.

The index keeps each sequence key's items as received (a BLOB per key, `agent.store.sequences`); a
query never opens an instance file. Work is only done for queries that carry a sequence key, and only
for the candidate rows the SQL pre-filter let through (`prefilter`: a non-universal key needs the
sequence, and each UID key of its item one of its UIDs among the stored bytes).

Rules (what a peer observes):
- A sequence key with zero items, or one item whose keys are all universal (empty, or '*'), is
  universal: every candidate matches, and the candidate's stored items are returned; with zero items
  or one empty item, whole; otherwise reduced to the keys the item lists (recursively).
- A key item with values matches a candidate when one of its stored items matches every non-empty key
  of the key item (single value, wildcard, UID list, range, nested sequences: agent.matching's sequence
  matcher). The response returns the stored items that match, reduced to the item's keys.
- A candidate without the sequence (or with an empty one) matches only a universal key, and is answered
  with a zero-length sequence. So is one whose sequence was over 64 KiB when received (not kept,
  `agent.store.sequences.OVERSIZED`) or cannot be decoded.
- Item text is decoded with the instance's stored Specific Character Set and answered in it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue

from agent.matching import build_response
from agent.matching.compiler import compile_unchecked
from agent.store.query import Filter
from agent.store.sequences import unpack

SPECIFIC_CHARACTER_SET = 0x00080005


def restricts(elem: DataElement) -> bool:
    """True when the sequence key `elem` is not universal (so a candidate must have the sequence)."""
    items = elem.value
    return bool(items) and not compile_unchecked(items[0]).universal


def prefilter(flt: Filter, column: str, elem: DataElement) -> None:
    """Necessary SQL conditions on the stored items of the sequence key `elem` (its `column`): a
    non-universal key needs the sequence; and every UID key with values, at any depth of the key's item
    (all of an item's keys must match, nested ones included), needs one of its UIDs among the stored
    bytes, which hold UIDs as their ASCII text (PS3.5 9.1). The matcher decides the rest."""
    if not restricts(elem):
        return
    flt.clauses.append(f"{column} IS NOT NULL")
    for uids in _uid_keys(elem.value[0]):
        flt.clauses.append("(" + " OR ".join(f"instr({column}, CAST(? AS BLOB)) > 0" for _ in uids) + ")")
        flt.params.extend(uids)


def _uid_keys(item: Dataset) -> list[list[str]]:
    out = []
    for elem in item:
        if elem.VR == "SQ":
            if elem.value:
                out.extend(_uid_keys(elem.value[0]))
        elif elem.VR == "UI" and elem.value:
            values = elem.value if isinstance(elem.value, (list, MultiValue)) else str(elem.value).split("\\")
            uids = [str(v).strip("\0 ") for v in values]
            if all(uids) and not any("*" in u or "?" in u for u in uids):
                out.append(uids)
    return out


def add_to_candidate(candidate: dict[int, Any], row: sqlite3.Row, spec: list[tuple[int, str]]) -> None:
    """Put the row's stored sequences of `spec` (tag, column) into `candidate` (tag -> (tag, VR, value),
    with the row's character set) as (tag, "SQ", items), decoded with the candidate's character set; a
    sequence absent, empty, oversized or undecodable is taken out (matches only a universal key)."""
    charset_elem = candidate.get(SPECIFIC_CHARACTER_SET)
    charset = None
    if charset_elem is not None:
        value = charset_elem[2]
        charset = "\\".join(value) if isinstance(value, list) else value
    for tag, column in spec:
        items = unpack(row[column], tag, charset)
        if items:
            candidate[tag] = (tag, "SQ", items)
        else:
            candidate.pop(tag, None)


def project(identifier: Dataset, answer: list[tuple[int, str, Any]]) -> None:
    """Reduce, in place, each non-empty sequence of `answer` (elements in tag order) to what its key
    asks (module rules); add ISO_IR 192 when the answer has no character set and a kept item's text is
    not ASCII."""
    has_charset = any(tag == SPECIFIC_CHARACTER_SET for tag, _, _ in answer)
    ascii_only = True
    for i, (tag, vr, value) in enumerate(answer):
        if vr != "SQ" or not value:
            continue
        key_items = identifier[tag].value
        if key_items and len(key_items[0]):
            key = Dataset()
            key.add(identifier[tag])
            have = Dataset()
            have.add(DataElement(tag, "SQ", value))
            value = build_response(key, have)[tag].value
            answer[i] = (tag, "SQ", value)
        # else: zero items or one empty item: the stored items whole, as decoded (read, never changed)
        if not has_charset:
            ascii_only = ascii_only and _ascii(value)
    if not ascii_only:
        answer.append((SPECIFIC_CHARACTER_SET, "CS", "ISO_IR 192"))
        answer.sort(key=lambda e: e[0])


def _ascii(items: Any) -> bool:
    for item in items:
        for elem in item:
            if elem.VR == "SQ":
                if not _ascii(elem.value):
                    return False
                continue
            values = elem.value if isinstance(elem.value, MultiValue) else [elem.value]
            if not all(v is None or str(v).isascii() for v in values):
                return False
    return True


__all__ = ["add_to_candidate", "prefilter", "project", "restricts"]
