"""The audit trail with a local file only (no repository): what an agent writes for authentication and
access decisions, for an echo, and at start and stop; nothing is queued when there is no repository.
The agent runs in-process; its peer is the agent's own SCU (the rsyslog tests are in tests/interop)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import trio

from agent.errors import AgentError
from agent.net.connection import Timeouts
from agent.security.audit_trail import DESTINATION
from agent.security.identity import ClientIdentity, hash_password
from agent.services.verification import echo
from tests.conftest import write_profile

FAST = Timeouts(artim=30, dimse=30, idle=30, connect=30)  # deadlines, not expectations


def read_local(path: Path) -> list[ET.Element]:
    """Every line of the audit file: an RFC 5424 header, then the XML (which must parse)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        assert line.startswith("<85>1 "), line
        out.append(ET.fromstring(line.split(" ", 7)[7].lstrip("\ufeff")))
    return out


def code_of(root: ET.Element, tag: str = "EventID") -> str:
    e = root.find(f"EventIdentification/{tag}")
    return "" if e is None else e.get("csd-code", "")


async def wait_for(path: Path, predicate) -> list[ET.Element]:
    with trio.fail_after(30):
        while True:
            roots = read_local(path) if path.exists() else []
            if predicate(roots):
                return roots
            await trio.sleep(0.02)


@pytest.fixture
def audited(tmp_path: Path):
    local = tmp_path / "audit.log"
    body = f"""
[security]
users = {{ alice = "{hash_password('S3cret-Kestrel-41')}" }}
require_identity = ["verification"]
[[security.access]]
calling_ae = "MODALITY"
services = ["verification"]

[audit]
local_file = "{local}"
"""
    return write_profile(tmp_path, body), local


async def test_authentication_access_and_application_activity_are_written_to_the_local_file(
        audited, start_agent) -> None:
    profile, local = audited
    agent = await start_agent(profile)
    port = agent.port
    ok = await echo("127.0.0.1", port, calling_ae="MODALITY", called_ae="AGENT", timeouts=FAST,
                    user_identity=ClientIdentity("username-passcode", "alice", "S3cret-Kestrel-41"))
    assert ok.status == 0
    with pytest.raises(AgentError):  # Bad-Osprey-77: rejected
        await echo("127.0.0.1", port, calling_ae="MODALITY", called_ae="AGENT", timeouts=FAST,
                   user_identity=ClientIdentity("username-passcode", "alice", "Bad-Osprey-77"))
    with pytest.raises(AgentError):  # a calling AE no rule names: rejected
        await echo("127.0.0.1", port, calling_ae="STRANGER", called_ae="AGENT", timeouts=FAST,
                   user_identity=ClientIdentity("username-passcode", "alice", "S3cret-Kestrel-41"))

    roots = await wait_for(local, lambda rs: sum(code_of(r) == "110113" for r in rs) >= 2
                           and sum(code_of(r) == "110114" for r in rs) >= 2)
    text = local.read_text(encoding="utf-8")
    assert "S3cret-Kestrel-41" not in text and "Bad-Osprey-77" not in text

    assert code_of(roots[0]) == "110100" and code_of(roots[0], "EventTypeCode") == "110120"  # Application Start
    logins = [r for r in roots if code_of(r) == "110114"]
    outcomes = sorted(r.find("EventIdentification").get("EventOutcomeIndicator") for r in logins)
    assert outcomes == ["0", "0", "4"]  # MODALITY and STRANGER (then refused for its AE) succeed, one fails
    for r in logins:
        user = next(p for p in r.findall("ActiveParticipant") if p.get("UserIsRequestor") == "true")
        assert user.get("UserID") == "alice" and user.get("AlternativeUserID") in ("AETITLES=MODALITY", "AETITLES=STRANGER")
        assert user.get("NetworkAccessPointID") == "127.0.0.1"
        assert code_of(r, "EventTypeCode") == "110122"  # Login
    alerts = [r for r in roots if code_of(r) == "110113"]
    described = " ".join(r.findtext("EventIdentification/EventOutcomeDescription", "") for r in alerts)
    assert "authentication-failed" in described and "access-denied" in described
    denied = next(r for r in alerts if "access-denied" in r.findtext("EventIdentification/EventOutcomeDescription", ""))
    assert code_of(denied, "EventTypeCode") == "110132"  # Use of Restricted Function
    (obj,) = denied.findall("ParticipantObjectIdentification")
    assert obj.get("ParticipantObjectID") == "STRANGER" and obj.get("ParticipantObjectTypeCodeRole") == "13"
    # The successful echo: its association, Verification as the object.
    assoc = [r for r in roots if code_of(r) == "ASSOCIATION"]
    assert [o.get("ParticipantObjectID") for r in assoc for o in r.findall("ParticipantObjectIdentification")] \
        == ["1.2.840.10008.1.1"]
    # No repository: nothing queued.
    assert agent.agent.queue.list(destination=DESTINATION) == []

    agent.cancel_scope.cancel()  # stop: Application Stop is written on the way out
    roots = await wait_for(local, lambda rs: any(code_of(r, "EventTypeCode") == "110121" for r in rs))
    assert code_of(roots[-1], "EventTypeCode") == "110121"


async def test_only_the_selected_events_are_written(tmp_path: Path, start_agent) -> None:
    local = tmp_path / "audit.log"
    profile = write_profile(tmp_path, f'[audit]\nlocal_file = "{local}"\nevents = ["association"]\n')
    agent = await start_agent(profile)
    await echo("127.0.0.1", agent.port, calling_ae="MODALITY", called_ae="AGENT", timeouts=FAST)
    roots = await wait_for(local, lambda rs: len(rs) >= 1)
    assert [code_of(r) for r in roots] == ["ASSOCIATION"]  # no Application Start: not selected


async def test_mpps_create_and_set_are_procedure_records(tmp_path: Path, start_agent) -> None:
    """PS3.15 A.5.3.10: N-CREATE (action C) and N-SET (action U) each leave a Procedure Record naming the
    MPPS instance and the patient (known from the N-CREATE when the N-SET does not repeat it)."""
    from pydicom.uid import generate_uid

    from tests.integration.test_mpps import connect, n_create, n_set, status_only, unscheduled

    local = tmp_path / "audit.log"
    profile = write_profile(tmp_path, f'[mpps]\nserve = true\n\n[audit]\nlocal_file = "{local}"\n')
    agent = await start_agent(profile)
    uid = generate_uid()
    async with connect(agent.port) as conn:
        assert (await n_create(conn, uid, unscheduled())).status == 0
        assert (await n_set(conn, uid, status_only("COMPLETED"))).status == 0
    roots = await wait_for(local, lambda rs: sum(code_of(r) == "110111" for r in rs) >= 2)
    records = [r for r in roots if code_of(r) == "110111"]
    assert [r.find("EventIdentification").get("EventActionCode") for r in records] == ["C", "U"]
    for r in records:
        objs = r.findall("ParticipantObjectIdentification")
        assert [o.find("ParticipantObjectDescription/MPPS").get("UID") for o in objs
                if o.get("ParticipantObjectTypeCodeRole") == "3"] == [uid]
        assert [o.get("ParticipantObjectID") for o in objs if o.get("ParticipantObjectTypeCodeRole") == "1"] == ["P1"]
        roles = {p.find("RoleIDCode").get("csd-code"): p.get("UserID") for p in r.findall("ActiveParticipant")}
        assert roles == {"110153": "MODALITY", "110152": "AGENT"}
    assert "DOE" not in local.read_text(encoding="utf-8")  # patient names never enter the audit trail
    # The association carried audited operations: no separate Association message for it.
    assert not [r for r in roots if code_of(r) == "ASSOCIATION"]


async def test_forwarded_instances_are_begin_transferring_and_instances_transferred(tmp_path: Path, start_agent) -> None:
    """PS3.15 A.5.3.2 and A.5.3.4 on the sending side: what the forwarding queue sent to another agent,
    per association, with the study and patient named from the index; the receiving agent audits its side."""
    from agent.net.client import associate
    from agent.services.storage_scu import proposals_for, scan, send_file
    from tests.interop.storage_helpers import STUDY_UID, make_image

    archive_log, forwarder_log = tmp_path / "archive-audit.log", tmp_path / "forwarder-audit.log"
    archive = await start_agent(write_profile(tmp_path / "archive", f'[storage]\n\n[audit]\nlocal_file = "{archive_log}"\n',
                                              ae_title="ARCHIVE"))
    forwarder = await start_agent(write_profile(tmp_path / "fwd", f"""
[peers.archive]
ae_title = "ARCHIVE"
host = "127.0.0.1"
port = {archive.port}

[storage]
forward_to = ["archive"]

[audit]
local_file = "{forwarder_log}"
""", ae_title="FORWARDER"))
    images = [make_image(tmp_path / f"img{i}.dcm", patient_id="PID-FWD", instance_number=i, seed=i) for i in range(2)]
    items = scan(images).items
    async with associate("127.0.0.1", forwarder.port, calling_ae="MODALITY", called_ae="FORWARDER",
                         proposals=[p for ps in proposals_for(items) for p in ps], timeouts=FAST) as conn:
        for item in items:
            assert (await send_file(conn, item)).status == 0

    roots = await wait_for(forwarder_log, lambda rs: any(code_of(r) == "110102" for r in rs)
                           and sum(code_of(r) == "110104" for r in rs) >= 2)
    begin = next(r for r in roots if code_of(r) == "110102")
    sent = next(r for r in roots if code_of(r) == "110104" and r.find("EventIdentification").get("EventActionCode") == "R")
    received = next(r for r in roots if code_of(r) == "110104" and r.find("EventIdentification").get("EventActionCode") == "C")
    for r in (begin, sent):
        roles = {p.find("RoleIDCode").get("csd-code"): p for p in r.findall("ActiveParticipant")}
        assert roles["110153"].get("UserID") == "FORWARDER" and roles["110153"].get("UserIsRequestor") == "true"
        assert roles["110152"].get("UserID") == "ARCHIVE" and roles["110152"].get("NetworkAccessPointID") == "127.0.0.1"
        objs = {o.get("ParticipantObjectTypeCodeRole"): o for o in r.findall("ParticipantObjectIdentification")}
        assert objs["3"].get("ParticipantObjectID") == STUDY_UID and objs["1"].get("ParticipantObjectID") == "PID-FWD"
    assert sent.find("ParticipantObjectIdentification/ParticipantObjectDescription/SOPClass").get("NumberOfInstances") == "2"
    assert received.find("ParticipantObjectIdentification/ParticipantObjectDescription/SOPClass").get("NumberOfInstances") == "2"
    # The archive audits the same transfer as received from FORWARDER.
    roots = await wait_for(archive_log, lambda rs: any(code_of(r) == "110104" for r in rs))
    got = next(r for r in roots if code_of(r) == "110104")
    roles = {p.find("RoleIDCode").get("csd-code"): p.get("UserID") for p in got.findall("ActiveParticipant")}
    assert roles == {"110153": "FORWARDER", "110152": "ARCHIVE"}


async def test_a_peer_certificate_the_queue_rejects_is_a_security_alert(tmp_path: Path, start_agent, tls_pki) -> None:
    """The forwarding queue's TLS handshake with a peer whose certificate does not carry the expected
    name fails: PS3.15 A.5.3.11 Security Alert (Node Authentication) naming the peer and the reason."""
    from agent.net.client import associate
    from agent.services.storage_scu import proposals_for, scan, send_file
    from tests.interop.storage_helpers import make_image

    pki = tls_pki
    archive = await start_agent(write_profile(tmp_path / "archive", f"""
[storage]

[tls]
port = 0
certificate = "{pki.server_pem}"
key = "{pki.server_key}"
client_certificates = "none"
plain_listener = false
""", ae_title="ARCHIVE"))
    local = tmp_path / "audit.log"
    forwarder = await start_agent(write_profile(tmp_path / "fwd", f"""
[peers.archive]
ae_title = "ARCHIVE"
host = "127.0.0.1"
port = {archive.port}
tls = true
tls_ca = "{pki.ca_pem}"
tls_server_name = "archive.example.org"

[storage]
forward_to = ["archive"]

[audit]
local_file = "{local}"
events = ["security-alert"]
""", ae_title="FORWARDER"))
    items = scan([make_image(tmp_path / "img.dcm")]).items
    async with associate("127.0.0.1", forwarder.port, calling_ae="MODALITY", called_ae="FORWARDER",
                         proposals=proposals_for(items)[0], timeouts=FAST) as conn:
        assert (await send_file(conn, items[0])).status == 0
    roots = await wait_for(local, lambda rs: any(code_of(r) == "110113" for r in rs))
    alert = next(r for r in roots if code_of(r) == "110113")
    assert code_of(alert, "EventTypeCode") == "110126"
    description = alert.findtext("EventIdentification/EventOutcomeDescription", "")
    assert f"127.0.0.1:{archive.port}" in description and "archive.example.org" in description, description


async def test_worklist_answers_are_a_query_and_an_order_record_per_patient(tmp_path: Path, start_agent) -> None:
    """The MWL SCP: the C-FIND is a Query (A.5.3.12); the items it answered are Order Records read
    (A.5.3.8, action R), one per patient, naming the patient by ID and the accession numbers."""
    import base64

    from tests.integration.test_worklist import connect as mwl_connect, find, query
    from tests.interop.worklist_items import make_item, make_wlmscpfs_db

    items = [make_item("ACC-A1", "DOE^JOHN", patient_id="PID-A", modality="CT"),
             make_item("ACC-A2", "DOE^JOHN", patient_id="PID-A", modality="CT", date="20260116"),
             make_item("ACC-B1", "ROE^JANE", patient_id="PID-B", modality="CT")]
    folder = make_wlmscpfs_db(tmp_path / "wl", "AGENT", items)
    local = tmp_path / "audit.log"
    agent = await start_agent(write_profile(tmp_path, f'[worklist]\nfolder = "{folder}"\n\n[audit]\nlocal_file = "{local}"\n'))
    async with mwl_connect(agent.port) as conn:
        found, status = await find(conn, query(Modality="CT"))
    assert status == 0 and len(found) == 3
    roots = await wait_for(local, lambda rs: sum(code_of(r) == "110109" for r in rs) >= 2)
    orders = {r.find("ParticipantObjectIdentification").get("ParticipantObjectID"): r
              for r in roots if code_of(r) == "110109"}
    assert set(orders) == {"PID-A", "PID-B"}
    for pid, accessions in (("PID-A", ["ACC-A1", "ACC-A2"]), ("PID-B", ["ACC-B1"])):
        r = orders[pid]
        assert r.find("EventIdentification").get("EventActionCode") == "R"
        obj = r.find("ParticipantObjectIdentification")
        assert obj.get("ParticipantObjectTypeCode") == "1" and obj.get("ParticipantObjectTypeCodeRole") == "1"
        got = sorted(base64.b64decode(d.get("value", "")).decode() for d in obj.findall("ParticipantObjectDetail"))
        assert got == accessions
        roles = {p.find("RoleIDCode").get("csd-code"): p.get("UserID") for p in r.findall("ActiveParticipant")}
        assert roles == {"110152": "CONSOLE", "110153": "AGENT"}
    (q,) = [r for r in roots if code_of(r) == "110112"]
    assert q.find("ParticipantObjectIdentification").get("ParticipantObjectID") == "1.2.840.10008.5.1.4.31"
    text = local.read_text(encoding="utf-8")
    assert "DOE" not in text and "ROE" not in text  # patient names never enter the audit trail
