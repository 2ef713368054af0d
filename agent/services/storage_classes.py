"""The one definition of "Storage SOP Class": what `accept = "all-storage"` accepts and what the profile
validator allows in `[storage] accept`.

Rule (PS3.4 Annex B, Table B.5-1, and the Non-Patient Object Storage classes of Annex GG, which are also
sent with C-STORE): a SOP Class of pydicom's UID registry whose name has the word "Storage" in it, except
- Media Storage Directory Storage (1.2.840.10008.1.3.10): the DICOMDIR of PS3.10, exchanged on media,
  never sent with C-STORE;
- Storage Commitment Push / Pull Model (Annex J): N-ACTION / N-EVENT-REPORT, not C-STORE.
Names often go on after "Storage" ("Digital X-Ray Image Storage - For Presentation", "... - Trial"), so
the test is for the word, not the name's ending. Retired storage classes are kept (old modalities still
send them; DCMTK's storescp accepts them too).

The list is derived from the registry so a pydicom upgrade brings new classes in; the unit test checks it
against a sample transcribed by hand from Table B.5-1 (all the "For Presentation / For Processing"
classes among them) and against the exclusions above.
"""

from __future__ import annotations

import re

from pydicom.uid import UID_dictionary

#: SOP Classes whose name contains "Storage" but that are not stored with C-STORE (see above).
NOT_STORAGE: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.3.10",  # Media Storage Directory Storage (PS3.10 DICOMDIR)
        "1.2.840.10008.1.20.1",  # Storage Commitment Push Model (PS3.4 Annex J)
        "1.2.840.10008.1.20.2",  # Storage Commitment Pull Model (retired)
    }
)

_WORD = re.compile(r"\bStorage\b")


def is_storage_sop_class(uid: str) -> bool:
    """True for a Storage SOP Class of the registry (rule in the module docstring)."""
    entry = UID_dictionary.get(uid)
    if entry is None or entry[1] != "SOP Class" or uid in NOT_STORAGE:
        return False
    return _WORD.search(entry[0]) is not None


#: Every Storage SOP Class in pydicom's registry, in registry order.
ALL_STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(uid for uid in UID_dictionary if is_storage_sop_class(uid))

#: pydicom keyword (e.g. "CTImageStorage") -> UID, for the Storage SOP Classes only.
STORAGE_KEYWORDS: dict[str, str] = {
    UID_dictionary[uid][4]: uid for uid in ALL_STORAGE_SOP_CLASSES if UID_dictionary[uid][4]
}


def sop_class_name(uid: str) -> str:
    """The registry's name of a SOP Class, or the UID itself for a private one (for log lines)."""
    entry = UID_dictionary.get(uid)
    return entry[0] if entry is not None else uid


__all__ = ["ALL_STORAGE_SOP_CLASSES", "NOT_STORAGE", "STORAGE_KEYWORDS", "is_storage_sop_class", "sop_class_name"]
