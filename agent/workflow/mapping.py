"""Worklist item -> image attributes, as PS3.17 Annex J (and IHE Scheduled Workflow) map them.

Pure functions, no I/O: `ProcedureContext` holds what the workflow recorded for a procedure, and
`image_dataset` builds one composite instance from it and a device image.

Mapping (PS3.17 Annex J, "Mapping of Modality Worklist and MPPS attributes into the image"):
- Patient: Patient's Name, Patient ID, Issuer of Patient ID, Other Patient IDs Sequence, Birth Date, Sex,
  and the patient-study attributes the worklist may carry (weight, size, pregnancy, history) are copied
  from the item; for an unscheduled procedure they are the device's own patient data (PS3.4 F.7.2.1).
- Study: Study Instance UID, Accession Number (with its issuer), Referring Physician's Name, Referenced
  Study Sequence come from the item; Study ID is the Requested Procedure ID, Study Description the
  Requested Procedure Description, Procedure Code Sequence the Requested Procedure Code Sequence.
  Unscheduled: a generated Study Instance UID and empty (type 2) values.
- Series: Request Attributes Sequence, one item for the scheduled step performed: Requested Procedure ID,
  Accession Number, Study Instance UID, Requested Procedure Description and Code Sequence, Scheduled
  Procedure Step ID and Description, Scheduled Protocol Code Sequence, Reason for the Requested
  Procedure; Performed Procedure Step ID / Start Date / Start Time / Description, Performed Protocol Code
  Sequence (the scheduled protocol, performed as scheduled); Referenced Performed Procedure Step Sequence
  naming the MPPS instance (only when an MPPS is sent); Performing Physician's Name from the SPS's
  Scheduled Performing Physician's Name; Operators' Name from the device.
- Equipment: Modality (the profile's, else the SPS's), Station Name.
The device's extra attributes (`ImageAcquired.attributes`) may add to the image but never replace an
attribute of this mapping or a UID: the worklist is the authority for identity.
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.sequence import Sequence as DicomSequence

MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IMPLEMENTATION_MANUFACTURER = "dicom-agent"

#: Patient attributes copied from the worklist item into every image (Patient and Patient Study modules).
PATIENT_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "OtherPatientIDsSequence", "PatientBirthDate", "PatientSex", "EthnicGroup", "PatientComments",
    "PatientWeight", "PatientSize", "PregnancyStatus", "AdditionalPatientHistory", "Allergies",
    "ConfidentialityConstraintOnPatientDataDescription",
)
#: Study attributes copied as they are.
STUDY_KEYWORDS = ("StudyInstanceUID", "AccessionNumber", "IssuerOfAccessionNumberSequence",
                  "ReferringPhysicianName", "AdmissionID")


class ImageError(ValueError):
    """The device's image cannot become an instance (unsupported shape, depth or file)."""


@dataclass(frozen=True)
class ProcedureContext:
    """What the workflow recorded for one procedure (all UIDs already persisted)."""

    item: Dataset | None  # the worklist item; None: unscheduled
    patient: Mapping[str, str]  # unscheduled: the device's patient data by keyword
    study_instance_uid: str
    series_instance_uid: str
    mpps_uid: str | None
    pps_id: str
    started: datetime.datetime
    sop_class_uid: str = SECONDARY_CAPTURE
    modality: str = "OT"
    station_name: str = ""
    series_description: str = ""
    operator: str = ""
    character_set: str | None = None


@dataclass(frozen=True)
class DeviceImage:
    """The device's image, as drivers/base.py ImageAcquired carries it."""

    pixels: Any = None
    bits_stored: int = 8
    photometric: str = "MONOCHROME2"
    dicom_file: str | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    attributes: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def _sps(item: Dataset | None) -> Dataset:
    if item is None:
        return Dataset()
    steps = item.get("ScheduledProcedureStepSequence") or [Dataset()]
    return steps[0]


def _seq(ds: Dataset, keyword: str) -> DicomSequence:
    return DicomSequence([_copy(i) for i in (ds.get(keyword) or [])])


def _copy(ds: Dataset) -> Dataset:
    out = Dataset()
    out.update(ds)
    return out


def series_modality(item: Dataset | None, configured: str | None, worklist_modality: str | None) -> str:
    """The profile's modality, else the item's SPS Modality, else [worklist] modality, else OT."""
    return configured or str(_sps(item).get("Modality", "") or "") or worklist_modality or "OT"


def request_attributes(item: Dataset) -> Dataset:
    """One Request Attributes Sequence item for the scheduled step performed (PS3.17 Annex J)."""
    sps = _sps(item)
    req = Dataset()
    req.RequestedProcedureID = item.get("RequestedProcedureID") or None
    req.AccessionNumber = item.get("AccessionNumber") or None
    req.StudyInstanceUID = item.get("StudyInstanceUID") or None
    req.RequestedProcedureDescription = item.get("RequestedProcedureDescription") or None
    req.RequestedProcedureCodeSequence = _seq(item, "RequestedProcedureCodeSequence")
    if item.get("ReasonForTheRequestedProcedure"):
        req.ReasonForTheRequestedProcedure = item.ReasonForTheRequestedProcedure
    req.ScheduledProcedureStepID = sps.get("ScheduledProcedureStepID") or None
    req.ScheduledProcedureStepDescription = sps.get("ScheduledProcedureStepDescription") or None
    req.ScheduledProtocolCodeSequence = _seq(sps, "ScheduledProtocolCodeSequence")
    return req


def identity_attributes(ctx: ProcedureContext) -> Dataset:
    """Patient, study, series, request and equipment attributes shared by every image of the procedure."""
    item, sps = ctx.item, _sps(ctx.item)
    ds = Dataset()
    charset = ctx.character_set or (item.get("SpecificCharacterSet") if item is not None else None)
    if charset:
        ds.SpecificCharacterSet = charset
    # Patient
    source = item if item is not None else Dataset()
    for kw in PATIENT_KEYWORDS:
        if kw in source:
            ds[kw] = source[kw]
    for kw, value in ctx.patient.items():
        if item is None or kw not in ds:
            setattr(ds, kw, value or None)
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):  # type 2 in the Patient module
        if kw not in ds:
            setattr(ds, kw, None)
    if "SpecificCharacterSet" not in ds and not all(str(ds.get(k) or "").isascii() for k in PATIENT_KEYWORDS
                                                    if k in ds and dictionary_VR(k) != "SQ"):
        ds.SpecificCharacterSet = "ISO_IR 192"
    # Study
    for kw in STUDY_KEYWORDS:
        if kw in source:
            ds[kw] = source[kw]
    ds.StudyInstanceUID = ctx.study_instance_uid
    ds.StudyDate = ctx.started.strftime("%Y%m%d")
    ds.StudyTime = ctx.started.strftime("%H%M%S")
    if "AccessionNumber" not in ds:
        ds.AccessionNumber = None
    if "ReferringPhysicianName" not in ds:
        ds.ReferringPhysicianName = None
    ds.StudyID = (source.get("RequestedProcedureID") or ctx.pps_id)[:16]
    ds.StudyDescription = source.get("RequestedProcedureDescription") or None
    if item is not None:
        ds.ReferencedStudySequence = _seq(item, "ReferencedStudySequence")
        ds.ProcedureCodeSequence = _seq(item, "RequestedProcedureCodeSequence")
    # Series
    ds.Modality = ctx.modality
    ds.SeriesInstanceUID = ctx.series_instance_uid
    ds.SeriesNumber = 1
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = ds.StudyTime
    ds.SeriesDescription = ctx.series_description or sps.get("ScheduledProcedureStepDescription") or None
    ds.OperatorsName = ctx.operator or None
    if sps.get("ScheduledPerformingPhysicianName"):
        ds.PerformingPhysicianName = sps.ScheduledPerformingPhysicianName
    protocol = sps.get("ScheduledProtocolCodeSequence") or []
    ds.ProtocolName = (str(protocol[0].get("CodeMeaning", "") or "") if protocol else "") or \
        str(sps.get("ScheduledProcedureStepDescription", "") or "") or None
    if item is not None:
        ds.RequestAttributesSequence = DicomSequence([request_attributes(item)])
        ds.PerformedProtocolCodeSequence = _seq(sps, "ScheduledProtocolCodeSequence")
    ds.PerformedProcedureStepID = ctx.pps_id
    ds.PerformedProcedureStepStartDate = ds.StudyDate
    ds.PerformedProcedureStepStartTime = ds.StudyTime
    ds.PerformedProcedureStepDescription = ctx.series_description or sps.get("ScheduledProcedureStepDescription") or None
    if ctx.mpps_uid:
        ref = Dataset()
        ref.ReferencedSOPClassUID = MPPS_SOP_CLASS
        ref.ReferencedSOPInstanceUID = ctx.mpps_uid
        ds.ReferencedPerformedProcedureStepSequence = DicomSequence([ref])
    # Equipment
    ds.Manufacturer = IMPLEMENTATION_MANUFACTURER
    if ctx.station_name:
        ds.StationName = ctx.station_name
    return ds


def _pixel_module(ds: Dataset, image: DeviceImage) -> None:
    arr = np.asarray(image.pixels)
    photometric = image.photometric
    if arr.ndim == 2 and photometric in ("MONOCHROME1", "MONOCHROME2"):
        if arr.dtype not in (np.uint8, np.uint16):
            raise ImageError(f"grayscale pixels must be uint8 or uint16, got {arr.dtype}")
        allocated = 8 if arr.dtype == np.uint8 else 16
        if not 1 <= image.bits_stored <= allocated:
            raise ImageError(f"bits_stored {image.bits_stored} does not fit {arr.dtype} pixels")
        ds.SamplesPerPixel = 1
        ds.BitsAllocated = allocated
        ds.BitsStored = image.bits_stored
        ds.HighBit = image.bits_stored - 1
    elif arr.ndim == 3 and arr.shape[2] == 3 and photometric == "RGB":
        if arr.dtype != np.uint8:
            raise ImageError(f"RGB pixels must be uint8, got {arr.dtype}")
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
    else:
        raise ImageError(f"unsupported image: shape {arr.shape}, photometric {photometric!r} "
                         "(expected (rows, columns) MONOCHROME1/2 or (rows, columns, 3) RGB)")
    if arr.shape[0] < 1 or arr.shape[1] < 1 or arr.shape[0] > 65535 or arr.shape[1] > 65535:
        raise ImageError(f"unsupported image size {arr.shape[1]}x{arr.shape[0]}")
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(arr.shape[0]), int(arr.shape[1])
    ds.PixelRepresentation = 0
    data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    ds.PixelData = data + (b"\0" if len(data) % 2 else b"")
    ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"


def read_device_file(path: str) -> Dataset:
    """A DICOM file the device wrote (its pixels and image attributes are kept). ImageError if unusable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path)
    except Exception as exc:  # pydicom raises many types for unreadable input
        raise ImageError(f"{path}: not a readable DICOM file: {exc}") from exc
    if "PixelData" not in ds:
        raise ImageError(f"{path}: no pixel data: not an image")
    return ds


def image_dataset(ctx: ProcedureContext, image: DeviceImage, *, sop_instance_uid: str, instance_number: int,
                  now: datetime.datetime | None = None, device_file: Dataset | None = None) -> Dataset:
    """One instance of the procedure's series (module docstring). `device_file`: the device's own
    DICOM data set (from `read_device_file`); its image attributes are kept, identity replaced."""
    now = now or datetime.datetime.now()
    if device_file is not None:
        ds = _copy(device_file)
        for kw in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
            if kw in ds:
                del ds[kw]
        sop_class = str(device_file.get("SOPClassUID", "") or "") or ctx.sop_class_uid
    else:
        ds = Dataset()
        _pixel_module(ds, image)
        sop_class = ctx.sop_class_uid
        if image.attributes:
            _apply_extra(ds, image.attributes)
    ident = identity_attributes(ctx)
    for elem in ident:
        ds[elem.tag] = elem
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceNumber = instance_number
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.ContentDate = ds.get("ContentDate") or now.strftime("%Y%m%d")
    ds.ContentTime = ds.get("ContentTime") or now.strftime("%H%M%S")
    if "ImageType" not in ds:
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if "PatientOrientation" not in ds:
        ds.PatientOrientation = None
    if device_file is None:
        if image.pixel_spacing_mm is not None:
            ds.PixelSpacing = [f"{image.pixel_spacing_mm[0]:.6g}", f"{image.pixel_spacing_mm[1]:.6g}"]
        _class_specific(ds, sop_class)
    return ds


def _class_specific(ds: Dataset, sop_class: str) -> None:
    """The few type 1/2 attributes the supported image classes need beyond the common ones."""
    if sop_class == SECONDARY_CAPTURE:
        ds.ConversionType = "WSD"  # SC Equipment module (PS3.3 C.8.6.1): workstation capture
    elif sop_class == "1.2.840.10008.5.1.4.1.1.77.1.4":  # VL Photographic Image
        ds.AcquisitionContextSequence = DicomSequence()
        ds.LossyImageCompression = "00"
    elif sop_class in ("1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1"):  # US / US multi-frame
        ds.LossyImageCompression = "00"


def _apply_extra(ds: Dataset, attributes: Sequence[tuple[str, str]]) -> list[str]:
    """The device's extra (keyword, value) pairs; unknown keywords and sequences are skipped, and the
    identity set by the mapping is applied afterwards, so it always wins. Returns what was skipped."""
    skipped = []
    for keyword, value in attributes:
        tag = tag_for_keyword(keyword)
        if tag is None or dictionary_VR(tag) in ("SQ", "OB", "OW", "UN") or tag >> 16 in (0x0002,):
            skipped.append(keyword)
            continue
        try:
            setattr(ds, keyword, value)
        except Exception:  # pydicom validation of a bad value
            skipped.append(keyword)
    return skipped


EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


def storage_syntax(device_file: Dataset | None) -> str:
    """The transfer syntax an instance is stored in: explicit VR little endian, or the device file's own
    when its pixel data is encapsulated (compressed pixels are kept as they are, never re-encoded)."""
    from pydicom.uid import UID

    if device_file is None or getattr(device_file, "file_meta", None) is None:
        return EXPLICIT_VR_LE
    ts = UID(str(device_file.file_meta.get("TransferSyntaxUID", "") or EXPLICIT_VR_LE))
    if ts == "1.2.840.10008.1.2.2":
        raise ImageError("the device's file is explicit VR big endian (retired): not supported")
    return str(ts) if ts.is_encapsulated else EXPLICIT_VR_LE


def encode_for_store(ds: Dataset, transfer_syntax: str) -> bytes:
    """The data set's bytes for `transfer_syntax` (see `storage_syntax`): always explicit VR little endian
    encoding; encapsulated pixel data stays encapsulated."""
    from pydicom.filewriter import write_dataset

    from agent.services.dataset import encode

    if transfer_syntax == EXPLICIT_VR_LE:
        return encode(ds, EXPLICIT_VR_LE)
    from pydicom.filebase import DicomBytesIO

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_dataset(fp, ds)
    return fp.getvalue()


__all__ = ["DeviceImage", "ImageError", "ProcedureContext", "identity_attributes", "image_dataset",
           "read_device_file", "request_attributes", "series_modality", "encode_for_store", "storage_syntax"]
