"""The audit trail against a real syslog server: Debian's rsyslog, started here on loopback with its own
configuration (imudp, and imtcp with TLS through the ossl driver), writing what it receives to a file.

One rsyslog serves the module; each test's agent has its own AuditSourceID, so each test reads only
its own messages. The agent runs in-process; its peers are DCMTK's echoscu, storescu and findscu.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pytest
import trio
from pydicom.filereader import read_dataset

from agent.security.audit_trail import AUDIT_JOB, DESTINATION
from tests.conftest import IN_CI, free_port, require_tool, write_profile
from tests.interop.storage_helpers import STUDY_UID, make_image, run

pytestmark = pytest.mark.interop

VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
DEADLINE = 60  # seconds: a deadline on a loaded machine, not an expectation


def require_rsyslog() -> str:
    path = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None)
    ossl = any(Path(d).glob("lmnsd_ossl.so") for d in ("/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/aarch64-linux-gnu/rsyslog", "/usr/lib/rsyslog"))
    if path is None or not ossl:
        (pytest.fail if IN_CI else pytest.skip)("rsyslog with TLS input is not installed (apt-get install rsyslog rsyslog-openssl)")
    return path


@dataclass
class Rsyslog:
    udp_port: int
    tls_port: int
    out: Path
    proc: subprocess.Popen[bytes] | None = None

    def messages(self, source_id: str) -> list[tuple[str, str, str, ET.Element]]:
        """(input, PRI, MSGID, parsed XML) of each message whose AuditSourceID is `source_id`."""
        found = []
        text = self.out.read_text(encoding="utf-8", errors="strict") if self.out.exists() else ""
        for line in text.splitlines():
            if not line:
                continue
            where, pri, _app, msgid, body = line.split("|", 4)
            root = ET.fromstring(body.lstrip("\ufeff"))  # every message must parse
            src = root.find("AuditSourceIdentification")
            if src is not None and src.get("AuditSourceID") == source_id:
                found.append((where, pri, msgid, root))
        return found

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_rsyslog(work: Path, pki: object, udp_port: int, tls_port: int) -> Rsyslog:
    """rsyslogd in the foreground with a private configuration; returns once its TLS port accepts."""
    rsyslogd = require_rsyslog()
    work.mkdir(parents=True, exist_ok=True)
    (work / "spool").mkdir(exist_ok=True)
    out = work / "received.log"
    conf = work / "rsyslog.conf"
    conf.write_text(f"""
global(workDirectory="{work / 'spool'}" maxMessageSize="64k"
       DefaultNetstreamDriver="ossl"
       DefaultNetstreamDriverCAFile="{pki.ca_pem}"
       DefaultNetstreamDriverCertFile="{pki.server_pem}"
       DefaultNetstreamDriverKeyFile="{pki.server_key}")
module(load="imudp")
module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imudp" address="127.0.0.1" port="{udp_port}")
input(type="imtcp" address="127.0.0.1" port="{tls_port}")
template(name="line" type="string" string="%inputname%|%pri%|%app-name%|%msgid%|%msg%\\n")
action(type="omfile" file="{out}" template="line")
""")
    log = open(work / "rsyslogd.out", "ab")  # noqa: SIM115 - the process holds it
    proc = subprocess.Popen([rsyslogd, "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = Rsyslog(udp_port, tls_port, out, proc)
    deadline = time.monotonic() + DEADLINE
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"rsyslogd exited: {(work / 'rsyslogd.out').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
            return server
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise AssertionError("rsyslogd did not listen within the deadline") from None
            time.sleep(0.05)


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory, tls_pki: object) -> Iterator[Rsyslog]:
    server = start_rsyslog(tmp_path_factory.mktemp("rsyslog"), tls_pki, free_port(), free_port())
    yield server
    server.stop()


async def wait_messages(server: Rsyslog, source_id: str, want: set[str]) -> list[tuple[str, str, str, ET.Element]]:
    """Poll until messages with each EventID code of `want` have arrived."""
    with trio.fail_after(DEADLINE):
        while True:
            got = server.messages(source_id)
            if want <= {event_id(m[3])[0] for m in got}:
                return got
            await trio.sleep(0.05)


def event_id(root: ET.Element) -> tuple[str, str, str]:
    e = root.find("EventIdentification/EventID")
    assert e is not None
    return e.get("csd-code", ""), e.get("codeSystemName", ""), e.get("originalText", "")


def event_type(root: ET.Element) -> str | None:
    e = root.find("EventIdentification/EventTypeCode")
    return None if e is None else e.get("csd-code")


def one(messages: list[tuple[str, str, str, ET.Element]], code: str) -> ET.Element:
    roots = [m[3] for m in messages if event_id(m[3])[0] == code]
    assert len(roots) >= 1, f"no message with EventID {code}"
    return roots[-1]


def participants(root: ET.Element) -> list[dict[str, str]]:
    out = []
    for p in root.findall("ActiveParticipant"):
        d = dict(p.attrib)
        role = p.find("RoleIDCode")
        if role is not None:
            d["role"] = role.get("csd-code", "")
        out.append(d)
    return out


def objects(root: ET.Element) -> list[ET.Element]:
    return root.findall("ParticipantObjectIdentification")


def audit_section(source_id: str, server: Rsyslog | None, *, transport: str = "udp", port: int | None = None,
                  pki: object = None, local_file: Path | None = None) -> str:
    lines = ["[audit]", f'source_id = "{source_id}"']
    if server is not None or port is not None:
        lines += ['host = "127.0.0.1"', f'transport = "{transport}"',
                  f"port = {port if port is not None else (server.udp_port if transport == 'udp' else server.tls_port)}"]
        if transport == "tls":
            lines.append(f'ca = "{pki.ca_pem}"')
    if local_file is not None:
        lines.append(f'local_file = "{local_file}"')
    return "\n".join(lines) + "\n"


def tls_listener(pki: object, port: int) -> str:
    return f"""
[tls]
port = {port}
certificate = "{pki.server_pem}"
key = "{pki.server_key}"
ca = "{pki.ca_pem}"
"""


async def test_echo_store_query_and_rejected_certificate_reach_rsyslog_over_udp(
        tmp_path: Path, rsyslog: Rsyslog, tls_pki: object, start_agent) -> None:
    """Each operation a peer does leaves the message PS3.15 A.5.3 asks for, with its participants;
    the local file holds the same messages, one per line."""
    for tool in ("echoscu", "storescu", "findscu"):
        require_tool(tool)
    pki = tls_pki
    local = tmp_path / "audit.log"
    tls_port = free_port()
    profile = write_profile(tmp_path, "[storage]\n\n[query]\n" + tls_listener(pki, tls_port)
                            + audit_section("AUDIT-UDP", rsyslog, local_file=local))
    agent = await start_agent(profile)
    port = agent.port

    code, out = await run(["echoscu", "-aet", "ECHOER", "-aec", "AGENT", "127.0.0.1", str(port)])
    assert code == 0, out
    image = make_image(tmp_path / "img.dcm", patient_id="PID-AUDIT")
    code, out = await run(["storescu", "-aet", "MODALITY", "-aec", "AGENT", "127.0.0.1", str(port), str(image)])
    assert code == 0, out
    code, out = await run(["findscu", "-S", "-aet", "VIEWER", "-aec", "AGENT", "-k", "QueryRetrieveLevel=STUDY",
                           "-k", "PatientID=PID-AUDIT", "-k", "StudyInstanceUID", "127.0.0.1", str(port)])
    assert code == 0, out
    # A client certificate from a CA the agent does not trust: the handshake fails, a Security Alert follows.
    code, out = await run(["echoscu", "-aet", "ROGUE", "-aec", "AGENT", "+tls", str(pki.rogue_key), str(pki.rogue_pem),
                           "-pw", "+cf", str(pki.ca_pem), "127.0.0.1", str(tls_port)])
    assert code != 0, out

    got = await wait_messages(rsyslog, "AUDIT-UDP", {"110100", "ASSOCIATION", "110104", "110112", "110113"})
    assert {m[0] for m in got} == {"imudp"}
    assert {(m[1], m[2]) for m in got} == {("85", "IHE+RFC-3881")}  # authpriv.notice, RFC 3881 body

    start = one(got, "110100")
    assert event_type(start) == "110120"
    assert participants(start)[0]["role"] == "110150" and participants(start)[0]["UserID"] == "AGENT"

    # The echo: its association, the Verification SOP class as participant object.
    assoc = [m[3] for m in got if event_id(m[3])[0] == "ASSOCIATION"]
    echo = next(r for r in assoc if any(p.get("AlternativeUserID") == "AETITLES=ECHOER" for p in participants(r)))
    assert event_id(echo) == ("ASSOCIATION", "99DCMAGENT", "Association")
    caller = next(p for p in participants(echo) if p["UserIsRequestor"] == "true")
    assert caller["NetworkAccessPointID"] == "127.0.0.1" and caller["NetworkAccessPointTypeCode"] == "2"
    assert [o.get("ParticipantObjectID") for o in objects(echo)] == [VERIFICATION]

    # The store: DICOM Instances Transferred (A.5.3.4), source = MODALITY, destination = us, study + patient.
    moved = one(got, "110104")
    ev = moved.find("EventIdentification")
    assert ev is not None and ev.get("EventActionCode") == "C" and ev.get("EventOutcomeIndicator") == "0"
    roles = {p["role"]: p for p in participants(moved)}
    assert roles["110153"]["AlternativeUserID"] == "AETITLES=MODALITY" and roles["110153"]["UserIsRequestor"] == "true"
    assert roles["110152"]["UserID"] == "AGENT"
    study = next(o for o in objects(moved) if o.get("ParticipantObjectTypeCodeRole") == "3")
    assert study.get("ParticipantObjectID") == STUDY_UID
    assert study.find("ParticipantObjectIDTypeCode").get("csd-code") == "110180"
    sop = study.find("ParticipantObjectDescription/SOPClass")
    assert sop is not None and sop.get("UID") == CT_IMAGE and sop.get("NumberOfInstances") == "1"
    patient = next(o for o in objects(moved) if o.get("ParticipantObjectTypeCodeRole") == "1")
    assert patient.get("ParticipantObjectID") == "PID-AUDIT" and patient.get("ParticipantObjectTypeCode") == "1"

    # The query (A.5.3.12): the SOP class, and the identifier exactly as received.
    query = one(got, "110112")
    roles = {p["role"]: p for p in participants(query)}
    assert roles["110153"]["AlternativeUserID"] == "AETITLES=VIEWER"
    (obj,) = objects(query)
    assert obj.get("ParticipantObjectID") == STUDY_ROOT_FIND and obj.get("ParticipantObjectTypeCodeRole") == "3"
    identifier = read_dataset(BytesIO(base64.b64decode(obj.findtext("ParticipantObjectQuery", ""))),
                              is_implicit_VR=False, is_little_endian=True) if _explicit(obj) else \
        read_dataset(BytesIO(base64.b64decode(obj.findtext("ParticipantObjectQuery", ""))),
                     is_implicit_VR=True, is_little_endian=True)
    assert identifier.PatientID == "PID-AUDIT" and identifier.QueryRetrieveLevel == "STUDY"

    # The rejected certificate (A.5.3.11): Security Alert, Node Authentication, failure.
    alert = one(got, "110113")
    assert event_type(alert) == "110126"
    assert alert.find("EventIdentification").get("EventOutcomeIndicator") != "0"
    assert "certificate" in alert.findtext("EventIdentification/EventOutcomeDescription", "")
    assert any(p.get("NetworkAccessPointID") == "127.0.0.1" for p in participants(alert))

    # The local file: the same messages, one syslog line each, every one valid XML.
    with trio.fail_after(DEADLINE):
        while True:
            lines = local.read_text(encoding="utf-8").splitlines() if local.exists() else []
            codes = [event_id(ET.fromstring(line.split(" ", 7)[7].lstrip("\ufeff")))[0] for line in lines]
            if {"110100", "ASSOCIATION", "110104", "110112", "110113"} <= set(codes):
                break
            await trio.sleep(0.05)
    assert all(line.startswith("<85>1 ") for line in lines)


def _explicit(obj: ET.Element) -> bool:
    for d in obj.findall("ParticipantObjectDetail"):
        if d.get("type") == "TransferSyntax":
            return base64.b64decode(d.get("value", "")).decode() != "1.2.840.10008.1.2"
    return True


async def test_messages_queued_while_the_repository_is_down_arrive_when_it_is_back(
        tmp_path: Path, tls_pki: object, start_agent) -> None:
    """Over TLS (RFC 5425): with nothing listening, messages stay in the durable queue and their sends
    are retried; once rsyslog listens, every one of them arrives, Application Start first."""
    require_tool("echoscu")
    udp_port, tls_port = free_port(), free_port()
    profile = write_profile(tmp_path, audit_section("AUDIT-DOWN", None, transport="tls", port=tls_port, pki=tls_pki))
    agent = await start_agent(profile)
    for _ in range(3):
        code, out = await run(["echoscu", "-aet", "ECHOER", "-aec", "AGENT", "127.0.0.1", str(agent.port)])
        assert code == 0, out
    queue = agent.agent.queue
    with trio.fail_after(DEADLINE):  # every message queued, and at least one failed attempt recorded
        while True:
            jobs = queue.list(destination=DESTINATION, kind=AUDIT_JOB, limit=100)
            if len(jobs) >= 4 and any(j.attempts >= 1 for j in jobs):
                break
            await trio.sleep(0.05)
    assert all(j.state != "done" for j in jobs)
    server = start_rsyslog(tmp_path / "rsyslog", tls_pki, udp_port, tls_port)
    try:
        with trio.fail_after(DEADLINE):
            while True:
                got = server.messages("AUDIT-DOWN")
                if len(got) >= 4:
                    break
                await trio.sleep(0.05)
        assert {m[0] for m in got} == {"imtcp"}
        codes = [event_id(m[3])[0] for m in got]
        assert codes[0] == "110100" and codes.count("ASSOCIATION") == 3
        with trio.fail_after(DEADLINE):
            while any(j.state != "done" for j in queue.list(destination=DESTINATION, kind=AUDIT_JOB, limit=100)):
                await trio.sleep(0.05)
    finally:
        server.stop()
