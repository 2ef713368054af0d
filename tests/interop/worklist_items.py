"""Worklist items for tests and the benchmark: Part 10 `.wl` files that DCMTK wlmscpfs and the agent
both serve, written with pydicom (File Meta + Explicit VR LE data set, as dump2dcm makes them)."""

from __future__ import annotations

from pathlib import Path

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MWL_FIND = "1.2.840.10008.5.1.4.31"
ISO_IR_100_NAME = "MÜLLER^JÜRGEN"
ISO_IR_192_NAME = "Wałęsa^Łucja=山田^太郎=やまだ^たろう"


def make_item(
    accession: str,
    name: str,
    *,
    patient_id: str | None = None,
    charset: str | None = None,
    date: str = "20260115",
    time: str = "090000",
    modality: str = "CT",
    station: str = "AGENT",
    description: str = "CHEST CT",
    birth_date: str = "19700101",
    sex: str = "M",
    study_uid: str | None = None,
    sps_id: str | None = None,
) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.PatientID = patient_id or f"P{accession}"
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = "REFERRER^ANNA"
    ds.RequestedProcedureID = f"RP{accession}"
    ds.RequestedProcedureDescription = description
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.RequestedProcedurePriority = "ROUTINE"
    sps = Dataset()
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepStartTime = time
    sps.Modality = modality
    sps.ScheduledPerformingPhysicianName = "TECH^TOM"
    sps.ScheduledProcedureStepDescription = description
    sps.ScheduledProcedureStepID = sps_id or f"SPS{accession}"
    sps.ScheduledStationName = "ROOM1"
    sps.ScheduledProcedureStepLocation = "RADIOLOGY"
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


def write_wl(path: Path, ds: Dataset) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MWL_FIND
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def standard_items() -> list[Dataset]:
    """A small worklist with both character sets, several dates and modalities."""
    return [
        make_item("ACC001", ISO_IR_100_NAME, charset="ISO_IR 100", date="20260115", modality="CT"),
        make_item("ACC002", ISO_IR_192_NAME, charset="ISO_IR 192", date="20260116", modality="MR", sex="F"),
        make_item("ACC003", "DOE^JOHN", date="20260117", modality="CT"),
        make_item("ACC004", "DOE^JANE", date="20260120", modality="US", sex="F"),
        make_item("ACC005", "MUSTERMANN^MAX", date="20260115", modality="CT", station="OTHER"),
    ]


def make_wlmscpfs_db(root: Path, ae_title: str, items: list[Dataset]) -> Path:
    """DBDIR/<AE>/{lockfile, *.wl} for `wlmscpfs -dfp DBDIR`."""
    folder = root / ae_title
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lockfile").write_text("")
    for i, ds in enumerate(items):
        write_wl(folder / f"item{i:05d}.wl", ds)
    return folder
