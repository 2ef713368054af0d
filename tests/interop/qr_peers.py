"""Query/Retrieve peers for the SCU tests: a small archive of known content, served by DCMTK's dcmqrscp
(filled with storescu, as an operator would) or by an in-test pynetdicom AE with FIND/MOVE/GET handlers.

The archive: three patients, four studies, seven images, with an ISO_IR 100 name and an ISO_IR 192
(Polish, Japanese ideographic and phonetic) name, so character sets cross the wire both ways.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from tests.conftest import free_port

PEER_ENV = {**os.environ, "TCP_NODELAY": "1"}
ROOT = "1.2.826.0.1.3680043.8.498.7712"

POLISH = "Wałęsa^Łucja=山田^太郎=やまだ^たろう"


@dataclass(frozen=True)
class Study:
    patient_id: str
    patient_name: str
    charset: str
    study_uid: str
    date: str
    modality: str
    description: str
    series: tuple[tuple[str, int], ...]  # (series UID, number of images)


STUDIES = (
    Study("QR-P1", "MÜLLER^JÜRGEN", "ISO_IR 100", f"{ROOT}.1", "20230105", "CT", "HEAD",
          ((f"{ROOT}.1.1", 2),)),
    Study("QR-P1", "MÜLLER^JÜRGEN", "ISO_IR 100", f"{ROOT}.2", "20240310", "MR", "KNEE",
          ((f"{ROOT}.2.1", 1),)),
    Study("QR-P2", POLISH, "ISO_IR 192", f"{ROOT}.3", "20240611", "CT", "CHEST", ((f"{ROOT}.3.1", 1),)),
    Study("QR-P3", "DOE^JOHN", "", f"{ROOT}.4", "20240612", "CT", "ABDOMEN",
          ((f"{ROOT}.4.1", 2), (f"{ROOT}.4.2", 1))),
)


def image_uid(series_uid: str, n: int) -> str:
    return f"{series_uid}.{n + 1}"


def all_images() -> list[str]:
    return [image_uid(s, n) for st in STUDIES for s, count in st.series for n in range(count)]


def make_archive(directory: Path) -> list[Path]:
    """One Part 10 file per image of STUDIES (16x16, explicit VR little endian)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for st in STUDIES:
        for number, (series_uid, count) in enumerate(st.series, start=1):
            for n in range(count):
                uid = image_uid(series_uid, n)
                sop = CTImageStorage if st.modality == "CT" else MRImageStorage
                ds = Dataset()
                if st.charset:
                    ds.SpecificCharacterSet = st.charset
                ds.SOPClassUID, ds.SOPInstanceUID = sop, uid
                ds.StudyDate, ds.StudyTime, ds.AccessionNumber = st.date, "101010", f"A{st.study_uid[-1]}"
                ds.Modality, ds.StudyDescription = st.modality, st.description
                ds.ReferringPhysicianName = ""
                ds.PatientName, ds.PatientID = st.patient_name, st.patient_id
                ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
                ds.StudyInstanceUID, ds.SeriesInstanceUID = st.study_uid, series_uid
                ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", number, n + 1
                ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
                ds.Rows = ds.Columns = 16
                ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
                ds.PixelData = np.full((16, 16), n + 1, dtype=np.uint16).tobytes()
                meta = FileMetaDataset()
                meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop, uid
                meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds.file_meta = meta
                path = directory / f"{uid}.dcm"
                ds.save_as(path, enforce_file_format=True)
                out.append(path)
    return out


# ------------------------------------------------------------------ dcmqrscp


@contextlib.contextmanager
def dcmqrscp(
    work: Path, files: Iterable[Path], *, ae_title: str = "QRSCP", destinations: Iterable[tuple[str, int]] = (),
    port: int | None = None, index_first: bool = False,
) -> Iterator[int]:
    """dcmqrscp over a fresh storage area, filled with `files` through storescu (or, `index_first`, indexed
    with dcmqridx before it starts, so no caller ever sees it half filled); `destinations` are
    (AE title, port) on 127.0.0.1 it may move to. Yields its port; stopped at the end."""
    db = work / "db"
    db.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    hosts = "\n".join(f"dest{i} = ({ae}, 127.0.0.1, {p})" for i, (ae, p) in enumerate(destinations))
    config = work / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
        f"HostTable BEGIN\n{hosts}\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\n{ae_title} {db} RW (1000, 1024mb) ANY\nAETable END\n"
    )
    files = list(files)
    if index_first and files:
        subprocess.run(["dcmqridx", str(db), *map(str, files)], env=PEER_ENV, check=True, capture_output=True,
                       timeout=120)
    # Forks a child per association (its single-process mode ends on a probe that closes early).
    with open(work / "dcmqrscp.log", "wb") as log:
        proc = subprocess.Popen(["dcmqrscp", "-c", str(config), str(port)], env=PEER_ENV, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(port, proc)
        if files and not index_first:
            done = subprocess.run(["storescu", "-aec", ae_title, "127.0.0.1", str(port), *map(str, files)],
                                  env=PEER_ENV, capture_output=True, timeout=120)
            assert done.returncode == 0, done.stderr.decode(errors="replace")
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the forked children go too
        proc.wait(timeout=30)


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    """Poll until something accepts on 127.0.0.1:`port`; fail if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc is None or proc.poll() is None, f"peer exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


# ------------------------------------------------------------------ pynetdicom


class PynetdicomQR:
    """A pynetdicom Q/R SCP (FIND, MOVE, GET, both roots) over data sets read from `files`.

    Matching is the plain one a test needs: exact values, `*` wildcards and a date range on single
    values; what it received is recorded in `requests` for the tests to look at."""

    def __init__(self, files: Iterable[Path], ae_title: str = "PYNQR",
                 destinations: dict[str, tuple[str, int]] | None = None) -> None:
        self.datasets = [dcmread(p) for p in files]
        self.ae_title = ae_title
        self.destinations = destinations or {}
        self.requests: list[tuple[str, Dataset]] = []
        self.port = free_port()
        self.server: Any = None
        self.cancelled = threading.Event()
        #: When set, each operation waits after its first match or sub-operation until the SCU sends a
        #: C-CANCEL (at most 30 s), so a cancel test does not race the peer's speed.
        self.hold_after_first = False

    def _held(self, event: Any, sent: int) -> bool:
        """True when the SCU cancelled (now or while held after the first answer)."""
        # pynetdicom forgets a C-CANCEL once `is_cancelled` has said True: read it once per poll.
        cancelled = event.is_cancelled
        if sent == 1 and self.hold_after_first:
            deadline = time.monotonic() + 30
            while not cancelled and time.monotonic() < deadline:
                time.sleep(0.005)
                cancelled = event.is_cancelled
        if cancelled:
            self.cancelled.set()
        return cancelled

    def start(self) -> int:
        from pynetdicom import AE, StoragePresentationContexts, evt
        from pynetdicom.sop_class import (
            PatientRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelGet,
            PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove,
        )
        ae = AE(ae_title=self.ae_title)
        for sop in (PatientRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelGet,
                    PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelFind,
                    StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove):
            ae.add_supported_context(sop)
        for cx in StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, scu_role=True, scp_role=True)
            ae.add_requested_context(cx.abstract_syntax)  # for C-MOVE sub-operations
        handlers = [(evt.EVT_C_FIND, self._find), (evt.EVT_C_GET, self._get), (evt.EVT_C_MOVE, self._move)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()

    def matching(self, identifier: Dataset) -> list[Dataset]:
        level = identifier.QueryRetrieveLevel
        unique = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
                  "IMAGE": "SOPInstanceUID"}[level]
        found: dict[str, Dataset] = {}
        for ds in self.datasets:
            if _all_match(ds, identifier):
                found.setdefault(str(ds.get(unique, "")), ds)
        return list(found.values())

    def _find(self, event: Any) -> Any:
        identifier = event.identifier
        self.requests.append(("find", identifier))
        for sent, ds in enumerate(self.matching(identifier)):
            if self._held(event, sent):
                yield 0xFE00, None
                return
            out = Dataset()
            if "SpecificCharacterSet" in ds:
                out.SpecificCharacterSet = ds.SpecificCharacterSet
            for elem in identifier:
                if elem.keyword == "SpecificCharacterSet":
                    continue
                out.add_new(elem.tag, elem.VR, ds[elem.tag].value if elem.tag in ds else elem.value)
            yield 0xFF00, out
        yield 0x0000, None

    def _get(self, event: Any) -> Any:
        self.requests.append(("get", event.identifier))
        found = [ds for ds in self.datasets if _all_match(ds, event.identifier)]
        yield len(found)
        for sent, ds in enumerate(found):
            if self._held(event, sent):
                yield 0xFE00, None
                return
            yield 0xFF00, ds

    def _move(self, event: Any) -> Any:
        self.requests.append(("move", event.identifier))
        dest = self.destinations.get(event.move_destination)
        if dest is None:
            yield None, None
            return
        yield dest[0], dest[1]
        found = [ds for ds in self.datasets if _all_match(ds, event.identifier)]
        yield len(found)
        for sent, ds in enumerate(found):
            if self._held(event, sent):
                yield 0xFE00, None
                return
            yield 0xFF00, ds


def _all_match(ds: Dataset, identifier: Dataset) -> bool:
    return all(_matches(ds, e) for e in identifier if e.keyword not in ("QueryRetrieveLevel", "SpecificCharacterSet"))


def _matches(ds: Dataset, elem: Any) -> bool:
    want = elem.value
    if want in (None, "") or elem.VR == "SQ":
        return True
    have = str(ds.get(elem.tag).value) if elem.tag in ds else ""
    if isinstance(want, (list, MultiValue)):  # a UID list (PS3.4 C.2.2.2.2)
        return have in [str(w) for w in want]
    want = str(want)
    if elem.VR == "DA" and "-" in want:
        lo, _, hi = want.partition("-")
        return (not lo or have >= lo) and (not hi or have <= hi)
    if "\\" in want and elem.VR == "UI":
        return have in want.split("\\")
    if "*" in want or "?" in want:
        import fnmatch

        return fnmatch.fnmatchcase(have, want)
    return have == want


async def archive_agent(start_agent: Any, folder: Path, peer: str, ae_title: str, port: int,
                        agent_extra: str = "") -> Any:
    """A running agent with `[storage]`, `[query]` and one peer `peer` (`ae_title` at `port`), holding
    `make_archive`'s instances, sent to it by DCMTK storescu (checked: all of them indexed)."""
    from tests.conftest import require_tool, write_profile
    from tests.interop.storage_helpers import index_count, run

    storescu = require_tool("storescu")
    running = await start_agent(write_profile(folder / "agent", f"""
        [peers.{peer}]
        ae_title = "{ae_title}"
        host = "127.0.0.1"
        port = {port}

        [storage]

        [query]
        """, agent_extra=agent_extra))
    files = make_archive(folder / "files")
    rc, out = await run([storescu, "-aec", "AGENT", "127.0.0.1", str(running.port), *map(str, files)], 120)
    assert rc == 0, out
    assert index_count(running.data_dir) == len(files)
    return running


def identifier(**keys: object) -> Dataset:
    """A query/retrieve identifier with these keywords and values."""
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def offending_tags(value: object) -> list[int]:
    """Offending Element (AT, VM 1-n) as a list: pydicom reads one value as a bare tag (an int)."""
    return [int(value)] if isinstance(value, int) else [int(t) for t in value]  # type: ignore[attr-defined]
