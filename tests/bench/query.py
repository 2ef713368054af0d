"""Q/R benchmark: study-level C-FIND latency of the agent's Q/R SCP and DCMTK dcmqrscp over the same data,
the agent alone over 100,000 indexed instances, and C-MOVE throughput of 200 x 0.5 MB to DCMTK storescp.

    .venv/bin/python tests/bench/query.py [--instances 100000] [--dcmqrscp-instances 3000] [--runs 30]

Side by side ("same data"): `--dcmqrscp-instances` instances (500 studies, dcmqrscp's cap per storage
area) written as small Part 10 files and indexed with dcmqridx for dcmqrscp; the very same attributes go
as rows into the agent's index. dcmqridx scans its whole index for every record it adds (8 KB a record),
so indexing grows with the square of the count: 3,000 takes about a minute here, 100,000 would take
hours. The agent alone: `--instances` rows (2,000 studies) generated straight into its index with SQL
(what the agent's header walker would have written), the study summaries built at start-up.

Queries (study level, Study Root): patient name wildcard, the same with other identifier bytes every run
(more '*' at the end, some return keys left out: the cost of a query the server has not seen before,
without the agent's plan cache; `identifier`), study date range, modality (ModalitiesInStudy).
Each is sent `--runs` times on one open association per server (set up once, reused) by the same
minimal client for both (`--client pdu`, the default: the C-FIND-RQ goes out on the agent's
DicomConnection, the responses are read as PDUs straight off the socket and only each command set's
Status and Message ID Being Responded To are read, about 5 us a response, so the client's own share
of the latency is small and the same for both; `--client dimse` reads them through the DicomConnection,
a message object per response, as before 2026-11-26: ~35 us a response, which narrows every ratio);
the time is from sending the C-FIND-RQ to the final response, so neither process start-up nor
association set-up is counted. Every run must end in Success with the same match
count. Prints p50 and p99 per query and server, the match counts, each server's CPU time per query
(/proc; dcmqrscp in single-process mode), and the ratio dcmqrscp / agent at p50 (goal: >= 10), only
where both found the same matches (dcmqrscp does not match on ModalitiesInStudy).

C-MOVE: 200 CT images of 512x512x16 bit (0.5 MB) stored with storescu into each server (the agent's
durable path, dcmqrscp's storage area), then DCMTK movescu asks each to move the study to DCMTK storescp;
wall time of movescu and MB/s, beside storescu sending the same files straight to storescp. DCMTK processes run with TCP_NODELAY=1 (docs/peers.md).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# The repository instead of this folder, whose queue.py would shadow the standard library's `queue`.
sys.path[0] = str(Path(__file__).resolve().parents[2])

import numpy as np  # noqa: E402
import trio  # noqa: E402
from pydicom import Dataset  # noqa: E402
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian  # noqa: E402

ENV = {**os.environ, "TCP_NODELAY": "1"}
ROOT = "1.2.826.0.1.3680043.8.498.5531"
SURNAMES = ["SMITH", "MUELLER", "NGUYEN", "GARCIA", "KOWALSKI", "ROSSI", "DUBOIS", "JONES", "SCHMIDT", "BROWN",
            "TANAKA", "SILVA", "MARTIN", "LEE", "WALSH", "NOVAK", "HANSEN", "MORENO", "KING", "WRIGHT"]
GIVEN = ["ANNA", "JOHN", "MARIA", "PETER", "JULIA", "PAUL", "EVA", "MARK", "SARA", "TOM"]
MODALITIES = ["CT", "MR", "US", "CR", "DX"]
QUERIES: dict[str, dict[str, object]] = {
    "patient name wildcard": {"PatientName": "KOWALSKI^J*"},
    # The same question in other bytes every run (`identifier`), so a server cannot reuse what it
    # made of the identifier before (the agent's plan cache): what a first-time query costs.
    "name, new identifier": {"PatientName": "KOWALSKI^J*", "vary": True},
    "study date range": {"StudyDate": "20230101-20230331"},
    "modality": {"ModalitiesInStudy": "MR"},
}
RETURN_KEYS = ("PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber", "StudyInstanceUID",
               "ModalitiesInStudy", "StudyDescription")
#: Return keys left out in some runs of a "vary" query (see `identifier`).
OPTIONAL_KEYS = ("PatientID", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "StudyDescription")


def identifier(keys: dict[str, object], run: int) -> Dataset:
    """The study-level identifier of a query for run number `run`. A "vary" query differs in its bytes
    from run to run but asks the same (the same matches): its Patient Name gets 1 to 20 '*' at the
    end (a run of '*' is one wildcard) and some of OPTIONAL_KEYS are left out, 640 combinations, in an
    order that never repeats one within 128 runs (the agent's plan cache holds 128)."""
    vary = bool(keys.get("vary"))
    left_out = {k for bit, k in enumerate(OPTIONAL_KEYS) if vary and (run // 20 % 32) >> bit & 1}
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for k in RETURN_KEYS:
        if k not in left_out:
            setattr(ds, k, None)
    for k, v in keys.items():
        if k == "vary":
            continue
        setattr(ds, k, str(v) + "*" * (run % 20) if vary and k == "PatientName" else v)
    return ds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


# ------------------------------------------------------------------ data


def studies(count: int, per_study: int, seed: int) -> Iterator[dict[str, object]]:
    """Study attributes and their instances (2 series a study), deterministic for `seed`."""
    rng = random.Random(seed)
    for s in range(count):
        patient = rng.randrange(count // 2 + 1)
        day = rng.randrange(3650)
        date = time.strftime("%Y%m%d", time.gmtime(1420070400 + day * 86400))  # 2015 .. 2024
        uid = f"{ROOT}.{seed}.{s + 1}"
        yield {
            "patient_id": f"P{seed}-{patient:06d}",
            "patient_name": f"{SURNAMES[patient % len(SURNAMES)]}^{GIVEN[patient % len(GIVEN)]}",
            "study_uid": uid, "date": date, "time": f"{rng.randrange(24):02d}{rng.randrange(60):02d}00",
            "accession": f"A{seed}{s:07d}", "modality": MODALITIES[rng.randrange(len(MODALITIES))],
            "description": "BENCH STUDY",
            "instances": [(f"{uid}.{1 + i % 2}", f"{uid}.{1 + i % 2}.{i + 1}", i + 1) for i in range(per_study)],
        }


def index_rows(data: list[dict[str, object]]) -> Iterator[tuple[object, ...]]:
    from agent.store.dicomfile import object_relpath

    now = time.time()
    for st in data:
        for series, sop, number in st["instances"]:  # type: ignore[attr-defined]
            yield (sop, CTImageStorage, ExplicitVRLittleEndian, st["patient_id"], st["patient_name"], "19700101", "O",
                   st["study_uid"], st["date"], st["time"], st["accession"], "1", st["description"], "",
                   series, int(series.rsplit(".", 1)[1]), st["modality"], number, 1000,
                   str(object_relpath(sop)), now, "BENCH")


ROW_COLUMNS = ("sop_instance_uid, sop_class_uid, transfer_syntax_uid, patient_id, patient_name, patient_birth_date, "
               "patient_sex, study_instance_uid, study_date, study_time, accession_number, study_id, "
               "study_description, referring_physician_name, series_instance_uid, series_number, modality, "
               "instance_number, size, path, received_at, calling_ae")


def fill_agent_index(data_dir: Path, data: list[dict[str, object]]) -> int:
    """The agent's database with one index row per instance (as its header walker writes them)."""
    from agent.store.db import open_database, transaction
    from agent.store.instances import InstanceStore
    from agent.store.query import backfill_step, ensure_schema

    data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(data_dir / "agent.db")
    InstanceStore(data_dir, db)  # the schema
    rows = list(index_rows(data))
    # The agent's start-up check removes index rows without a file: each row gets one, a hard link of
    # a single small Part 10 file (never retrieved, never re-read: the C-MOVE part stores real images).
    first = template = write_files(data_dir / "template", data[:1])[0]
    for n, row in enumerate(rows):
        if n and n % 60_000 == 0:  # a file has at most 65,000 links on ext4
            template = first.with_name(f"copy{n}.dcm")
            shutil.copy(first, template)
        path = data_dir / str(row[-3])
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(template, path)
    marks = ", ".join("?" * len(ROW_COLUMNS.split(",")))
    with transaction(db):  # one commit, not one fsync per row
        db.executemany(f"INSERT INTO instances ({ROW_COLUMNS}) VALUES ({marks})", rows)
    ensure_schema(db)  # the study/series summaries, as start-up would build them
    backfill_step(db, [], done=True)  # the rows hold every index column: no re-reading of the files
    n = db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
    db.close()
    return int(n)


def write_files(folder: Path, data: list[dict[str, object]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for st in data:
        for series, sop, number in st["instances"]:  # type: ignore[attr-defined]
            ds = Dataset()
            ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
            ds.StudyDate, ds.StudyTime, ds.AccessionNumber = st["date"], st["time"], st["accession"]
            ds.Modality, ds.StudyDescription, ds.ReferringPhysicianName = st["modality"], st["description"], ""
            ds.PatientName, ds.PatientID = st["patient_name"], st["patient_id"]
            ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = st["study_uid"], series
            ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", int(series.rsplit(".", 1)[1]), number
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, sop
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta = meta
            path = folder / f"{sop}.dcm"
            ds.save_as(path, enforce_file_format=True)
            out.append(path)
    return out


def big_images(folder: Path, count: int) -> list[Path]:
    """`count` CT images of 512x512x16 bit (0.5 MB) in one study."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    out = []
    for i in range(count):
        ds = Dataset()
        uid = f"{ROOT}.9.1.1.{i + 1}"
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.Modality = "MOVE^BENCH", "PMOVE", "20240101", "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{ROOT}.9", f"{ROOT}.9.1"
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber, ds.AccessionNumber = "1", 1, i + 1, "AMOVE"
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 512, 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, (512, 512), dtype=np.uint16).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = folder / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


# ------------------------------------------------------------------ servers


def start_agent(work: Path, data_dir: Path, port: int, storescp_port: int) -> subprocess.Popen[bytes]:
    profile = work / f"agent-{port}.toml"
    profile.write_text(f"""
[agent]
ae_title = "AGENT"
bind = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
log_level = "warning"

[peers.storescp]
ae_title = "STORESCP"
host = "127.0.0.1"
port = {storescp_port}

[storage]
free_space_floor = "0"

[query]
""")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--profile", str(profile)],
                            stdout=subprocess.DEVNULL, stderr=open(work / f"agent-{port}.log", "wb"))
    wait_port(port)
    return proc


def start_dcmqrscp(work: Path, port: int, storescp_port: int, *, single: bool = False) -> subprocess.Popen[bytes]:
    for area in ("qr", "move"):
        (work / area).mkdir(parents=True, exist_ok=True)  # "qr" holds the index made beforehand
    config = work / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 131072\nMaxAssociations = 16\n"
        f"HostTable BEGIN\nstorescp = (STORESCP, 127.0.0.1, {storescp_port})\nHostTable END\n"
        "VendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nQRSCP {work / 'qr'} RW (500, 4096mb) ANY\nQRMOVE {work / 'move'} RW (10, 4096mb) ANY\n"
        "AETable END\n")
    # `single` for the C-FIND timing: one association is all it gets, so its CPU time is the process's
    # (a forked child's would not be). The C-MOVE part needs the default forking mode: in single-process
    # mode dcmqrscp 3.6.7 refuses the storescu association that fills its storage area.
    mode = ["--single-process"] if single else []
    proc = subprocess.Popen(["dcmqrscp", *mode, "-c", str(config), str(port)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=open(work / f"dcmqrscp-{port}.log", "wb"), start_new_session=True)
    wait_port(port)
    return proc


#: Template values for cloning dcmqrscp index records: each as long as its field allows, and unique
#: in the record, so it can be found and overwritten (NUL-terminated C strings in fixed arrays).
TEMPLATE = {
    "SOPInstanceUID": "1.2.3." + "7" * 58, "SeriesInstanceUID": "1.2.4." + "7" * 58,
    "StudyInstanceUID": "1.2.5." + "7" * 58, "PatientName": "Q" * 64, "PatientID": "R" * 64,
    "StudyDate": "19990909", "StudyTime": "235959.123456", "AccessionNumber": "V" * 16, "Modality": "W" * 16,
    "SeriesNumber": "9" * 12, "InstanceNumber": "8" * 12,
}


def clone_index(area: Path, scratch: Path, data: list[dict[str, object]]) -> int:
    """dcmqrscp's index.dat for `data` without dcmqridx's quadratic cost: one record is made by dcmqridx
    from a template file, then copied once per instance with the template's values overwritten (same
    field offsets; shorter values NUL-padded). The header (the per-study quota table) is the template's:
    C-FIND reads the records only. Returns the number of records."""
    scratch.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    for keyword, value in TEMPLATE.items():
        setattr(ds, keyword, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    sizes = []
    for n in (1, 2):  # a one-record and a two-record index: the record size and the header size
        (scratch / f"i{n}").mkdir()
        path = scratch / f"t{n}.dcm"
        if n == 2:  # another instance of the same study
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = TEMPLATE["SOPInstanceUID"].replace("7", "6")
        ds.save_as(path, enforce_file_format=True)
        subprocess.run(["dcmqridx", str(scratch / f"i{n}"), *[str(scratch / f"t{k}.dcm") for k in range(1, n + 1)]],
                       env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sizes.append((scratch / f"i{n}" / "index.dat").stat().st_size)
    one = (scratch / "i1" / "index.dat").read_bytes()
    record_size = sizes[1] - sizes[0]
    header, record = one[:-record_size], one[-record_size:]
    offsets: dict[str, list[tuple[int, int]]] = {}
    for keyword, value in TEMPLATE.items():  # a value may be kept in more than one field (every copy changes)
        raw, at = value.encode(), record.find(value.encode())
        while at >= 0:
            offsets.setdefault(keyword, []).append((at, len(raw)))
            at = record.find(raw, at + len(raw))
        if keyword not in offsets:
            raise SystemExit(f"cannot clone dcmqrscp index records: {keyword} is not in the template record")
    with open(area / "index.dat", "wb") as out:
        out.write(header)
        count = 0
        for st in data:
            for series, sop, number in st["instances"]:  # type: ignore[attr-defined]
                values = {"SOPInstanceUID": sop, "SeriesInstanceUID": series, "StudyInstanceUID": st["study_uid"],
                          "PatientName": st["patient_name"], "PatientID": st["patient_id"], "StudyDate": st["date"],
                          "StudyTime": st["time"], "AccessionNumber": st["accession"], "Modality": st["modality"],
                          "SeriesNumber": series.rsplit(".", 1)[1], "InstanceNumber": str(number)}
                rec = bytearray(record)
                for keyword, places in offsets.items():
                    raw = str(values[keyword]).encode()
                    for at, length in places:
                        assert len(raw) <= length, (keyword, raw)
                        rec[at:at + length] = raw.ljust(length, b"\0")
                out.write(rec)
                count += 1
    return count


def dcmqridx(area: Path, files: list[Path]) -> None:
    for i in range(0, len(files), 500):
        subprocess.run(["dcmqridx", str(area), *map(str, files[i:i + 500])], env=ENV, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ------------------------------------------------------------------ measuring


async def find_count(conn: object, ctx: object, identifier: bytes) -> tuple[int, int]:
    """One C-FIND-RQ and its responses, read with the agent's DicomConnection and counted ("dimse"
    client): the final status and the number of pending responses with a data set. Nothing is decoded
    into pydicom, no task is started; each response's command set is decoded into a message object."""
    from agent.dimse.assembler import CommandReceived
    from agent.dimse.messages import CFindRQ
    from agent.services.query.models import STUDY_ROOT

    rq = CFindRQ(message_id=conn.next_message_id(), affected_sop_class_uid=STUDY_ROOT.find)  # type: ignore[attr-defined]
    await conn.send_message(ctx.id, rq, identifier)  # type: ignore[attr-defined]
    matches = 0
    while True:
        event = await conn.next_event()  # type: ignore[attr-defined]
        if not isinstance(event, CommandReceived):
            continue  # data set fragments and message ends: counted with their command
        status = int(event.message.status)  # type: ignore[union-attr]
        if status not in (0xFF00, 0xFF01):
            return status, matches
        matches += 1


_PDU_HEAD = struct.Struct(">BxI")
_PDV_HEAD = struct.Struct(">IBB")
_ELEMENT = struct.Struct("<HHI")


def command_status(command: bytes | bytearray, message_id: int) -> int:
    """Status (0000,0900) of a C-FIND-RSP command set (Implicit VR Little Endian, PS3.7 6.3.1), checked
    to answer `message_id` (0000,0120); ValueError for anything else."""
    status = responded = field = None
    at, end = 0, len(command)
    while at + 8 <= end:
        group, elem, length = _ELEMENT.unpack_from(command, at)
        at += 8
        if group == 0 and length in (2, 4):
            value = int.from_bytes(command[at:at + 2], "little")
            if elem == 0x0900:
                status = value
            elif elem == 0x0120:
                responded = value
            elif elem == 0x0100:
                field = value
        at += length
    if field != 0x8020 or responded != message_id or status is None:
        raise ValueError(f"not a C-FIND-RSP to message {message_id}: field {field}, responding to {responded}")
    return status


async def find_count_raw(conn: object, ctx: object, identifier: bytes, buffer: bytearray) -> tuple[int, int]:
    """The same as `find_count` ("pdu" client, the default), but the responses are read straight from
    the association's socket: P-DATA-TF PDUs are split into PDVs, the command fragments joined and only
    the Status and Message ID Being Responded To read; data set PDVs are skipped. About 5 us a response,
    so the client's share of the latency is small and the same whichever server answers. Anything but
    P-DATA-TF (an abort, a release) during a C-FIND is an error. `buffer` keeps bytes across calls."""
    from agent.dimse.messages import CFindRQ
    from agent.services.query.models import STUDY_ROOT

    rq = CFindRQ(message_id=conn.next_message_id(), affected_sop_class_uid=STUDY_ROOT.find)  # type: ignore[attr-defined]
    await conn.send_message(ctx.id, rq, identifier)  # type: ignore[attr-defined]
    stream = conn.stream  # type: ignore[attr-defined]
    matches, command = 0, bytearray()
    at = 0
    while True:
        if len(buffer) - at < 6 or len(buffer) - at < 6 + _PDU_HEAD.unpack_from(buffer, at)[1]:
            del buffer[:at]
            at = 0
            data = await stream.receive_some(1 << 20)
            if not data:
                raise SystemExit("the server closed the connection during a C-FIND")
            buffer += data
            continue
        kind, length = _PDU_HEAD.unpack_from(buffer, at)
        if kind != 0x04:
            raise SystemExit(f"PDU type {kind:#04x} during a C-FIND (expected P-DATA-TF)")
        pdv, end = at + 6, at + 6 + length
        at = end
        while pdv < end:
            item, _context, control = _PDV_HEAD.unpack_from(buffer, pdv)
            if control & 1:  # a command fragment
                command += buffer[pdv + 6:pdv + 4 + item]
                if control & 2:  # the last one: a whole command set
                    status = command_status(command, rq.message_id)
                    command.clear()
                    if status not in (0xFF00, 0xFF01):
                        del buffer[:at]
                        if buffer:
                            raise SystemExit(f"{len(buffer)} bytes after the final C-FIND response")
                        return status, matches
                    matches += 1
            pdv += 4 + item


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` and all its threads so far (proc(5) stat fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def time_queries(port: int, called: str, runs: int, pid: int, client: str = "pdu"
                       ) -> dict[str, tuple[list[float], int, float]]:
    from agent.services.dataset import encode
    from agent.net.client import associate
    from agent.net.connection import Timeouts
    from agent.services.query import scu
    from agent.services.query.models import STUDY_ROOT

    out: dict[str, tuple[list[float], int, float]] = {}
    async with associate("127.0.0.1", port, calling_ae="BENCH", called_ae=called,
                         proposals=scu.proposals("study", ["find"]), timeouts=Timeouts(dimse=300)) as conn:
        ctx = scu.context(conn, STUDY_ROOT.find, "the C-FIND SOP Class")
        for name, keys in QUERIES.items():
            encoded = [encode(identifier(keys, run), ctx.transfer_syntax) for run in range(runs)]
            times, counts = [], set()
            buffer = bytearray()
            cpu = cpu_seconds(pid)
            for run in range(runs):
                start = time.perf_counter()
                if client == "pdu":
                    status, count = await find_count_raw(conn, ctx, encoded[run], buffer)
                else:
                    status, count = await find_count(conn, ctx, encoded[run])
                times.append(time.perf_counter() - start)
                if status != 0:
                    raise SystemExit(f"{called}: {name}: final status {status:04X}, not Success")
                counts.add(count)
            if len(counts) != 1:
                raise SystemExit(f"{called}: {name}: the match count varies between runs: {sorted(counts)}")
            out[name] = (times, counts.pop(), (cpu_seconds(pid) - cpu) / runs)
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(title: str, results: dict[str, dict[str, tuple[list[float], int, float]]]) -> None:
    print(f"\n{title}")
    print(f"  {'query':24} {'server':22} {'p50 ms':>9} {'p99 ms':>9} {'matches':>8} {'CPU ms/query':>13}")
    for query in QUERIES:
        for server, res in results.items():
            times, count, cpu = res[query]
            print(f"  {query:24} {server:22} {pct(times, 50) * 1e3:9.2f} {pct(times, 99) * 1e3:9.2f} {count:8d} "
                  f"{cpu * 1e3:13.2f}")
        if len(results) == 2:
            (a, ra), (b, rb) = results.items()
            if ra[query][1] != rb[query][1]:  # a ratio of different answers would mean nothing
                print(f"  {'':24} no ratio: different answers ({b} does not match on this key)")
                continue
            # CPU time comes in clock ticks (10 ms): with few runs a cheap server may show none.
            cpu_ratio = f"{rb[query][2] / ra[query][2]:12.1f}x" if ra[query][2] else f"{'(< 1 tick)':>13}"
            print(f"  {'':24} {'ratio ' + b + ' / ' + a:22} {pct(rb[query][0], 50) / pct(ra[query][0], 50):9.1f}x"
                  f" {'':18} {cpu_ratio}")


def movescu(port: int, called: str, study: str, out: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(["movescu", "-S", "-aet", "BENCH", "-aec", called, "-aem", "STORESCP",
                           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                           "127.0.0.1", str(port)], env=ENV, capture_output=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"movescu to {called} failed: {done.stderr.decode(errors='replace')}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000, help="the agent's large index [100000]")
    parser.add_argument("--side-by-side", type=int, default=4_000,
                        help="instances for the comparison with dcmqrscp, whose index file is limited to "
                             "32 MiB (8,032 bytes a record: about 4,170 instances) [4000]")
    parser.add_argument("--dcmqridx", action="store_true",
                        help="index dcmqrscp's data with dcmqridx instead of cloning records (slow: quadratic)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--client", choices=("pdu", "dimse"), default="pdu",
                        help="the counting C-FIND client: read PDUs off the socket and only each response's "
                             "status (pdu), or the agent's DicomConnection, which decodes each command set "
                             "into a message (dimse, the client before 2026-11-26) [pdu]")
    parser.add_argument("--move-images", type=int, default=200)
    parser.add_argument("--side-by-side-only", action="store_true",
                        help="only the C-FIND comparison with dcmqrscp (no large index, no C-MOVE)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    for tool in ("dcmqrscp", "dcmqridx", "storescu", "storescp", "movescu"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install dcmtk)")
    work = Path(tempfile.mkdtemp(prefix="bench-query-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        storescp_port = free_port()
        (work / "storescp").mkdir()
        procs.append(subprocess.Popen(["storescp", "--promiscuous", "-aet", "STORESCP", "-od", str(work / "storescp"),
                                       str(storescp_port)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        data = list(studies(500, max(1, args.side_by_side // 500), seed=1))
        agent_port, qr_port, big_port = free_port(), free_port(), free_port()
        n_agent = fill_agent_index(work / "agent", data)
        t = time.perf_counter()
        area = work / "dcmqrscp" / "qr"
        area.mkdir(parents=True)
        if args.dcmqridx:
            dcmqridx(area, write_files(work / "files", data))
            how = "dcmqridx"
        else:
            clone_index(area, work / "clone", data)
            how = "cloned records"
        print(f"dcmqrscp: {n_agent} instances indexed ({how}) in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        procs.append(qr := start_dcmqrscp(work / "dcmqrscp", qr_port, storescp_port, single=True))
        procs.append(agent := start_agent(work, work / "agent", agent_port, storescp_port))
        side = {"agent": trio.run(time_queries, agent_port, "AGENT", args.runs, agent.pid, args.client),
                "dcmqrscp": trio.run(time_queries, qr_port, "QRSCP", args.runs, qr.pid, args.client)}
        report(f"Study-level C-FIND over the same {n_agent} instances (500 studies), {args.runs} runs each "
               f"on one association per server, the same counting client", side)
        if args.side_by_side_only:
            return

        t = time.perf_counter()
        n_big = fill_agent_index(work / "agent-big", list(studies(2000, max(1, args.instances // 2000), seed=2)))
        print(f"agent: {n_big} index rows generated in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        procs.append(big_agent := start_agent(work, work / "agent-big", big_port, storescp_port))
        big = {"agent": trio.run(time_queries, big_port, "AGENT", args.runs, big_agent.pid, args.client)}
        report(f"Study-level C-FIND, agent alone over {n_big} instances (2000 studies; more than dcmqrscp can "
               f"index), {args.runs} runs each", big)
        for query in QUERIES:
            ratio = pct(side["dcmqrscp"][query][0], 50) / pct(big["agent"][query][0], 50)
            print(f"  {query:24} dcmqrscp at {n_agent} / agent at {n_big}, p50: {ratio:.1f}x")

        qr.terminate()
        qr.wait(timeout=30)
        qr_port = free_port()
        procs.append(start_dcmqrscp(work / "dcmqrscp", qr_port, storescp_port))
        images = big_images(work / "move", args.move_images)
        size = sum(p.stat().st_size for p in images) / 1e6
        for called, port in (("AGENT", agent_port), ("QRMOVE", qr_port)):
            subprocess.run(["storescu", "-aec", called, "127.0.0.1", str(port), *map(str, images)], env=ENV, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"\nC-MOVE of {len(images)} x {size / len(images):.2f} MB to storescp (movescu wall time)")
        rows = []
        for name, called, port in (("agent", "AGENT", agent_port), ("dcmqrscp", "QRMOVE", qr_port)):
            rows.append((name, movescu(port, called, f"{ROOT}.9", work)))
        start = time.perf_counter()  # the same files sent straight to storescp: the floor a move can reach
        subprocess.run(["storescu", "-aec", "STORESCP", "127.0.0.1", str(storescp_port), *map(str, images)], env=ENV,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows.append(("storescu (direct, no C-MOVE)", time.perf_counter() - start))
        for name, seconds in rows:
            print(f"  {name:30} {seconds:7.2f} s  {size / seconds:7.1f} MB/s  {len(images) / seconds:7.1f} images/s")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep:
            print(f"work folder: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
