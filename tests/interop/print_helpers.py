"""Test images for the Print SCU and a pynetdicom Print SCP that records what it receives."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import trio
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.conftest import free_port, require_pynetdicom

GRAYSCALE_META = "1.2.840.10008.5.1.1.9"
COLOR_META = "1.2.840.10008.5.1.1.18"
PRESENTATION_LUT = "1.2.840.10008.5.1.1.23"
ANNOTATION_BOX = "1.2.840.10008.5.1.1.15"
PRINT_JOB = "1.2.840.10008.5.1.1.14"
FILM_SESSION = "1.2.840.10008.5.1.1.1"
FILM_BOX = "1.2.840.10008.5.1.1.2"
GRAY_BOX = "1.2.840.10008.5.1.1.4"
COLOR_BOX = "1.2.840.10008.5.1.1.4.1"
PRINTER = "1.2.840.10008.5.1.1.16"
PRINTER_INSTANCE = "1.2.840.10008.5.1.1.17"


def write_image(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                window: tuple[float, float] | None = None, rescale: tuple[float, float] | None = None) -> Path:
    """A Secondary Capture DICOM file holding `pixels` (2-D grayscale or (r, c, 3) RGB)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = "PRINT^TEST", "P1", "OT"
    ds.Rows, ds.Columns = pixels.shape[:2]
    color = pixels.ndim == 3
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = "RGB" if color else photometric
    if color:
        ds.PlanarConfiguration = 0
    allocated = pixels.dtype.itemsize * 8
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored or allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleIntercept, ds.RescaleSlope = rescale
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds["PixelData"].VR = "OB" if allocated == 8 else "OW"
    ds.save_as(path, enforce_file_format=True)
    return path


def gradient8(rows: int = 48, columns: int = 64) -> np.ndarray:
    r, c = np.mgrid[0:rows, 0:columns]
    return ((r * 5 + c * 3) % 256).astype(np.uint8)


def image12(rows: int = 40, columns: int = 50) -> np.ndarray:
    r, c = np.mgrid[0:rows, 0:columns]
    return ((r * 97 + c * 41) % 4096).astype(np.uint16)


def rgb(rows: int = 30, columns: int = 20) -> np.ndarray:
    r, c = np.mgrid[0:rows, 0:columns]
    return np.stack([(r * 8) % 256, (c * 12) % 256, ((r + c) * 5) % 256], axis=2).astype(np.uint8)


def boxes_for(display_format: str) -> int:
    kind, _, rest = display_format.partition("\\")
    if kind == "STANDARD":
        c, r = rest.split(",")
        return int(c) * int(r)
    return sum(int(n) for n in rest.split(","))


class PrintRecorder:
    """A pynetdicom Print SCP (meta classes, Presentation LUT, Annotation Box, Print Job) that records
    (operation, SOP class, SOP instance, data set) in arrival order."""

    def __init__(self, ae_title: str = "PRINTER", *, status: str = "NORMAL", info: str = "NORMAL",
                 action_status: int = 0x0000, send_job_event: bool = False, port: int | None = None) -> None:
        require_pynetdicom()
        from pynetdicom import AE, evt

        self.status, self.info = status, info
        self.action_status = action_status
        self.send_job_event = send_job_event
        self.events: list[tuple[str, str, str, Dataset | None]] = []
        self.event_replies: list[int] = []
        self.associations = 0
        self.endings: list[str] = []  # "released" / "aborted", one per association
        self.lock = threading.Lock()
        self.port = port or free_port()
        ae = AE(ae_title=ae_title)
        for uid in (GRAYSCALE_META, COLOR_META, PRESENTATION_LUT, ANNOTATION_BOX, PRINT_JOB):
            ae.add_supported_context(uid)
        self.boxes: dict[str, str] = {}  # image box UID -> class

        def record(op: str, cls: str, uid: str, ds: Dataset | None) -> None:
            with self.lock:
                self.events.append((op, cls, uid, ds))

        def on_get(event: Any) -> tuple[int, Dataset]:
            rq = event.request
            record("N-GET", rq.RequestedSOPClassUID, rq.RequestedSOPInstanceUID, None)
            ds = Dataset()
            ds.PrinterStatus, ds.PrinterStatusInfo = self.status, self.info
            return 0x0000, ds

        def on_create(event: Any) -> tuple[int, Dataset]:
            rq = event.request
            attrs = event.attribute_list
            uid = rq.AffectedSOPInstanceUID or generate_uid()
            record("N-CREATE", rq.AffectedSOPClassUID, uid, attrs)
            out = Dataset()
            out.update(attrs)
            if rq.AffectedSOPInstanceUID is None:
                out.AffectedSOPInstanceUID = uid
            if rq.AffectedSOPClassUID == FILM_BOX:
                meta = event.context.abstract_syntax
                cls = COLOR_BOX if meta == COLOR_META else GRAY_BOX
                refs = []
                for _ in range(boxes_for(str(attrs.ImageDisplayFormat))):
                    item = Dataset()
                    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = cls, generate_uid()
                    refs.append(item)
                out.ReferencedImageBoxSequence = Sequence(refs)
                if "AnnotationDisplayFormatID" in attrs:
                    items = []
                    for _ in range(int(attrs.AnnotationDisplayFormatID)):
                        item = Dataset()
                        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ANNOTATION_BOX, generate_uid()
                        items.append(item)
                    out.ReferencedBasicAnnotationBoxSequence = Sequence(items)
            return 0x0000, out

        def on_set(event: Any) -> tuple[int, Dataset]:
            rq = event.request
            record("N-SET", rq.RequestedSOPClassUID, rq.RequestedSOPInstanceUID, event.modification_list)
            return 0x0000, Dataset()

        def on_action(event: Any) -> tuple[int, Dataset | None]:
            rq = event.request
            record("N-ACTION", rq.RequestedSOPClassUID, rq.RequestedSOPInstanceUID, None)
            if self.send_job_event and self.action_status == 0:
                info = Dataset()
                info.ExecutionStatus, info.ExecutionStatusInfo = "DONE", "NORMAL"
                status, _ = event.assoc.send_n_event_report(info, 3, PRINT_JOB, generate_uid())
                with self.lock:
                    self.event_replies.append(int(status.Status) if status else -1)
            return self.action_status, None

        def on_delete(event: Any) -> int:
            rq = event.request
            record("N-DELETE", rq.RequestedSOPClassUID, rq.RequestedSOPInstanceUID, None)
            return 0x0000

        def on_open(event: Any) -> None:
            with self.lock:
                self.associations += 1

        def on_end(kind: str) -> Any:
            def handler(event: Any) -> None:
                with self.lock:
                    self.endings.append(kind)
            return handler

        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_N_GET, on_get), (evt.EVT_N_CREATE, on_create), (evt.EVT_N_SET, on_set),
            (evt.EVT_N_ACTION, on_action), (evt.EVT_N_DELETE, on_delete), (evt.EVT_ACCEPTED, on_open),
            (evt.EVT_RELEASED, on_end("released")), (evt.EVT_ABORTED, on_end("aborted")),
        ])

    def snapshot(self) -> list[tuple[str, str, str, Dataset | None]]:
        with self.lock:
            return list(self.events)

    def operations(self) -> list[tuple[str, str]]:
        return [(op, cls) for op, cls, _, _ in self.snapshot()]

    async def wait_for(self, predicate: Any, timeout: float = 30) -> None:
        with trio.fail_after(timeout):
            while not predicate(self.snapshot()):
                await trio.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
