"""The device's free-text abort reason -> Performed Procedure Step Discontinuation Reason Code Sequence.

PS3.3 C.4.14 puts the reason of a DISCONTINUED step in (0040,0281), coded from CID 9300 "Procedure
Discontinuation Reasons" (scheme DCM). A device says why in its own words, so the mapping is by words:
- a CID 9300 code given as such ("110514" or "DCM:110514") is used as it is;
- otherwise the first rule of `_RULES` whose word occurs in the reason (case-insensitive) decides;
- otherwise 110513 "Discontinued for unspecified reason".
"""

from __future__ import annotations

import re

from pydicom import Dataset

#: CID 9300 (DCM) codes the mapping can produce, with their code meanings.
CID_9300 = {
    "110500": "Doctor canceled procedure",
    "110501": "Equipment failure",
    "110502": "Incorrect procedure ordered",
    "110503": "Patient allergic to media/contrast",
    "110504": "Patient died",
    "110505": "Patient refused to continue procedure",
    "110506": "Patient taken for treatment or surgery",
    "110507": "Patient did not arrive",
    "110508": "Patient pregnant",
    "110509": "Change of procedure for correct charging",
    "110510": "Duplicate order",
    "110511": "Nursing unit cancel",
    "110512": "Incorrect side ordered",
    "110513": "Discontinued for unspecified reason",
    "110514": "Incorrect worklist entry selected",
    "110515": "Patient condition prevented continuing",
    "110516": "Equipment change",
}
UNSPECIFIED = "110513"

#: (words, code): checked in order; the more specific phrases come first.
_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("worklist", "wrong patient", "wrong entry", "incorrect entry", "wrong item"), "110514"),
    (("wrong procedure", "incorrect procedure"), "110502"),
    (("wrong side", "incorrect side"), "110512"),
    (("duplicate",), "110510"),
    (("allerg", "contrast"), "110503"),
    (("died", "death"), "110504"),
    (("refus",), "110505"),
    (("surgery", "treatment"), "110506"),
    (("did not arrive", "no show", "no-show", "absent"), "110507"),
    (("pregnan",), "110508"),
    (("condition", "unwell", "unstable"), "110515"),
    (("doctor", "physician"), "110500"),
    (("nursing",), "110511"),
    (("equipment change", "device change", "changed device"), "110516"),
    (("equipment", "device", "failure", "fault", "error", "power", "hardware", "probe", "detector"), "110501"),
)

_CODE_RE = re.compile(r"\s*(?:DCM:)?(1105\d\d)\s*", re.IGNORECASE)


def reason_code(reason: str) -> str:
    """The CID 9300 code value for the device's `reason` (module docstring)."""
    m = _CODE_RE.fullmatch(reason or "")
    if m and m.group(1) in CID_9300:
        return m.group(1)
    text = (reason or "").lower()
    for words, code in _RULES:
        if any(w in text for w in words):
            return code
    return UNSPECIFIED


def discontinuation_reason(reason: str) -> Dataset:
    """One Performed Procedure Step Discontinuation Reason Code Sequence item."""
    code = reason_code(reason)
    item = Dataset()
    item.CodeValue = code
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = CID_9300[code]
    return item


__all__ = ["CID_9300", "UNSPECIFIED", "discontinuation_reason", "reason_code"]
