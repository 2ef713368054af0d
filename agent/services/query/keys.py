"""The keys the Query/Retrieve SCP serves at each level, and the index column behind each (PS3.4 C.6).

A key is (keyword, index column). Patient Root puts the patient keys at the PATIENT level; Study Root
has no PATIENT level and serves the same patient keys at the STUDY level (PS3.4 C.6.2.1).
Sequence keys (the `...Sequence` keywords) are columns too: the index keeps their items as received
(agent.store.sequences), and agent.services.query.sequences matches them (PS3.4 C.2.2.2.6) on any
item key, e.g. Request Attributes Sequence > Requested Procedure ID, Scheduled Procedure Step ID.
`UNSUPPORTED` keys are known Q/R keys the index does not keep (none today): they would be answered
with a zero-length value, and a non-universal value for one makes the pending status FF01 (optional key
not supported for matching, PS3.4 C.4.1.1.3.1) instead of FF00; the match ignores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Final

from pydicom.datadict import tag_for_keyword

#: keyword -> column, per level (columns of agent.store.query's result rows).
PATIENT_KEYS: Final = {
    "PatientName": "patient_name",
    "PatientID": "patient_id",
    "PatientBirthDate": "patient_birth_date",
    "PatientSex": "patient_sex",
    "NumberOfPatientRelatedStudies": "related_studies",
    "NumberOfPatientRelatedSeries": "related_series",
    "NumberOfPatientRelatedInstances": "related_instances",
}
STUDY_KEYS: Final = {
    "StudyInstanceUID": "study_instance_uid",
    "StudyDate": "study_date",
    "StudyTime": "study_time",
    "AccessionNumber": "accession_number",
    "StudyID": "study_id",
    "StudyDescription": "study_description",
    "ReferringPhysicianName": "referring_physician_name",
    "ModalitiesInStudy": "modalities",
    "NumberOfStudyRelatedSeries": "related_series",
    "NumberOfStudyRelatedInstances": "related_instances",
}
SERIES_KEYS: Final = {
    "SeriesInstanceUID": "series_instance_uid",
    "SeriesNumber": "series_number",
    "Modality": "modality",
    "SeriesDate": "series_date",
    "SeriesTime": "series_time",
    "SeriesDescription": "series_description",
    "BodyPartExamined": "body_part_examined",
    "PerformedProcedureStepStartDate": "pps_start_date",
    "PerformedProcedureStepStartTime": "pps_start_time",
    "NumberOfSeriesRelatedInstances": "related_instances",
    "RequestAttributesSequence": "request_attributes_seq",
}
IMAGE_KEYS: Final = {
    "SOPInstanceUID": "sop_instance_uid",
    "SOPClassUID": "sop_class_uid",
    "InstanceNumber": "instance_number",
    "Rows": "image_rows",
    "Columns": "image_columns",
    "BitsAllocated": "bits_allocated",
    "NumberOfFrames": "number_of_frames",
    "ContentDate": "content_date",
    "ContentTime": "content_time",
    "ContentLabel": "presentation_label",  # Presentation Label (0070,0080)
    "ContentDescription": "presentation_description",
    "PresentationCreationDate": "presentation_creation_date",
    "PresentationCreationTime": "presentation_creation_time",
    "ContentCreatorName": "content_creator_name",
    "CompletionFlag": "completion_flag",
    "VerificationFlag": "verification_flag",
    "ObservationDateTime": "observation_datetime",
    # Presentation states: > Series Instance UID, > Referenced Image Sequence > Referenced SOP Class /
    # Instance UID. SR and KOS: > Verifying Organization, Verification DateTime, Verifying Observer
    # Name, Verifying Observer Identification Code Sequence; > Study Instance UID, Accession Number,
    # Requested Procedure ID, Requested Procedure Code Sequence; code items; > Template Identifier.
    "ReferencedSeriesSequence": "referenced_series_seq",
    "VerifyingObserverSequence": "verifying_observer_seq",
    "ReferencedRequestSequence": "referenced_request_seq",
    "ConceptNameCodeSequence": "concept_name_code_seq",
    "ContentTemplateSequence": "content_template_seq",
}
#: Known keys the index does not hold (see the module docstring); per level, keywords.
UNSUPPORTED: Final[dict[str, tuple[str, ...]]] = {}

LEVEL_KEYS: Final = {"PATIENT": PATIENT_KEYS, "STUDY": STUDY_KEYS, "SERIES": SERIES_KEYS, "IMAGE": IMAGE_KEYS}


@lru_cache(maxsize=None)
def keys_at(model: str, level: str) -> Mapping[str, str]:
    """The keys of `level` itself in `model` ("patient" or "study"); read-only, built once (every
    C-FIND asks for them per key of its identifier)."""
    keys = dict(LEVEL_KEYS[level])
    if model == "study" and level == "STUDY":
        keys.update({k: c for k, c in PATIENT_KEYS.items() if not k.startswith("NumberOf")})
    return MappingProxyType(keys)


def tag_of(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


__all__ = ["IMAGE_KEYS", "LEVEL_KEYS", "PATIENT_KEYS", "SERIES_KEYS", "STUDY_KEYS", "UNSUPPORTED",
           "keys_at", "tag_of"]
