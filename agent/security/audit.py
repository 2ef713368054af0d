"""DICOM audit messages (PS3.15 A.5): building the XML, nothing else (no I/O, no trio).

Invariants:
- Every message is one `AuditMessage` element of the DICOM audit message schema (PS3.15 A.5.1, derived
  from RFC 3881): one EventIdentification (EventID, EventActionCode, EventDateTime, EventOutcomeIndicator,
  optional EventTypeCode), the ActiveParticipants, one AuditSourceIdentification, then the
  ParticipantObjectIdentifications. Codes are written as the schema's coded values
  (`csd-code`, `codeSystemName`, `originalText`).
- The serialized text holds no line break (attribute values escape them), so a local audit file keeps
  one message per line.
- Passcodes never appear in a message; patient names do not either (a patient is identified by ID only,
  which is what PS3.15 A.5.3 requires).

The events (PS3.15 A.5.3, event IDs from CID 400 "Audit Event ID", DCM codes):
- Application Activity (110100; type Application Start 110120 / Stop 110121), A.5.3.1
- Begin Transferring DICOM Instances (110102), A.5.3.2: instances we send (forwarding, C-MOVE)
- DICOM Instances Transferred (110104), A.5.3.4: received (action C) and sent (action R)
- Order Record (110109), A.5.3.8: worklist items answered by the MWL SCP (action R, one per patient)
- Procedure Record (110111), A.5.3.10: an MPPS N-CREATE / N-SET received
- Query (110112), A.5.3.12
- Security Alert (110113; type Node Authentication 110126, Use of Restricted Function 110132), A.5.3.11
- User Authentication (110114; type Login 110122), A.5.3.14
- Association: not an event of PS3.15. CID 400 is extensible, so an association that carried no
  other audited operation (a C-ECHO) is recorded with a private code (coding scheme designator
  "99DCMAGENT", the "99" prefix PS3.16 reserves for private schemes), and its SOP classes as participants.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

Code = tuple[str, str, str]  # (code value, coding scheme designator, meaning)

# EventID (CID 400)
APPLICATION_ACTIVITY: Code = ("110100", "DCM", "Application Activity")
BEGIN_TRANSFERRING: Code = ("110102", "DCM", "Begin Transferring DICOM Instances")
INSTANCES_TRANSFERRED: Code = ("110104", "DCM", "DICOM Instances Transferred")
ORDER_RECORD: Code = ("110109", "DCM", "Order Record")
PROCEDURE_RECORD: Code = ("110111", "DCM", "Procedure Record")
QUERY: Code = ("110112", "DCM", "Query")
SECURITY_ALERT: Code = ("110113", "DCM", "Security Alert")
USER_AUTHENTICATION: Code = ("110114", "DCM", "User Authentication")
ASSOCIATION: Code = ("ASSOCIATION", "99DCMAGENT", "Association")

# EventTypeCode (CID 401, 402, 403)
APPLICATION_START: Code = ("110120", "DCM", "Application Start")
APPLICATION_STOP: Code = ("110121", "DCM", "Application Stop")
LOGIN: Code = ("110122", "DCM", "Login")
NODE_AUTHENTICATION: Code = ("110126", "DCM", "Node Authentication")
RESTRICTED_FUNCTION: Code = ("110132", "DCM", "Use of Restricted Function")

# RoleIDCode (CID 402)
ROLE_APPLICATION: Code = ("110150", "DCM", "Application")
ROLE_DESTINATION: Code = ("110152", "DCM", "Destination Role ID")
ROLE_SOURCE: Code = ("110153", "DCM", "Source Role ID")

# ParticipantObjectIDTypeCode
PATIENT_NUMBER: Code = ("2", "RFC-3881", "Patient Number")
STUDY_INSTANCE_UID: Code = ("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID: Code = ("110181", "DCM", "SOP Class UID")
NODE_ID: Code = ("110182", "DCM", "Node ID")

# AuditSourceTypeCode (RFC 3881 5.4: 4 = application server process)
SOURCE_APPLICATION_SERVER: Code = ("4", "DCM", "Application Server Process")

ActionCode = Literal["C", "R", "U", "D", "E"]  # create, read, update, delete, execute (RFC 3881 5.1.2)
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = 0, 4, 8, 12  # EventOutcomeIndicator

# Names of the events a profile may select (`[audit] events`).
EVENT_NAMES = ("application-activity", "association", "instances-transferred", "order-record", "procedure-record",
               "query", "security-alert", "user-authentication")


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """`[audit]`: where audit messages go (a repository, a local file or both) and which events."""

    host: str | None = None  # the audit repository (syslog); None: local file only
    port: int = 514
    transport: Literal["udp", "tls"] = "udp"
    ca: Path | None = None  # TLS: CA bundle that signed the repository's certificate
    certificate: Path | None = None  # TLS: our client certificate and key, when the repository asks
    key: Path | None = None
    server_name: str | None = None  # TLS: the name in the repository's certificate (default: host)
    local_file: Path | None = None  # one syslog line per message, appended and flushed to disk
    events: frozenset[str] = frozenset(EVENT_NAMES)
    source_id: str = ""  # AuditSourceID; default: the agent's AE title
    enterprise_site: str = ""  # AuditEnterpriseSiteID (optional)


@dataclass(frozen=True, slots=True)
class Participant:
    """An ActiveParticipant (PS3.15 A.5.2.2): a process or person taking part in the event."""

    user_id: str  # for a DICOM node: its AE title (as AlternativeUserID too, PS3.15 A.5.2.2)
    requestor: bool
    role: Code | None = None
    address: str = ""  # NetworkAccessPointID: host name or IP address, no port
    ae_title: str = ""

    def element(self, parent: ET.Element) -> None:
        attrs = {"UserID": self.user_id, "UserIsRequestor": "true" if self.requestor else "false"}
        if self.ae_title:
            attrs["AlternativeUserID"] = f"AETITLES={self.ae_title}"
        if self.address:
            attrs["NetworkAccessPointID"] = self.address
            # 1 = machine name, 2 = IP address (RFC 3881 5.3.1)
            attrs["NetworkAccessPointTypeCode"] = "2" if _is_ip(self.address) else "1"
        e = ET.SubElement(parent, "ActiveParticipant", attrs)
        if self.role is not None:
            _code(e, "RoleIDCode", self.role)


@dataclass(frozen=True, slots=True)
class ParticipantObject:
    """A ParticipantObjectIdentification (PS3.15 A.5.2.5): a patient, a study, a query, a node."""

    object_id: str
    type_code: int  # 1 person, 2 system object, 3 organization, 4 other
    role: int  # 1 patient, 3 report, 4 resource, 13 security resource, 24 query
    id_type: Code
    name: str = ""
    query: bytes = b""  # ParticipantObjectQuery: the query data set, base64 in the XML
    sop_classes: tuple[tuple[str, int], ...] = ()  # (SOP class UID, number of instances)
    accessions: tuple[str, ...] = ()
    mpps: tuple[str, ...] = ()  # MPPS SOP Instance UIDs (ParticipantObjectDescription/MPPS)
    details: tuple[tuple[str, str], ...] = ()  # ParticipantObjectDetail type/value pairs

    def element(self, parent: ET.Element) -> None:
        e = ET.SubElement(parent, "ParticipantObjectIdentification", {
            "ParticipantObjectID": self.object_id,
            "ParticipantObjectTypeCode": str(self.type_code),
            "ParticipantObjectTypeCodeRole": str(self.role),
        })
        _code(e, "ParticipantObjectIDTypeCode", self.id_type)
        if self.name:
            ET.SubElement(e, "ParticipantObjectName").text = self.name
        if self.query:
            ET.SubElement(e, "ParticipantObjectQuery").text = base64.b64encode(self.query).decode("ascii")
        for kind, value in self.details:
            ET.SubElement(e, "ParticipantObjectDetail", {
                "type": kind, "value": base64.b64encode(value.encode()).decode("ascii")})
        if self.sop_classes or self.accessions or self.mpps:
            d = ET.SubElement(e, "ParticipantObjectDescription")
            for uid in self.mpps:
                ET.SubElement(d, "MPPS", {"UID": uid})
            for number in self.accessions:
                ET.SubElement(d, "Accession", {"Number": number})
            for uid, count in self.sop_classes:
                ET.SubElement(d, "SOPClass", {"UID": uid, "NumberOfInstances": str(count)})


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit message; `name` is which of EVENT_NAMES it belongs to (for the profile's selection)."""

    name: str
    event_id: Code
    action: ActionCode
    outcome: int
    participants: tuple[Participant, ...]
    objects: tuple[ParticipantObject, ...] = ()
    event_type: Code | None = None
    outcome_description: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def to_xml(self, source_id: str, enterprise_site: str = "") -> str:
        """The message text (UTF-8 XML with no declaration and no line break)."""
        root = ET.Element("AuditMessage")
        ev = ET.SubElement(root, "EventIdentification", {
            "EventActionCode": self.action,
            "EventDateTime": self.at.isoformat(timespec="milliseconds"),
            "EventOutcomeIndicator": str(self.outcome),
        })
        _code(ev, "EventID", self.event_id)
        if self.event_type is not None:
            _code(ev, "EventTypeCode", self.event_type)
        if self.outcome_description:
            ET.SubElement(ev, "EventOutcomeDescription").text = _one_line(self.outcome_description)
        for p in self.participants:
            p.element(root)
        src_attrs = {"AuditSourceID": source_id}
        if enterprise_site:
            src_attrs["AuditEnterpriseSiteID"] = enterprise_site
        src = ET.SubElement(root, "AuditSourceIdentification", src_attrs)
        _code(src, "AuditSourceTypeCode", SOURCE_APPLICATION_SERVER)
        for o in self.objects:
            o.element(root)
        return ET.tostring(root, encoding="unicode")


# ---------------------------------------------------------------------------------------------
# The events, one builder each. `agent` is our own participant (AE title, host); `peer` the remote
# node (its AE title and address); who is the requestor follows who opened the association.


def application_activity(agent: Participant, *, start: bool, outcome: int = SUCCESS) -> AuditEvent:
    """A.5.3.1: the agent started or stopped."""
    return AuditEvent("application-activity", APPLICATION_ACTIVITY, "E", outcome,
                      (_with_role(agent, ROLE_APPLICATION),),
                      event_type=APPLICATION_START if start else APPLICATION_STOP)


def association(agent: Participant, peer: Participant, sop_classes: Sequence[tuple[str, int]],
                *, outcome: int = SUCCESS, description: str = "") -> AuditEvent:
    """An association and the DIMSE requests it carried (SOP class, count): private event, see above."""
    objs = tuple(ParticipantObject(uid, 2, 4, SOP_CLASS_UID, details=(("RequestCount", str(n)),))
                 for uid, n in sop_classes)
    return AuditEvent("association", ASSOCIATION, "E", outcome, (peer, agent), objs,
                      outcome_description=description)


@dataclass(frozen=True, slots=True)
class StudyTransfer:
    """What moved of one study on one association: instances per SOP class, accession numbers."""

    study_uid: str
    patient_id: str
    sop_classes: tuple[tuple[str, int], ...]
    accessions: tuple[str, ...] = ()


def instances_transferred(source: Participant, destination: Participant, studies: Iterable[StudyTransfer],
                          *, received: bool, outcome: int = SUCCESS) -> AuditEvent:
    """A.5.3.4: instances were sent or received; one study object per study, one patient object per
    patient. EventActionCode: C (created) by the receiver, R (read) by the sender."""
    objs: list[ParticipantObject] = []
    patients: list[str] = []
    for s in studies:
        objs.append(ParticipantObject(s.study_uid, 2, 3, STUDY_INSTANCE_UID, sop_classes=s.sop_classes,
                                      accessions=s.accessions))
        if s.patient_id not in patients:
            patients.append(s.patient_id)
    objs += [ParticipantObject(pid, 1, 1, PATIENT_NUMBER) for pid in patients]
    return AuditEvent("instances-transferred", INSTANCES_TRANSFERRED, "C" if received else "R", outcome,
                      (_with_role(source, ROLE_SOURCE), _with_role(destination, ROLE_DESTINATION)), tuple(objs))


def begin_transferring(source: Participant, destination: Participant, studies: Iterable[StudyTransfer]) -> AuditEvent:
    """A.5.3.2: a transfer of instances started (the agent as sender; stamped with its first instance)."""
    moved = instances_transferred(source, destination, studies, received=False)
    return replace(moved, name="instances-transferred", event_id=BEGIN_TRANSFERRING, action="E")


def query(requestor: Participant, responder: Participant, sop_class: str, identifier: bytes,
          transfer_syntax: str, *, outcome: int = SUCCESS) -> AuditEvent:
    """A.5.3.12: a C-FIND was received (or sent). The query object is the SOP class, carrying the
    identifier as received (ParticipantObjectQuery) and its transfer syntax (ParticipantObjectDetail)."""
    obj = ParticipantObject(sop_class, 2, 3, SOP_CLASS_UID, query=identifier,
                            details=(("TransferSyntax", transfer_syntax),))
    return AuditEvent("query", QUERY, "E", outcome,
                      (_with_role(requestor, ROLE_SOURCE), _with_role(responder, ROLE_DESTINATION)), (obj,))


def order_record(requestor: Participant, responder: Participant, *, action: ActionCode, patient_id: str,
                 accessions: Sequence[str] = ()) -> AuditEvent:
    """A.5.3.8: order records of one patient were created, read (a worklist answered), updated or deleted.
    The one object is the patient (the message may name only one); accession numbers as details."""
    obj = ParticipantObject(patient_id, 1, 1, PATIENT_NUMBER, details=tuple(("AccessionNumber", a) for a in accessions))
    return AuditEvent("order-record", ORDER_RECORD, action, SUCCESS,
                      (_with_role(requestor, ROLE_DESTINATION), _with_role(responder, ROLE_SOURCE)), (obj,))


def procedure_record(requestor: Participant, responder: Participant, *, action: ActionCode, mpps_uid: str,
                     patient_id: str, study_uids: Sequence[str], accessions: Sequence[str] = ()) -> AuditEvent:
    """A.5.3.10: a procedure record was created (MPPS N-CREATE, action C) or updated (N-SET, action U).
    Objects: each study the step belongs to (with the MPPS instance UID), and the patient when known."""
    objs = [ParticipantObject(uid, 2, 3, STUDY_INSTANCE_UID, accessions=tuple(accessions), mpps=(mpps_uid,))
            for uid in study_uids] or [ParticipantObject(mpps_uid, 2, 3, STUDY_INSTANCE_UID, mpps=(mpps_uid,))]
    if patient_id:
        objs.append(ParticipantObject(patient_id, 1, 1, PATIENT_NUMBER))
    return AuditEvent("procedure-record", PROCEDURE_RECORD, action, SUCCESS,
                      (_with_role(requestor, ROLE_SOURCE), _with_role(responder, ROLE_DESTINATION)), tuple(objs))


def security_alert(reporter: Participant, alert: Code, *, subject: str, description: str,
                   performer: Participant | None = None, outcome: int = MINOR_FAILURE) -> AuditEvent:
    """A.5.3.11: a rejected certificate (Node Authentication) or a refused service (Use of Restricted
    Function). `subject` names the node or object concerned (address, certificate subject)."""
    people = (reporter,) if performer is None else (reporter, performer)
    obj = ParticipantObject(subject, 2, 13, NODE_ID, details=(("Alert Description", _one_line(description)),))
    return AuditEvent("security-alert", SECURITY_ALERT, "E", outcome, people, (obj,), event_type=alert,
                      outcome_description=description)


def user_authentication(agent: Participant, user: Participant, *, succeeded: bool, description: str = "") -> AuditEvent:
    """A.5.3.14: a User Identity (PS3.7 D.3.3.7) was checked at association time."""
    return AuditEvent("user-authentication", USER_AUTHENTICATION, "E", SUCCESS if succeeded else MINOR_FAILURE,
                      (user, agent), event_type=LOGIN, outcome_description=description)


# ---------------------------------------------------------------------------------------------


def _code(parent: ET.Element, tag: str, code: Code) -> None:
    value, scheme, meaning = code
    ET.SubElement(parent, tag, {"csd-code": value, "codeSystemName": scheme, "originalText": meaning})


def _with_role(p: Participant, role: Code) -> Participant:
    return Participant(p.user_id, p.requestor, role, p.address, p.ae_title)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _is_ip(address: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


__all__ = [
    "AuditEvent", "AuditSettings", "EVENT_NAMES", "Participant", "ParticipantObject", "StudyTransfer", "application_activity",
    "association", "begin_transferring", "instances_transferred", "order_record", "procedure_record", "query", "security_alert", "user_authentication",
]
