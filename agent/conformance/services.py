"""Section N.5.2 of the statement: one subsection per DIMSE service, SCU and SCP side.

Numbers are fixed (5.2.1 Verification ... 5.2.7 Print Management) whatever the profile turns on, so two
statements compare section by section; a role the profile leaves off is kept and marked N/A.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from pydicom.dataset import Dataset

from agent.conformance.model import AcceptedClass, Block, Facts, Para, ProposedClass, Section, Table, na
from agent.conformance.sections import accepted_table, blocks_for_group, scp_services, ts_name
from agent.conformance.settings import duration
from agent.profile import Profile


def _proposed_table(rows: Sequence[ProposedClass]) -> Table:
    def role(p: ProposedClass) -> str:
        if p.scu_role is None and p.scp_role is None:
            return "SCU (no role selection)"
        return " and ".join(r for r, on in (("SCU", p.scu_role), ("SCP", p.scp_role)) if on) + " (role selection)"

    def key(p: ProposedClass) -> tuple:
        return (p.transfer_syntaxes, p.scu_role, p.scp_role, p.peers, p.note)

    out: list[tuple[str, ...]] = []
    groups: dict[tuple, list[ProposedClass]] = defaultdict(list)
    for p in rows:
        groups[key(p)].append(p)
    for group in groups.values():
        p = group[0]
        # Many classes proposed alike (forwarding every Storage class) make one row.
        what = f"{p.name} ({p.uid})" if len(group) <= 12 else f"each of {len(group)} SOP classes (listed in the SCP section)"
        for q in group if len(group) <= 12 else [p]:
            out.append((what if q is p else f"{q.name} ({q.uid})", ", ".join(ts_name(t) for t in q.transfer_syntaxes),
                        role(q), ", ".join(q.peers), q.note))
    return Table("Presentation contexts proposed", ("SOP Class", "Transfer syntaxes, in proposal order", "Role",
                                                    "To", "When"), tuple(out))


def _scp_blocks(classes: Sequence[AcceptedClass]) -> list[Block]:
    groups: dict[tuple, list[AcceptedClass]] = defaultdict(list)
    for c in classes:
        groups[(c.transfer_syntaxes, c.as_proposed, c.requestor_may_be_scu, c.requestor_may_be_scp)].append(c)
    out: list[Block] = []
    for group in groups.values():
        out.append(accepted_table(f"SOP classes accepted ({len(group)})", group))
        out += blocks_for_group(group)
    return out


def service_sections(profile: Profile, facts: Facts) -> list[Section]:
    scp = scp_services(facts)
    proposed: dict[str, list[ProposedClass]] = defaultdict(list)
    for p in facts.proposed:
        proposed[p.service].append(p)
    p = profile
    out: list[Section] = []

    def pair(number: str, service: str, scu_text: Sequence[Block], scp_text: Sequence[Block]) -> None:
        out.append(Section(number, service, ()))
        # A context proposed with the agent as SCP only (a commitment report on a new association)
        # belongs to the SCP side.
        as_scu = [x for x in proposed.get(service, []) if not (x.scp_role and not x.scu_role)]
        as_scp = [x for x in proposed.get(service, []) if x.scp_role and not x.scu_role]
        if as_scu:
            out.append(Section(f"{number}.1", f"SCU of the {service} Service", (*scu_text, _proposed_table(as_scu))))
        else:
            out.append(na(f"{number}.1", f"SCU of the {service} Service", "The profile does not use it."))
        if scp.get(service):
            extra = (_proposed_table(as_scp),) if as_scp else ()
            out.append(Section(f"{number}.2", f"SCP of the {service} Service",
                               (*scp_text, *_scp_blocks(scp[service]), *extra)))
        else:
            out.append(na(f"{number}.2", f"SCP of the {service} Service", "The profile does not turn it on."))

    pair("5.2.1", "Verification",
         [Para("`dicom-agent echo HOST PORT` sends one C-ECHO and reports the status.")],
         [Para("Every C-ECHO is answered with Success.")])
    storage_scp = []
    if p.storage is not None:
        duplicate = ("replaces the stored copy" if p.storage.duplicate == "replace"
                     else "is answered Success and dropped: the first copy is kept")
        retention = ""
        commit_with = p.storage.commit_with or (p.device.commit_with if p.device else None)
        if p.storage.retention is not None and commit_with:
            retention = (f" An instance is deleted {duration(p.storage.retention)} after {commit_with} committed it "
                         "(Storage Commitment), never before; without that commitment it is kept.")
        storage_scp.append(Para(
            "Each instance is received into a file whose name is already durable, its data flushed, renamed "
            "into the store and indexed; the C-STORE response is sent only after the index commit, once the "
            "instance would survive a power cut. Level 2 (Full) "
            "storage (PS3.4 B.4.1): instances are stored exactly as received, every attribute kept, private "
            "ones and digital signatures included (signatures are not checked). An instance received again "
            f"(same SOP Instance UID) {duplicate}. Below {p.storage.free_space_floor} bytes of free space new "
            "instances are refused (A700)."
            + (f" Every instance is queued for forwarding to {', '.join(p.storage.forward_to)}." if p.storage.forward_to else "")
            + retention))
    pair("5.2.2", "Storage",
         [Para("Instances are sent from the local store through the durable queue, each in its own transfer "
               "syntax when the peer accepted it, otherwise transcoded between the uncompressed transfer "
               "syntaxes; a compressed instance whose own syntax was refused fails permanently for that peer. "
               "Transient failures are retried with capped exponential backoff; a permanent refusal or an "
               "expired job goes to the dead list (`dicom-agent queue`).")],
         storage_scp)
    commit_scu: list[Block] = [Para(
        "Once the peer holds a batch of instances, an N-ACTION asks it to commit them; the N-EVENT-REPORT is "
        "accepted on the same association or on a new one to our listener (the peer may then propose itself "
        "as SCP with role selection, or propose no role selection). Without a report in time the request is "
        "repeated with a new Transaction UID. Only committed instances may be deleted after `retention`.")]
    commit_scp: list[Block] = []
    if p.commitment is not None:
        commit_scp.append(Para(
            "N-ACTION (Request Storage Commitment) is answered at once; the agent commits the instances it "
            "holds and sends the N-EVENT-REPORT "
            + ("on the same association, or on a new one if the requester has left"
               if p.commitment.report_on == "same-association" else "on a new association")
            + f", after {duration(p.commitment.report_delay)}. A new association proposes Storage Commitment with "
            "the agent as SCP (role selection, table below)."))
    pair("5.2.3", "Storage Commitment", commit_scu, commit_scp)
    pair("5.2.4", "Query/Retrieve",
         [Para("`dicom-agent find|move|get` query a peer of the profile or a host named on the command line "
               "(Patient or Study Root); a C-GET proposes the storage classes of its sub-operations with the "
               "agent as their SCP (role selection) and stores what arrives in the local store."
               + (f" When a procedure starts, the patient's {p.device.priors_max} most recent earlier studies "
                  f"are found at {p.device.priors_from} (Study Root C-FIND) and retrieved "
                  f"(C-{p.device.priors_retrieve.upper()}) through the queue."
                  if p.device is not None and p.device.priors_from else ""))],
         _query_scp(p, scp.get("Query/Retrieve", [])))
    mwl_scu: list[Block] = []
    if p.worklist is not None and p.worklist.source:
        mwl_scu += [Para(f"One C-FIND to {p.worklist.source} every {duration(p.worklist.refresh)}; a successful "
                         "answer replaces the cache in one transaction, a failure keeps the old set (reported "
                         f"stale after {duration(p.worklist.stale_after)})."),
                    _query_keys(facts.extras.get("mwl_query"), p)]
    mwl_scp: list[Block] = []
    if p.worklist is not None and p.worklist.serve:
        mwl_scp += [Para("Candidates are the cached items, the local ones (`dicom-agent worklist add`) and the "
                         "`.wl` files of `[worklist] folder`, minus steps whose MPPS is COMPLETED or "
                         "DISCONTINUED; one answer per scheduled procedure step. Every attribute of the "
                         "identifier is a matching key (a zero-length one is a return key); unsupported "
                         "optional keys are returned empty and FF01 is never sent."),
                    _matching_types()]
    pair("5.2.5", "Basic Worklist Management", mwl_scu, mwl_scp)
    mpps_scu: list[Block] = []
    if p.mpps is not None and p.mpps.serve and p.mpps.forward_to:
        mpps_scu.append(Para(f"Every N-CREATE and N-SET the SCP accepts is forwarded, in order, to "
                             f"{', '.join(p.mpps.forward_to)}."))
    if p.mpps is not None and p.mpps.send_to:
        mpps_scu.append(Para("N-CREATE (IN PROGRESS) when a procedure starts, N-SET (COMPLETED or "
                             "DISCONTINUED, with the Performed Series Sequence) when it ends; N-SET only after "
                             "its N-CREATE succeeded. A retried N-CREATE answered 0111 counts as done."))
    mpps_scp: list[Block] = []
    if p.mpps is not None and p.mpps.serve:
        from agent.services.mpps import PATIENT_KEYWORDS

        coerced = ("patient attributes (" + ", ".join(PATIENT_KEYWORDS) + ") are coerced from the worklist item "
                   "the N-CREATE names" if p.mpps.coerce_from_worklist else "nothing is coerced")
        mpps_scp.append(Para(f"Instances are kept for {duration(p.mpps.instance_lifetime)}; {coerced}"
                             + (f"; each is forwarded to {', '.join(p.mpps.forward_to)}." if p.mpps.forward_to else ".")))
    pair("5.2.6", "Modality Performed Procedure Step", mpps_scu, mpps_scp)
    print_scp: list[Block] = []
    caps = facts.extras.get("printer")
    if caps is not None and p.print is not None:
        print_scp += [
            Para("One film session per association; on N-ACTION (print) the film box is rendered and recorded "
                 "as a durable print job before the answer. Printer and Print Job N-EVENT-REPORTs are sent to "
                 "the associations entitled to them."),
            Table("Printer capabilities", ("Attribute", "Values"), (
                ("Film Size ID", ", ".join(caps.film_sizes)),  # type: ignore[attr-defined]
                ("Image Display Format", ", ".join(p.print.formats)),
                ("Medium Type", ", ".join(caps.medium_types)),  # type: ignore[attr-defined]
                ("Film Destination", ", ".join(caps.film_destinations)),  # type: ignore[attr-defined]
                ("Min / Max Density", f"{caps.min_density} / {caps.max_density}"),  # type: ignore[attr-defined]
                ("Resolution", f"{caps.dpi} dpi"),  # type: ignore[attr-defined]
                ("Color", "yes" if caps.color else "no (grayscale)"),  # type: ignore[attr-defined]
            )),
        ]
    pair("5.2.7", "Print Management",
         [Para("A print job (`dicom-agent print`, or one film per procedure with `[device] print_to`) opens a "
               "film session, film box and image boxes, prints and deletes them; the Presentation LUT, "
               "Annotation Box and Print Job classes are used when the printer accepts them.")],
         print_scp)
    out.append(Section("5.2.8", "Coercion of Attributes", tuple(_coercions(p))))
    return out


def _query_scp(p: Profile, classes: Sequence[AcceptedClass]) -> list[Block]:
    q = getattr(p, "query", None)
    if q is None or not classes:
        return []
    from agent.services.query import keys as K
    from agent.services.query.models import MODELS, UNIQUE_KEYS

    dests = "every peer of `[peers]`" if q.move_destinations is None else ", ".join(q.move_destinations) or "none"
    blocks: list[Block] = [Para(
        "Queries are answered from the index of the local store. C-FIND answers at most "
        f"{q.max_results} matches (then A700); relational queries are "
        + ("accepted when the SCU asks for them (SOP Class Extended Negotiation, PS3.4 C.5.1.1); "
           if q.relational else "declined; ")
        + "date-time matching, fuzzy semantic matching and timezone adjustment are declined. C-MOVE "
        f"destinations: {dests} (by AE title; another is refused with A801); sub-operations go through the "
        "queue as Storage SCU. C-GET sends the sub-operations on the same association.")]
    for model in q.models:
        m = MODELS[model]
        rows: list[tuple[str, ...]] = []
        for level in m.levels:
            unique = UNIQUE_KEYS[level][0] if isinstance(UNIQUE_KEYS[level], tuple) else UNIQUE_KEYS[level]
            for keyword in K.keys_at(model, level):
                kind = "unique" if keyword == unique else "required or optional"
                rows.append((level, keyword, f"({K.tag_of(keyword) >> 16:04X},{K.tag_of(keyword) & 0xFFFF:04X})",
                             kind, "matching and return"))
            for keyword in K.UNSUPPORTED.get(level, ()):
                rows.append((level, keyword, f"({K.tag_of(keyword) >> 16:04X},{K.tag_of(keyword) & 0xFFFF:04X})",
                             "optional", "return only, empty (FF01 if a value is sent)"))
        blocks.append(Table(f"{model.capitalize()} Root keys", ("Level", "Attribute", "Tag", "Key", "Use"), tuple(rows)))
    blocks.append(_matching_types())
    return blocks


def _query_keys(query: object, p: Profile) -> Table:
    rows: list[tuple[str, ...]] = []

    def walk(ds: Dataset, prefix: str) -> None:
        for elem in ds:
            name = prefix + (elem.keyword or str(elem.tag))
            if elem.VR == "SQ":
                rows.append((name, f"({elem.tag.group:04X},{elem.tag.element:04X})", "return"))
                for item in elem.value:
                    walk(item, name + " > ")
                continue
            if elem.keyword == "ScheduledProcedureStepStartDate":
                value = f"`[worklist] date` = {p.worklist.date!r}" if p.worklist else ""
            else:
                value = str(elem.value) if elem.value not in (None, "") else ""
            rows.append((name, f"({elem.tag.group:04X},{elem.tag.element:04X})",
                         f"matching: {value}" if value else "return"))

    if isinstance(query, Dataset):
        walk(query, "")
    return Table("Keys of the worklist query", ("Attribute", "Tag", "Use"), tuple(rows))


def _matching_types() -> Table:
    from agent.matching.values import RANGE_VRS, WILDCARD_VRS

    return Table("Matching types (PS3.4 C.2.2.2)", ("Matching", "Where"), (
        ("Single value", "every attribute with a value"),
        ("Universal (zero-length)", "every attribute"),
        ("Wild card (* and ?)", "VR " + ", ".join(sorted(WILDCARD_VRS))),
        ("Range (-)", "VR " + ", ".join(sorted(RANGE_VRS)) + "; a date and a time key together match as one "
         "date-time range"),
        ("List of UIDs", "VR UI"),
        ("Sequence", "SQ: the item's keys matched within each item"),
    ))


def _coercions(p: Profile) -> list[Block]:
    out: list[Block] = []
    if p.storage is not None:
        out.append(Para("Storage SCP: none; the data set is stored byte for byte as received (a File Meta "
                        "Information header is added)."))
    if p.mpps is not None and p.mpps.serve and p.mpps.coerce_from_worklist:
        out.append(Para("MPPS SCP: patient attributes coerced from the worklist item (5.2.6.2)."))
    if p.device is not None:
        from agent.workflow.mapping import PATIENT_KEYWORDS, STUDY_KEYWORDS

        out.append(Para("Acquired images take their identity from the worklist item (PS3.17 Annex J): "
                        + ", ".join(PATIENT_KEYWORDS + STUDY_KEYWORDS) + ". The device's own attributes never "
                        "replace them."))
    if not out:
        out.append(Para("- N/A: the agent changes no attribute of what it receives."))
    return out


__all__ = ["service_sections"]
