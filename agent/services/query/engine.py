"""C-FIND / C-MOVE / C-GET identifiers over the instance index: validation, SQL pre-filter, matching.

Pure and blocking (no trio): the SCP runs `fetch_rows` and `retrieve_rows` through the blocking bridge,
or `fetch_rows_now` on the event loop when the database is free (it gives up after 1 ms of SQLite's
work, and never waits for a lock: then the bridge).

How a C-FIND is answered fast (what it costs, not what it answers):
- `plan_for` keeps the last PLAN_CACHE_SIZE plans by identifier bytes (a plan is a pure function of
  the model, the identifier and the relational flag): a repeated query is neither decoded nor planned.
- `answer_bytes` reads each candidate row by column index into light elements (`_Light`, what the
  matcher reads of a DataElement) and encodes a match with the query's `FlatLayout` (tags, VRs and
  the never-filled keys encoded once): the same bytes as `_response` + `encode_flat`, which remain the
  general path for the rows the layout declines and for queries with sequence keys
  (tests/unit/test_query_fast_path.py holds the two paths to each other and to pydicom).

Rules (what a peer observes):
- Query/Retrieve Level (0008,0052) must be one of the model's levels, else C001 naming (0008,0052).
- A key of a level below the query level is refused: A900 naming it (PS3.4 C.4.1.2.1; relational
  queries do not allow lower-level keys either).
- Hierarchical queries (no relational extended negotiation): the unique key of every level above the
  query level must be present with a value, else A900 naming the missing key. Other keys of upper
  levels are matched too (a lenient reading that changes no hierarchical answer: the upper entity is
  already fixed by its unique key). Relational queries (PS3.4 C.4.1.2.2) lift the unique-key rule.
- Keys the model does not know are answered with a zero-length value; keys it knows but the index
  does not hold (`keys.UNSUPPORTED`, none today) likewise. Either one carrying a value makes every
  pending response FF01 (PS3.4 C.4.1.1.3.1: optional key not supported for matching); such keys never
  restrict the match.
- Value semantics (single value, wildcard, UID list, range, sequence, Specific Character Set) are those
  of agent.matching; SQL on indexed columns only narrows the candidates conservatively first.
- Responses carry the stored Specific Character Set of the entity, so names are returned in the
  character set they were received in (PS3.4 C.4.1.1.3), or ISO_IR 192 when none was stored and a
  value needs it. Sequence keys are matched on the items the index keeps and answered with them
  (agent.services.query.sequences); a query without one does no per-row work for them.
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset, config
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from agent.matching import Matcher, MatchingError, compile_identifier
from agent.matching import values as v
from agent.matching.elements import text_values
from agent.services.dataset import decode
from agent.services.query import sequences
from agent.services.query.encode import _COLUMN, _CONST, _EMPTY, FlatLayout
from agent.services.query.keys import UNSUPPORTED, keys_at, tag_of
from agent.services.query.models import UNIQUE_KEYS, Model
from agent.store import query as q

QUERY_RETRIEVE_LEVEL = 0x00080052
SPECIFIC_CHARACTER_SET = 0x00080005
A900 = 0xA900
C001 = 0xC001


class QueryRefused(Exception):
    """An identifier the SCP refuses: the status, a comment and the offending tags to answer with."""

    def __init__(self, status: int, comment: str, offending: tuple[int, ...] = ()) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment
        self.offending = offending


@dataclass
class FindPlan:
    model: Model
    level: str
    identifier: Dataset
    matcher: Matcher
    columns: dict[int, str]  # identifier tag -> row column filling it
    flt: q.Filter
    unsupported_matching: bool  # FF01 instead of FF00
    keys: list[tuple[int, str]]  # the identifier's keys (tag, VR) a response carries
    #: Sequence keys (tag, column): empty for most queries; when not, rows take the generic path
    #: (agent.services.query.sequences decodes, matches and projects the stored items).
    sequences: tuple[tuple[int, str], ...] = ()
    # What `answers` / `answer_bytes` derive from the plan for a row shape and transfer syntax (the
    # candidate spec, the response layout): computed on first use, the same every time after.
    compiled: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)


def query_level(model: Model, identifier: Dataset) -> str:
    elem = identifier.get(QUERY_RETRIEVE_LEVEL)
    level = str(elem.value or "").strip().upper() if elem is not None else ""
    if level not in model.levels:
        got = f"{level!r}" if level else "missing"
        raise QueryRefused(C001, f"Query/Retrieve Level {got}: {model.name} root serves "
                           f"{', '.join(model.levels)}", (QUERY_RETRIEVE_LEVEL,))
    return level


def _column_for(model: Model, keyword: str, key_level: str, level: str) -> str | None:
    """The row column holding `keyword` (a key of `key_level`) in rows of `level`, or None."""
    column = keys_at(model.name, key_level)[keyword]
    if column.startswith("related_") and key_level != level:
        prefix = {"STUDY": "study_", "SERIES": "series_"}.get(key_level)
        return prefix + column if prefix else None
    if column == "modalities" and level == "IMAGE":
        return None
    return column


def _has_value(elem: DataElement) -> bool:
    if elem.VR == "SQ":
        return bool(elem.value) and any(len(item) for item in elem.value)
    return elem.value not in (None, "", b"") and not (isinstance(elem.value, str) and not elem.value.strip("* "))


def plan_find(model: Model, identifier: Dataset, *, relational: bool) -> FindPlan:
    """Validate `identifier` for a C-FIND at its level; QueryRefused or MatchingError if refused."""
    level = query_level(model, identifier)
    at = model.levels.index(level)
    columns: dict[int, str] = {}
    unsupported = False
    elems = list(identifier)  # iterated once: every pass over a pydicom Dataset converts its elements again
    for elem in elems:
        tag = int(elem.tag)
        if tag in (QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET) or tag & 0xFFFF == 0:
            continue
        keyword = keyword_for_tag(tag)
        key_level = next((lv for lv in model.levels if keyword and keyword in keys_at(model.name, lv)), None)
        if key_level is None:
            known = next((lv for lv in model.levels if keyword in UNSUPPORTED.get(lv, ())), None)
            if known is not None and model.levels.index(known) > at:
                raise QueryRefused(A900, f"{keyword} is a {known} key, below the {level} level", (tag,))
            unsupported = unsupported or _has_value(elem)
            continue
        if model.levels.index(key_level) > at:
            raise QueryRefused(A900, f"{keyword} is a {key_level} key, below the {level} level", (tag,))
        column = _column_for(model, keyword, key_level, level)
        if column is not None:
            columns[tag] = column
    if not relational:
        for upper in model.levels[:at]:
            keyword, tag = UNIQUE_KEYS[upper]
            elem = identifier.get(tag)
            if elem is None or not _has_value(elem) or any(v.has_wildcard(t) for t in text_values(elem, identifier)):
                raise QueryRefused(A900, f"hierarchical query at {level}: {keyword} needs a value", (tag,))
    # The matcher sees only what the index can answer: unsupported keys are dropped from its copy.
    matchable = Dataset()
    for elem in elems:
        if int(elem.tag) in columns or int(elem.tag) == SPECIFIC_CHARACTER_SET:
            matchable.add(elem)
    matcher = compile_identifier(matchable)
    keys = [(int(e.tag), e.VR) for e in elems
            if int(e.tag) != SPECIFIC_CHARACTER_SET and e.tag & 0xFFFF != 0]
    seq = tuple((tag, column) for tag, column in columns.items() if identifier[tag].VR == "SQ")
    return FindPlan(model, level, identifier, matcher, columns, _prefilter(matchable, columns, level), unsupported, keys,
                    seq)


def _prefilter(identifier: Dataset, columns: dict[int, str], level: str = "") -> q.Filter:
    """Necessary conditions on indexed columns (module docstring); the matcher decides the rest."""
    flt = q.Filter()
    for tag, column in columns.items():
        elem = identifier[tag]
        if elem.VR == "SQ":
            sequences.prefilter(flt, column, elem)
            continue
        try:
            values = text_values(elem, identifier) if elem.VR in v.TEXT_VRS else []
        except Exception:
            continue
        if not values:
            continue
        if elem.VR == "UI":
            flt.equal(column, values)
            continue
        if len(values) != 1:
            continue
        value = values[0]
        if elem.VR == "DA":
            lo, hi = (value, value) if "-" not in value else value.split("-", 1)
            if all(len(x) in (0, 8) and x.isdigit() or x == "" for x in (lo, hi)):
                flt.between(column, lo, hi)
        elif elem.VR == "PN":
            prefix = value.split("*", 1)[0].split("?", 1)[0]
            if prefix and "=" not in value and prefix.isascii() and prefix.replace("^", "").isalnum():
                # A key without '=' may match any component group (agent.matching).
                flt.name_prefix(column, prefix, studies=level == "STUDY" and column == "patient_name")
        elif column == "modalities" and not v.has_wildcard(value):
            flt.contains_value(column, value)
        elif elem.VR in ("LO", "SH", "CS", "AE") and not v.has_wildcard(value) and value.isascii():
            flt.equal(column, [value])
    return flt


_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL"})

#: One element of a candidate or an answer as plain values: (tag, VR, value); a value is None (zero
#: length), a str, an int or a list of them. pydicom objects are made only when a matcher or
#: pydicom's writer needs them: they cost more than the whole match.
Element = tuple[int, str, Any]
Answer = list[Element]


def _candidate(row: sqlite3.Row, spec: list[tuple[int, str, str]]) -> dict[int, Element]:
    """The row's values for the identifier's keys (`spec`: tag, column, VR), with its character set."""
    elements: dict[int, Element] = {}
    charset = row["specific_character_set"]
    if charset:
        elements[SPECIFIC_CHARACTER_SET] = (SPECIFIC_CHARACTER_SET, "CS",
                                            charset.split("\\") if "\\" in charset else charset)
    for tag, column, vr in spec:
        value: Any = row[column]
        if value is None or value == "":
            continue
        if vr in _INT_VRS and isinstance(value, str) and value.isdigit():
            value = int(value)
        elif isinstance(value, str) and "\\" in value:
            value = value.split("\\")
        elements[tag] = (tag, vr, value)
    return elements


def as_dataset(elements: Iterable[Element]) -> Dataset:
    """Plain elements as a pydicom Dataset (values from our own index: not validated again)."""
    return Dataset({BaseTag(tag): DataElement(tag, vr, value if vr != "SQ" else value or Sequence(),
                                              validation_mode=config.IGNORE)
                    for tag, vr, value in elements})


def _is_ascii(value: Any) -> bool:
    if isinstance(value, list):
        return all(str(x).isascii() for x in value)
    if isinstance(value, Sequence):
        return True  # sequences.project decides for the items the answer keeps (str() of items is costly)
    return value is None or str(value).isascii()


def _response(plan: FindPlan, have: dict[int, Element]) -> Answer:
    """The identifier's keys with the candidate's values, zero length where it has none (PS3.4
    C.4.1.1.3.2), the level, and the stored character set (or ISO_IR 192 when a value needs it and none
    was stored); in tag order."""
    out: Answer = []
    ascii_only = True
    for tag, vr in plan.keys:
        if tag == QUERY_RETRIEVE_LEVEL:
            out.append((tag, "CS", plan.level))
            continue
        found = have.get(tag)
        if found is None:
            out.append((tag, vr, None))
            continue
        ascii_only = ascii_only and _is_ascii(found[2])
        out.append(found)
    charset = have.get(SPECIFIC_CHARACTER_SET)
    if charset is not None:
        out.append(charset)
    elif not ascii_only:
        out.append((SPECIFIC_CHARACTER_SET, "CS", "ISO_IR 192"))
    out.sort(key=lambda e: e[0])
    return out


_TABLES = {"PATIENT": q.patients, "STUDY": q.studies, "SERIES": q.series, "IMAGE": q.instances}


def fetch_rows(conn: sqlite3.Connection, plan: FindPlan) -> list[sqlite3.Row]:
    """The candidate rows of the query's level that pass the SQL pre-filter (blocking, on the database),
    with the columns the query's keys need and the character set; a key's column that the level's rows
    do not have (e.g. a study count in a relational IMAGE query) is left out, as every column would not
    hold it either."""
    select = plan.compiled.get("select")
    if select is None:
        output = q.OUTPUT_COLUMNS[plan.level]
        select = plan.compiled["select"] = tuple(
            c for c in dict.fromkeys([*plan.columns.values(), "specific_character_set"]) if c in output)
    return _TABLES[plan.level](conn, plan.flt, None, select)


class _Light:
    """One candidate element for the matcher, which reads only `.VR` and `.value` of what
    `candidate.get(tag)` returns: a fraction of a pydicom DataElement's cost."""

    __slots__ = ("VR", "value")

    def __init__(self, vr: str, value: Any) -> None:
        self.VR = vr
        self.value = value


@dataclass(frozen=True)
class _Compiled:
    """A plan's per-row work for one row shape: `spec` as `_candidate` takes it; `match` the columns the
    matcher reads (tag, index, VR, integer VR); `charset` the charset column's index; `layout` the
    response encoder for a transfer syntax, or None (the general path); `wanted` the tags the matcher
    reads."""

    spec: list[tuple[int, str, str]]
    match: list[tuple[int, int, str, bool]]
    charset: int | None
    layout: FlatLayout | None
    wanted: frozenset[int]


def _compile(plan: FindPlan, names: tuple[str, ...], transfer_syntax: str | None) -> _Compiled:
    index = {name: i for i, name in enumerate(names)}
    spec = [(tag, column, dictionary_VR(tag)) for tag, column in plan.columns.items() if column in index]
    # The matcher reads only the keys that have a value (a zero-length key is universal, PS3.4
    # C.2.2.2.3): the candidate gets those elements only.
    wanted = _match_tags(plan.identifier)
    match = [(tag, index[column], vr, vr in _INT_VRS) for tag, column, vr in spec if tag in wanted]
    charset = index.get("specific_character_set")
    layout = None
    if transfer_syntax is not None and not plan.sequences:
        filled = {tag: (column, vr) for tag, column, vr in spec}
        items = []
        for tag, vr in plan.keys:
            if tag == QUERY_RETRIEVE_LEVEL:
                items.append((tag, "CS", vr, _CONST, plan.level))
            elif tag in filled:
                items.append((tag, filled[tag][1], vr, _COLUMN, index[filled[tag][0]]))
            else:
                items.append((tag, vr, vr, _EMPTY, None))
        try:
            layout = FlatLayout(items, charset, transfer_syntax)
        except ValueError:
            layout = None
    return _Compiled(spec, match, charset, layout, wanted)


def _compiled(plan: FindPlan, row: sqlite3.Row, transfer_syntax: str | None) -> _Compiled:
    names = tuple(row.keys())
    key = (names, transfer_syntax)
    found = plan.compiled.get(key)
    if found is None:
        found = plan.compiled[key] = _compile(plan, names, transfer_syntax)
    return found  # type: ignore[no-any-return]


def _matching(plan: FindPlan, compiled: _Compiled, rows: list[sqlite3.Row], max_results: int
              ) -> tuple[list[tuple[sqlite3.Row, dict[int, Element] | None]], bool]:
    """The rows that match (at most `max_results`) and whether more did, each with its `_candidate`
    elements when they were made (queries with sequence keys), else None. The matcher's candidate
    holds the row's values as `_candidate` makes them (a str with backslashes is several values, an
    integer VR's digits a number), for the keys that have a value, and the character set."""
    if plan.sequences:
        return _matching_sequences(plan, compiled, rows, max_results)
    if plan.matcher.universal:
        return [(row, None) for row in rows[:max_results]], len(rows) > max_results
    test = plan.matcher.matches
    match, charset_at = compiled.match, compiled.charset
    out: list[tuple[sqlite3.Row, dict[int, Element] | None]] = []
    for row in rows:
        candidate = _Candidate()
        if charset_at is not None and (charset := row[charset_at]):
            candidate[SPECIFIC_CHARACTER_SET] = _Light("CS", charset.split("\\") if "\\" in charset else charset)
        for tag, at, vr, integer in match:
            value = row[at]
            if value is None or value == "":
                continue
            if type(value) is str:
                if integer and value.isdigit():
                    value = int(value)
                elif "\\" in value:
                    value = value.split("\\")
            candidate[tag] = _Light(vr, value)
        if not test(candidate):
            continue
        if len(out) == max_results:
            return out, True
        out.append((row, None))
    return out, False


def _matching_sequences(plan: FindPlan, compiled: _Compiled, rows: list[sqlite3.Row], max_results: int
                        ) -> tuple[list[tuple[sqlite3.Row, dict[int, Element] | None]], bool]:
    """`_matching` for a query with sequence keys: the stored items are decoded into each candidate
    (agent.services.query.sequences) and kept for its answer."""
    wanted = compiled.wanted
    out: list[tuple[sqlite3.Row, dict[int, Element] | None]] = []
    for row in rows:
        have = _candidate(row, compiled.spec)
        sequences.add_to_candidate(have, row, list(plan.sequences))
        if not plan.matcher.universal and not plan.matcher.matches(_Candidate(
                (t, _Light(vr, value)) for t, (_, vr, value) in have.items() if t in wanted)):
            continue
        if len(out) == max_results:
            return out, True
        out.append((row, have))
    return out, False


def _answer(plan: FindPlan, compiled: _Compiled, row: sqlite3.Row, have: dict[int, Element] | None) -> Answer:
    answer = _response(plan, have if have is not None else _candidate(row, compiled.spec))
    if plan.sequences:
        sequences.project(plan.identifier, answer)
    return answer


#: The most a look-up run on the event loop (`fetch_rows_now`) may take before it is given up and
#: run in a worker thread instead.
INLINE_SQL_BUDGET = 0.001


def fetch_rows_now(conn: sqlite3.Connection, plan: FindPlan, budget: float = INLINE_SQL_BUDGET
                   ) -> list[sqlite3.Row] | None:
    """`fetch_rows` for the event loop's thread, bounded: None (nothing read) when it would take more
    than `budget` seconds of SQLite's work (a progress handler interrupts it) or when the database is
    locked by another process (SQLite's busy timeout is 0 meanwhile: it never sleeps). The caller
    then runs `fetch_rows` in a worker thread. A plan whose look-up once ran over its budget is not
    tried here again (None at once). The caller holds the database (Blocking.try_now)."""
    if plan.compiled.get("over_budget"):
        return None
    timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    deadline = time.perf_counter() + budget
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.set_progress_handler(lambda: time.perf_counter() > deadline, 1000)
        return fetch_rows(conn, plan)
    except sqlite3.OperationalError as exc:  # interrupted, or locked: not now
        if "interrupt" in str(exc):
            plan.compiled["over_budget"] = True
        return None
    finally:
        conn.set_progress_handler(None, 0)
        conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")


def answers(plan: FindPlan, rows: list[sqlite3.Row], max_results: int) -> tuple[list[Answer], bool]:
    """The answers of the rows that match (at most `max_results`) and whether more matched. CPU only,
    no database: run it outside the database bridge."""
    if not rows:
        return [], False
    compiled = _compiled(plan, rows[0], None)
    found, more = _matching(plan, compiled, rows, max_results)
    return [_answer(plan, compiled, row, have) for row, have in found], more


def answer_bytes(plan: FindPlan, rows: list[sqlite3.Row], max_results: int, transfer_syntax: str
                 ) -> tuple[list[bytes | Answer], bool]:
    """As `answers`, but each answer already encoded for `transfer_syntax` where the query's
    `FlatLayout` applies (the same bytes `encode_flat` writes for the answer; never for a query with
    sequence keys), else the answer itself for the caller's general encoder. CPU only."""
    if not rows:
        return [], False
    compiled = _compiled(plan, rows[0], transfer_syntax)
    found, more = _matching(plan, compiled, rows, max_results)
    layout = compiled.layout
    out: list[bytes | Answer] = []
    for row, have in found:
        encoded = layout.encode(row) if layout is not None else None
        out.append(encoded if encoded is not None else _answer(plan, compiled, row, have))
    return out, more


class _Candidate(dict):  # type: ignore[type-arg]
    """A row's elements by tag for the matcher, which reads a candidate only through `get(tag)` (text
    values from the index are already `str`, so no character set is looked up by keyword): a plain
    dict costs a fraction of a pydicom Dataset, built once per candidate row."""

    __slots__ = ()


def _match_tags(identifier: Dataset) -> frozenset[int]:
    tags = {SPECIFIC_CHARACTER_SET}
    for elem in identifier:
        if elem.VR == "SQ" and elem.value or elem.VR != "SQ" and not elem.is_empty:
            tags.add(int(elem.tag))
    return frozenset(tags)


#: Plans by (model, relational, transfer syntax, identifier bytes): a console that asks the same
#: question again (a worklist or a study list refreshed) skips decoding and planning. A plan is a pure
#: function of those (the key tables are constants), and never changes once made.
PLAN_CACHE_SIZE = 128
#: Identifiers larger than this are planned every time (the cache's memory stays small).
PLAN_CACHE_MAX_BYTES = 4096
_plans: OrderedDict[tuple[str, bool, str, bytes], FindPlan] = OrderedDict()


def plan_for(model: Model, data: bytes | memoryview, transfer_syntax: str, *, relational: bool) -> FindPlan:
    """`plan_find` of the identifier `data` encoded in `transfer_syntax`, from the plan cache when the
    same bytes were planned before (a refusal is never cached: it is raised again). Raises as `decode`
    and `plan_find` do."""
    raw = bytes(data)
    key = (model.name, relational, transfer_syntax, raw)
    plan = _plans.get(key)
    if plan is not None:
        _plans.move_to_end(key)
        return plan
    plan = plan_find(model, decode(raw, transfer_syntax), relational=relational)
    if len(raw) <= PLAN_CACHE_MAX_BYTES:
        _plans[key] = plan
        while len(_plans) > PLAN_CACHE_SIZE:
            _plans.popitem(last=False)
    return plan


def run_find(conn: sqlite3.Connection, plan: FindPlan, max_results: int) -> tuple[list[Dataset], bool]:
    """`fetch_rows` then `answers`, as Datasets, in one blocking call (for tests and tools)."""
    found, more = answers(plan, fetch_rows(conn, plan), max_results)
    return [as_dataset(a) for a in found], more


def retrieve_keys(model: Model, identifier: Dataset) -> tuple[str, list[str]]:
    """Level and unique key values of a C-MOVE / C-GET identifier (PS3.4 C.4.2.2.1, C.4.3.2.1)."""
    level = query_level(model, identifier)
    keyword, tag = UNIQUE_KEYS[level]
    elem = identifier.get(tag)
    values = text_values(elem, identifier) if elem is not None else []
    if not values or any(v.has_wildcard(x) for x in values):
        raise QueryRefused(A900, f"retrieve at {level}: {keyword} needs one or more values", (tag,))
    for value in values:
        if tag != UNIQUE_KEYS["PATIENT"][1]:
            try:
                v.check_uid(value, keyword)
            except MatchingError as exc:
                raise QueryRefused(A900, str(exc), (tag,)) from None
    return level, values


def retrieve_rows(conn: sqlite3.Connection, level: str, values: list[str]) -> list[sqlite3.Row]:
    return q.retrieve_uids(conn, level, values)


__all__ = ["Answer", "Element", "FindPlan", "QueryRefused", "answer_bytes", "answers", "as_dataset", "fetch_rows",
           "plan_find", "plan_for", "query_level", "retrieve_keys", "retrieve_rows", "run_find", "tag_of"]
