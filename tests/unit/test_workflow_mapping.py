"""PS3.17 Annex J: what an image made for a worklist item carries; the unscheduled case; selection;
the discontinuation reason codes."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence

from agent.services.dataset import decode, encode
from agent.workflow.mapping import (
    MPPS_SOP_CLASS, SECONDARY_CAPTURE, DeviceImage, ImageError, ProcedureContext, image_dataset, series_modality,
)
from agent.workflow.reasons import reason_code
from agent.workflow.selection import select_item


def code(value: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, "LOCAL", meaning
    return c


def worklist_item(accession: str = "ACC001", patient_id: str = "PID001", *, start: str = "0900",
                  station: str = "US_ROOM1", modality: str = "US") -> Dataset:
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 100"
    item.PatientName = "DOE^JANE"
    item.PatientID = patient_id
    item.IssuerOfPatientID = "HOSP"
    item.PatientBirthDate = "19700101"
    item.PatientSex = "F"
    item.PatientWeight = "61"
    item.AccessionNumber = accession
    item.ReferringPhysicianName = "WHO^DOCTOR"
    item.StudyInstanceUID = f"1.2.3.{abs(hash(accession)) % 10**8}"
    item.RequestedProcedureID = "RP" + accession[-3:]
    item.RequestedProcedureDescription = "Abdomen ultrasound"
    item.RequestedProcedureCodeSequence = Sequence([code("US-ABD", "US abdomen")])
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = "1.2.3.99"
    item.ReferencedStudySequence = Sequence([ref])
    sps = Dataset()
    sps.Modality = modality
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = "20260101"
    sps.ScheduledProcedureStepStartTime = start
    sps.ScheduledProcedureStepID = "SPS" + accession[-3:]
    sps.ScheduledProcedureStepDescription = "Liver and kidneys"
    sps.ScheduledPerformingPhysicianName = "SONO^GRAPHER"
    sps.ScheduledProtocolCodeSequence = Sequence([code("P-LIVER", "Liver protocol")])
    item.ScheduledProcedureStepSequence = Sequence([sps])
    return decode(encode(item), eager=True)  # as it comes out of the worklist store


START = datetime.datetime(2026, 1, 1, 9, 5, 7)


def context(item: Dataset | None, **kw: object) -> ProcedureContext:
    base: dict[str, object] = dict(
        item=item, patient={}, study_instance_uid=item.StudyInstanceUID if item is not None else "1.2.826.0.1.5",
        series_instance_uid="1.2.826.0.1.6", mpps_uid="1.2.826.0.1.7", pps_id="PPS1", started=START,
        modality=series_modality(item, None, None), station_name="ROOM1", operator="TECH^ONE",
    )
    base.update(kw)
    return ProcedureContext(**base)  # type: ignore[arg-type]


def gray(rows: int = 4, cols: int = 6) -> DeviceImage:
    return DeviceImage(pixels=np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols) * 100, bits_stored=12)


def make(ctx: ProcedureContext, image: DeviceImage | None = None) -> Dataset:
    ds = image_dataset(ctx, image or gray(), sop_instance_uid="1.2.826.0.1.8", instance_number=3)
    return decode(encode(ds), eager=True)  # what is written to the store


def test_scheduled_image_carries_the_worklist_identity() -> None:
    item = worklist_item()
    ds = make(context(item))
    # Patient and study from the worklist item, not from the device.
    assert (ds.PatientName, ds.PatientID, ds.IssuerOfPatientID, ds.PatientBirthDate, ds.PatientSex) == (
        "DOE^JANE", "PID001", "HOSP", "19700101", "F")
    assert ds.PatientWeight == "61"
    assert ds.StudyInstanceUID == item.StudyInstanceUID
    assert ds.AccessionNumber == "ACC001"
    assert ds.ReferringPhysicianName == "WHO^DOCTOR"
    assert ds.StudyID == "RP001" and ds.StudyDescription == "Abdomen ultrasound"
    assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "1.2.3.99"
    assert ds.ProcedureCodeSequence[0].CodeValue == "US-ABD"
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    # Request Attributes Sequence: the scheduled step performed.
    (req,) = ds.RequestAttributesSequence
    assert (req.RequestedProcedureID, req.AccessionNumber, req.StudyInstanceUID) == (
        "RP001", "ACC001", item.StudyInstanceUID)
    assert (req.ScheduledProcedureStepID, req.ScheduledProcedureStepDescription) == ("SPS001", "Liver and kidneys")
    assert req.ScheduledProtocolCodeSequence[0].CodeValue == "P-LIVER"
    assert req.RequestedProcedureCodeSequence[0].CodeValue == "US-ABD"
    # The performed step and its MPPS instance.
    (ref,) = ds.ReferencedPerformedProcedureStepSequence
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (MPPS_SOP_CLASS, "1.2.826.0.1.7")
    assert (ds.PerformedProcedureStepID, ds.PerformedProcedureStepStartDate,
            ds.PerformedProcedureStepStartTime) == ("PPS1", "20260101", "090507")
    assert ds.PerformedProtocolCodeSequence[0].CodeValue == "P-LIVER"
    assert ds.PerformingPhysicianName == "SONO^GRAPHER" and ds.OperatorsName == "TECH^ONE"
    assert ds.ProtocolName == "Liver protocol"
    # Series and equipment.
    assert ds.Modality == "US" and ds.StationName == "ROOM1"
    assert ds.SeriesInstanceUID == "1.2.826.0.1.6" and ds.SeriesDescription == "Liver and kidneys"
    assert (ds.SOPClassUID, ds.SOPInstanceUID, ds.InstanceNumber) == (SECONDARY_CAPTURE, "1.2.826.0.1.8", 3)
    assert ds.ConversionType == "WSD"


def test_pixels_become_the_image_pixel_module() -> None:
    ds = make(context(worklist_item()))
    assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (4, 6, 16, 12, 11)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SamplesPerPixel == 1
    arr = np.frombuffer(ds.PixelData, dtype="<u2").reshape(4, 6)
    assert arr[3, 5] == 2300
    rgb = make(context(worklist_item()), DeviceImage(pixels=np.zeros((2, 3, 3), np.uint8), photometric="RGB"))
    assert (rgb.SamplesPerPixel, rgb.PlanarConfiguration, rgb.BitsAllocated) == (3, 0, 8)
    assert len(rgb.PixelData) == 18


@pytest.mark.parametrize("image", [
    DeviceImage(pixels=np.zeros((4, 4), np.float32)),
    DeviceImage(pixels=np.zeros((4, 4, 4), np.uint8), photometric="RGB"),
    DeviceImage(pixels=np.zeros((4, 4), np.uint8), bits_stored=12),
    DeviceImage(pixels=np.zeros((4, 4, 3), np.uint8), photometric="MONOCHROME2"),
], ids=["float", "rgba", "12-bits-in-8", "colour-as-gray"])
def test_unsupported_images_are_refused_clearly(image: DeviceImage) -> None:
    with pytest.raises(ImageError):
        make(context(worklist_item()), image)


def test_unscheduled_image_keeps_the_device_patient_and_generated_study() -> None:
    ctx = context(None, patient={"PatientID": "DEV-7", "PatientName": "MÜLLER^HANS", "PatientSex": "M"},
                  mpps_uid=None, modality=series_modality(None, None, "US"))
    ds = make(ctx)
    assert (ds.PatientID, str(ds.PatientName), ds.PatientSex) == ("DEV-7", "MÜLLER^HANS", "M")
    assert ds.SpecificCharacterSet == "ISO_IR 192"  # a non-ASCII name needs a character set
    assert ds.StudyInstanceUID == "1.2.826.0.1.5"
    assert ds.AccessionNumber == "" and ds.PatientBirthDate == ""  # type 2: present, empty
    assert "RequestAttributesSequence" not in ds  # nothing was requested
    assert "ReferencedPerformedProcedureStepSequence" not in ds  # no MPPS sent: none named
    assert ds.Modality == "US"


def test_device_attributes_never_replace_the_identity() -> None:
    image = DeviceImage(pixels=np.zeros((2, 2), np.uint8),
                        attributes=(("PatientID", "WRONG"), ("BodyPartExamined", "ABDOMEN"), ("NoSuchKeyword", "x")))
    ds = make(context(worklist_item()), image)
    assert ds.PatientID == "PID001" and ds.BodyPartExamined == "ABDOMEN"


def test_selection_modes() -> None:
    a, b = worklist_item("ACC001", "P1", start="1000"), worklist_item("ACC002", "P1", start="0800")
    c = worklist_item("ACC003", "P3", station="OTHER")
    items = [a, b, c]
    kw = dict(station_ae="US_ROOM1", modality="US")
    assert select_item(items, mode="accession", key="ACC002", **kw) is b  # type: ignore[arg-type]
    assert select_item(items, mode="accession", key="NOPE", **kw) is None  # type: ignore[arg-type]
    assert select_item(items, mode="patient-id", key="P1", **kw) is b  # type: ignore[arg-type]  # earliest
    assert select_item(items, mode="patient-id", key="", patient_id="P3", **kw) is c  # type: ignore[arg-type]
    assert select_item(items, mode="key", key="SPS003", **kw) is c  # type: ignore[arg-type]
    assert select_item(items, mode="key", key=a.StudyInstanceUID, **kw) is a  # type: ignore[arg-type]
    assert select_item(items, mode="first", key="", **kw) is b  # type: ignore[arg-type]  # c is another station's
    taken = {(b.StudyInstanceUID, "ACC002", "SPS002")}
    assert select_item(items, mode="first", key="", taken=taken, **kw) is a  # type: ignore[arg-type]
    assert select_item(items, mode="accession", key="ACC002", taken=taken, **kw) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(("reason", "code_value"), [
    ("wrong patient: incorrect worklist entry", "110514"),
    ("probe failure", "110501"),
    ("patient refused", "110505"),
    ("DCM:110516", "110516"),
    ("110504", "110504"),
    ("", "110513"),
    ("operator pressed stop", "110513"),
])
def test_discontinuation_reasons(reason: str, code_value: str) -> None:
    assert reason_code(reason) == code_value
