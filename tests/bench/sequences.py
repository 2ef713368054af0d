"""What the Q/R sequence keys (issue 12) cost, side by side with what the same work costs without them.

    .venv/bin/python tests/bench/sequences.py [-n 5] [--rows 2000]

Not collected by pytest. Two parts, in process, best of `-n` runs, no timing asserted:

1. Receive: the one header walk + index values of a received file (`scan_dataset` + `index_values`, what
   the Storage SCP does per instance before its row is written) with the index's wanted tags as they are
   (sequence keys included) and without the sequence tags, for a 0.5 MB CT without sequences and an SR
   carrying four indexed sequences. The ratio is the receive-side price of keeping sequences.
2. C-FIND engine (SQL look-up excluded; matching and encoding the answers, `scp._encoded`): per candidate
   row of an IMAGE query over `--rows` SR instances, with no sequence key, a universal Concept Name Code
   Sequence (its items answered), and one matching half the rows on Code Value; for SRs whose sequences
   all differ and for SRs that repeat two (decoded items are reused for the same stored bytes).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ComprehensiveSRStorage, CTImageStorage, ExplicitVRLittleEndian

sys.path[0] = str(Path(__file__).resolve().parents[2])  # not tests/bench (its queue.py shadows the stdlib's)

from agent.services.query import engine  # noqa: E402
from agent.services.query.models import STUDY_ROOT  # noqa: E402
from agent.services.query.scp import _encoded  # noqa: E402
from agent.store import query as q  # noqa: E402
from agent.store.db import open_database  # noqa: E402
from agent.store.dicomfile import read_meta, scan_dataset  # noqa: E402
from agent.store.header import index_values  # noqa: E402
from agent.store.index_columns import INDEX_COLUMNS, INDEX_TAGS  # noqa: E402
from agent.store.instances import InstanceStore  # noqa: E402

ROOT = "1.2.826.0.1.3680043.8.498.7798"
SEQUENCE_TAGS = frozenset(c.tag for c in INDEX_COLUMNS if c.kind == "sequence")


def _save(ds: Dataset, sop_class: str, path: Path) -> Path:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def _code(value: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "LN", meaning
    return code


def _sr(i: int, n: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = ComprehensiveSRStorage, f"{ROOT}.1.1.{i}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{ROOT}.1", f"{ROOT}.1.1"
    ds.PatientID, ds.Modality, ds.VerificationFlag = "P", "SR", "VERIFIED"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4" if n % 2 == 0 else "11528-7", f"Report {n:05d}")])
    observer = Dataset()
    observer.VerifyingObserverName, observer.VerifyingOrganization = f"Wałęsa^Łucja{n}", "Szpital"
    observer.VerificationDateTime = "20240611101500"
    ds.VerifyingObserverSequence = Sequence([observer])
    request = Dataset()
    request.StudyInstanceUID, request.AccessionNumber, request.RequestedProcedureID = f"{ROOT}.1", "A1", "RP1"
    ds.ReferencedRequestSequence = Sequence([request])
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "2000"
    ds.ContentTemplateSequence = Sequence([template])
    return ds


def _ct(path: Path) -> Path:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, f"{ROOT}.2.1.1"
    ds.PatientName, ds.PatientID, ds.Modality, ds.StudyDate = "DOE^JOHN", "P1", "CT", "20240101"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = f"{ROOT}.2", f"{ROOT}.2.1", 1
    ds.Rows = ds.Columns = 512
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.zeros((512, 512), dtype=np.uint16).tobytes()
    return _save(ds, CTImageStorage, path)


def _walk(path: Path, wanted: frozenset[int], runs: int, loops: int = 2000) -> float:
    meta = read_meta(path)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(loops):
            index_values(scan_dataset(path, meta.dataset_offset, meta.transfer_syntax_uid, wanted))
        best = min(best, (time.perf_counter() - start) / loops)
    return best * 1e6


def _store(directory: Path, rows: int, distinct: bool) -> object:
    directory.mkdir()
    conn = open_database(directory / "agent.db")
    store = InstanceStore(directory, conn)
    q.ensure_schema(conn)
    for i in range(rows):
        path = _save(_sr(i, i if distinct else i % 2), ComprehensiveSRStorage, directory / f"{i}.dcm")
        meta = read_meta(path)
        incoming = store.begin(meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax_uid, calling_ae="B")
        incoming.write(path.read_bytes()[meta.dataset_offset:])
        incoming.commit()
        path.unlink()
    return conn


def _identifier(**keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel, ds.StudyInstanceUID, ds.SeriesInstanceUID = "IMAGE", f"{ROOT}.1", f"{ROOT}.1.1"
    ds.SOPInstanceUID, ds.VerificationFlag = "", ""
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _per_row(conn: object, identifier: Dataset, runs: int) -> tuple[int, int, float]:
    plan = engine.plan_find(STUDY_ROOT, identifier, relational=False)
    rows = engine.fetch_rows(conn, plan)  # type: ignore[arg-type]
    best, found = float("inf"), []
    for _ in range(runs):
        start = time.perf_counter()
        found, _more = _encoded(plan, rows, len(rows) + 1, ExplicitVRLittleEndian, "bench")
        best = min(best, time.perf_counter() - start)
    return len(rows), len(found), best / len(rows) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ct = _ct(work / "ct.dcm")
        sr = _save(_sr(0, 0), ComprehensiveSRStorage, work / "sr.dcm")
        print("1. receive: header walk + index values per file, us (best of -n)")
        print(f"   {'file':34} {'with sequences':>15} {'without':>9} {'ratio':>7}")
        for name, path in (("CT 0.5 MB, no sequence", ct), ("SR, 4 indexed sequences", sr)):
            with_seq = _walk(path, INDEX_TAGS, args.runs)
            without = _walk(path, INDEX_TAGS - SEQUENCE_TAGS, args.runs)
            print(f"   {name:34} {with_seq:15.1f} {without:9.1f} {with_seq / without:6.2f}x")

        stores = {d: _store(work / ("distinct" if d else "repeated"), args.rows, d) for d in (True, False)}
        code = Dataset()
        code.CodeValue, code.CodeMeaning = "18748-4", ""
        queries = {
            "no sequence key": _identifier(),
            "Concept Name Code Sequence, universal": _identifier(ConceptNameCodeSequence=Sequence()),
            "Concept Name Code Sequence > Code Value": _identifier(ConceptNameCodeSequence=Sequence([code])),
        }
        print(f"\n2. C-FIND matching + encoding per candidate row, us (best of -n), {args.rows} SR rows")
        print(f"   {'query':42} {'answers':>8} {'distinct':>9} {'repeated':>9} {'ratio to no key (distinct)':>27}")
        base = None
        for name, identifier in queries.items():
            _, answers_d, distinct = _per_row(stores[True], identifier, args.runs)
            _, _, repeated = _per_row(stores[False], identifier, args.runs)
            base = base or distinct
            print(f"   {name:42} {answers_d:8} {distinct:9.1f} {repeated:9.1f} {distinct / base:26.1f}x")


if __name__ == "__main__":
    main()
