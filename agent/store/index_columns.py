"""The attributes of a received data set that the instance index keeps: one declarative table.

Each row names the `instances` column, the data set keyword, its tag and how the value is turned into a
column value. The header walker in `dicomfile.py` extracts exactly the tags listed here (top level of
the data set only, PS3.5 7.1), in one pass over the header, and `instances.py` writes the columns.

Adding an index attribute is one row here plus the column in the schema (and, for a database that
already exists, an `ALTER TABLE ... ADD COLUMN` migration owned by whoever adds the row).

Kinds:
- `text`: the value decoded with the data set's Specific Character Set (0008,0005), trailing padding
  removed, multiple values joined with a backslash as they are encoded (PS3.5 6.2); empty is NULL.
- `person-name`: like `text`; a PN may carry three component groups separated by "=" (PS3.5 6.2.1),
  each possibly in another character set, so it is decoded group by group.
- `int`: the first value of an IS (or a binary integer VR) as an int; empty or unparseable is NULL.
- `uid`: ASCII, trailing NUL/space padding removed (PS3.5 9.1).
- `sequence`: a top-level SQ's items as received (a BLOB, `agent.store.sequences`), decoded only at
  query time for the Q/R sequence keys (PS3.4 C.2.2.2.6); empty is NULL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["text", "person-name", "int", "uid", "sequence"]


@dataclass(frozen=True, slots=True)
class IndexColumn:
    column: str
    keyword: str
    tag: int
    kind: Kind


#: Index attributes read from the data set itself, in the order of the `instances` columns.
INDEX_COLUMNS: tuple[IndexColumn, ...] = (
    IndexColumn("patient_id", "PatientID", 0x00100020, "text"),
    IndexColumn("patient_name", "PatientName", 0x00100010, "person-name"),
    IndexColumn("patient_birth_date", "PatientBirthDate", 0x00100030, "text"),
    IndexColumn("patient_sex", "PatientSex", 0x00100040, "text"),
    IndexColumn("study_instance_uid", "StudyInstanceUID", 0x0020000D, "uid"),
    IndexColumn("study_date", "StudyDate", 0x00080020, "text"),
    IndexColumn("study_time", "StudyTime", 0x00080030, "text"),
    IndexColumn("accession_number", "AccessionNumber", 0x00080050, "text"),
    IndexColumn("study_id", "StudyID", 0x00200010, "text"),
    IndexColumn("study_description", "StudyDescription", 0x00081030, "text"),
    IndexColumn("referring_physician_name", "ReferringPhysicianName", 0x00080090, "person-name"),
    IndexColumn("series_instance_uid", "SeriesInstanceUID", 0x0020000E, "uid"),
    IndexColumn("series_number", "SeriesNumber", 0x00200011, "int"),
    IndexColumn("modality", "Modality", 0x00080060, "text"),
    IndexColumn("instance_number", "InstanceNumber", 0x00200013, "int"),
    IndexColumn("specific_character_set", "SpecificCharacterSet", 0x00080005, "text"),
    # Query/Retrieve keys (PS3.4 C.6; agent/services/query/model.py says which level serves each).
    IndexColumn("other_patient_ids", "OtherPatientIDs", 0x00101000, "text"),
    IndexColumn("series_date", "SeriesDate", 0x00080021, "text"),
    IndexColumn("series_time", "SeriesTime", 0x00080031, "text"),
    IndexColumn("series_description", "SeriesDescription", 0x0008103E, "text"),
    IndexColumn("body_part_examined", "BodyPartExamined", 0x00180015, "text"),
    IndexColumn("pps_start_date", "PerformedProcedureStepStartDate", 0x00400244, "text"),
    IndexColumn("pps_start_time", "PerformedProcedureStepStartTime", 0x00400245, "text"),
    IndexColumn("image_rows", "Rows", 0x00280010, "int"),
    IndexColumn("image_columns", "Columns", 0x00280011, "int"),
    IndexColumn("bits_allocated", "BitsAllocated", 0x00280100, "int"),
    IndexColumn("number_of_frames", "NumberOfFrames", 0x00280008, "int"),
    IndexColumn("content_date", "ContentDate", 0x00080023, "text"),
    IndexColumn("content_time", "ContentTime", 0x00080033, "text"),
    IndexColumn("presentation_label", "ContentLabel", 0x00700080, "text"),
    IndexColumn("presentation_description", "ContentDescription", 0x00700081, "text"),
    IndexColumn("presentation_creation_date", "PresentationCreationDate", 0x00700082, "text"),
    IndexColumn("presentation_creation_time", "PresentationCreationTime", 0x00700083, "text"),
    IndexColumn("content_creator_name", "ContentCreatorName", 0x00700084, "person-name"),
    IndexColumn("completion_flag", "CompletionFlag", 0x0040A491, "text"),
    IndexColumn("verification_flag", "VerificationFlag", 0x0040A493, "text"),
    IndexColumn("observation_datetime", "ObservationDateTime", 0x0040A032, "text"),
    # Q/R sequence keys (PS3.4 C.6.1.1.5 / C.6.2.1.5 and the seed's Tables 17-22), matched by
    # agent/services/query/sequences.py; Request Attributes Sequence also reaches `qr_series`.
    IndexColumn("request_attributes_seq", "RequestAttributesSequence", 0x00400275, "sequence"),
    IndexColumn("referenced_series_seq", "ReferencedSeriesSequence", 0x00081115, "sequence"),
    IndexColumn("verifying_observer_seq", "VerifyingObserverSequence", 0x0040A073, "sequence"),
    IndexColumn("referenced_request_seq", "ReferencedRequestSequence", 0x0040A370, "sequence"),
    IndexColumn("concept_name_code_seq", "ConceptNameCodeSequence", 0x0040A043, "sequence"),
    IndexColumn("content_template_seq", "ContentTemplateSequence", 0x0040A504, "sequence"),
)

#: Read as well, to compare with the C-STORE command (PS3.4 B.2.3: B007 when they differ); not columns.
SOP_CLASS_UID_TAG = 0x00080016
SOP_INSTANCE_UID_TAG = 0x00080018
SPECIFIC_CHARACTER_SET_TAG = 0x00080005

#: Every tag the header walker must extract.
INDEX_TAGS: frozenset[int] = frozenset(
    {c.tag for c in INDEX_COLUMNS} | {SOP_CLASS_UID_TAG, SOP_INSTANCE_UID_TAG, SPECIFIC_CHARACTER_SET_TAG}
)

__all__ = [
    "INDEX_COLUMNS",
    "INDEX_TAGS",
    "IndexColumn",
    "Kind",
    "SOP_CLASS_UID_TAG",
    "SOP_INSTANCE_UID_TAG",
    "SPECIFIC_CHARACTER_SET_TAG",
]
