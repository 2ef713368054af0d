"""The conformance statement cannot lie: for each shipped profile, the agent is started and pynetdicom
proposes every SOP class and transfer syntax of the standard; what the agent accepts must be exactly
what the statement (generated in-process from the same profile) lists, with the same roles and the same
transfer syntax preference. Timeouts, PDU size, implementation identity and observed statuses must be
the ones the statement gives.

One agent per profile (module-scoped); the exhaustive class x transfer syntax sweep runs on the embedded
default profile (whose statement is committed as docs/conformance.md), the others get every class with
every syntax in one context, every syntax of one class per statement group, roles and orders."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pydicom.dataset import Dataset, FileMetaDataset

from agent.conformance import statement
from agent.conformance.model import AcceptedClass, Statement
from agent.conformance.settings import duration
from agent.profile import Profile, load_profile
from tests.conftest import free_port, require_pynetdicom
from tests.interop.conformance_peer import (
    ALL_SOP_CLASSES,
    ALL_TRANSFER_SYNTAXES,
    Proposal,
    loopback_profile,
    propose,
    shipped_profiles,
)

pytestmark = pytest.mark.interop

UNCOMPRESSED = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
VERIFICATION = "1.2.840.10008.1.1"
GRAYSCALE_META, FILM_SESSION = "1.2.840.10008.5.1.1.9", "1.2.840.10008.5.1.1.1"
PRINTER, PRINTER_INSTANCE = "1.2.840.10008.5.1.1.16", "1.2.840.10008.5.1.1.17"

# Shipped profiles with the same text are one agent (profiles/default.toml is the embedded default).
_UNIQUE: dict[str, str] = {}
for _name, _text in shipped_profiles():
    if _text not in _UNIQUE.values():
        _UNIQUE[_name] = _text
EXHAUSTIVE = "embedded-default"
# Query/Retrieve is off in every shipped profile (commented out in the default one): the archive with
# `[query]` on covers its SOP classes, the storage classes C-GET uses and its extended negotiation.
if not any("\n[query]" in text for text in _UNIQUE.values()):
    _UNIQUE["archive-with-query"] = dict(shipped_profiles())["archive"] + "\n[query]\n"


@dataclass
class Running:
    name: str
    port: int
    profile: Profile
    doc: Statement

    @property
    def accepted(self) -> dict[str, AcceptedClass]:
        return {c.uid: c for c in self.doc.facts.accepted}


def _wait_listening(port: int, proc: subprocess.Popen[bytes], deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        assert proc.poll() is None, f"the agent exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the agent did not listen on {port} within {deadline} s")


@pytest.fixture(scope="module", params=list(_UNIQUE), ids=list(_UNIQUE))
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    require_pynetdicom()
    name = request.param
    folder = tmp_path_factory.mktemp(f"conformance-{name}")
    port = free_port()
    path = loopback_profile(_UNIQUE[name], folder, port, free_port())
    profile = load_profile(path)
    doc = statement(profile)  # in-process, from the very profile the agent runs
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--profile", str(path)],
                            stdout=subprocess.DEVNULL, stderr=open(folder / "agent.log", "wb"), env=env)
    try:
        _wait_listening(port, proc)
        yield Running(name, port, profile, doc)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def expected_pick(c: AcceptedClass, proposed: tuple[str, ...]) -> str | None:
    """The transfer syntax the statement's rules (7.2.2) say the agent picks; None: rejected."""
    if proposed[0] in c.as_proposed:
        return proposed[0]
    for ts in c.transfer_syntaxes:
        if ts in proposed:
            return ts
    for ts in proposed:
        if ts in c.as_proposed:
            return ts
    return proposed[0] if c.accept_any_other else None


def _scp_uids(doc: Statement) -> set[str]:
    """Every SOP Class UID the statement's SCP sections list in their tables."""
    out: set[str] = set()
    for s in doc.sections:
        if s.title.startswith("SCP of") and not s.not_applicable:
            for block in s.blocks:
                for row in getattr(block, "rows", ()):
                    if "SOP Class UID" in getattr(block, "head", ()):
                        out.add(row[1])
    return out


def test_accepts_exactly_the_classes_listed(running: Running) -> None:
    outcomes = list(propose(running.port, running.doc.facts.ae_title,
                            [Proposal(uid, ALL_TRANSFER_SYNTAXES) for uid in ALL_SOP_CLASSES]))
    on_wire = {o.proposal.abstract_syntax for o in outcomes if o.accepted}
    assert on_wire == set(running.accepted), (
        f"accepted but not listed: {sorted(on_wire - set(running.accepted))}; "
        f"listed but refused: {sorted(set(running.accepted) - on_wire)}")
    assert _scp_uids(running.doc) == on_wire  # the rendered SCP tables say the same
    for o in outcomes:
        if o.accepted:  # no role selection: we are SCU, the agent SCP (7.2.2)
            assert (o.as_scu, o.as_scp) == (True, False), o.proposal.abstract_syntax
            assert o.transfer_syntax == expected_pick(running.accepted[o.proposal.abstract_syntax],
                                                      tuple(ALL_TRANSFER_SYNTAXES))


def _sample(running: Running) -> list[AcceptedClass]:
    """Every accepted class for the exhaustive profile; one per group the statement lists together
    (same transfer syntaxes, same roles) for the others."""
    classes = list(running.accepted.values())
    if running.name == EXHAUSTIVE:
        return classes
    groups: dict[tuple, AcceptedClass] = {}
    for c in classes:
        groups.setdefault((c.transfer_syntaxes, c.as_proposed, c.accept_any_other, c.requestor_may_be_scu,
                           c.requestor_may_be_scp, c.extended_negotiation), c)
    return list(groups.values())


def test_each_transfer_syntax_alone(running: Running) -> None:
    classes = _sample(running)
    proposals = [Proposal(c.uid, (ts,)) for ts in ALL_TRANSFER_SYNTAXES for c in classes]
    for o in propose(running.port, running.doc.facts.ae_title, proposals):
        c = running.accepted[o.proposal.abstract_syntax]
        ts = o.proposal.transfer_syntaxes[0]
        listed = ts in c.transfer_syntaxes or ts in c.as_proposed or c.accept_any_other
        assert o.accepted == listed, f"{c.name} with {ts}: accepted={o.accepted}, statement says {listed}"


def test_transfer_syntax_preference(running: Running) -> None:
    orders: list[tuple[str, ...]] = [
        tuple(reversed(ALL_TRANSFER_SYNTAXES)),
        tuple(reversed(UNCOMPRESSED)),
        UNCOMPRESSED[1:] + UNCOMPRESSED[:1],
        tuple(ts for ts in ALL_TRANSFER_SYNTAXES if ts not in UNCOMPRESSED) + UNCOMPRESSED,
        UNCOMPRESSED + tuple(ts for ts in ALL_TRANSFER_SYNTAXES if ts not in UNCOMPRESSED),
    ]
    proposals = [Proposal(c.uid, order) for order in orders for c in _sample(running)]
    checked = 0
    for o in propose(running.port, running.doc.facts.ae_title, proposals):
        c = running.accepted[o.proposal.abstract_syntax]
        want = expected_pick(c, tuple(o.proposal.transfer_syntaxes))
        assert (o.transfer_syntax if o.accepted else None) == want, (
            f"{c.name} proposed {o.proposal.transfer_syntaxes[:3]}...: got {o.transfer_syntax}, statement: {want}")
        checked += 1
    assert checked == len(proposals)


@pytest.mark.parametrize("roles", [(True, True), (False, True), (True, False)], ids=["both", "scp", "scu"])
def test_roles_with_role_selection(running: Running, roles: tuple[bool, bool]) -> None:
    proposals = [Proposal(c.uid, UNCOMPRESSED, roles) for c in running.accepted.values()]
    for o in propose(running.port, running.doc.facts.ae_title, proposals):
        c = running.accepted[o.proposal.abstract_syntax]
        scu, scp = roles[0] and c.requestor_may_be_scu, roles[1] and c.requestor_may_be_scp
        assert o.accepted == (scu or scp), f"{c.name} roles {roles}: accepted={o.accepted}"
        if o.accepted:
            assert (o.as_scu, o.as_scp) == (scu, scp), f"{c.name} roles {roles}: got {(o.as_scu, o.as_scp)}"


def test_extended_negotiation_answered_where_listed(running: Running) -> None:
    """Every accepted class is proposed with a SOP Class Extended Negotiation item asking for all (byte
    value 1): the agent replies for exactly the classes the statement says it answers."""
    proposals = [Proposal(c.uid, UNCOMPRESSED, extended=b"\x01\x01\x01\x01") for c in _sample(running)]
    query = getattr(running.profile, "query", None)
    for o in propose(running.port, running.doc.facts.ae_title, proposals):
        c = running.accepted[o.proposal.abstract_syntax]
        assert o.accepted and (o.extended_reply is not None) == c.extended_negotiation, c.name
        if o.extended_reply is not None and c.service == "Query/Retrieve" and query is not None:
            # relational queries as the profile says; the other options declined (statement 5.2.4.2)
            assert o.extended_reply[:1] == (b"\x01" if query.relational else b"\x00"), o.extended_reply
            assert set(o.extended_reply[1:]) <= {0}


def _answered(doc: Statement, code: int) -> bool:
    return any(e.code == code for entries in doc.facts.statuses.values() for e in entries)


def test_association_parameters_and_statuses_match(running: Running) -> None:
    from pynetdicom import AE, build_context

    facts, a = running.doc.facts, running.profile.agent
    assert facts.timeouts == {"connect": a.connect_timeout, "artim": a.artim_timeout, "dimse": a.dimse_timeout,
                              "idle": a.idle_timeout}
    text = "\n".join(" | ".join(row) for s in running.doc.sections for b in s.blocks for row in getattr(b, "rows", ()))
    for label, value in (("ARTIM timeout", a.artim_timeout), ("DIMSE response timeout", a.dimse_timeout),
                         ("Network idle timeout", a.idle_timeout), ("TCP connect timeout", a.connect_timeout)):
        shown = duration(value)  # "300 s" reads "5 min"
        assert f"{label} (association request and release) | {shown}" in text or f"{label} | {shown}" in text
    assert f"Associations accepted at once | {a.max_associations};" in text

    ae = AE(ae_title="CONFTEST")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    contexts = [build_context(VERIFICATION)]
    storage = [c for c in facts.accepted if "C-STORE" in c.operations][:2]
    contexts += [build_context(c.uid, list(UNCOMPRESSED)) for c in storage]
    mwl = next((c for c in facts.accepted if c.service == "Basic Worklist Management"), None)
    if mwl is not None:
        contexts.append(build_context(mwl.uid, list(UNCOMPRESSED)))
    meta = running.accepted.get(GRAYSCALE_META)
    if meta is not None:
        contexts.append(build_context(GRAYSCALE_META, list(UNCOMPRESSED)))
    assoc = ae.associate("127.0.0.1", running.port, contexts=contexts, ae_title=facts.ae_title)
    assert assoc.is_established
    try:
        assert assoc.acceptor.maximum_length == facts.max_pdu_receive
        assert assoc.acceptor.implementation_class_uid == facts.implementation_class_uid
        assert assoc.acceptor.implementation_version_name == facts.implementation_version_name
        status = assoc.send_c_echo()
        assert status.Status == 0 and _answered(running.doc, 0)
        if storage:
            ds = Dataset()
            ds.SOPClassUID, ds.SOPInstanceUID = storage[0].uid, "1.2.826.0.1.3680043.10.543.7"
            ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CONF", "1.2.3.4", "1.2.3.4.5"
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = UNCOMPRESSED[0]
            ds.set_original_encoding(True, True)
            stored = assoc.send_c_store(ds)
            assert stored.Status in {e.code for e in facts.statuses["Storage SCP (C-STORE)"]}
        if meta is not None:  # the operations the statement lists per member class are the ones performed
            listed = {e.code for e in facts.statuses["Print SCP (all Print Management SOP classes)"]}
            printer = running.accepted[PRINTER]
            status, _ = assoc.send_n_get([0x21100010], PRINTER, PRINTER_INSTANCE, meta_uid=GRAYSCALE_META)
            assert "N-GET" in printer.operations and status.Status == 0
            session = running.accepted[FILM_SESSION]
            status, _ = assoc.send_n_get([0x20000010], FILM_SESSION, "1.2.826.0.1.3680043.10.543.9",
                                         meta_uid=GRAYSCALE_META)
            assert "N-GET" not in session.operations and status.Status == 0x0211 and 0x0211 in listed
        if mwl is not None:
            query = Dataset()
            query.PatientName = ""
            listed = {e.code for e in facts.statuses["Modality Worklist SCP (C-FIND)"]}
            answered = [st.Status for st, _ in assoc.send_c_find(query, mwl.uid) if st]
            assert answered and set(answered) <= listed, f"C-FIND answered {answered}, statement lists {listed}"
    finally:
        assoc.release()
