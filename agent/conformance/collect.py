"""Read the facts of a conformance statement from the agent the profile builds.

Invariants:
- The acceptor side is read from the `ServiceRegistry` of an `Agent` built from the profile: the same
  objects the listener negotiates with (PS3.8 9.3.2.2), so the statement and the wire cannot disagree.
- Building the agent opens neither the network nor the profile's data folder: persistence is opened in a
  throwaway temporary folder, removed before this returns, and no task is started.
- The requestor side is read from the performers' and SCUs' own proposal functions and constants; the
  statuses from the constant each handler module declares next to its handler.
"""

from __future__ import annotations

import dataclasses
import importlib
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydicom.uid import UID_dictionary

from agent import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, __version__
from agent.conformance.model import AcceptedClass, Facts, ProposedClass, Statement, StatusEntry
from agent.conformance.settings import configuration
from agent.dimse import (
    CEchoRQ, CFindRQ, CGetRQ, CMoveRQ, CStoreRQ, NActionRQ, NCreateRQ, NDeleteRQ, NEventReportRQ, NGetRQ, NSetRQ,
)
from agent.dimse.status import Status, category, describe
from agent.profile import Profile
from agent.ul.negotiation import ProposedContext

#: DIMSE request types a handler can be registered for, with their PS3.7 names.
OPERATIONS: tuple[tuple[type, str], ...] = (
    (CEchoRQ, "C-ECHO"), (CStoreRQ, "C-STORE"), (CFindRQ, "C-FIND"), (CMoveRQ, "C-MOVE"), (CGetRQ, "C-GET"),
    (NCreateRQ, "N-CREATE"), (NSetRQ, "N-SET"), (NGetRQ, "N-GET"), (NActionRQ, "N-ACTION"),
    (NDeleteRQ, "N-DELETE"), (NEventReportRQ, "N-EVENT-REPORT"),
)


def uid_name(uid: str) -> str:
    entry = UID_dictionary.get(uid)
    if not entry:
        return uid
    return f"{entry[0]} (Retired)" if entry[3] == "Retired" and "Retired" not in entry[0] else entry[0]


def service_of(uid: str, operations: Iterable[str]) -> str:
    """The PS3.4 service class a SOP class belongs to, for grouping the statement's tables."""
    from agent.services.storage_classes import is_storage_sop_class

    name = uid_name(uid)
    if uid == "1.2.840.10008.1.1":
        return "Verification"
    if uid.startswith("1.2.840.10008.1.20."):
        return "Storage Commitment"
    if "Worklist" in name:
        return "Basic Worklist Management"
    if "Performed Procedure Step" in name:
        return "Modality Performed Procedure Step"
    if is_storage_sop_class(uid) or "C-STORE" in operations:
        return "Storage"  # before Print: Hardcopy and Stored Print Storage are stored with C-STORE
    if uid.startswith("1.2.840.10008.5.1.1."):
        return "Print Management"
    if "Query/Retrieve" in name or "Retrieve" in name:
        return "Query/Retrieve"
    return "Other"


def collect(profile: Profile) -> Facts:
    """Build the agent for `profile` (no network, a temporary data folder) and read what it does."""
    from agent.app import Agent

    with tempfile.TemporaryDirectory(prefix="dicom-agent-conformance-") as tmp:
        scratch = dataclasses.replace(profile, agent=dataclasses.replace(profile.agent, data_dir=Path(tmp)))
        agent = Agent(scratch)
        try:
            agent.open_persistence()
            agent.build()
            accepted = _accepted(agent)
            proposed = _proposed(agent)
            extras = _extras(agent)
        finally:
            if agent.db is not None:
                agent.db.close()
            for driver in (agent.printer, agent.device_driver):
                close = getattr(driver, "close", None)
                if callable(close):
                    close()
    a = profile.agent
    return Facts(
        product="dicom-agent",
        version=__version__,
        implementation_class_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version_name=IMPLEMENTATION_VERSION_NAME,
        ae_title=a.ae_title,
        port=a.port,
        accepted=accepted,
        proposed=proposed,
        statuses=_statuses(agent, accepted),
        timeouts={"connect": a.connect_timeout, "artim": a.artim_timeout, "dimse": a.dimse_timeout,
                  "idle": a.idle_timeout},
        max_pdu_receive=a.max_pdu_length,
        max_associations=a.max_associations,
        async_window=(1, 1),  # agent.ul.negotiation.build_accept: one operation at a time (PS3.7 D.3.3.3)
        settings=configuration(profile),
        extras=extras,
    )


def _accepted(agent: object) -> tuple[AcceptedClass, ...]:
    registry = agent.registry  # type: ignore[attr-defined]
    print_service = getattr(agent, "print_service", None)
    print_classes: set[str] = set()
    routes: frozenset[tuple[str, type]] = frozenset()
    if print_service is not None:
        from agent.services.print.scp import META_MEMBERS

        print_classes, routes = set(print_service.scp.sop_classes()), print_service.scp.operations()
    out = []
    for uid in registry.sop_classes:
        sup = registry.support(uid)
        ops = tuple(name for kind, name in OPERATIONS if registry.handler(uid, kind) is not None)
        if uid in print_classes:
            # The Print SCP takes every N-request on its contexts and performs those of its own table
            # (0211 for the others); on a Meta SOP class context, those of the member classes.
            members = META_MEMBERS.get(uid, (uid,))
            ops = tuple(name for kind, name in OPERATIONS if any((m, kind) in routes for m in members))
        service = service_of(uid, ops)
        if service == "Storage" and not ops and sup.requestor_may_be_scp:
            service = "Query/Retrieve"  # accepted only for the C-STOREs a C-GET sends back (PS3.4 C.4.3)
        out.append(AcceptedClass(
            uid=uid, name=uid_name(uid), service=service, operations=ops,
            transfer_syntaxes=tuple(sup.transfer_syntaxes),
            as_proposed=tuple(sorted(sup.compressed, key=_uid_key)),
            accept_any_other=sup.accept_any_other,
            requestor_may_be_scu=sup.requestor_may_be_scu, requestor_may_be_scp=sup.requestor_may_be_scp,
            extended_negotiation=getattr(sup, "extended_negotiation", None) is not None,
        ))
    return tuple(out)


def _uid_key(uid: str) -> tuple[int, ...]:
    return tuple(int(p) for p in uid.split("."))


def _proposal(service: str, p: ProposedContext, peers: Sequence[str], note: str = "") -> ProposedClass:
    return ProposedClass(service, p.abstract_syntax, uid_name(p.abstract_syntax), tuple(p.transfer_syntaxes),
                         tuple(peers), p.scu_role, p.scp_role, note)


def _proposed(agent: object) -> tuple[ProposedClass, ...]:
    from agent.services.mpps import MPPS_CREATE_JOB, MppsPerformer
    from agent.services.storage_scu import SendItem, proposals_for
    from agent.services.verification import VERIFICATION_SOP_CLASS
    from agent.services.worklist import SCU_PROPOSALS
    from agent.store.dicomfile import FileMeta
    from agent.ul.negotiation import EXPLICIT_VR_LE

    p: Profile = agent.profile  # type: ignore[attr-defined]
    out: list[ProposedClass] = []
    store_to = tuple(dict.fromkeys((p.storage.forward_to if p.storage else ()) + (p.device.send_to if p.device else ())))
    if store_to:
        # What is sent is what was stored: the classes the Storage SCP accepts (forwarding) and the
        # device's images. The proposal for each comes from the Storage SCU's own function.
        classes: dict[str, tuple[str, ...]] = {}
        if p.storage is not None and p.storage.forward_to:
            forwarded = tuple(p.storage.forward_to)
            for uid in agent.registry.sop_classes:  # type: ignore[attr-defined]
                if service_of(uid, ()) == "Storage":
                    classes[uid] = forwarded
        if p.device is not None and p.device.send_to:
            classes[p.device.sop_class] = tuple(dict.fromkeys(classes.get(p.device.sop_class, ()) + p.device.send_to))
        for sop, peers in classes.items():
            meta = FileMeta(EXPLICIT_VR_LE, sop, "1.2.3", 0)
            for ctx in proposals_for([SendItem(Path("."), meta)])[0]:
                out.append(_proposal("Storage", ctx, peers, "C-STORE; a compressed instance is proposed in its "
                                     "own transfer syntax too"))
    requester = getattr(agent, "commit_requester", None)
    if requester is not None:
        for ctx in requester.contexts(None):
            out.append(_proposal("Storage Commitment", ctx, (requester.destination,), "N-ACTION request"))
    commit_scp = getattr(agent, "commit_scp", None)
    if commit_scp is not None:
        for ctx in commit_scp.contexts(None):
            out.append(_proposal("Storage Commitment", ctx, ("the requester's peer",),
                                 "N-EVENT-REPORT on a new association"))
    if p.worklist is not None and p.worklist.source is not None:
        for ctx in SCU_PROPOSALS:
            out.append(_proposal("Basic Worklist Management", ctx, (p.worklist.source,), "C-FIND"))
    mpps_to = tuple(dict.fromkeys(p.mpps.send_to + (p.mpps.forward_to if p.mpps.serve else ()))) if p.mpps else ()
    if mpps_to:  # our own procedures (send_to) and, as SCP, what we forward (forward_to): one performer
        for ctx in MppsPerformer(MPPS_CREATE_JOB).contexts(None):  # type: ignore[arg-type]
            out.append(_proposal("Modality Performed Procedure Step", ctx, mpps_to, "N-CREATE, N-SET"))
    printers = tuple(dict.fromkeys(x for x in ((p.print.printer if p.print else None),
                                              (p.device.print_to if p.device else None)) if x))
    if printers:
        from agent.services.print.scu import proposals as print_proposals
        from agent.services.print.scu_options import FilmOptions

        seen: dict[str, ProposedContext] = {}
        for color in (False, True):
            for ctx in print_proposals(color, FilmOptions(presentation_lut=True, annotations=("A",))):
                seen.setdefault(ctx.abstract_syntax, ctx)
        for ctx in seen.values():
            out.append(_proposal("Print Management", ctx, printers, "as each print job needs"))
    if p.device is not None and p.device.priors_from:  # agent/workflow/priors.py: the same function
        from agent.services.query import scu as qr_scu

        how = p.device.priors_retrieve
        for ctx in qr_scu.proposals("study", ["find", how]):
            out.append(_proposal("Query/Retrieve", ctx, (p.device.priors_from,),
                                 f"priors when a procedure starts (C-FIND, C-{how.upper()})"))
    out.append(_proposal("Verification", ProposedContext(VERIFICATION_SOP_CLASS), ("any (dicom-agent echo)",),
                         "C-ECHO"))
    out.extend(_optional_proposals(agent))
    return tuple(out)


def _optional_proposals(agent: object) -> list[ProposedClass]:
    """The Q/R SCU (`dicom-agent find|move|get`): what it proposes for each model, from its own function."""
    try:
        scu = importlib.import_module("agent.services.query.scu")
    except ImportError:
        return []
    out: list[ProposedClass] = []
    seen: set[tuple] = set()
    for root in ("patient", "study"):
        for op in ("find", "move", "get"):
            for ctx in scu.proposals(root, [op]):
                key = (ctx.abstract_syntax, ctx.transfer_syntaxes, ctx.scu_role, ctx.scp_role)
                if key in seen:
                    continue
                seen.add(key)
                note = f"dicom-agent {op}" + (" (the C-GET sub-operations' Storage SCP)" if ctx.scp_role else "")
                out.append(_proposal("Query/Retrieve", ctx, ("a peer or host named on the command line",), note))
    return out


def _entries(codes: Iterable[int]) -> tuple[StatusEntry, ...]:
    return tuple(StatusEntry(int(c), category(int(c)).value, describe(int(c))) for c in codes)


def _statuses(agent: object, accepted: tuple[AcceptedClass, ...]) -> dict[str, tuple[StatusEntry, ...]]:
    from agent.services import commitment, mpps, storage, verification, worklist

    services = {c.service for c in accepted}
    out: dict[str, tuple[StatusEntry, ...]] = {}
    if "Verification" in services:
        out["Verification SCP (C-ECHO)"] = _entries(verification.SCP_STATUSES)
    if "Storage" in services:
        out["Storage SCP (C-STORE)"] = _entries(storage.SCP_STATUSES)
    if getattr(agent, "commit_scp", None) is not None:
        out["Storage Commitment SCP (N-ACTION)"] = _entries(commitment.ACTION_STATUSES)
    if getattr(agent, "commit_requester", None) is not None:
        out["Storage Commitment SCU (N-EVENT-REPORT received)"] = _entries(commitment.REPORT_STATUSES)
    if "Basic Worklist Management" in services:
        out["Modality Worklist SCP (C-FIND)"] = _entries(worklist.SCP_STATUSES)
    if "Modality Performed Procedure Step" in services:
        out["MPPS SCP (N-CREATE, N-SET)"] = _entries(mpps.SCP_STATUSES)
    if "Print Management" in services:
        from agent.services.print import scp

        out["Print SCP (all Print Management SOP classes)"] = _entries(scp.SCP_STATUSES)
    if "Query/Retrieve" in services:
        from agent.services.query import scp as qr

        for op, codes in (("C-FIND", qr.FIND_STATUSES), ("C-MOVE", qr.MOVE_STATUSES), ("C-GET", qr.GET_STATUSES)):
            if any(op in c.operations for c in accepted if c.service == "Query/Retrieve"):
                out[f"Query/Retrieve SCP ({op})"] = _entries(codes)
    # agent.net.server.refuse_request: a request with no handler on an accepted context (PS3.7 C.4.2).
    out["Any SCP (a request type this AE does not perform)"] = _entries((Status.UNRECOGNIZED_OPERATION,))
    return out


def _extras(agent: object) -> dict[str, object]:
    from agent.services.worklist import build_query

    p: Profile = agent.profile  # type: ignore[attr-defined]
    extras: dict[str, object] = {}
    printer = getattr(agent, "printer", None)
    if printer is not None:
        extras["printer"] = printer.capabilities()
    if p.worklist is not None and p.worklist.source is not None:
        extras["mwl_query"] = build_query(p.worklist)
    return extras


def statement(profile: Profile) -> Statement:
    """The whole conformance statement of the agent `profile` configures (PS3.2 Annex N order)."""
    from agent.conformance import details, sections

    facts = collect(profile)
    parts = [
        *sections.overview(profile, facts),
        *sections.introduction(profile, facts),
        *sections.implementation_model(profile, facts),
        *sections.services(profile, facts),
        *details.configuration(profile, facts),
        *details.network(profile, facts),
        *details.security(profile, facts),
        *details.annexes(profile, facts),
    ]
    return Statement(
        title=f"DICOM Conformance Statement: dicom-agent {facts.version}",
        subtitle=f"Application Entity {facts.ae_title}",
        facts=facts,
        sections=tuple(parts),
    )


__all__ = ["OPERATIONS", "collect", "service_of", "statement", "uid_name"]
