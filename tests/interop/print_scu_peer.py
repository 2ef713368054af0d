"""A pynetdicom Print SCU for the agent's Print SCP: the steps of pynetdicom's documented print example
(Printer N-GET, Film Session N-CREATE, Film Box N-CREATE, Image Box N-SET, Film Box N-ACTION), with the
contexts proposed as the meta SOP class or one class at a time, and a recorder of the N-EVENT-REPORTs
the SCP sends on the association."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from tests.conftest import require_pynetdicom

GRAYSCALE_META = "1.2.840.10008.5.1.1.9"
FILM_SESSION = "1.2.840.10008.5.1.1.1"
FILM_BOX = "1.2.840.10008.5.1.1.2"
GRAY_BOX = "1.2.840.10008.5.1.1.4"
COLOR_BOX = "1.2.840.10008.5.1.1.4.1"
PRINTER = "1.2.840.10008.5.1.1.16"
PRINTER_INSTANCE = "1.2.840.10008.5.1.1.17"
PRINT_JOB = "1.2.840.10008.5.1.1.14"
ANNOTATION_BOX = "1.2.840.10008.5.1.1.15"
PRESENTATION_LUT = "1.2.840.10008.5.1.1.23"
INDIVIDUAL = (FILM_SESSION, FILM_BOX, GRAY_BOX, PRINTER)


def gray_image(rows: int = 64, cols: int = 64, *, bits: int = 8) -> Dataset:
    """A Basic Grayscale Image Sequence item: a left-to-right ramp from 0 to the top value."""
    top = (1 << bits) - 1
    ramp = np.linspace(0, top, cols).round().astype(np.uint8 if bits == 8 else np.uint16)
    pixels = np.tile(ramp, (rows, 1))
    item = Dataset()
    item.SamplesPerPixel = 1
    item.PhotometricInterpretation = "MONOCHROME2"
    item.Rows, item.Columns = rows, cols
    item.PixelAspectRatio = [1, 1]
    item.BitsAllocated = 8 if bits == 8 else 16
    item.BitsStored = bits
    item.HighBit = bits - 1
    item.PixelRepresentation = 0
    item.PixelData = pixels.tobytes()
    item["PixelData"].VR = "OB" if bits == 8 else "OW"
    return item


def image_box(position: int = 1, image: Dataset | None = None, **attrs: Any) -> Dataset:
    ds = Dataset()
    ds.ImageBoxPosition = position
    ds.BasicGrayscaleImageSequence = Sequence([image if image is not None else gray_image()])
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


@dataclass
class Events:
    """N-EVENT-REPORTs received: (SOP class, SOP instance, event type, event information)."""

    items: list[tuple[str, str, int, Dataset | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self, event: Any) -> tuple[int, Dataset | None]:
        rq = event.request
        info = event.event_information if rq.EventInformation is not None else None
        with self.lock:
            self.items.append((str(rq.AffectedSOPClassUID), str(rq.AffectedSOPInstanceUID), int(rq.EventTypeID), info))
        return 0x0000, None

    def snapshot(self) -> list[tuple[str, str, int, Dataset | None]]:
        with self.lock:
            return list(self.items)

    async def wait_for(self, predicate: Any, timeout: float = 30) -> tuple[str, str, int, Dataset | None]:
        with trio.fail_after(timeout):
            while True:
                for item in self.snapshot():
                    if predicate(item):
                        return item
                await trio.sleep(0.05)


class PrintSCU:
    """One association to the agent (blocking calls: run them in a thread from trio tests)."""

    def __init__(self, port: int, *, meta: bool = True, extra: tuple[str, ...] = (PRINT_JOB,),
                 called: str = "PRINTER") -> None:
        require_pynetdicom()
        from pynetdicom import AE, evt

        self.meta = meta
        self.events = Events()
        ae = AE(ae_title="MODALITY")
        for uid in ((GRAYSCALE_META,) if meta else INDIVIDUAL) + extra:
            ae.add_requested_context(uid)
        self.assoc = ae.associate("127.0.0.1", port, ae_title=called,
                                  evt_handlers=[(evt.EVT_N_EVENT_REPORT, self.events.handler)])
        assert self.assoc.is_established, "association refused"
        self.session_uid = ""
        self.msg_id = 0

    def _kw(self) -> dict[str, Any]:
        self.msg_id += 1
        return {"msg_id": self.msg_id, "meta_uid": GRAYSCALE_META if self.meta else None}

    def _kw_plain(self) -> dict[str, Any]:
        self.msg_id += 1
        return {"msg_id": self.msg_id}

    def printer(self) -> tuple[int, Dataset | None]:
        from pydicom.tag import Tag

        status, attrs = self.assoc.send_n_get([Tag(0x2110, 0x0010), Tag(0x2110, 0x0020)], PRINTER,
                                              PRINTER_INSTANCE, **self._kw())
        return int(status.Status), attrs

    def film_session(self, **attrs: Any) -> tuple[int, str]:
        ds = Dataset()
        ds.NumberOfCopies = attrs.pop("NumberOfCopies", "1")
        for k, v in attrs.items():
            setattr(ds, k, v)
        uid = generate_uid()  # as pynetdicom's example does: the SCU names its instances
        status, reply = self.assoc.send_n_create(ds, FILM_SESSION, uid, **self._kw())
        self.session_uid = uid
        return int(status.Status), uid

    def film_box(self, fmt: str = "STANDARD\\1,1", **attrs: Any) -> tuple[int, str, list[str], Dataset | None]:
        ds = Dataset()
        ds.ImageDisplayFormat = fmt
        ref = Dataset()
        ref.ReferencedSOPClassUID = FILM_SESSION
        ref.ReferencedSOPInstanceUID = self.session_uid
        ds.ReferencedFilmSessionSequence = Sequence([ref])
        for k, v in attrs.items():
            setattr(ds, k, v)
        uid = generate_uid()
        status, reply = self.assoc.send_n_create(ds, FILM_BOX, uid, **self._kw())
        boxes = [str(i.ReferencedSOPInstanceUID) for i in (reply.ReferencedImageBoxSequence if reply else [])]
        return int(status.Status), uid, boxes, reply

    def set_image(self, uid: str, ds: Dataset, sop_class: str = GRAY_BOX) -> tuple[int, Dataset]:
        status, _ = self.assoc.send_n_set(ds, sop_class, uid, **self._kw())
        return int(status.Status), status

    def set_annotation(self, uid: str, position: int, text: str) -> int:
        ds = Dataset()
        ds.AnnotationPosition = position
        ds.TextString = text
        self.msg_id += 1
        status, _ = self.assoc.send_n_set(ds, ANNOTATION_BOX, uid, msg_id=self.msg_id)
        return int(status.Status)

    def print_film_box(self, uid: str) -> tuple[int, Dataset | None]:
        status, reply = self.assoc.send_n_action(None, 1, FILM_BOX, uid, **self._kw())
        return int(status.Status), reply

    def print_session(self) -> tuple[int, Dataset | None]:
        status, reply = self.assoc.send_n_action(None, 1, FILM_SESSION, self.session_uid, **self._kw())
        return int(status.Status), reply

    def delete(self, sop_class: str, uid: str) -> int:
        return int(self.assoc.send_n_delete(sop_class, uid, **self._kw()).Status)

    def release(self) -> None:
        self.assoc.release()


def print_one(port: int, *, meta: bool, fmt: str = "STANDARD\\1,1", wait_done: bool = True, **box: Any) -> dict[str, Any]:
    """The documented example end to end: the statuses and UIDs it saw."""
    scu = PrintSCU(port, meta=meta)
    try:
        out: dict[str, Any] = {"printer": scu.printer()}
        out["session"] = scu.film_session(FilmSessionLabel="INTEROP")
        status, film_box, boxes, reply = scu.film_box(fmt, **box)
        out["film_box"] = (status, film_box, boxes, reply)
        out["image"] = [scu.set_image(uid, image_box(i + 1))[0] for i, uid in enumerate(boxes)]
        out["action"] = scu.print_film_box(film_box)
        if wait_done:  # the Print Job's DONE report comes on this association: wait for it
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(e[0] == PRINT_JOB and e[2] == 3 for e in scu.events.snapshot()):
                time.sleep(0.05)
        out["delete"] = scu.delete(FILM_SESSION, scu.session_uid)
        out["events"] = scu.events
    finally:
        scu.release()
    return out
