"""Audit messages (agent/security/audit.py), their syslog form (agent/security/syslog.py) and `[audit]`."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.errors import ProfileError
from agent.security import audit
from agent.security.syslog import format_message, octet_counted
from tests.conftest import write_profile

AGENT = audit.Participant("AGENT", False, address="host.example", ae_title="AGENT")
PEER = audit.Participant("MODALITY", True, address="192.0.2.7", ae_title="MODALITY")


def parsed(event: audit.AuditEvent) -> ET.Element:
    text = event.to_xml("SITE-AGENT", "Hospital")
    assert "\n" not in text
    root = ET.fromstring(text)
    assert root.tag == "AuditMessage"
    src = root.find("AuditSourceIdentification")
    assert src is not None and src.get("AuditSourceID") == "SITE-AGENT" and src.get("AuditEnterpriseSiteID") == "Hospital"
    ev = root.find("EventIdentification")
    assert ev is not None and ev.get("EventActionCode") in "CRUDE" and ev.get("EventOutcomeIndicator") in ("0", "4", "8", "12")
    datetime.fromisoformat(ev.get("EventDateTime", ""))
    # The schema's element order: event, active participants, audit source, participant objects.
    tags = [c.tag for c in root]
    assert tags == sorted(tags, key=["EventIdentification", "ActiveParticipant", "AuditSourceIdentification",
                                     "ParticipantObjectIdentification"].index)
    return root


def test_instances_transferred_names_each_study_and_patient_once() -> None:
    studies = [audit.StudyTransfer("1.2.3", "P1", (("1.2.840.10008.5.1.4.1.1.2", 3),), ("ACC1",)),
               audit.StudyTransfer("1.2.4", "P1", (("1.2.840.10008.5.1.4.1.1.4", 1),))]
    root = parsed(audit.instances_transferred(PEER, AGENT, studies, received=True))
    assert root.find("EventIdentification/EventID").get("csd-code") == "110104"
    roles = {p.find("RoleIDCode").get("csd-code"): p for p in root.findall("ActiveParticipant")}
    assert roles["110153"].get("NetworkAccessPointTypeCode") == "2" and roles["110152"].get("NetworkAccessPointTypeCode") == "1"
    objs = root.findall("ParticipantObjectIdentification")
    assert [(o.get("ParticipantObjectID"), o.get("ParticipantObjectTypeCodeRole")) for o in objs] == \
        [("1.2.3", "3"), ("1.2.4", "3"), ("P1", "1")]
    assert objs[0].find("ParticipantObjectDescription/Accession").get("Number") == "ACC1"
    assert objs[0].find("ParticipantObjectDescription/SOPClass").get("NumberOfInstances") == "3"


def test_query_carries_the_identifier_and_a_security_alert_keeps_one_line() -> None:
    root = parsed(audit.query(PEER, AGENT, "1.2.840.10008.5.1.4.31", b"\x08\x00\x50\x00", "1.2.840.10008.1.2.1"))
    assert root.findtext("ParticipantObjectIdentification/ParticipantObjectQuery") == "CABQAA=="
    alert = parsed(audit.security_alert(AGENT, audit.NODE_AUTHENTICATION, subject="192.0.2.7",
                                        description="handshake\nfailed:  bad certificate"))
    assert alert.findtext("EventIdentification/EventOutcomeDescription") == "handshake failed: bad certificate"
    assert alert.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    start = parsed(audit.application_activity(AGENT, start=True))
    assert start.find("EventIdentification/EventTypeCode").get("csd-code") == "110120"


def test_syslog_header_and_octet_counting() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    m = format_message("<AuditMessage/>", at=at, hostname="my host", procid=42)
    assert m == b"<85>1 2026-01-02T03:04:05.678+00:00 myhost dicom-agent 42 IHE+RFC-3881 - \xef\xbb\xbf<AuditMessage/>"
    assert octet_counted([b"abc", b"de"]) == b"3 abc2 de"


@pytest.mark.parametrize("body, key", [
    ("[audit]\n", "audit"),
    ("[audit]\nlocal_file = \"a.log\"\nport = 514\n", "audit.port"),
    ("[audit]\nhost = \"h\"\nca = \"x.pem\"\n", "audit.ca"),
    ("[audit]\nhost = \"h\"\ntransport = \"tcp\"\n", "audit.transport"),
    ("[audit]\nhost = \"h\"\nevents = [\"everything\"]\n", "audit.events[0]"),
    ("[audit]\nhost = \"h\"\nevents = []\n", "audit.events"),
    ("[audit]\nhost = \"h\"\nrepository = \"h\"\n", "audit.repository"),
])
def test_audit_section_refusals_name_the_key(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ProfileError) as info:
        write_profile(tmp_path, body)
    assert key in str(info.value)


def test_audit_section_defaults(tmp_path: Path) -> None:
    udp = write_profile(tmp_path / "u", "[audit]\nhost = \"audit.example\"\n").audit
    assert udp is not None and (udp.port, udp.transport, udp.local_file) == (514, "udp", None)
    assert udp.events == frozenset(audit.EVENT_NAMES)
    tls = write_profile(tmp_path / "t", "[audit]\nhost = \"a\"\ntransport = \"tls\"\nlocal_file = \"x.log\"\n").audit
    assert tls is not None and tls.port == 6514 and tls.local_file == (tmp_path / "t" / "x.log")


def test_check_profile_describes_the_audit_section(tmp_path: Path) -> None:
    from agent.cli import describe_profile

    off = describe_profile(write_profile(tmp_path / "off", ""))
    assert "  [audit] off" in off.splitlines()
    on = describe_profile(write_profile(tmp_path / "on", "[audit]\nhost = \"audit.example\"\nevents = [\"query\"]\n"))
    assert "  [audit] udp to audit.example:514; events: query" in on.splitlines()


async def test_a_udp_repository_that_refuses_is_an_error_not_a_silent_loss() -> None:
    """On loopback the ICMP refusal comes back at once: the batch fails (and stays queued)."""
    from agent.security.syslog import Repository, SyslogError, send
    from tests.conftest import free_port

    with pytest.raises(SyslogError):
        await send(Repository("127.0.0.1", free_port(), "udp"), [b"<85>1 - - - - - - x"])


def test_a_failing_hook_never_breaks_the_audited_operation(tmp_path: Path, caplog) -> None:
    from agent.security.audit_trail import AuditTrail
    from agent.services.blocking import Blocking
    from agent.store.db import open_database
    from agent.store.queue import JobQueue

    trail = AuditTrail(audit.AuditSettings(local_file=tmp_path / "a.log"), "AGENT",
                       JobQueue(open_database(tmp_path / "db.sqlite")), Blocking())
    trail.instance_stored(object(), None)  # type: ignore[arg-type]  # no attributes at all: logged, not raised
    assert "instance_stored failed" in caplog.text
