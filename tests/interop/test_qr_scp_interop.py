"""The agent's Query/Retrieve SCP against DCMTK (findscu, movescu, getscu) and pynetdicom, with DCMTK's
dcmqrscp over the same files as the reference for every result set.

One agent process, one dcmqrscp and one storescp serve the whole module; both archives are filled
with storescu from the same files (three patients, four studies, seven images; an ISO_IR 100 and an
ISO_IR 192 name). What is compared is what a user sees: which entities each query returns.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

from tests.conftest import free_port, require_pynetdicom, require_tool
from tests.interop.qr_peers import (POLISH, ROOT, STUDIES, all_images, dcmqrscp, identifier, make_archive,
                                    offending_tags, wait_port)

pytestmark = pytest.mark.interop

PEER_ENV = {**os.environ, "TCP_NODELAY": "1"}
AGENT_AE = "QRAGENT"


@dataclass
class Setup:
    work: Path
    agent_port: int
    dcmqrscp_port: int
    storescp_port: int
    storescp_dir: Path
    movescu_port: int
    down_port: int
    files: list[Path]


def _profile(work: Path, port: int, storescp_port: int, movescu_port: int, down_port: int, slow_port: int) -> Path:
    path = work / "agent" / "profile.toml"
    path.parent.mkdir(parents=True)
    path.write_text(f"""
[agent]
ae_title = "{AGENT_AE}"
bind = "127.0.0.1"
port = {port}
data_dir = "{work / 'agent' / 'data'}"
dimse_timeout = "30s"

[peers.store]
ae_title = "STORESCP"
host = "127.0.0.1"
port = {storescp_port}

[peers.self]
ae_title = "MOVESCU"
host = "127.0.0.1"
port = {movescu_port}

[peers.down]
ae_title = "DOWN"
host = "127.0.0.1"
port = {down_port}
retry_base = "60s"

[peers.slow]
ae_title = "SLOW"
host = "127.0.0.1"
port = {slow_port}
retry_base = "1s"
retry_cap = "2s"

[peers.flaky]
ae_title = "FLAKY"
host = "127.0.0.1"
port = {FLAKY_PORT}
retry_base = "5s"
retry_cap = "5s"

[peers.hidden]
ae_title = "HIDDEN"
host = "127.0.0.1"
port = {down_port}

[storage]

[query]
move_destinations = ["store", "self", "down", "slow", "flaky"]
""")
    return path


SLOW_PORT, FLAKY_PORT = free_port(), free_port()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    for tool in ("dcmqrscp", "storescu", "storescp", "findscu", "movescu", "getscu"):
        require_tool(tool)
    work = tmp_path_factory.mktemp("qrscp")
    files = make_archive(work / "files")
    port, storescp_port, movescu_port, down_port = free_port(), free_port(), free_port(), free_port()
    profile = _profile(work, port, storescp_port, movescu_port, down_port, SLOW_PORT)
    storescp_dir = work / "storescp"
    storescp_dir.mkdir()
    with open(work / "agent.log", "wb") as log, open(work / "storescp.log", "wb") as slog:
        agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--profile", str(profile)],
                                 stdout=log, stderr=subprocess.STDOUT)
        storescp = subprocess.Popen(["storescp", "--promiscuous", "-aet", "STORESCP", "-od", str(storescp_dir),
                                     str(storescp_port)], env=PEER_ENV, stdout=slog, stderr=subprocess.STDOUT)
    try:
        wait_port(port, agent)
        wait_port(storescp_port, storescp)
        done = subprocess.run(["storescu", "-aec", AGENT_AE, "127.0.0.1", str(port), *map(str, files)],
                              env=PEER_ENV, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        with dcmqrscp(work / "reference", files, destinations=[("MOVESCU", movescu_port)]) as qr_port:
            yield Setup(work, port, qr_port, storescp_port, storescp_dir, movescu_port, down_port, files)
    finally:
        for proc in (agent, storescp):
            proc.terminate()
            proc.wait(timeout=30)


# ------------------------------------------------------------------ findscu, agent vs dcmqrscp


def findscu(port: int, ae: str, root: str, keys: list[bytes], out: Path) -> list[Dataset]:
    """findscu -S|-P with `keys` (bytes, so a Latin-1 value reaches the peer as Latin-1); the
    responses as data sets (findscu -X writes one file per response)."""
    out.mkdir(parents=True)
    args: list[bytes | str] = ["findscu", root, "-aec", ae, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    done = subprocess.run([*args, "127.0.0.1", str(port)], env=PEER_ENV, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return [dcmread(p, force=True) for p in sorted(out.glob("rsp*.dcm"))]


QUERIES: list[tuple[str, str, list[bytes]]] = [
    # (root, unique key read back, keys)
    ("-P", "PatientID", [b"QueryRetrieveLevel=PATIENT", b"PatientID", b"PatientName"]),
    ("-P", "PatientID", [b"QueryRetrieveLevel=PATIENT", b"PatientID", b"PatientName=DOE*"]),
    ("-P", "StudyInstanceUID", [b"QueryRetrieveLevel=STUDY", b"PatientID=QR-P1", b"StudyInstanceUID"]),
    ("-P", "SeriesInstanceUID", [b"QueryRetrieveLevel=SERIES", b"PatientID=QR-P3",
                                 b"StudyInstanceUID=" + f"{ROOT}.4".encode(), b"SeriesInstanceUID", b"Modality"]),
    ("-P", "SOPInstanceUID", [b"QueryRetrieveLevel=IMAGE", b"PatientID=QR-P3", b"StudyInstanceUID=" +
                              f"{ROOT}.4".encode(), b"SeriesInstanceUID=" + f"{ROOT}.4.1".encode(),
                              b"SOPInstanceUID"]),
    ("-S", "StudyInstanceUID", [b"QueryRetrieveLevel=STUDY", b"StudyInstanceUID", b"PatientName"]),
    ("-S", "StudyInstanceUID", [b"QueryRetrieveLevel=STUDY", b"StudyInstanceUID", b"StudyDate=20240101-20240611"]),
    ("-S", "StudyInstanceUID", [b"QueryRetrieveLevel=STUDY", b"StudyInstanceUID", b"StudyDate=20240611-"]),
    ("-S", "StudyInstanceUID", [b"QueryRetrieveLevel=STUDY", b"StudyInstanceUID", b"StudyDate=-20240310"]),
    ("-S", "StudyInstanceUID", [b"QueryRetrieveLevel=STUDY", b"StudyInstanceUID", b"AccessionNumber=A?"]),
    ("-S", "StudyInstanceUID", [b"QueryRetrieveLevel=STUDY", b"StudyInstanceUID=" +
                                f"{ROOT}.1\\{ROOT}.4".encode(), b"PatientID"]),
    ("-S", "StudyInstanceUID", [b"QueryRetrieveLevel=STUDY", b"StudyInstanceUID", b"StudyDescription=*E*"]),
    # ISO_IR 100: the identifier's own character set, Latin-1 bytes on the wire.
    ("-S", "StudyInstanceUID", [b"SpecificCharacterSet=ISO_IR 100", b"QueryRetrieveLevel=STUDY",
                                b"StudyInstanceUID", b"PatientName=M\xdcLLER*"]),
    # ISO_IR 192: UTF-8, all three component groups.
    ("-S", "StudyInstanceUID", [b"SpecificCharacterSet=ISO_IR 192", b"QueryRetrieveLevel=STUDY",
                                b"StudyInstanceUID", "PatientName=Wałęsa*".encode()]),
    ("-S", "SeriesInstanceUID", [b"QueryRetrieveLevel=SERIES", b"StudyInstanceUID=" + f"{ROOT}.4".encode(),
                                 b"SeriesInstanceUID", b"Modality=CT"]),
    ("-S", "SOPInstanceUID", [b"QueryRetrieveLevel=IMAGE", b"StudyInstanceUID=" + f"{ROOT}.1".encode(),
                              b"SeriesInstanceUID=" + f"{ROOT}.1.1".encode(), b"SOPInstanceUID"]),
]


def test_findscu_result_sets_equal_dcmqrscp(setup: Setup) -> None:
    """Each query of QUERIES, patient and study root, every level, wildcards, ranges, UID lists and
    both character sets: the agent returns exactly the entities dcmqrscp returns, and some."""
    for n, (root, unique, keys) in enumerate(QUERIES):
        ours = findscu(setup.agent_port, AGENT_AE, root, keys, setup.work / f"find{n}" / "agent")
        theirs = findscu(setup.dcmqrscp_port, "QRSCP", root, keys, setup.work / f"find{n}" / "dcmqrscp")
        got = sorted(str(ds.get(unique, "")) for ds in ours)
        want = sorted(str(ds.get(unique, "")) for ds in theirs)
        assert got == want, (keys, got, want)
        assert got, keys  # every query above has matches: an empty answer would prove nothing
    # The names come back intact, in the character set they were stored in.
    studies = findscu(setup.agent_port, AGENT_AE, "-S", [b"QueryRetrieveLevel=STUDY", b"StudyInstanceUID",
                                                          b"PatientName", b"PatientID"], setup.work / "names")
    names = {str(ds.PatientID): (str(ds.PatientName), ds.get("SpecificCharacterSet")) for ds in studies}
    assert names["QR-P1"] == ("MÜLLER^JÜRGEN", "ISO_IR 100")
    assert names["QR-P2"] == (POLISH, "ISO_IR 192")


def test_findscu_counts_and_modalities(setup: Setup) -> None:
    """Study-level computed keys: numbers of related series / instances, modalities in study."""
    studies = findscu(setup.agent_port, AGENT_AE, "-S", [
        b"QueryRetrieveLevel=STUDY", b"StudyInstanceUID", b"ModalitiesInStudy", b"NumberOfStudyRelatedSeries",
        b"NumberOfStudyRelatedInstances"], setup.work / "counts")
    by_uid = {str(ds.StudyInstanceUID): ds for ds in studies}
    for st in STUDIES:
        ds = by_uid[st.study_uid]
        assert int(ds.NumberOfStudyRelatedSeries) == len(st.series)
        assert int(ds.NumberOfStudyRelatedInstances) == sum(c for _, c in st.series)
        assert ds.ModalitiesInStudy == st.modality
    ct_only = findscu(setup.agent_port, AGENT_AE, "-S", [b"QueryRetrieveLevel=STUDY", b"StudyInstanceUID",
                                                         b"ModalitiesInStudy=MR"], setup.work / "mr")
    assert [str(ds.StudyInstanceUID) for ds in ct_only] == [f"{ROOT}.2"]


# ------------------------------------------------------------------ movescu and getscu


def _received(directory: Path) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in directory.rglob("*") if p.is_file()}


def test_movescu_to_storescp_and_back_to_itself(setup: Setup) -> None:
    """movescu asks the agent to move a study to DCMTK's storescp, then to movescu's own port
    (--port): the same instances arrive as when dcmqrscp is asked the same."""
    study = f"{ROOT}.4"
    want = {u for u in all_images() if u.startswith(study + ".")}
    done = subprocess.run(["movescu", "-S", "-aec", AGENT_AE, "-aem", "STORESCP", "-k", "QueryRetrieveLevel=STUDY",
                           "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(setup.agent_port)],
                          env=PEER_ENV, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert want <= _received(setup.storescp_dir)  # C-MOVE-RSP success comes after the last store

    for name, port, ae in (("agent", setup.agent_port, AGENT_AE), ("dcmqrscp", setup.dcmqrscp_port, "QRSCP")):
        out = setup.work / f"movescu-{name}"
        out.mkdir()
        done = subprocess.run(["movescu", "-S", "-aet", "MOVESCU", "-aec", ae, "-aem", "MOVESCU", "--port",
                               str(setup.movescu_port), "-od", str(out), "-k", "QueryRetrieveLevel=SERIES",
                               "-k", f"StudyInstanceUID={study}", "-k", f"SeriesInstanceUID={study}.1",
                               "127.0.0.1", str(port)], env=PEER_ENV, capture_output=True, timeout=120)
        assert done.returncode == 0, (name, done.stderr.decode(errors="replace"))
        assert _received(out) == {f"{study}.1.1", f"{study}.1.2"}, name


def test_getscu_same_instances_as_dcmqrscp(setup: Setup) -> None:
    for name, port, ae in (("agent", setup.agent_port, AGENT_AE), ("dcmqrscp", setup.dcmqrscp_port, "QRSCP")):
        out = setup.work / f"getscu-{name}"
        out.mkdir()
        done = subprocess.run(["getscu", "-S", "-aec", ae, "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                               "-k", f"StudyInstanceUID={ROOT}.1\\{ROOT}.3", "127.0.0.1", str(port)],
                              env=PEER_ENV, capture_output=True, timeout=120)
        assert done.returncode == 0, (name, done.stderr.decode(errors="replace"))
        assert _received(out) == {f"{ROOT}.1.1.1", f"{ROOT}.1.1.2", f"{ROOT}.3.1.1"}, name


# ------------------------------------------------------------------ pynetdicom as the SCU


def _ae(*contexts: str, get_roles: bool = False) -> object:
    from pynetdicom import AE, StoragePresentationContexts

    ae = AE(ae_title="PYNSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for uid in contexts:
        ae.add_requested_context(uid)
    if get_roles:
        for cx in StoragePresentationContexts[: 128 - len(contexts)]:
            ae.add_requested_context(cx.abstract_syntax)
    return ae


def _find(assoc: object, model: str, **keys: object) -> tuple[list[Dataset], Dataset]:
    """(matches, final status data set) of one C-FIND."""
    matches, final = [], None
    for status, answer in assoc.send_c_find(identifier(**keys), model):  # type: ignore[attr-defined]
        assert status is not None and "Status" in status, "no response"
        if status.Status in (0xFF00, 0xFF01):
            matches.append(answer)
        else:
            final = status
    assert final is not None
    return matches, final


def test_pynetdicom_find_move_get_and_bad_input(setup: Setup) -> None:
    """pynetdicom's SCU: FIND on both roots, MOVE to storescp, GET with role selection; then every
    refusal a user can meet, each naming what was wrong, on one association."""
    require_pynetdicom()
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import (
        PatientRootQueryRetrieveInformationModelFind as PFIND,
        StudyRootQueryRetrieveInformationModelFind as SFIND,
        StudyRootQueryRetrieveInformationModelGet as SGET,
        StudyRootQueryRetrieveInformationModelMove as SMOVE,
    )

    ae = _ae(PFIND, SFIND, SMOVE)
    assoc = ae.associate("127.0.0.1", setup.agent_port, ae_title=AGENT_AE)  # type: ignore[attr-defined]
    assert assoc.is_established
    try:
        found, final = _find(assoc, PFIND, QueryRetrieveLevel="PATIENT", PatientID="", PatientName="",
                             NumberOfPatientRelatedStudies="")
        assert final.Status == 0x0000
        assert {str(m.PatientID): int(m.NumberOfPatientRelatedStudies) for m in found} == {
            "QR-P1": 2, "QR-P2": 1, "QR-P3": 1}
        found, final = _find(assoc, SFIND, QueryRetrieveLevel="STUDY", StudyInstanceUID="", PatientName="müller*",
                             SpecificCharacterSet="ISO_IR 192")
        assert sorted(str(m.StudyInstanceUID) for m in found) == [f"{ROOT}.1", f"{ROOT}.2"]  # PN: any case

        # Refusals: a key below the level, an unknown level, a missing upper unique key.
        found, final = _find(assoc, SFIND, QueryRetrieveLevel="STUDY", StudyInstanceUID="", SOPInstanceUID="")
        assert (final.Status, offending_tags(final.OffendingElement)) == (0xA900, [0x00080018]) and not found
        assert "SOPInstanceUID" in final.ErrorComment
        found, final = _find(assoc, SFIND, QueryRetrieveLevel="FRAME", StudyInstanceUID="")
        assert (final.Status, offending_tags(final.OffendingElement)) == (0xC001, [0x00080052])
        found, final = _find(assoc, SFIND, QueryRetrieveLevel="SERIES", SeriesInstanceUID="")
        assert (final.Status, offending_tags(final.OffendingElement)) == (0xA900, [0x0020000D])
        # A key the index does not hold, with a value: answered, flagged FF01, not used to match.
        statuses = [s.Status for s, _ in assoc.send_c_find(identifier(  # type: ignore[attr-defined]
            QueryRetrieveLevel="STUDY", StudyInstanceUID=f"{ROOT}.1", InstitutionName="X*"), SFIND)]
        assert statuses == [0xFF01, 0x0000]

        # MOVE: to storescp; to an AE that is no peer, and to a peer not allowed as destination: A801.
        statuses = [s.Status for s, _ in assoc.send_c_move(  # type: ignore[attr-defined]
            identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=f"{ROOT}.2"), "STORESCP", SMOVE)]
        assert statuses[-1] == 0x0000
        assert f"{ROOT}.2.1.1" in _received(setup.storescp_dir)
        for dest in ("NOBODY", "HIDDEN"):
            replies = list(assoc.send_c_move(  # type: ignore[attr-defined]
                identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=f"{ROOT}.2"), dest, SMOVE))
            assert [s.Status for s, _ in replies] == [0xA801], dest
        replies = list(assoc.send_c_move(  # type: ignore[attr-defined]
            identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID="*"), "STORESCP", SMOVE))
        assert replies[-1][0].Status == 0xA900 and offending_tags(replies[-1][0].OffendingElement) == [0x0020000D]
    finally:
        assoc.release()

    # GET with role selection: the instances come back on this association.
    got: list[str] = []

    def on_store(event: object) -> int:
        got.append(str(event.request.AffectedSOPInstanceUID))  # type: ignore[attr-defined]
        return 0x0000

    ae = _ae(SGET, get_roles=True)
    roles = [build_role(cx.abstract_syntax, scp_role=True) for cx in ae.requested_contexts[1:]]  # type: ignore[attr-defined]
    assoc = ae.associate("127.0.0.1", setup.agent_port, ae_title=AGENT_AE, ext_neg=roles,  # type: ignore[attr-defined]
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        replies = list(assoc.send_c_get(identifier(QueryRetrieveLevel="SERIES", StudyInstanceUID=f"{ROOT}.4",
                                                    SeriesInstanceUID=f"{ROOT}.4.1"), SGET))
        final = replies[-1][0]
        assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 2, 0)
        assert [s.NumberOfRemainingSuboperations for s, _ in replies[:-1]] == [1]
        assert sorted(got) == [f"{ROOT}.4.1.1", f"{ROOT}.4.1.2"]
    finally:
        assoc.release()

    # C-CANCEL during a C-GET (sent by the first C-STORE's handler, before it answers): FE00 after
    # that sub-operation, the other two not sent.
    got.clear()
    cancel_from: list[object] = []

    def store_then_cancel(event: object) -> int:
        got.append(str(event.request.AffectedSOPInstanceUID))  # type: ignore[attr-defined]
        if len(got) == 1:
            assoc_, context_id = cancel_from
            assoc_.send_c_cancel(91, context_id)  # type: ignore[attr-defined]
        return 0x0000

    assoc = ae.associate("127.0.0.1", setup.agent_port, ae_title=AGENT_AE, ext_neg=roles,  # type: ignore[attr-defined]
                         evt_handlers=[(evt.EVT_C_STORE, store_then_cancel)])
    try:
        cancel_from[:] = [assoc, next(c.context_id for c in assoc.accepted_contexts if c.abstract_syntax == SGET)]
        replies = list(assoc.send_c_get(identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=f"{ROOT}.4"),
                                        SGET, msg_id=91))
        final = replies[-1][0]
        assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfRemainingSuboperations) == (
            0xFE00, 1, 2)
        assert got == [f"{ROOT}.4.1.1"]
    finally:
        assoc.release()

    # GET without role selection: no sub-operation can be performed; A702 lists every instance.
    ae = _ae(SGET, get_roles=True)
    assoc = ae.associate("127.0.0.1", setup.agent_port, ae_title=AGENT_AE)  # type: ignore[attr-defined]
    try:
        replies = list(assoc.send_c_get(identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=f"{ROOT}.1"), SGET))
        final, failed = replies[-1]
        assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0xA702, 0, 2)
        assert sorted(failed.FailedSOPInstanceUIDList) == [f"{ROOT}.1.1.1", f"{ROOT}.1.1.2"]
    finally:
        assoc.release()


def test_relational_query_only_when_negotiated(setup: Setup) -> None:
    """An IMAGE-level query by patient name alone: refused hierarchically (A900), answered when the SCU
    asked for relational queries in extended negotiation (PS3.4 C.5.1.1)."""
    require_pynetdicom()
    from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as SFIND

    keys = dict(QueryRetrieveLevel="IMAGE", PatientName="DOE*", SOPInstanceUID="")
    ae = _ae(SFIND)
    assoc = ae.associate("127.0.0.1", setup.agent_port, ae_title=AGENT_AE)  # type: ignore[attr-defined]
    try:
        found, final = _find(assoc, SFIND, **keys)
        assert final.Status == 0xA900 and not found
    finally:
        assoc.release()
    item = SOPClassExtendedNegotiation()
    item.sop_class_uid = SFIND
    item.service_class_application_information = b"\x01"
    assoc = ae.associate("127.0.0.1", setup.agent_port, ae_title=AGENT_AE, ext_neg=[item])  # type: ignore[attr-defined]
    try:
        found, final = _find(assoc, SFIND, **keys)
        assert final.Status == 0x0000
        assert sorted(str(m.SOPInstanceUID) for m in found) == [f"{ROOT}.4.1.1", f"{ROOT}.4.1.2", f"{ROOT}.4.2.1"]
    finally:
        assoc.release()


# ------------------------------------------------------------------ C-CANCEL, a destination going down


class SlowStore:
    """A pynetdicom Storage SCP (AE SLOW on SLOW_PORT, or FLAKY): `hold` makes it wait before answering
    its second C-STORE until `release` is set; `abort_second` makes it abort the association instead."""

    def __init__(self, *, hold: bool = False, abort_second: bool = False, ae_title: str = "SLOW",
                 port: int = SLOW_PORT) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.received: list[str] = []
        self.originators: set[tuple[str, int]] = set()  # (Move Originator AE Title, Message ID)
        self.release = threading.Event()
        self.holding = threading.Event()
        self.hold, self.abort_second = hold, abort_second
        ae = AE(ae_title=ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        self.server = ae.start_server(("127.0.0.1", port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.seen = 0

    def _store(self, event: object) -> int:
        self.seen += 1
        rq = event.request  # type: ignore[attr-defined]
        self.originators.add((str(rq.MoveOriginatorApplicationEntityTitle).strip(), int(rq.MoveOriginatorMessageID)))
        if self.seen == 2 and self.abort_second:
            self.abort_second = False
            event.assoc.abort()  # type: ignore[attr-defined]
            return 0xA700
        if self.seen == 2 and self.hold:
            self.holding.set()
            self.release.wait(60)
        self.received.append(str(event.request.AffectedSOPInstanceUID))  # type: ignore[attr-defined]
        return 0x0000

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()


def _jobs(setup: Setup, destination: str) -> dict[str, int]:
    """State -> count of the agent's queued C-MOVE sub-operations for `destination`."""
    import sqlite3

    db = sqlite3.connect(f"file:{setup.work / 'agent' / 'data' / 'agent.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT state, COUNT(*) FROM queue_jobs WHERE kind = 'move-store' AND destination = ? "
                          "GROUP BY state", (destination,)).fetchall()
    finally:
        db.close()
    return dict(rows)


def _wait(predicate: object, what: str, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_c_cancel_stops_the_move_and_answers_fe00(setup: Setup) -> None:
    """A C-CANCEL-RQ while the destination holds the second image: the third is never sent (dropped
    from the queue), the answer is FE00 with 1 completed and 2 remaining."""
    require_pynetdicom()
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as SMOVE

    slow = SlowStore(hold=True)
    try:
        assoc = _ae(SMOVE).associate("127.0.0.1", setup.agent_port, ae_title=AGENT_AE)  # type: ignore[attr-defined]
        context_id = assoc.accepted_contexts[0].context_id
        replies = []
        try:
            for status, _ in assoc.send_c_move(identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=f"{ROOT}.4"),
                                               "SLOW", SMOVE, msg_id=77):
                replies.append(status)
                if status.Status == 0xFF00 and status.NumberOfCompletedSuboperations == 1:
                    assert slow.holding.wait(60)
                    assoc.send_c_cancel(77, context_id)
        finally:
            assoc.release()
        final = replies[-1]
        assert final.Status == 0xFE00
        assert (final.NumberOfCompletedSuboperations, final.NumberOfRemainingSuboperations,
                final.NumberOfFailedSuboperations) == (1, 2, 0)
        slow.release.set()
        _wait(lambda: _jobs(setup, "slow").keys() <= {"done"}, "the held sub-operation to finish")
        assert slow.received == [f"{ROOT}.4.1.1", f"{ROOT}.4.1.2"]  # the third was never sent
        assert slow.originators == {("PYNSCU", 77)}  # each sub-operation names the C-MOVE it serves
        assert _jobs(setup, "slow") == {"done": 2}
    finally:
        slow.stop()


def test_destination_down_counts_failures_and_the_queue_retries(setup: Setup) -> None:
    """A destination nobody listens on: every sub-operation fails, B000 lists them all, and the jobs
    stay queued. A destination that aborts on the second image: 1 completed, 2 failed, and the queue
    delivers those two later without anyone asking again."""
    require_pynetdicom()
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as SMOVE

    assoc = _ae(SMOVE).associate("127.0.0.1", setup.agent_port, ae_title=AGENT_AE)  # type: ignore[attr-defined]
    try:
        replies = list(assoc.send_c_move(identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=f"{ROOT}.1"),
                                         "DOWN", SMOVE))
    finally:
        assoc.release()
    final, failed = replies[-1]
    assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0xB000, 0, 2)
    assert sorted(failed.FailedSOPInstanceUIDList) == [f"{ROOT}.1.1.1", f"{ROOT}.1.1.2"]
    assert _jobs(setup, "down") == {"pending": 2}  # retried by the queue, with the peer's backoff

    slow = SlowStore(abort_second=True, ae_title="FLAKY", port=FLAKY_PORT)
    try:
        assoc = _ae(SMOVE).associate("127.0.0.1", setup.agent_port, ae_title=AGENT_AE)  # type: ignore[attr-defined]
        try:
            replies = list(assoc.send_c_move(identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=f"{ROOT}.4"),
                                             "FLAKY", SMOVE))
        finally:
            assoc.release()
        final, failed = replies[-1]
        assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0xB000, 1, 2)
        assert sorted(failed.FailedSOPInstanceUIDList) == [f"{ROOT}.4.1.2", f"{ROOT}.4.2.1"]
        _wait(lambda: len(set(slow.received)) == 3, "the queue to deliver the failed sub-operations")
        assert set(slow.received) == {f"{ROOT}.4.1.1", f"{ROOT}.4.1.2", f"{ROOT}.4.2.1"}
    finally:
        slow.stop()
