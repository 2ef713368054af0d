"""Query/Retrieve SCP (PS3.4 Annex C): C-FIND, C-MOVE and C-GET over the local instance index.

Invariants:
- C-FIND: the identifier is judged by agent.services.query.engine (A900 / C001 with Offending Element
  and Error Comment); matches are computed in the blocking bridge from the index (never from files) and
  sent as FF00 (FF01 when a key the index cannot match carried a value); a C-CANCEL-RQ, looked for
  after each write of pending responses without waiting, ends it with FE00. More than
  `[query] max_results` matches: the first ones, then A700 with a comment saying so. The database
  unusable: A700.
- C-MOVE: the destination AE title must be a peer of `[query] move_destinations` (all of [peers] when
  unset), else A801. Each instance becomes one `move-store` job of the durable queue for that peer
  (agent.services.query.move_jobs), queued in one transaction, so a crash or a restart never loses a
  sub-operation. Pending responses (FF00) report remaining / completed / failed / warning counts as the
  jobs progress. C-CANCEL-RQ: jobs not yet claimed are dropped from the queue and FE00 reports the
  counts, the dropped ones as remaining. A destination that goes down halfway: after the first failed
  attempt, the move ends as soon as none of its jobs is in flight; every job not delivered by then is
  counted failed and listed in the Failed SOP Instance UID List (0008,0058) of a B000 response, and
  stays in the queue, which retries it with the peer's backoff (so those instances still arrive later;
  the counts describe what had arrived when the response was sent). A C-STORE the destination answered
  with a warning (Bxxx) counts as a warning sub-operation, not a completed one (PS3.4 C.4.2.3.1; the
  job's row keeps the warning, agent.store.queue).
- Final status of C-MOVE and C-GET: 0000 only when every sub-operation completed without a warning;
  B000 when any failed or got a warning (with the Failed SOP Instance UID List when any failed).
- C-MOVE and the database busy: when its sub-operations cannot be queued because another process
  (a `dicom-agent` command, a backup) has held the database's write lock for longer than the agent's
  SQLite busy timeout (30 s), the answer is C002 (Unable to process at this time): nothing was
  queued, the association stays usable and the same C-MOVE asked again later can succeed. A702 stays
  for what retrying soon does not cure (disk full, the database file unwritable).
- C-GET: C-STORE sub-operations go back on the requestor's association, on a presentation context for
  which it took the SCP role (SCP/SCU Role Selection, PS3.7 D.3.3.4). An instance whose SOP class has
  no such context is a failed sub-operation; when no sub-operation could be performed at all the final
  status is A702, otherwise B000 with the failed UID list, or 0000.
- Access: which callers may use Q/R at all is decided at association time by the listener's access
  policy; here only the SOP classes the profile serves are registered.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import trio
from pydicom import Dataset

from agent.dimse import CCancelRQ, CFindRQ, CGetRQ, CMoveRQ, CommandReceived, Status, encode_message
from agent.dimse.status import describe
from agent.errors import AgentError
from agent.matching import MatchingError
from agent.net.connection import DicomConnection, unexpected_event
from agent.net.server import ServiceRegistry
from agent.profile import Peer, QuerySettings
from agent.services.blocking import BUSY, Blocking
from agent.services.dataset import DataSetError, decode, encode
from agent.services.query import engine
from agent.services.query.encode import encode_flat
from agent.services.query.get import store_back
from agent.services.query.models import MODELS, Model, model_of
from agent.services.query.move_jobs import MOVE_STORE_JOB, move_payload
from agent.services.storage_classes import ALL_STORAGE_SOP_CLASSES
from agent.store import query as query_store
from agent.store.queue import JobQueue, JobState, NewJob
from agent.ul import pdu as P
from agent.ul.negotiation import UNCOMPRESSED, PresentationContext, SyntaxSupport

log = logging.getLogger("agent.query")

#: The statuses each operation can answer (seed C-FIND / C-MOVE status tables; PS3.4 C.4).
#: Exactly the ones these handlers send: A701 index unreadable, A702 sub-operations cannot be queued
#: (or, for C-GET, none could be performed), C001 a level the model does not have, C002 (C-MOVE) the
#: database's write lock held by another process past the busy timeout: retry later.
FIND_STATUSES = (0x0000, 0xFF00, 0xFF01, 0xFE00, 0xA700, 0xA900, 0xC001)
MOVE_STATUSES = (0x0000, 0xFF00, 0xFE00, 0xB000, 0xA701, 0xA702, 0xA801, 0xA900, 0xC001, 0xC002)
GET_STATUSES = (0x0000, 0xFF00, 0xFE00, 0xB000, 0xA701, 0xA702, 0xA900, 0xC001)
SCP_STATUSES = tuple(sorted(set(FIND_STATUSES + MOVE_STATUSES + GET_STATUSES)))
#: How often a C-MOVE looks at its jobs when no completion woke it (failures do not wake it).
PROGRESS_POLL = 0.5
# C-FIND pending responses per network write, and the bytes after which a write goes out anyway.
COALESCE_COUNT = 32
COALESCE_BYTES = 64 * 1024
# C-FIND candidate rows matched and encoded in the event loop's thread rather than a worker thread
# (at most about a millisecond of the loop's time): rows of the compiled fast path cost ~5 us each,
# those of a query with sequence keys (pydicom, stored items decoded) more than 20 us.
INLINE_ROWS = 160
INLINE_ROWS_SEQUENCES = 48
#: Instances re-read per step when index columns are filled for rows of an older version.
BACKFILL_CHUNK = 200


def relational_requested(conn: DicomConnection, sop_class: str) -> bool:
    """True when the SCU asked for relational queries on `sop_class` and our A-ASSOCIATE-AC agreed
    (SOP Class Extended Negotiation, PS3.4 C.5.1.1: byte 1 = 1 in both)."""
    def agreed(pdu: object) -> bool:
        for item in getattr(pdu, "user_information", ()) or ():
            if isinstance(item, P.SOPClassExtendedNegotiation) and item.sop_class_uid == sop_class:
                return len(item.info) >= 1 and item.info[0] == 1
        return False

    return agreed(getattr(conn.assoc, "request_pdu", None)) and agreed(getattr(conn.assoc, "accept_pdu", None))


def extended_negotiation_reply(settings: QuerySettings):  # type: ignore[no-untyped-def]
    """The answer to an SCU's Q/R extended negotiation info (PS3.4 C.5.1.1 / C.5.2.1): relational
    queries as the profile says; date-time matching, fuzzy semantic matching and timezone adjustment
    declined (byte 2-4 = 0)."""
    def reply(info: bytes) -> bytes:
        relational = 1 if settings.relational and info[:1] == b"\x01" else 0
        return bytes([relational]) + bytes(max(0, min(len(info), 4) - 1))

    return reply


@dataclass
class QuerySCP:
    settings: QuerySettings
    conn_db: sqlite3.Connection
    blocking: Blocking
    queue: JobQueue
    peers: Mapping[str, Peer]
    data_dir: Path
    wake: object = None  # Outbound.wake(destination), to start the queue worker at once
    on_query: Callable[[DicomConnection, str, bytes, str], None] | None = None  # audit: (conn, SOP class, identifier, TS)

    # ------------------------------------------------------------ registration

    def register(self, registry: ServiceRegistry) -> None:
        ops = self.settings.operations
        ext = extended_negotiation_reply(self.settings)
        for name in self.settings.models:
            model = MODELS[name]
            if "find" in ops:
                registry.add([model.find], _support(ext), {CFindRQ: self.handle_find})  # type: ignore[dict-item]
            if "move" in ops:
                registry.add([model.move], _support(None), {CMoveRQ: self.handle_move})  # type: ignore[dict-item]
            if "get" in ops:
                registry.add([model.get], _support(None), {CGetRQ: self.handle_get})  # type: ignore[dict-item]
        if "get" in ops:
            # C-GET sends C-STORE back: the requestor may take the SCP role for every storage class.
            for uid in ALL_STORAGE_SOP_CLASSES:
                current = registry.support(uid)
                if current is None:
                    new = SyntaxSupport(UNCOMPRESSED, accept_any_other=True, requestor_may_be_scu=False,
                                        requestor_may_be_scp=True)
                else:
                    new = _with(current, requestor_may_be_scp=True)
                registry.add([uid], new, {})

    # ------------------------------------------------------------ index columns added later

    async def backfill(self) -> None:
        """Fill index columns that rows written by an older version lack (agent.store.query), 200
        instances at a time: the headers are read outside the database bridge, so receiving goes on."""
        if not await self.blocking.run(query_store.backfill_pending, self.conn_db):
            return
        after, count = "", 0
        while True:
            rows = await self.blocking.run(query_store.backfill_rows, self.conn_db, after, BACKFILL_CHUNK)
            updates = await trio.to_thread.run_sync(self._read_headers, rows)
            done = len(rows) < BACKFILL_CHUNK
            await self.blocking.run(lambda: query_store.backfill_step(self.conn_db, updates, done=done))
            count += len(updates)
            if done:
                log.info("query: index columns filled for %d earlier instance(s)", count)
                return
            after = rows[-1][0]

    def _read_headers(self, rows: list[tuple[str, str, float]]) -> list[tuple[str, float, dict[str, object]]]:
        out = []
        for uid, rel, received_at in rows:
            path = Path(rel)
            if path.is_absolute() or ".." in path.parts:
                continue
            values = query_store.read_index_values(self.data_dir / path)
            if values is not None:
                out.append((uid, received_at, values))
        return out

    # ------------------------------------------------------------ C-FIND

    async def handle_find(self, conn: DicomConnection, ctx: PresentationContext, rq: CFindRQ) -> None:
        model = model_of(ctx.abstract_syntax)
        assert model is not None
        data = await conn.read_dataset(ctx.id)
        if self.on_query is not None:
            self.on_query(conn, ctx.abstract_syntax, data, ctx.transfer_syntax)
        try:
            plan = engine.plan_for(model, data, ctx.transfer_syntax,
                                   relational=relational_requested(conn, ctx.abstract_syntax))
        except engine.QueryRefused as exc:
            await _refuse(conn, ctx.id, rq, exc.status, exc.comment, exc.offending)
            return
        except (DataSetError, MatchingError) as exc:
            await _refuse(conn, ctx.id, rq, getattr(exc, "status", Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS), str(exc))
            return
        try:
            # The look-up on the event loop when the database is free and it is quick (most are a
            # tenth of a millisecond, less than the two thread hops), else in the database's thread.
            rows = self.blocking.try_now(engine.fetch_rows_now, self.conn_db, plan)
            if rows is BUSY or rows is None:
                rows = await self.blocking.run(engine.fetch_rows, self.conn_db, plan)
        except (sqlite3.Error, OSError, MemoryError) as exc:
            log.exception("query: cannot read the index")
            await _refuse(conn, ctx.id, rq, Status.OUT_OF_RESOURCES, f"index unreadable: {exc}")
            return
        # Matching and encoding are CPU work: a worker thread, and not the database's (receiving goes on).
        # A few candidates cost less than the hop to a thread and back (0.1-0.3 ms): done here.
        if len(rows) <= (INLINE_ROWS_SEQUENCES if plan.sequences else INLINE_ROWS):
            found, more = _encoded(plan, rows, self.settings.max_results, ctx.transfer_syntax, conn.remote)
        else:
            found, more = await trio.to_thread.run_sync(
                _encoded, plan, rows, self.settings.max_results, ctx.transfer_syntax, conn.remote)
        pending = Status.PENDING_WARNING if plan.unsupported_matching else Status.PENDING
        # Every pending response has the same command set (only the data sets differ): encoded once.
        response = rq.response(int(pending), has_dataset=True)
        command = encode_message(response)
        # Pending responses are coalesced: the first goes out at once (the user sees it without
        # delay), the next ones in writes of up to COALESCE_COUNT responses or COALESCE_BYTES; the
        # final response (or a cancel's) goes out with the last batch. A C-CANCEL-RQ (PS3.7
        # C.4.1.3.1) is looked for after every write, so at most one write's responses follow it.
        start = 0
        while start < len(found):
            end, size = start + 1, len(found[start])
            while start and end < len(found) and end - start < COALESCE_COUNT and size < COALESCE_BYTES:
                size += len(found[end])
                end += 1
            conn.queue_encoded(ctx.id, response, command, found[start:end])
            start = end
            if start == len(found):
                break  # the final response goes out with this batch
            await conn.flush()
            if await _cancelled(conn, rq.message_id):
                log.info("%s: C-FIND cancelled after %d match(es)", conn.remote, start)
                await conn.send_message(ctx.id, rq.response(Status.CANCEL))
                return
        if more:
            await _refuse(conn, ctx.id, rq, Status.OUT_OF_RESOURCES,
                          f"more than {self.settings.max_results} matches; refine the query")
            return
        await conn.send_message(ctx.id, rq.response(Status.SUCCESS))

    # ------------------------------------------------------------ C-MOVE

    def destination(self, ae_title: str) -> str | None:
        allowed = self.settings.move_destinations
        for name, peer in self.peers.items():
            if peer.ae_title == ae_title and (allowed is None or name in allowed):
                return name
        return None

    async def _identifier(self, conn: DicomConnection, ctx: PresentationContext, rq: CMoveRQ | CGetRQ
                          ) -> tuple[Model, str, list[str]] | None:
        model = model_of(ctx.abstract_syntax)
        assert model is not None
        data = await conn.read_dataset(ctx.id)
        try:
            level, values = engine.retrieve_keys(model, decode(data, ctx.transfer_syntax))
        except engine.QueryRefused as exc:
            await _refuse(conn, ctx.id, rq, exc.status, exc.comment, exc.offending)
            return None
        except DataSetError as exc:
            await _refuse(conn, ctx.id, rq, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc))
            return None
        return model, level, values

    async def handle_move(self, conn: DicomConnection, ctx: PresentationContext, rq: CMoveRQ) -> None:
        dest = self.destination(rq.move_destination.strip())
        if dest is None:
            if rq.has_dataset:
                await conn.discard_dataset()
            await _refuse(conn, ctx.id, rq, Status.MOVE_DESTINATION_UNKNOWN,
                          f"move destination {rq.move_destination.strip()!r} is not configured")
            return
        parsed = await self._identifier(conn, ctx, rq)
        if parsed is None:
            return
        rows = await self._retrieve_rows(conn, ctx, rq, parsed)
        if rows is None:
            return
        try:
            jobs = [NewJob(MOVE_STORE_JOB, dest, move_payload(
                r["sop_instance_uid"], r["sop_class_uid"], r["transfer_syntax_uid"], r["study_instance_uid"] or "",
                conn.calling_ae, rq.message_id)) for r in rows]
            ids = await self.blocking.run(self.queue.enqueue_many, jobs) if jobs else []
        except (sqlite3.Error, AgentError, OSError) as exc:
            if _database_busy(exc):
                await _refuse(conn, ctx.id, rq, Status.UNABLE_TO_PROCESS_NOW,
                              "database busy (locked by another process); retry later")
                return
            log.exception("C-MOVE: cannot queue the sub-operations")
            await _refuse(conn, ctx.id, rq, Status.OUT_OF_RESOURCES_SUBOPS, f"cannot queue: {exc}")
            return
        uids = {job_id: r["sop_instance_uid"] for job_id, r in zip(ids, rows)}
        if callable(self.wake):
            self.wake(dest)
        log.info("%s: C-MOVE of %d instance(s) to %s", conn.remote, len(ids), dest)
        await self._follow(conn, ctx, rq, uids)

    async def _follow(self, conn: DicomConnection, ctx: PresentationContext, rq: CMoveRQ,
                      uids: dict[int, str]) -> None:
        """Pending responses as the jobs progress, then the final one (module invariants)."""
        woken = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def on_complete(kind: str, destination: str) -> None:  # in the thread that completed a job
            if kind == MOVE_STORE_JOB:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(woken.set)

        remove = self.queue.add_listener(on_complete)
        cancelled = trio.Event()
        last: tuple[int, ...] = ()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_cancel, conn, rq.message_id, cancelled)
                while True:
                    woken = trio.Event()  # before looking: a completion from now on wakes the wait below
                    states = await self.blocking.run(self._states, list(uids))
                    done = [i for i, s in states.items() if s == "done"]
                    warned = [i for i, s in states.items() if s == "warning"]
                    failed = [i for i, s in states.items() if s in ("dead", "failed")]
                    in_flight = [i for i, s in states.items() if s == "claimed"]
                    remaining = len(uids) - len(done) - len(warned) - len(failed)
                    if cancelled.is_set() or remaining == 0 or (failed and not in_flight):
                        # The reader stops before the last response: the peer may release at once.
                        nursery.cancel_scope.cancel()
                        break
                    counts = (remaining, len(done), len(warned), len(failed))
                    if counts != last:
                        last = counts
                        await conn.send_message(ctx.id, rq.response(
                            Status.PENDING, number_of_remaining_suboperations=remaining,
                            number_of_completed_suboperations=len(done),
                            number_of_failed_suboperations=len(failed),
                            number_of_warning_suboperations=len(warned)))
                    with trio.move_on_after(PROGRESS_POLL):
                        async with trio.open_nursery() as waiters:
                            waiters.start_soon(_set_then_cancel, woken, waiters)
                            waiters.start_soon(_set_then_cancel, cancelled, waiters)
        except BaseExceptionGroup as group:
            # The reader's end of the association (abort, protocol error) is judged as if raised alone.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            remove()
        if cancelled.is_set():
            pending = [i for i, s in states.items() if s == "pending"]
            dropped = await self.blocking.run(self._drop, pending)
            log.info("%s: C-MOVE cancelled; %d sub-operation(s) dropped from the queue", conn.remote, dropped)
            await conn.send_message(ctx.id, rq.response(
                Status.CANCEL, number_of_remaining_suboperations=remaining,
                number_of_completed_suboperations=len(done),
                number_of_failed_suboperations=len(failed), number_of_warning_suboperations=len(warned)))
            return
        not_done = [uids[i] for i in uids if states[i] not in ("done", "warning")]
        await self._final(conn, ctx, rq, len(done), not_done, warnings=len(warned))

    def _states(self, job_ids: list[int]) -> dict[int, str]:
        """Each job's state; a PENDING job that has failed an attempt is "failed", a DONE one whose
        C-STORE got a warning "warning" (blocking)."""
        out: dict[int, str] = {}
        for job_id in job_ids:
            job = self.queue.get(job_id)
            if job is None:
                out[job_id] = "dropped"
            elif job.state is JobState.PENDING and job.attempts > 0:
                out[job_id] = "failed"
            elif job.state is JobState.DONE and job.warning is not None:
                out[job_id] = "warning"
            else:
                out[job_id] = job.state.value
        return out

    def _drop(self, job_ids: list[int]) -> int:
        dropped = 0
        for job_id in job_ids:
            try:
                dropped += self.queue.drop(job_id)
            except AgentError:
                pass  # claimed meanwhile: it completes on its own
        return dropped

    async def _final(self, conn: DicomConnection, ctx: PresentationContext, rq: CMoveRQ | CGetRQ,
                     completed: int, failed_uids: list[str], *, warnings: int = 0,
                     nothing_possible: bool = False) -> None:
        if not failed_uids and not warnings:
            status = Status.SUCCESS
        elif nothing_possible and completed == 0 and warnings == 0:
            status = Status.OUT_OF_RESOURCES_SUBOPS
        else:
            status = Status.COERCION  # B000: sub-operations complete, one or more failures or warnings
        body = None
        if failed_uids:
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = failed_uids
            body = encode(ds, ctx.transfer_syntax)
        await conn.send_message(ctx.id, rq.response(
            int(status), number_of_completed_suboperations=completed,
            number_of_failed_suboperations=len(failed_uids), number_of_warning_suboperations=warnings,
            has_dataset=body is not None), body)

    async def _retrieve_rows(self, conn: DicomConnection, ctx: PresentationContext, rq: CMoveRQ | CGetRQ,
                             parsed: tuple[Any, str, Any]) -> list[Any] | None:
        """The instances a C-MOVE or C-GET identifier names, or None once A701 has been answered
        because the index cannot be read."""
        _model, level, values = parsed
        try:
            return await self.blocking.run(engine.retrieve_rows, self.conn_db, level, values)
        except (sqlite3.Error, OSError) as exc:
            log.exception("%s: cannot read the index", "C-MOVE" if isinstance(rq, CMoveRQ) else "C-GET")
            await _refuse(conn, ctx.id, rq, Status.OUT_OF_RESOURCES_MATCHES, f"index unreadable: {exc}")
            return None

    # ------------------------------------------------------------ C-GET

    async def handle_get(self, conn: DicomConnection, ctx: PresentationContext, rq: CGetRQ) -> None:
        parsed = await self._identifier(conn, ctx, rq)
        if parsed is None:
            return
        rows = await self._retrieve_rows(conn, ctx, rq, parsed)
        if rows is None:
            return
        completed, warnings, failed = 0, 0, []
        for n, row in enumerate(rows):
            outcome, cancelled = await store_back(conn, self.data_dir, row, rq.message_id)
            if outcome == "ok":
                completed += 1
            elif outcome == "warning":
                warnings += 1
            else:
                failed.append(row["sop_instance_uid"])
            if cancelled:
                log.info("%s: C-GET cancelled after %d sub-operation(s)", conn.remote, n + 1)
                await conn.send_message(ctx.id, rq.response(
                    Status.CANCEL, number_of_remaining_suboperations=len(rows) - n - 1,
                    number_of_completed_suboperations=completed, number_of_failed_suboperations=len(failed),
                    number_of_warning_suboperations=warnings))
                return
            if n + 1 < len(rows):
                await conn.send_message(ctx.id, rq.response(
                    Status.PENDING, number_of_remaining_suboperations=len(rows) - n - 1,
                    number_of_completed_suboperations=completed, number_of_failed_suboperations=len(failed),
                    number_of_warning_suboperations=warnings))
        await self._final(conn, ctx, rq, completed, failed, warnings=warnings, nothing_possible=True)


def _database_busy(exc: BaseException) -> bool:
    """True when `exc` (or what it wraps: QueueError wraps sqlite3's) is SQLite giving up on a lock
    another connection holds (SQLITE_BUSY / SQLITE_LOCKED after the busy timeout)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sqlite3.Error) and getattr(seen, "sqlite_errorcode", 0) & 0xFF in (
                sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return True
        seen = seen.__cause__
    return False


def _encoded(plan: engine.FindPlan, rows: list[sqlite3.Row], max_results: int, transfer_syntax: str,
             remote: str) -> tuple[list[bytes], bool]:
    found, more = engine.answer_bytes(plan, rows, max_results, transfer_syntax)
    out = []
    for response in found:
        if type(response) is bytes:  # the query's compiled layout applied
            out.append(response)
            continue
        try:
            fast = encode_flat(response, transfer_syntax)
            out.append(fast if fast is not None else encode(engine.as_dataset(response), transfer_syntax))
        except (DataSetError, ValueError, LookupError, struct.error) as exc:
            log.warning("query: a match cannot be encoded for %s: %s", remote, exc)
    return out, more


def _support(ext) -> SyntaxSupport:  # type: ignore[no-untyped-def]
    support = SyntaxSupport()
    if ext is not None and "extended_negotiation" in getattr(SyntaxSupport, "__slots__", ()):
        support = _with(support, extended_negotiation=ext)
    return support


def _with(support: SyntaxSupport, **changes: object) -> SyntaxSupport:
    import dataclasses

    return dataclasses.replace(support, **changes)  # type: ignore[arg-type]


async def _set_then_cancel(event: trio.Event, nursery: trio.Nursery) -> None:
    await event.wait()
    nursery.cancel_scope.cancel()


async def _watch_cancel(conn: DicomConnection, message_id: int, cancelled: trio.Event) -> None:
    """Read the association while a C-MOVE runs: a C-CANCEL-RQ for it sets `cancelled`."""
    while True:
        event = await conn.next_event()
        if isinstance(event, CommandReceived) and isinstance(event.message, CCancelRQ):
            if event.message.message_id_being_responded_to == message_id:
                cancelled.set()
                return
            continue
        raise unexpected_event(event, "a C-CANCEL or nothing during a C-MOVE")


async def _cancelled(conn: DicomConnection, message_id: int) -> bool:
    event = await conn.poll_event()
    if event is None:
        return False
    if isinstance(event, CommandReceived) and isinstance(event.message, CCancelRQ):
        return event.message.message_id_being_responded_to == message_id
    raise unexpected_event(event, "a C-CANCEL or nothing during a C-FIND")


async def _refuse(conn: DicomConnection, context_id: int, rq: CFindRQ | CMoveRQ | CGetRQ, status: int,
                  comment: str, offending: tuple[int, ...] = ()) -> None:
    log.warning("%s: %s refused (%s): %s", conn.remote, type(rq).__name__, describe(int(status)), comment)
    text = comment.encode("ascii", "replace").decode().replace("\\", "/")[:64]
    extra: dict[str, object] = {"error_comment": text}
    if offending:
        extra["offending_element"] = offending
    await conn.send_message(context_id, rq.response(int(status), **extra))


__all__ = ["FIND_STATUSES", "GET_STATUSES", "MOVE_STATUSES", "QuerySCP", "SCP_STATUSES", "relational_requested"]
