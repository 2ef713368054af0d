"""What the Print SCP answers about the printer and its jobs (PS3.4 H.4.6 Print Job N-GET, H.4.11
Printer N-GET, H.4.12 Printer Configuration Retrieval N-GET): pure functions from the driver's
capabilities, its status and a stored job to the N-GET attribute lists.

Invariants: nothing here does I/O; the job's state maps onto Execution Status (2100,0020) one way only
(pending and submitting are PENDING to the requestor: a film the driver may not have yet).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from agent.store.printjobs import JobState, PrintJob
from drivers.base import PrinterCapabilities, PrinterStatus

#: Image Display Format kinds as the Printer Configuration lists them (PS3.3 C.13.3 notation).
_FORMAT_NOTATION = {"STANDARD": "STANDARD\\C,R", "ROW": "ROW\\R1,R2", "COL": "COL\\C1,C2"}


def execution_status(state: JobState) -> str:
    """Execution Status (2100,0020) of a stored job state."""
    return {JobState.PENDING: "PENDING", JobState.SUBMITTING: "PENDING", JobState.PRINTING: "PRINTING",
            JobState.DONE: "DONE", JobState.FAILED: "FAILURE"}[state]


def software_version() -> str:
    from agent import __version__

    return f"dicom-agent {__version__}"


def printer_attributes(status: PrinterStatus, caps: PrinterCapabilities) -> Dataset:
    """The Printer N-GET attribute list (PS3.4 H.4.11.2.1)."""
    reply = Dataset()
    reply.PrinterStatus = str(status.state)
    reply.PrinterStatusInfo = status.info
    reply.PrinterName = caps.printer_name
    reply.Manufacturer = caps.manufacturer
    reply.ManufacturerModelName = caps.model_name or None
    reply.DeviceSerialNumber = None
    reply.SoftwareVersions = software_version()
    reply.DateOfLastCalibration = None
    reply.TimeOfLastCalibration = None
    return reply


def configuration_attributes(caps: PrinterCapabilities, sop_classes: Iterable[str],
                             display_formats: Iterable[str]) -> Dataset:
    """The Printer Configuration Retrieval N-GET reply: one Printer Configuration Sequence item."""
    item = Dataset()
    item.SOPClassesSupported = list(sop_classes)
    item.MaximumMemoryAllocation = None
    item.MemoryBitDepth = caps.drive_bits
    item.PrintingBitDepth = caps.drive_bits
    media = []
    for size in caps.film_sizes:
        for medium in caps.medium_types:
            m = Dataset()
            m.MediumType = medium
            m.FilmSizeID = size
            m.MinDensity = caps.min_density
            m.MaxDensity = caps.max_density
            media.append(m)
    item.MediaInstalledSequence = DicomSequence(media)
    item.OtherMediaAvailableSequence = DicomSequence()
    formats = []
    for kind in display_formats:
        f = Dataset()
        f.ImageDisplayFormat = _FORMAT_NOTATION.get(kind, kind)
        formats.append(f)
    item.SupportedImageDisplayFormatsSequence = DicomSequence(formats)
    item.DefaultMagnificationType = "BILINEAR"
    item.OtherMagnificationTypesAvailable = ["REPLICATE", "CUBIC", "NONE"]
    item.DefaultSmoothingType = "NONE"
    item.DefaultPrinterResolutionID = "STANDARD"
    item.PrinterPixelSpacing = [round(25.4 / caps.dpi, 6)] * 2
    reply = Dataset()
    reply.PrinterConfigurationSequence = DicomSequence([item])
    return reply


def print_job_attributes(job: PrintJob, printer_name: str) -> Dataset:
    """The Print Job N-GET attribute list (PS3.4 H.4.6.2.1)."""
    created = datetime.datetime.fromtimestamp(job.created_at)
    reply = Dataset()
    reply.ExecutionStatus = execution_status(job.state)
    reply.ExecutionStatusInfo = job.info
    reply.PrintPriority = job.priority
    reply.CreationDate = created.strftime("%Y%m%d")
    reply.CreationTime = created.strftime("%H%M%S")
    reply.PrinterName = printer_name
    reply.Originator = job.calling_ae or None
    return reply


__all__ = ["configuration_attributes", "execution_status", "print_job_attributes", "printer_attributes",
           "software_version"]
