"""The statement's sections N.1 to N.5 (PS3.2 Annex N): overview, introduction, implementation model,
and the service and interoperability description. Sections N.6 onwards are in `details`.

Every table is made from `Facts`; prose states rules that the code keeps (each sentence names where).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from pydicom.uid import UID_dictionary

from agent.conformance.model import AcceptedClass, Block, Facts, Items, Para, Section, Table, na
from agent.conformance.settings import duration
from agent.profile import Profile
from agent.services.storage_classes import is_storage_sop_class

SERVICE_ORDER = (
    "Verification", "Storage", "Storage Commitment", "Query/Retrieve", "Basic Worklist Management",
    "Modality Performed Procedure Step", "Print Management", "Other",
)


def ts_name(uid: str) -> str:
    from agent.services.storage import NEWER_TRANSFER_SYNTAXES

    # The agent's own names first: pydicom's registry lacks the newest ones unless pynetdicom added them.
    if uid in NEWER_TRANSFER_SYNTAXES:
        return NEWER_TRANSFER_SYNTAXES[uid]
    entry = UID_dictionary.get(uid)
    return entry[0] if entry else uid


def _by_service(classes: Iterable[AcceptedClass]) -> dict[str, list[AcceptedClass]]:
    out: dict[str, list[AcceptedClass]] = defaultdict(list)
    for c in classes:
        out[c.service].append(c)
    return {s: out[s] for s in SERVICE_ORDER if s in out}


def scp_services(facts: Facts) -> dict[str, list[AcceptedClass]]:
    return _by_service(facts.accepted)


def scu_services(facts: Facts) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for p in facts.proposed:
        if p.scp_role and not p.scu_role:
            continue  # proposed with the agent as SCP: an SCP-side operation (5.2.3.2)
        if p.uid not in out[p.service]:
            out[p.service].append(p.uid)
    return {s: out[s] for s in SERVICE_ORDER if s in out}


def roles_of(c: AcceptedClass) -> str:
    """The agent's roles a requestor may negotiate: SCP by default; SCU too when it may be SCP."""
    if c.requestor_may_be_scp:
        return "SCP or SCU" if c.requestor_may_be_scu else "SCU (with role selection)"
    return "SCP"


def serves_as_scu(c: AcceptedClass) -> bool:
    """The agent acts as SCU on an association it accepted, when the requestor takes the SCP role: it
    receives notifications (N-EVENT-REPORT), or it sends the C-STOREs of a C-GET (a storage class)."""
    return c.requestor_may_be_scp and ("N-EVENT-REPORT" in c.operations or "C-STORE" in c.operations
                                       or not c.operations)


def overview(profile: Profile, facts: Facts) -> list[Section]:
    scp, scu = scp_services(facts), scu_services(facts)
    rows: list[tuple[str, ...]] = []
    for service in SERVICE_ORDER:
        classes = {c.uid: c for c in scp.get(service, [])}
        proposed = scu.get(service, [])
        uids = list(dict.fromkeys([*classes, *proposed]))
        many = [u for u in uids if is_storage_sop_class(u)]
        if len(many) > 12:  # all-storage: one row, the classes are listed in section 5.2
            group = [classes[u] for u in many if u in classes]
            rows.append((f"{service}: {len(many)} Storage SOP Classes (listed in 5.2)",
                         "Yes" if any(u in proposed for u in many) or any(serves_as_scu(c) for c in group) else "No",
                         "Yes" if any(c.operations for c in group) else "No"))
            uids = [u for u in uids if u not in many]
        for uid in uids:
            c = classes.get(uid)
            scp_role = "Yes" if c is not None and c.operations else "No"
            scu_role = "Yes" if uid in proposed or (c is not None and serves_as_scu(c)) else "No"
            rows.append((f"{service}: {UID_dictionary.get(uid, (uid,))[0]}", scu_role, scp_role))
    services = ", ".join(dict.fromkeys([*scp, *scu]))
    return [
        Section("1", "Conformance Statement Overview", (
            Para(f"dicom-agent {facts.version} is an embeddable DICOM agent for the host of an imaging device. "
                 f"This statement describes the Application Entity {facts.ae_title} as configured by the profile "
                 f"{_source(profile)}; it is generated from the services that profile turns on "
                 "(`dicom-agent conformance`), so another profile has another statement."),
            Para(f"Services: {services}. The agent uses DICOM networking (DIMSE) only."),
        )),
        Section("1.1", "Network Services", (
            Table("Table N.1-1. Network Services", ("SOP Class", "User of Service (SCU)",
                                                    "Provider of Service (SCP)"), tuple(rows)),
        )),
        na("1.2", "Web Services", "The agent offers no DICOM web services."),
        na("1.3", "Media Services", "The agent reads and writes no DICOM media (PS3.10 file sets)."),
        na("1.4", "Real-Time Video", ""),
        na("1.5", "De-identification Profiles", ""),
        Section("1.6", "Specific Character Sets", (
            Para("See 5.7."),
        )),
    ]


def _source(profile: Profile) -> str:
    from pathlib import Path

    return "embedded in the package (the default)" if profile.source.startswith("<") else f"`{Path(profile.source).name}`"


def introduction(profile: Profile, facts: Facts) -> list[Section]:
    return [
        Section("3", "Introduction", ()),
        Section("3.1", "Revision History", (
            Table("Table N.3-1. Revision History", ("Document version", "Product version", "Description"),
                  ((facts.version, f"dicom-agent {facts.version}", "Generated from the profile "
                    f"{_source(profile)}"),)),
        )),
        Section("3.2", "Audience", (
            Para("Integrators and the hospital's DICOM and IT staff who connect the device host to a PACS, "
                 "RIS or film printer, and service engineers who troubleshoot it (sections 5 and 7)."),
        )),
        Section("3.3", "Remarks", (
            Para("This statement is produced by the agent from the profile it would run. A test starts the "
                 "agent with each shipped profile, proposes every SOP class and transfer syntax the "
                 "standard defines, and checks that exactly what this statement lists is accepted, with the "
                 "same roles and transfer syntax preference. DICOM by itself does not guarantee "
                 "interoperability; validate against the equipment you connect."),
        )),
        Section("3.4", "Terms and Definitions", (
            Items((
                "AE: Application Entity; AE title: its name on the network.",
                "SCU / SCP: Service Class User / Provider.",
                "Association acceptor / requestor: the side that accepts / opens an association.",
                "Peer: a remote AE named in the profile's `[peers]` section.",
                "Profile: the TOML file that configures one agent instance.",
                "Queue: the agent's durable job queue; what it sends goes through it and survives restarts.",
            )),
        )),
        Section("3.5", "Basics of DICOM Communication", (
            Para("Two AEs open an association, agree on presentation contexts (an abstract syntax, a "
                 "transfer syntax and the roles of each side), then exchange DIMSE messages."),
        )),
        Section("3.6", "Abbreviations", (
            Items(("DIMSE: DICOM Message Service Element", "MPPS: Modality Performed Procedure Step",
                   "MWL: Modality Worklist", "PDU: Protocol Data Unit", "TLS: Transport Layer Security",
                   "UID: Unique Identifier")),
        )),
        Section("3.7", "References", (
            Items(("NEMA PS3 / ISO 12052, Digital Imaging and Communications in Medicine (DICOM) Standard, "
                   "https://www.dicomstandard.org/current",
                   "docs/architecture.md and docs/peers.md of the dicom-agent source")),
        )),
    ]


def implementation_model(profile: Profile, facts: Facts) -> list[Section]:
    p = profile
    activities: list[str] = []
    if any(c.service == "Verification" for c in facts.accepted):
        activities.append("A peer verifies the connection: C-ECHO is answered.")
    if p.storage is not None:
        fwd = f" and forwarded through the queue to {', '.join(p.storage.forward_to)}" if p.storage.forward_to else ""
        activities.append(f"A peer sends instances: each is written durably to the local store{fwd} "
                          "before the C-STORE response.")
    if p.commitment is not None:
        activities.append("A peer asks for Storage Commitment: the agent reports what it holds.")
    if p.worklist is not None and p.worklist.source:
        activities.append(f"The worklist is fetched from {p.worklist.source} every {duration(p.worklist.refresh)} "
                          "and cached.")
    if p.worklist is not None and p.worklist.serve:
        activities.append("A console queries the worklist: the cached and local items are matched.")
    if p.mpps is not None and p.mpps.send_to:
        activities.append(f"A procedure starts and ends on the device: MPPS N-CREATE and N-SET to "
                          f"{', '.join(p.mpps.send_to)}.")
    if p.mpps is not None and p.mpps.serve:
        activities.append("A modality reports a performed procedure step: it is kept (and forwarded).")
    if p.device is not None:
        activities.append(f"The acquisition device ({p.device.driver}) produces images: they become "
                          f"{UID_dictionary.get(p.device.sop_class, (p.device.sop_class,))[0]} instances "
                          f"sent to {', '.join(p.device.send_to) or 'no peer'}.")
    if p.print is not None and p.print.serve:
        activities.append(f"A modality prints a film: it is rendered and printed by the {p.print.driver} driver.")
    if any(x.service == "Print Management" for x in facts.proposed):
        activities.append("A film is printed on a DICOM printer through the Print SCU.")
    return [
        Section("4", "Networking: Implementation Model", ()),
        Section("4.1", "Application Entities and Data Flow", (
            Para(f"One Application Entity, {facts.ae_title}, listening on TCP port {facts.port}; it is both "
                 "association acceptor (the SCP services of 5.2) and requestor (the SCU services). "
                 "Real-world activities:"),
            Items(tuple(activities) or ("(none: the profile turns no service on)",)),
        )),
        Section("4.1.1", f"Functional Definition of {facts.ae_title}", (
            Para("The agent runs headless as a service. It keeps every piece of work in a SQLite database "
                 "and a local instance store, so work survives a restart, a network failure or a power "
                 "cut; outgoing operations are queued per peer and retried with backoff."),
        )),
        Section("4.2", "Sequencing of Real-World Activities", (
            Para("An MPPS N-SET is sent only after its N-CREATE succeeded; a Storage Commitment request only "
                 "after the instances it names were stored at that peer."
                 if (p.mpps is not None or (p.storage and p.storage.commit_with) or (p.device and p.device.commit_with))
                 else "No sequencing constraints: the services are independent."),
        )),
    ]


def services(profile: Profile, facts: Facts) -> list[Section]:
    from agent.conformance.services import service_sections

    scp, scu = scp_services(facts), scu_services(facts)
    rows = []
    for service in SERVICE_ORDER:
        if service in scp or service in scu:
            roles = [r for r, on in (("SCU", service in scu or any(serves_as_scu(c) for c in scp.get(service, []))),
                                     ("SCP", service in scp)) if on]
            rows.append((facts.ae_title, service, " and ".join(roles)))
    out = [
        Section("5", "Service and Interoperability Description", ()),
        Section("5.1", "Mapping of Services to Application Entities", (
            Table("Table N.5-1. Services of the Application Entity", ("AE", "Service", "Roles"), tuple(rows)),
        )),
        Section("5.2", "Supported DIMSE Services", ()),
    ]
    out += service_sections(profile, facts)
    out += [
        na("5.3", "Supported DICOM Web Services", ""),
        na("5.4", "Supported Media Storage Services", ""),
        na("5.5", "Real-Time Video Services", ""),
        Section("5.6", "Cross Service Considerations", (
            Para("All SCP services share the one listener and its association limit (7.1); all SCU "
                 "operations to one peer share its queue and one association at a time, reused for "
                 "consecutive jobs and released after the peer's `linger`."),
        )),
        _character_sets(profile, facts),
    ]
    return out


def _character_sets(profile: Profile, facts: Facts) -> Section:
    from pydicom.charset import python_encoding

    terms = sorted(t for t in python_encoding if t)
    blocks: list[Block] = [
        Para("Received instances are stored byte for byte, whatever their Specific Character Set (0008,0005). "
             "Worklist responses carry the item's own Specific Character Set. Query keys are decoded and "
             "matched in these character sets (Defined Terms of PS3.3 C.12.1.1.2; the default repertoire "
             "when the attribute is absent); another one is answered C001 (unable to process):"),
        Para(", ".join(terms) + "."),
    ]
    if not (profile.worklist and profile.worklist.serve) and not any(c.service == "Query/Retrieve" for c in facts.accepted):
        blocks = blocks[:1]
        blocks = [Para("Received instances are stored byte for byte, whatever their Specific Character Set "
                       "(0008,0005); the agent answers no query with this profile.")]
    return Section("5.7", "Specific Character Sets", tuple(blocks))


def accepted_table(caption: str, classes: Sequence[AcceptedClass]) -> Table:
    return Table(caption, ("SOP Class", "SOP Class UID", "Operations"),
                 tuple((c.name, c.uid, ", ".join(c.operations)) for c in classes))


def blocks_for_group(classes: Sequence[AcceptedClass]) -> list[Block]:
    c = classes[0]
    blocks: list[Block] = [
        Table("Transfer syntaxes accepted, in the agent's preference order", ("Transfer Syntax", "UID"),
              tuple((ts_name(ts), ts) for ts in c.transfer_syntaxes)),
    ]
    if c.accept_any_other:
        blocks.append(Para("Any other transfer syntax the requestor proposes is accepted too (its first one)."))
    if c.as_proposed:
        blocks.append(Para(f"Also accepted as proposed ({len(c.as_proposed)} transfer syntaxes, the instance is "
                           "stored unchanged): " + ", ".join(f"{ts_name(t)} ({t})" for t in c.as_proposed) + "."))
    return blocks


__all__ = ["SERVICE_ORDER", "accepted_table", "blocks_for_group", "implementation_model", "introduction",
           "overview", "roles_of", "scp_services", "scu_services", "services", "ts_name"]
