"""Modality Worklist (PS3.4 K): the SCU that keeps the RIS's answers cached, and the SCP that serves them.

Invariants (seed Tables 6, 49-57; S-16, S-22, S-29):
- SCU: one C-FIND to `[worklist] source` every `refresh` seconds (and when `request_refresh()` is
  called); a successful answer replaces the cached set in one transaction, a failure keeps the old set,
  which is served and reported stale once older than `stale_after`.
- SCP: candidates are the cache, the local items (`dicom-agent worklist add`) and the `.wl` files of
  `[worklist] folder`, minus every step whose MPPS is COMPLETED or DISCONTINUED (seed S-34). They are
  decoded once per change, not per query: the store's version counter is read per query; the folder is
  re-listed when its mtime changes and otherwise at most every FOLDER_RESCAN seconds (a file rewritten
  in place is noticed within that time).
- One answer per Scheduled Procedure Step: items that name the same step (Study Instance UID,
  Requested Procedure ID and Scheduled Procedure Step ID; the Accession Number stands in for a missing
  Study Instance UID) are served once, as the freshest copy. A cached item is as fresh as its source's
  last successful refresh, a local item as its `worklist add`, a folder item as its file's mtime; on a
  tie the RIS cache wins over local items, and local items over the folder. An item naming neither a
  study nor an accession cannot be matched with another and is always served.
- Statuses: FF00 per match (FF01 is never sent: unsupported optional keys are answered empty, which
  PS3.4 K.4.1.1.3.2 allows); 0000 final; FE00 after a C-CANCEL-RQ (checked between pending responses
  with `DicomConnection.poll_event`, never blocking); A900 for an identifier the matcher refuses (wrong
  VR, malformed range or value, undecodable data set); C001 for an unknown Specific Character Set;
  A700 when the candidates cannot be loaded (I/O or memory). A refused query leaves the association
  usable.
- Speed: a conservative pre-filter on plain strings (SPS date, modality, station) drops most items of a
  typical console query before the full matcher (agent.matching) runs on the rest.
- Responses carry the item's own Specific Character Set (agent.matching.build_response), so ISO_IR 100
  and ISO_IR 192 names reach the console as the RIS wrote them.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from agent.dimse import CCancelRQ, CFindRQ, CommandReceived, Status
from agent.dimse.status import StatusCategory, category, describe
from agent.errors import AgentError
from agent.matching import MatchingError, build_response, compile_identifier
from agent.net.client import associate
from agent.net.connection import DicomConnection, Timeouts, unexpected_event
from agent.net.requests import responses
from agent.net.server import ServiceRegistry
from agent.profile import Peer, WorklistSettings
from agent.services.blocking import Blocking
from agent.services.dataset import EXPLICIT_VR_LE, IMPLICIT_VR_LE, DataSetError, decode, encode, read_part10
from agent.store.worklist import FetchState, StepRef, WorklistStore
from agent.ul.negotiation import PresentationContext, ProposedContext, SyntaxSupport

log = logging.getLogger("agent.worklist")

MWL_FIND = "1.2.840.10008.5.1.4.31"  # Modality Worklist Information Model - FIND
FOLDER_RESCAN = 2.0
#: What the MWL SCU proposes to `[worklist] source` (the conformance statement lists it).
SCU_PROPOSALS: tuple[ProposedContext, ...] = (ProposedContext(MWL_FIND, (EXPLICIT_VR_LE, IMPLICIT_VR_LE)),)
#: Every status the MWL C-FIND SCP answers (see the invariants above); the conformance statement lists
#: these, and a test checks that the handler answers no status missing here.
SCP_STATUSES: tuple[int, ...] = (
    Status.PENDING, Status.SUCCESS, Status.CANCEL, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    Status.UNABLE_TO_PROCESS, Status.OUT_OF_RESOURCES,
)
WORKLIST_SUFFIXES = (".wl",)


class WorklistError(AgentError):
    """The RIS could not be queried (or refused the query)."""


# ------------------------------------------------------------------ items


def step_ref(item: Dataset) -> StepRef:
    """How an MPPS would name this worklist item's scheduled step."""
    sps = item.get("ScheduledProcedureStepSequence")
    sps_id = ""
    if sps:
        sps_id = str(sps[0].get("ScheduledProcedureStepID", "") or "")
    return StepRef(
        study_uid=str(item.get("StudyInstanceUID", "") or ""),
        accession=str(item.get("AccessionNumber", "") or ""),
        requested_procedure_id=str(item.get("RequestedProcedureID", "") or ""),
        sps_id=sps_id,
    )


def not_performed(items: Sequence[Dataset], performed: Sequence[StepRef]) -> list[Dataset]:
    if not performed:
        return list(items)
    by_study: dict[str, list[StepRef]] = {}
    by_accession: dict[str, list[StepRef]] = {}
    for ref in performed:
        if ref.study_uid:
            by_study.setdefault(ref.study_uid, []).append(ref)
        if ref.accession:
            by_accession.setdefault(ref.accession, []).append(ref)
    kept = []
    for item in items:
        ref = step_ref(item)
        near = by_study.get(ref.study_uid, []) + by_accession.get(ref.accession, [])
        if not any(done.refers_to(ref) for done in near):
            kept.append(item)
    return kept


def scan_folder(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, mtime_ns, size) of each worklist file in `folder`, sorted; empty if it does not exist."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return ()
    out = []
    for e in entries:
        if e.name.lower().endswith(WORKLIST_SUFFIXES) and e.is_file():
            st = e.stat()
            out.append((e.name, st.st_mtime_ns, st.st_size))
    return tuple(sorted(out))


#: A worklist item with the time its source last vouched for it (seconds since the epoch).
Dated = tuple[float, Dataset]


def read_folder_dated(folder: Path, signature: Sequence[tuple[str, int, int]]) -> list[Dated]:
    items = []
    for name, mtime_ns, _size in signature:
        try:
            items.append((mtime_ns / 1e9, read_part10(str(folder / name))))
        except DataSetError as exc:
            log.warning("worklist folder: skipping %s: %s", name, exc)
    return items


def read_folder(folder: Path, signature: Sequence[tuple[str, int, int]]) -> list[Dataset]:
    return [item for _at, item in read_folder_dated(folder, signature)]


def load_stored_dated(store: WorklistStore) -> list[Dated]:
    """Cached RIS answers, then local items, decoded, each with its time (blocking)."""
    items = []
    for at, data in store.cached_entries() + store.local_entries():
        try:
            items.append((at, decode(data, EXPLICIT_VR_LE, eager=True)))
        except DataSetError as exc:
            log.warning("worklist store: skipping an undecodable item: %s", exc)
    return items


def load_stored(store: WorklistStore) -> list[Dataset]:
    """Cached RIS answers and local items, decoded (blocking)."""
    return one_per_step(load_stored_dated(store))


def step_key(item: Dataset) -> tuple[str, ...] | None:
    """What makes two items the same Scheduled Procedure Step (module invariants), or None."""
    ref = step_ref(item)
    if ref.study_uid:
        return ("study", ref.study_uid, ref.requested_procedure_id, ref.sps_id)
    if ref.accession:
        return ("accession", ref.accession, ref.requested_procedure_id, ref.sps_id)
    return None


def one_per_step(items: Sequence[Dated]) -> list[Dataset]:
    """One item per step, the freshest; on a tie the earlier in `items`. Order of first appearance."""
    chosen: dict[tuple[str, ...], int] = {}
    out: list[Dated] = []
    for at, item in items:
        key = step_key(item)
        if key is None:
            out.append((at, item))
            continue
        index = chosen.get(key)
        if index is None:
            chosen[key] = len(out)
            out.append((at, item))
        elif at > out[index][0]:
            out[index] = (at, item)
    return [item for _at, item in out]


def served_items(store: WorklistStore, folder: Path | None) -> list[Dataset]:
    """Everything the MWL SCP serves right now (blocking; for the CLI)."""
    items = load_stored_dated(store)
    if folder is not None:
        items += read_folder_dated(folder, scan_folder(folder))
    return not_performed(one_per_step(items), store.performed())


# ------------------------------------------------------------------ pre-filter

#: Per item, one (start date, modality, station AE) per Scheduled Procedure Step item.
StepSummary = tuple[tuple[str, str, str], ...]


def summarize(item: Dataset) -> StepSummary:
    out = []
    for sps in item.get("ScheduledProcedureStepSequence") or []:
        out.append((str(sps.get("ScheduledProcedureStepStartDate", "") or "").strip(),
                    str(sps.get("Modality", "") or "").strip(),
                    str(sps.get("ScheduledStationAETitle", "") or "").strip()))
    return tuple(out)


def prefilter(identifier: Dataset) -> Callable[[StepSummary], bool] | None:
    """A cheap, conservative test on plain strings that drops items which cannot match the identifier's
    Scheduled Procedure Step keys (exact Modality / Scheduled Station AE Title, a date or date range of
    8-digit dates); the full matcher still decides for every item it keeps. None when it cannot help.
    It only ever drops an item whose every SPS item has a non-empty value contradicting a key."""
    try:
        steps = identifier.get("ScheduledProcedureStepSequence")
        if not steps or len(steps) != 1:
            return None
        key = steps[0]
        modality = _plain(key.get("Modality"))
        station = _plain(key.get("ScheduledStationAETitle"))
        lo = hi = ""
        date = key.get("ScheduledProcedureStepStartDate")
        if isinstance(date, str) and date.strip():
            text = date.strip()
            lo, _, hi = text.partition("-") if "-" in text else (text, "", text)
            if not all(v == "" or (len(v) == 8 and v.isdigit()) for v in (lo, hi)):
                lo = hi = ""
    except Exception:  # an odd identifier: the matcher will judge (and refuse) it
        return None
    if not (modality or station or lo or hi):
        return None

    def keep(summary: StepSummary) -> bool:
        if not summary:
            return True
        for d, m, st in summary:
            if modality and m and m != modality:
                continue
            if station and st and st != station:
                continue
            if len(d) == 8 and d.isdigit() and ((lo and d < lo) or (hi and d > hi)):
                continue
            return True
        return False

    return keep


def _plain(value: object) -> str:
    """A single value without wildcards, else ''."""
    if not isinstance(value, str):
        return ""
    text = value.strip()
    return "" if not text or any(c in text for c in "*?\\") else text


# ------------------------------------------------------------------ SCU


def query_date(setting: str, today: datetime.date | None = None) -> str:
    if setting == "any":
        return ""
    if setting == "today":
        return (today or datetime.date.today()).strftime("%Y%m%d")
    return setting


def build_query(settings: WorklistSettings, today: datetime.date | None = None) -> Dataset:
    """The MWL identifier: matching keys from the profile, plus the return keys a modality needs."""
    ds = Dataset()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientWeight",
                    "PatientSize", "OtherPatientIDs", "AccessionNumber", "ReferringPhysicianName",
                    "RequestedProcedureID", "RequestedProcedureDescription", "RequestedProcedurePriority",
                    "StudyInstanceUID", "AdmissionID", "MedicalAlerts", "Allergies", "PregnancyStatus",
                    "RequestingPhysician"):
        setattr(ds, keyword, None)
    ds.ReferencedStudySequence = DicomSequence()
    ds.ReferencedPatientSequence = DicomSequence()
    ds.RequestedProcedureCodeSequence = DicomSequence()
    sps = Dataset()
    sps.ScheduledStationAETitle = settings.station_ae
    sps.ScheduledProcedureStepStartDate = query_date(settings.date, today)
    sps.ScheduledProcedureStepStartTime = ""
    sps.Modality = settings.modality or ""
    sps.ScheduledPerformingPhysicianName = ""
    sps.ScheduledProcedureStepDescription = ""
    sps.ScheduledProcedureStepID = ""
    sps.ScheduledStationName = ""
    sps.ScheduledProcedureStepLocation = ""
    sps.ScheduledProtocolCodeSequence = DicomSequence()
    ds.ScheduledProcedureStepSequence = DicomSequence([sps])
    return ds


async def query_worklist(peer: Peer, *, calling_ae: str, identifier: Dataset, timeouts: Timeouts) -> list[bytes]:
    """One MWL C-FIND; the matches as Explicit VR LE bytes (as received when that TS was negotiated)."""
    found: list[bytes] = []
    async with associate(peer.host, peer.port, calling_ae=calling_ae, called_ae=peer.ae_title,
                         proposals=SCU_PROPOSALS, timeouts=timeouts, tls=peer.tls,
                         user_identity=peer.identity) as conn:
        ctx = conn.context_for(MWL_FIND)
        if ctx is None:
            raise WorklistError(f"{peer.name} ({peer.ae_title}) did not accept the Modality Worklist FIND SOP Class")
        rq = CFindRQ(message_id=conn.next_message_id(), affected_sop_class_uid=MWL_FIND)
        async for reply in responses(conn, ctx.id, rq, encode(identifier, ctx.transfer_syntax)):
            cat = category(reply.status)
            if cat is StatusCategory.PENDING:
                if reply.dataset is not None:
                    data = reply.dataset
                    if ctx.transfer_syntax != EXPLICIT_VR_LE:
                        data = encode(decode(data, ctx.transfer_syntax, eager=True), EXPLICIT_VR_LE)
                    found.append(data)
            elif cat is not StatusCategory.SUCCESS:
                raise WorklistError(f"{peer.name} answered the worklist query with {describe(reply.status)}")
    return found


# ------------------------------------------------------------------ the service


@dataclass
class WorklistService:
    settings: WorklistSettings
    store: WorklistStore
    blocking: Blocking
    peers: Mapping[str, Peer]
    ae_title: str
    timeouts: Timeouts
    clock: object = time.time
    _items: list[Dataset] = field(default_factory=list)
    _stored: list[Dated] = field(default_factory=list)
    _folder_items: list[Dated] = field(default_factory=list)
    _performed: list[StepRef] = field(default_factory=list)
    _summaries: list[StepSummary] = field(default_factory=list)
    _version: int = -1
    _folder_sig: tuple = ()
    _folder_mtime: int = -1
    _folder_checked: float = -1e9
    _wake: trio.Event = field(default_factory=trio.Event)
    refreshes: int = 0
    on_query: Callable[[DicomConnection, str, bytes, str], None] | None = None  # audit: (conn, SOP class, identifier, TS)
    on_order_read: Callable[[DicomConnection, Dataset], None] | None = None  # audit: each worklist item answered

    @property
    def source(self) -> Peer | None:
        name = self.settings.source
        return self.peers.get(name) if name else None

    # ---- SCU

    def request_refresh(self) -> None:
        self._wake.set()

    async def refresh(self) -> int:
        """Query the RIS now; replace the cache on success, record the failure otherwise."""
        peer = self.source
        if peer is None:
            raise WorklistError("no [worklist] source configured")
        try:
            found = await query_worklist(peer, calling_ae=self.ae_title, identifier=build_query(self.settings),
                                         timeouts=self.timeouts)
        except AgentError as exc:
            failure = str(exc)
            await self.blocking.run(lambda: self.store.record_failure(peer.name, failure))
            raise
        count = await self.blocking.run(lambda: self.store.replace_cache(peer.name, found))
        self.refreshes += 1
        log.info("worklist: %d item(s) from %s", count, peer.name)
        return count

    async def fetch_state(self) -> FetchState | None:
        peer = self.source
        if peer is None:
            return None
        return await self.blocking.run(lambda: self.store.fetch_state(peer.name))

    async def run_scu(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._wake = trio.Event()
            try:
                await self.refresh()
            except AgentError as exc:
                log.warning("worklist: refresh from %s failed (serving the cache): %s", self.settings.source, exc)
            with trio.move_on_after(self.settings.refresh):
                await self._wake.wait()

    # ---- candidates

    async def candidates(self) -> list[Dataset]:
        version = await self.blocking.run(self.store.version)
        folder_changed = await self._check_folder()
        if version != self._version:
            stored = await self.blocking.run(lambda: (load_stored_dated(self.store), self.store.performed()))
            self._stored, self._performed = stored
            self._version = version
            folder_changed = True
        if folder_changed:
            self._items = not_performed(one_per_step(self._stored + self._folder_items), self._performed)
            self._summaries = [summarize(i) for i in self._items]
        return self._items

    async def _check_folder(self) -> bool:
        folder = self.settings.folder
        if folder is None:
            return False
        now = trio.current_time()
        try:
            mtime = folder.stat().st_mtime_ns
        except OSError:
            mtime = -1
        if mtime == self._folder_mtime and now - self._folder_checked < FOLDER_RESCAN:
            return False
        self._folder_mtime, self._folder_checked = mtime, now
        sig = await trio.to_thread.run_sync(scan_folder, folder)
        if sig == self._folder_sig:
            return False
        self._folder_items = await trio.to_thread.run_sync(read_folder_dated, folder, sig)
        self._folder_sig = sig
        log.info("worklist folder %s: %d item(s)", folder, len(self._folder_items))
        return True

    # ---- SCP

    def register(self, registry: ServiceRegistry) -> None:
        registry.add([MWL_FIND], SyntaxSupport(), {CFindRQ: self.handle_find})  # type: ignore[dict-item]

    async def handle_find(self, conn: DicomConnection, ctx: PresentationContext, rq: CFindRQ) -> None:
        data = await conn.read_dataset(ctx.id)
        if self.on_query is not None:
            self.on_query(conn, ctx.abstract_syntax, data, ctx.transfer_syntax)
        try:
            identifier = decode(data, ctx.transfer_syntax)
            matcher = compile_identifier(identifier)
        except DataSetError as exc:
            await _fail(conn, ctx, rq, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc))
            return
        except MatchingError as exc:
            await _fail(conn, ctx, rq, exc.status, str(exc))
            return
        try:
            candidates = await self.candidates()
        except (OSError, MemoryError) as exc:
            log.exception("worklist: cannot load candidates")
            await _fail(conn, ctx, rq, Status.OUT_OF_RESOURCES, str(exc))
            return
        keep = prefilter(identifier)
        if keep is not None:
            candidates = [c for c, summary in zip(candidates, self._summaries) if keep(summary)]
        sent = 0
        for candidate in matcher.filter(candidates):
            try:
                body = encode(build_response(identifier, candidate), ctx.transfer_syntax)
            except (DataSetError, ValueError, LookupError) as exc:
                log.warning("worklist: an item cannot be encoded for %s: %s", conn.remote, exc)
                continue
            await conn.send_message(ctx.id, rq.response(Status.PENDING, has_dataset=True), body)
            sent += 1
            if self.on_order_read is not None:
                self.on_order_read(conn, candidate)
            event = await conn.poll_event()
            if event is None:
                continue
            if isinstance(event, CommandReceived) and isinstance(event.message, CCancelRQ):
                if event.message.message_id_being_responded_to == rq.message_id:
                    log.info("%s: worklist query cancelled after %d match(es)", conn.remote, sent)
                    await conn.send_message(ctx.id, rq.response(Status.CANCEL))
                    return
                continue
            raise unexpected_event(event, "a C-CANCEL or nothing during a C-FIND")
        await conn.send_message(ctx.id, rq.response(Status.SUCCESS))
        log.debug("%s: worklist query: %d match(es)", conn.remote, sent)


async def _fail(conn: DicomConnection, ctx: PresentationContext, rq: CFindRQ, status: int, comment: str) -> None:
    log.warning("%s: worklist query refused (%s): %s", conn.remote, describe(status), comment)
    await conn.send_message(ctx.id, rq.response(int(status), error_comment=_comment(comment)))


def _comment(text: str) -> str:
    """Error Comment (0000,0902) is LO: at most 64 characters, no backslash, ASCII here."""
    text = text.encode("ascii", "replace").decode().replace("\\", "/")
    return text[:64]


__all__ = ["MWL_FIND", "WorklistError", "WorklistService", "build_query", "load_stored", "not_performed",
           "one_per_step", "query_worklist", "query_date", "read_folder", "scan_folder", "served_items",
           "step_key", "step_ref"]
