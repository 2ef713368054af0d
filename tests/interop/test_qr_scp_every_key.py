"""Every non-sequence key of every level (agent/services/query/keys.py: the seed's Tables 15-22 and PS3.4 C.6)
returned and matched by the agent's Q/R SCP, as pynetdicom's SCU sees it (issue 12, "every key").

Two instances that differ in every attribute (their own patient, study and series) are stored with
storescu. For each key of each level: asked universally, the answer carries the stored value of each
entity; asked with entity A's value (single value matching), only A answers; with B's value, only B;
a date, time or date-time key also by range (-A, B-, A-B).
The computed keys (Number of ... Related ..., Modalities in Study) are checked as returned values.
Sequence keys have their own test (tests/interop/test_qr_scp_sequences.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trio
from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from agent.services.query.keys import IMAGE_KEYS, PATIENT_KEYS, SERIES_KEYS, STUDY_KEYS
from tests.conftest import require_pynetdicom, require_tool, write_profile
from tests.interop.storage_helpers import index_count, run

pytestmark = pytest.mark.interop

ROOT = "1.2.826.0.1.3680043.8.498.7713"
COMPUTED = {"NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances",
            "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances",
            "ModalitiesInStudy"}

# keyword -> (value of A, value of B); every key of keys.py but the sequences and the computed ones.
VALUES: dict[str, tuple[object, object]] = {
    "PatientName": ("ALPHA^ONE", "BRAVO^TWO"),
    "PatientID": ("KEY-A", "KEY-B"),
    "PatientBirthDate": ("19600101", "19700202"),
    "PatientSex": ("F", "M"),
    "StudyInstanceUID": (f"{ROOT}.1", f"{ROOT}.2"),
    "StudyDate": ("20240101", "20240202"),
    "StudyTime": ("101500", "141500"),
    "AccessionNumber": ("ACC-A", "ACC-B"),
    "StudyID": ("SID-A", "SID-B"),
    "StudyDescription": ("HEAD A", "KNEE B"),
    "ReferringPhysicianName": ("REF^ALICE", "REF^BOB"),
    "SeriesInstanceUID": (f"{ROOT}.1.1", f"{ROOT}.2.1"),
    "SeriesNumber": (11, 22),
    "Modality": ("CT", "MR"),
    "SeriesDate": ("20240103", "20240204"),
    "SeriesTime": ("101600", "141600"),
    "SeriesDescription": ("AXIAL A", "SAG B"),
    "BodyPartExamined": ("HEAD", "KNEE"),
    "PerformedProcedureStepStartDate": ("20240105", "20240206"),
    "PerformedProcedureStepStartTime": ("101700", "141700"),
    "SOPInstanceUID": (f"{ROOT}.1.1.1", f"{ROOT}.2.1.1"),
    "SOPClassUID": (CTImageStorage, MRImageStorage),
    "InstanceNumber": (3, 4),
    "Rows": (16, 8),
    "Columns": (16, 8),
    "BitsAllocated": (16, 8),
    "NumberOfFrames": (1, 2),
    "ContentDate": ("20240107", "20240208"),
    "ContentTime": ("101800", "141800"),
    "ContentLabel": ("LABEL_A", "LABEL_B"),
    "ContentDescription": ("CONTENT A", "CONTENT B"),
    "PresentationCreationDate": ("20240109", "20240210"),
    "PresentationCreationTime": ("101900", "141900"),
    "ContentCreatorName": ("CREATOR^ANN", "CREATOR^BEN"),
    "CompletionFlag": ("COMPLETE", "PARTIAL"),
    "VerificationFlag": ("VERIFIED", "UNVERIFIED"),
    "ObservationDateTime": ("20240111101500", "20240212141500"),
}
LEVELS = {"PATIENT": PATIENT_KEYS, "STUDY": STUDY_KEYS, "SERIES": SERIES_KEYS, "IMAGE": IMAGE_KEYS}
UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
          "IMAGE": "SOPInstanceUID"}


def test_values_cover_every_key() -> None:
    keys = {k for level in LEVELS.values() for k in level if not k.endswith("Sequence")}
    assert keys == set(VALUES) | COMPUTED


def make(path: Path, which: int) -> Path:
    ds = Dataset()
    for keyword, values in VALUES.items():
        setattr(ds, keyword, values[which])
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.BitsStored, ds.HighBit = ds.BitsAllocated, ds.BitsAllocated - 1
    dtype = np.uint16 if ds.BitsAllocated == 16 else np.uint8
    ds.PixelData = np.zeros((ds.NumberOfFrames, ds.Rows, ds.Columns), dtype=dtype).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


RANGE_VRS = ("DA", "TM", "DT")


def _cases(key: str) -> list[tuple[object, set[int]]]:
    """(value asked, entities that must answer): universal; A's and B's value (single value matching);
    for dates and times also the three forms of range matching (A's values sort before B's)."""
    if key in COMPUTED:
        return [(None, {0, 1})]
    a, b = VALUES[key]
    cases: list[tuple[object, set[int]]] = [(None, {0, 1}), (a, {0}), (b, {1})]
    if dictionary_VR(key) in RANGE_VRS:
        cases += [(f"-{a}", {0}), (f"{b}-", {1}), (f"{a}-{b}", {0, 1})]
    return cases


def _find(port: int) -> list[str]:
    """Every query; the problems found (empty: all as expected)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import (
        PatientRootQueryRetrieveInformationModelFind as PFIND,
        StudyRootQueryRetrieveInformationModelFind as SFIND,
    )

    ae = AE(ae_title="PYNSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(PFIND)
    ae.add_requested_context(SFIND)
    assoc = ae.associate("127.0.0.1", port, ae_title="AGENT")
    assert assoc.is_established
    problems: list[str] = []
    try:
        for level, keys in LEVELS.items():
            model = PFIND if level == "PATIENT" else SFIND
            upper = [k for k in ("StudyInstanceUID", "SeriesInstanceUID") if level in ("SERIES", "IMAGE")
                     and not (k == "SeriesInstanceUID" and level == "SERIES")]
            for key in keys:
                if key.endswith("Sequence"):
                    continue
                for which, want in _cases(key):
                    answers: dict[int, Dataset] = {}
                    for entity in (0, 1) if upper else (None,):  # hierarchical: one query per upper entity
                        ident = Dataset()
                        ident.QueryRetrieveLevel = level
                        for u in upper:
                            setattr(ident, u, VALUES[u][entity])
                        setattr(ident, UNIQUE[level], "")
                        if which is None:
                            setattr(ident, key, None if key in ("Rows", "Columns", "BitsAllocated") else "")
                        else:
                            setattr(ident, key, which)
                        statuses, matches = [], []
                        for status, found in assoc.send_c_find(ident, model):
                            statuses.append(int(status.Status))
                            if found is not None and int(status.Status) in (0xFF00, 0xFF01):
                                matches.append(found)
                        if statuses[-1:] != [0x0000] or set(statuses[:-1]) - {0xFF00}:
                            problems.append(f"{level} {key}={ident.get(key)!r}: statuses {statuses}")
                            continue
                        for m in matches:
                            unique = str(m.get(UNIQUE[level], ""))
                            owner = [n for n in (0, 1) if VALUES[UNIQUE[level]][n] == unique]
                            if len(owner) != 1 or owner[0] in answers:
                                problems.append(f"{level} {key}: unexpected answer {unique!r}")
                            else:
                                answers[owner[0]] = m
                    if set(answers) != want:
                        problems.append(f"{level} {key} asked {which}: answered by {sorted(answers)}")
                        continue
                    for entity, m in answers.items():
                        value = m[key].value if key in m else None
                        if key in COMPUTED:
                            expected: object = "CT" if key == "ModalitiesInStudy" and entity == 0 else (
                                "MR" if key == "ModalitiesInStudy" else 1)
                            ok = str(value) == str(expected)
                        elif isinstance(VALUES[key][entity], int):
                            ok = value not in (None, "") and int(value) == VALUES[key][entity]
                        else:
                            ok = str(value) == VALUES[key][entity]
                        if not ok:
                            problems.append(f"{level} {key} of {entity}: {value!r}")
    finally:
        assoc.release()
    return problems


async def test_every_key_returned_and_matched(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    require_pynetdicom()
    storescu = require_tool("storescu")
    running = await start_agent(write_profile(tmp_path / "agent", "[storage]\n\n[query]\n",
                                              agent_extra='dimse_timeout = "30s"'))
    files = [make(tmp_path / f"{n}.dcm", n) for n in (0, 1)]
    rc, out = await run([storescu, "-aec", "AGENT", "127.0.0.1", str(running.port), *map(str, files)], 60)
    assert rc == 0, out
    assert index_count(running.data_dir) == 2
    with trio.fail_after(120):
        problems = await trio.to_thread.run_sync(_find, running.port)
    assert problems == []
