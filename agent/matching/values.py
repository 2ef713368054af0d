"""Value syntax for C-FIND keys: dates, times, ranges, wildcards and string normalisation.

Invariants kept here:
- Every instant is an `int` on one scale, `YYYYMMDD * DAY + microsecond-of-day`, so that DA, TM, DT and a
  combined DA+TM pair compare with plain integer comparisons (no datetime objects in the hot loop).
- A partial value is an interval: `parse_dt("2024")` covers the whole of 2024, `parse_tm("10")` the whole
  hour (PS3.5 6.2 lets TM and DT omit trailing components). Bounds use month 12, day 31 and
  23:59:59.999999 for what is missing; "20240231" as an upper bound orders correctly without calendar
  arithmetic.
- Strings are compared after Unicode NFC normalisation and with insignificant spaces removed (PS3.5 6.2:
  trailing spaces are padding for every string VR; leading spaces are insignificant too except in the
  text VRs LT, ST, UT and in UR).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Final

from agent.matching.errors import A900, MatchingError

#: Microseconds in a day; one DA step on the combined integer scale (see module docstring).
DAY: Final = 100_000_000_000
#: The end of any day: 23:59:59.999999 in microseconds.
END_OF_DAY: Final = 86_400_000_000 - 1
NEG_INF: Final = -(1 << 62)
POS_INF: Final = 1 << 62

#: VRs for which '*' and '?' are wildcards (PS3.4 C.2.2.2.4).
WILDCARD_VRS: Final = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
#: VRs that accept range matching (PS3.4 C.2.2.2.5).
RANGE_VRS: Final = frozenset({"DA", "TM", "DT"})
#: String VRs whose leading spaces are significant (PS3.5 6.2).
_KEEP_LEADING: Final = frozenset({"LT", "ST", "UT", "UR"})
#: String VRs (compared as text); everything else is compared as a Python value.
TEXT_VRS: Final = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)

_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?")
_DT = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?([+-]\d{4})?"
)
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


class Span:
    """An inclusive interval `[lo, hi]` on the integer instant scale."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo: int, hi: int) -> None:
        self.lo = lo
        self.hi = hi

    def __contains__(self, value: int) -> bool:
        return self.lo <= value <= self.hi

    def __repr__(self) -> str:
        return f"Span({self.lo}, {self.hi})"


def clean(text: str, vr: str) -> str:
    """Drop insignificant spaces and NUL padding; normalise to NFC so composed and decomposed forms agree."""
    text = text.rstrip(" \x00")
    if vr not in _KEEP_LEADING:
        text = text.lstrip(" ")
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return text


def _tm_micros(h: str, m: str | None, s: str | None, frac: str | None, upper: bool) -> int:
    hh = int(h)
    mm = int(m) if m else (59 if upper else 0)
    ss = int(s) if s else (59 if upper else 0)
    if hh > 23 or mm > 59 or ss > 60:
        raise ValueError("time component out of range")
    if frac:
        us = int(frac.ljust(6, "9" if upper else "0"))
    else:
        us = 999_999 if upper else 0
    return ((hh * 60 + mm) * 60 + ss) * 1_000_000 + us


def parse_tm(text: str, upper: bool = False) -> int:
    """A TM value to microseconds of the day; missing components are filled to the low or high end."""
    text = text.replace(":", "")  # ACR-NEMA style "10:30:00" is still sent by some consoles
    found = _TM.fullmatch(text)
    if found is None:
        raise ValueError(f"not a TM value: {text!r}")
    return _tm_micros(*found.groups(), upper=upper)


def parse_da(text: str) -> int:
    """A DA value to YYYYMMDD as an int."""
    found = _DA.fullmatch(text.replace(".", "") if len(text) == 10 else text)
    if found is None:
        raise ValueError(f"not a DA value: {text!r}")
    y, m, d = (int(g) for g in found.groups())
    if not (1 <= m <= 12 and 1 <= d <= 31):
        raise ValueError(f"not a DA value: {text!r}")
    return y * 10_000 + m * 100 + d


def parse_dt(text: str, upper: bool = False) -> int:
    """A DT value to the instant scale; the UTC offset is dropped (DT values compare as written)."""
    found = _DT.fullmatch(text)
    if found is None:
        raise ValueError(f"not a DT value: {text!r}")
    y, mo, d, h, mi, s, frac, _offset = found.groups()
    month = int(mo) if mo else (12 if upper else 1)
    day = int(d) if d else (31 if upper else 1)
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise ValueError(f"not a DT value: {text!r}")
    date = int(y) * 10_000 + month * 100 + day
    if h is None:
        return date * DAY + (END_OF_DAY if upper else 0)
    return date * DAY + _tm_micros(h, mi, s, frac, upper)


def instant_span(text: str, vr: str) -> Span:
    """The interval a single (non-range) DA/TM/DT value stands for."""
    if vr == "DA":
        day = parse_da(text)
        return Span(day, day)
    if vr == "TM":
        return Span(parse_tm(text), parse_tm(text, upper=True))
    return Span(parse_dt(text), parse_dt(text, upper=True))


def instant_point(text: str, vr: str) -> int:
    """A candidate's DA/TM/DT value as one instant (its earliest, when it is partial)."""
    if vr == "DA":
        return parse_da(text)
    if vr == "TM":
        return parse_tm(text)
    return parse_dt(text)


def _bound(text: str, vr: str, upper: bool) -> int:
    if vr == "DA":
        return parse_da(text)
    if vr == "TM":
        return parse_tm(text, upper)
    return parse_dt(text, upper)


def split_range(text: str, vr: str) -> tuple[str, str] | None:
    """`"a-b"`, `"a-"` or `"-b"` to its two ends; None when `text` is a single value.

    Raises ValueError for malformed ranges ("2024-01-01-2024", "abc-", "-"). For DT a '-' may also
    start a UTC offset: a text is a range when some '-' splits it into two valid DT values (or one and
    nothing), and a single value otherwise.
    """
    if "-" not in text:
        return None
    if vr != "DT":
        lo, sep, hi = text.partition("-")
        if "-" in hi or not (lo or hi):
            raise ValueError(f"malformed range {text!r}")
        if lo:
            _bound(lo, vr, False)
        if hi:
            _bound(hi, vr, True)
        return lo, hi
    for at in [i for i, ch in enumerate(text) if ch == "-"]:
        lo, hi = text[:at], text[at + 1 :]
        if not (lo or hi):
            continue
        try:
            if lo:
                parse_dt(lo)
            if hi:
                parse_dt(hi, upper=True)
        except ValueError:
            continue
        return lo, hi
    parse_dt(text)  # a single value with a negative UTC offset, or an error
    return None


def range_span(lo: str, hi: str, vr: str) -> Span:
    """The interval of a range key; an open end is unbounded."""
    return Span(
        _bound(lo, vr, False) if lo else NEG_INF,
        _bound(hi, vr, True) if hi else POS_INF,
    )


def wildcard_regex(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """PS3.4 C.2.2.2.4: '*' is any run of characters (or none), '?' exactly one character."""
    parts = []
    for ch in pattern:
        if ch == "*":
            if not parts or parts[-1] != ".*":
                parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), flags | re.DOTALL)


def has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text


def check_uid(text: str, where: str) -> None:
    if len(text) > 64 or _UID.fullmatch(text) is None:
        raise MatchingError(A900, f"{where}: {text!r} is not a UID")


#: Latin letters with a stroke or ligature have no Unicode decomposition; fold them by hand.
_UNACCENT: Final = str.maketrans({"ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ı": "i", "æ": "ae", "œ": "oe"})


def fold_pn(text: str, *, accents: bool) -> str:
    """The comparison form of a PN component group: case folded, optionally without accents.

    Trailing '^' separators are insignificant ("MÜLLER^JÜRGEN^^" is "MÜLLER^JÜRGEN").
    """
    text = text.rstrip("^ ").casefold()
    if not accents:
        text = "".join(
            ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch)
        ).translate(_UNACCENT)
    return text


Predicate = Callable[[str], bool]
