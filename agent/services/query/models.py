"""Query/Retrieve information models (PS3.4 C.3, C.6): SOP Class UIDs, levels and unique keys.

Sans-IO constants shared by the Q/R SCP and SCU. Patient Root has the levels PATIENT, STUDY, SERIES,
IMAGE; Study Root the same without PATIENT (its patient attributes are study-level keys, C.6.2.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PATIENT_ROOT_FIND: Final = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE: Final = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET: Final = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND: Final = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE: Final = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET: Final = "1.2.840.10008.5.1.4.1.2.2.3"

LEVELS: Final = ("PATIENT", "STUDY", "SERIES", "IMAGE")

#: The unique key of each level (PS3.4 C.6.1.1, C.6.2.1): keyword and tag.
UNIQUE_KEYS: Final = {
    "PATIENT": ("PatientID", 0x00100020),
    "STUDY": ("StudyInstanceUID", 0x0020000D),
    "SERIES": ("SeriesInstanceUID", 0x0020000E),
    "IMAGE": ("SOPInstanceUID", 0x00080018),
}


@dataclass(frozen=True, slots=True)
class Model:
    """One information model: its name, its FIND/MOVE/GET SOP classes and the levels it has."""

    name: str  # "patient" or "study"
    find: str
    move: str
    get: str
    levels: tuple[str, ...]

    @property
    def sop_classes(self) -> tuple[str, str, str]:
        return (self.find, self.move, self.get)


PATIENT_ROOT: Final = Model("patient", PATIENT_ROOT_FIND, PATIENT_ROOT_MOVE, PATIENT_ROOT_GET, LEVELS)
STUDY_ROOT: Final = Model("study", STUDY_ROOT_FIND, STUDY_ROOT_MOVE, STUDY_ROOT_GET, LEVELS[1:])
MODELS: Final = {"patient": PATIENT_ROOT, "study": STUDY_ROOT}


def model_of(sop_class_uid: str) -> Model | None:
    """The model a FIND/MOVE/GET SOP Class UID belongs to, or None."""
    for model in MODELS.values():
        if sop_class_uid in model.sop_classes:
            return model
    return None


__all__ = [
    "LEVELS", "MODELS", "Model", "PATIENT_ROOT", "PATIENT_ROOT_FIND", "PATIENT_ROOT_GET", "PATIENT_ROOT_MOVE",
    "STUDY_ROOT", "STUDY_ROOT_FIND", "STUDY_ROOT_GET", "STUDY_ROOT_MOVE", "UNIQUE_KEYS", "model_of",
]
