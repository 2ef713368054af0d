"""Sections N.6 to N.12 of the statement: configuration, network communication details (association
parameters, the presentation contexts each side proposes or accepts, statuses, failure behaviour),
security, and the sections that do not apply to a network agent (kept with "N/A", PS3.2 Annex N).
"""

from __future__ import annotations


from agent.conformance.model import Block, Facts, Items, Para, Section, Table, na
from agent.conformance.sections import roles_of, scp_services, ts_name
from agent.profile import Profile


def configuration(profile: Profile, facts: Facts) -> list[Section]:
    rows = tuple((s.parameter, s.configurable, s.value, s.comment) for s in facts.settings)
    return [
        Section("6", "Configuration", (
            Para("USER: given by whoever runs a command; SERVICE: set by the installer in the profile file, "
                 "read when the agent starts; FIXED: set by the code."),
        )),
        Section("6.1", "General Configuration Parameters", (
            Table("Table N.6-1. Configuration Parameters", ("Parameter", "Configurable", "Value", "Comment"), rows),
        )),
        Section("6.2", "Configuration of DIMSE Services", (
            Para("Each service is configured by its profile section (listed in 6.1); a section that is "
                 "absent leaves its service off, and an unknown key stops the agent with a clear error."),
        )),
        na("6.3", "Configuration of DICOM Web Services", ""),
        na("6.4", "Configuration of Media Storage Service", ""),
        na("6.5", "Configuration of Real-Time Video Service", ""),
        _audit(profile),
    ]


def _audit(profile: Profile) -> Section:
    audit = getattr(profile, "audit", None)
    if audit is None:
        return na("6.6", "Configuration of Audit Trail - Syslog", "No audit trail is configured.")
    host = getattr(audit, "host", None)
    transport = getattr(audit, "transport", "")
    rows = (
        ("Audit repository (syslog)", f"{host}:{getattr(audit, 'port', '')} over {transport.upper()} "
         f"({'RFC 5425' if transport == 'tls' else 'RFC 5426'})" if host else "none"),
        ("Local file", "yes, one syslog line per message" if getattr(audit, "local_file", None) else "no"),
        ("Events (PS3.15 A.5)", _show(getattr(audit, "events", ()))),
        ("AuditSourceID", getattr(audit, "source_id", "") or profile.agent.ae_title),
    )
    return Section("6.6", "Configuration of Audit Trail - Syslog", (
        Para("Audit messages (PS3.15 A.5) go through the durable queue to the repository; the keys are in 6.1."),
        Table("Audit trail", ("Parameter", "Value"), rows),
    ))


def _secs(value: float) -> str:
    from agent.conformance.settings import duration

    return duration(value)


def network(profile: Profile, facts: Facts) -> list[Section]:
    t = facts.timeouts
    a = profile.agent
    general = Table("Table N.7-1. General Association Parameters", ("Parameter", "Value"), (
        ("Application Context Name", "1.2.840.10008.3.1.1.1"),
        ("Implementation Class UID", facts.implementation_class_uid),
        ("Implementation Version Name", facts.implementation_version_name),
        ("Maximum PDU length received", f"{facts.max_pdu_receive} bytes" if facts.max_pdu_receive else "unlimited (0)"),
        ("Maximum PDU length sent", "the peer's maximum; to peers of the profile at most their `max_pdu_length`"),
        ("Associations accepted at once", f"{facts.max_associations}; one more is rejected (transient, local "
                                          "limit exceeded)"),
        ("Connections waiting for their A-ASSOCIATE-RQ", f"{a.max_pending_connections} in all, "
                                                         f"{a.max_pending_per_address} per address"),
        ("Associations initiated at once", "one per peer (its queue), plus one per command"),
        ("Asynchronous operations window", f"{facts.async_window[0]} invoked / {facts.async_window[1]} performed"),
        ("TCP connect timeout", _secs(t["connect"])),
        ("ARTIM timeout (association request and release)", _secs(t["artim"])),
        ("DIMSE response timeout", _secs(t["dimse"])),
        ("Network idle timeout", _secs(t["idle"])),
        ("Called AE title checked", "yes" if a.called_ae_check else "no"),
        ("Calling AE titles accepted", ", ".join(a.allowed_calling_aes) or "any"),
    ))
    return [
        Section("7", "Network and Media Communication Details", ()),
        Section("7.1", "General Association Parameters", (
            Para("TCP/IP (PS3.8) with Nagle's algorithm off; the listener binds to "
                 f"{a.bind}:{a.port}."),
            general,
        )),
        Section("7.2", f"Association Policies of {facts.ae_title}", ()),
        Section("7.2.1", "Association Initiation", tuple(_initiation(facts))),
        Section("7.2.2", "Association Acceptance", tuple(_acceptance(facts))),
        Section("7.3", "Communication Failure Behaviour and Statuses", ()),
        Section("7.3.1", "Communication Failure Behaviour", (
            Items((
                "As acceptor: an association with no PDU for the idle timeout is aborted; a malformed PDU or "
                "a peer that vanishes ends that association only (A-ABORT), never the listener.",
                "As requestor: a refused or reset connection, a timeout, a transient rejection or an out of "
                "resources status is retried with capped exponential backoff per peer (`retry_base`, "
                "`retry_cap`); a permanent rejection or a refused SOP class sends the job to the dead list "
                "at once, as does a job older than `max_age`.",
            )),
        )),
        Section("7.3.2", "DIMSE Statuses Answered", tuple(_statuses(facts))),
        Section("7.3.3", "DIMSE Statuses Received", tuple(_received())),
    ]


def _initiation(facts: Facts) -> list[Block]:
    from agent.services.storage_classes import is_storage_sop_class

    if not facts.proposed:
        return [Para("- N/A: the agent initiates no association with this profile.")]
    seen: dict[tuple, int] = {}
    rows_list: list[list[str]] = []
    for p in facts.proposed:
        role = "SCU" if p.scp_role is None else ("SCP" if p.scp_role and not p.scu_role else "SCU/SCP")
        cells = [p.service, p.name, ", ".join(ts_name(t) for t in p.transfer_syntaxes), role,
                 "role selection" if p.scu_role is not None else "none"]
        k = (p.service, p.transfer_syntaxes, role)
        if is_storage_sop_class(p.uid) and k in seen:  # one row for the many Storage classes sent alike
            rows_list[seen[k]][1] = f"each Storage SOP class listed in 5.2 ({p.service})"
            continue
        seen[k] = len(rows_list)
        rows_list.append(cells)
    rows = tuple(tuple(r) for r in rows_list)
    return [
        Para("Presentation contexts the agent proposes (one context per abstract syntax and transfer syntax "
             "list; details and peers in 5.2). No SOP Class Extended Negotiation is proposed."),
        Table("Proposed presentation contexts", ("Service", "Abstract Syntax", "Transfer Syntaxes (order)",
                                                 "Role", "Extended Negotiation"), rows),
    ]


def _acceptance(facts: Facts) -> list[Block]:
    if not facts.accepted:
        return [Para("- N/A: the profile turns no SCP service on.")]
    blocks: list[Block] = [
        Para("Rules (PS3.8 9.3.2.2, PS3.7 D.3.3.4), applied to each proposed context on its own:"),
        Items((
            "The agent picks the first transfer syntax of ITS preference order (the tables below) that the "
            "requestor proposed.",
            "Exception: when the requestor's FIRST transfer syntax is one the class accepts as proposed "
            "(compressed), that one is taken, and the instance is stored unchanged. When no preferred "
            "syntax was proposed, the first accepted-as-proposed syntax in the requestor's order is taken.",
            "Otherwise the context is rejected: transfer syntaxes not supported (4); an unknown abstract "
            "syntax: abstract syntax not supported (3).",
            "Without SCP/SCU Role Selection the requestor is SCU and the agent SCP. With it, the agent keeps "
            "only the roles the table allows and clears the others; if none is left the context is "
            "rejected by the user (1).",
            "An Asynchronous Operations Window is answered 1/1; SOP Class Extended Negotiation items get no "
            "reply (not supported) unless a class below says otherwise.",
        )),
    ]
    rows: list[tuple[str, ...]] = []
    from agent.services.storage_classes import is_storage_sop_class

    for service, classes in scp_services(facts).items():
        many = [c for c in classes if is_storage_sop_class(c.uid)]
        groups: dict[tuple, list] = {}
        for c in many:
            groups.setdefault((_ts_cell(c), _roles_cell(c), _ext_cell(c)), []).append(c)
        if len(many) > 12:  # all-storage: one row per way of accepting them; section 5.2 lists them
            for (ts, roles, ext), group in groups.items():
                rows.append((f"{len(group)} Storage SOP Classes ({service}, 5.2)", "(all)", ts, roles, ext))
            classes = [c for c in classes if c not in many]
        for c in classes:
            rows.append((c.name, c.uid, _ts_cell(c), _roles_cell(c), _ext_cell(c)))
    blocks.append(Table("Accepted presentation contexts", ("Abstract Syntax", "UID",
                                                           "Transfer Syntaxes (preference order)",
                                                           "Requestor may be / agent's role",
                                                           "Extended Negotiation"), tuple(rows)))
    return blocks


def _ts_cell(c: object) -> str:
    names = [ts_name(t) for t in c.transfer_syntaxes]  # type: ignore[attr-defined]
    text = " > ".join(names)
    if c.as_proposed:  # type: ignore[attr-defined]
        text += f"; {len(c.as_proposed)} compressed as proposed"  # type: ignore[attr-defined]
    if c.accept_any_other:  # type: ignore[attr-defined]
        text += "; then any other proposed"
    return text


def _ext_cell(c: object) -> str:
    return "answered (see 5.2)" if getattr(c, "extended_negotiation", False) else "none"


def _roles_cell(c: object) -> str:
    may = [r for r, on in (("SCU", c.requestor_may_be_scu), ("SCP", c.requestor_may_be_scp)) if on]  # type: ignore[attr-defined]
    return f"{' or '.join(may)} / {roles_of(c)}"  # type: ignore[arg-type]


def _received() -> list[Block]:
    """How a queued operation (C-STORE, N-ACTION, N-CREATE/N-SET, print) takes each failure status: the
    queue's own verdict (agent.services.outbound.check_status), asked code by code."""
    from agent.dimse.status import Status, StatusCategory, category, describe
    from agent.services.outbound import JobFailed, check_status

    dead: list[str] = []
    retried: list[str] = []
    for status in sorted(set(Status), key=int):
        if category(int(status)) is not StatusCategory.FAILURE:
            continue
        try:
            check_status(int(status), "")
        except JobFailed as exc:
            (dead if exc.permanent else retried).append(f"{int(status):04X} ({_meaning(describe(int(status)))})")
    return [
        Para("A queued operation (forwarded C-STORE, Storage Commitment N-ACTION, MPPS N-CREATE and N-SET, "
             "print) is done on Success or a Warning. A failure status is either retried with backoff or "
             "sends the job to the dead list (`dicom-agent queue`), as follows; any other failure status is "
             "retried, except Cxxx and A9xx (dead). A retried MPPS N-CREATE answered 0111 counts as done; the "
             "Print SCU first repeats a request without an optional attribute the printer refused (0105, 0106, "
             "0116)."),
        Table("Failure statuses received", ("Outcome", "Statuses"),
              (("dead list (permanent)", ", ".join(dead)), ("retried", ", ".join(retried)))),
    ]


def _statuses(facts: Facts) -> list[Block]:
    out: list[Block] = []
    for handler, entries in facts.statuses.items():
        out.append(Table(handler, ("Status", "Category", "Meaning"),
                         tuple((f"{e.code:04X}", e.category, _meaning(e.meaning)) for e in entries)))
    return out


def _meaning(text: str) -> str:
    """`describe()` says "0x0122 Failure: SOP class not supported"; the table has code and category."""
    head, _, rest = text.partition(" ")
    text = rest if head.startswith("0x") else text
    for cat in ("Success", "Warning", "Failure", "Error", "Refused", "Pending", "Cancel"):
        if text.startswith(cat + ": "):
            return text[len(cat) + 2:]
    return text


def security(profile: Profile, facts: Facts) -> list[Section]:
    tls = getattr(profile, "tls", None)
    peers_tls = [(name, peer) for name, peer in profile.peers.items() if getattr(peer, "tls", None) is not None]
    sec = getattr(profile, "security", None)
    out = [
        Section("8", "Security", ()),
        Section("8.1", "Security Behavior", (
            Para("The data folder, which holds the database and the received instances (patient data), "
                 "is created readable by its owner and group only."),
        )),
        Section("8.2", "External Network Requirements", (
            Para("Peers are identified by AE title and address; without TLS, DICOM traffic is not "
                 "encrypted and the network must be trusted."),
        )),
        Section("8.3", "TCP Port Configuration", (
            Table("Ports", ("Port", "Use"), (
                *(((str(profile.agent.port), "DICOM (plain TCP)"),) if getattr(tls, "plain_listener", True) else ()),
                *(((str(getattr(tls, "port", "")), f"DICOM over TLS ({getattr(tls, 'profile', '')})"),) if tls else ()),
            )),
        )),
    ]
    if tls is None and not peers_tls:
        out.append(na("8.4", "DICOM Security Profiles Support", "No TLS profile is configured (`[tls]`)."))
    else:
        from agent.net.tls import PROFILE_CIPHERS

        rows: list[tuple[str, ...]] = []
        if tls is not None:
            rows.append((f"Listener, port {tls.port}", tls.profile,
                         f"client certificates {tls.client_certificates}"))
        for name, peer in peers_tls:
            rows.append((f"Peer {name}", peer.tls.profile, "the peer's certificate is verified (host name"
                         + (", subject" if peer.tls.subject else "") + ")"
                         + ("; our client certificate is sent" if peer.tls.certificate else "")))
        used = sorted({r[1] for r in rows})
        out.append(Section("8.4", "DICOM Security Profiles Support", (
            Para("Secure Transport Connection Profiles (PS3.15 Annex B) over BCP 195 TLS: TLS 1.2 or later; "
                 "the TLS 1.2 cipher suites of each profile are listed below (TLS 1.3 suites are always "
                 "offered)."),
            Table("TLS", ("Where", "Profile", "Authentication"), tuple(rows)),
            Table("TLS 1.2 cipher suites", ("Profile", "Cipher suites (OpenSSL names)"),
                  tuple((u, ", ".join(PROFILE_CIPHERS[u])) for u in used)),
        )))
    identity_rows = [(name, peer.identity.kind, "requested" if peer.identity.positive_response else "not requested")
                     for name, peer in profile.peers.items() if getattr(peer, "identity", None) is not None]
    if sec is None and not identity_rows:
        out.append(na("8.5", "User Identity Negotiation Support",
                      "User Identity items are neither sent nor checked; a request for a response gets none."))
    else:
        blocks: list[Block] = []
        if identity_rows:
            blocks.append(Table("Association initiation: User Identity sent (PS3.7 D.3.3.7)",
                                ("Peer", "Type", "Positive response"), tuple(identity_rows)))
        if sec is not None:
            blocks.append(Para(
                "Association acceptance: a username and passcode (type 2) is checked against the users of "
                "`[security]` (salted hashes); other types are accepted without counting as an "
                "authenticated user; a username and passcode that do not match are rejected (A-ASSOCIATE-RJ "
                "permanent, service provider ACSE, no reason given). A positive response is sent only for a "
                "verified identity that asked for one."))
            blocks.append(Table("Access control (`[security]`)", ("Parameter", "Value"), (
                ("Users", str(len(sec.users)) + (" (and a password file)" if sec.password_file else "")),
                ("Services that need an authenticated user", _show(sec.require_identity) or "none"),
                ("Access rules", _show(tuple(f"{r.calling_ae}: {', '.join(sorted(r.services))}" for r in sec.access))
                 if sec.access else "none: every caller may use every service"),
            )))
        out.append(Section("8.5", "User Identity Negotiation Support", tuple(blocks)))
    return out


def _show(value: object) -> str:
    from agent.conformance.settings import show

    if isinstance(value, (frozenset, set)):
        value = tuple(sorted(str(v) for v in value))
    return show(value)


def annexes(profile: Profile, facts: Facts) -> list[Section]:
    out: list[Section] = []
    if profile.device is not None:
        out.append(Section("9", "Information Object Definitions", (
            Para(f"Images from the acquisition device are {profile.device.sop_class} instances; identity "
                 "attributes are mapped from the worklist as in 5.2.8."),
        )))
    else:
        out.append(na("9", "Information Object Definitions", "The agent creates no instances with this profile."))
    out += [
        na("10", "Structured Report Content Encoding", ""),
        na("11", "Security Details", "See 8."),
    ]
    if profile.mpps is not None and profile.worklist is not None:
        from agent.services.mpps import PATIENT_KEYWORDS, SPS_KEYWORDS, STEP_KEYWORDS

        out.append(Section("12", "Mapping of Attributes", (
            Table("Worklist item to MPPS", ("Attribute", "Copied"),
                  tuple((k, "from the worklist item") for k in (*PATIENT_KEYWORDS, *STEP_KEYWORDS, *SPS_KEYWORDS))),
        )))
    else:
        out.append(na("12", "Mapping of Attributes", ""))
    return out


__all__ = ["annexes", "configuration", "network", "security"]
