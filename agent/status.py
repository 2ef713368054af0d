"""The status document: what `dicom-agent status` shows and the control socket answers (docs/status.md).

One JSON object, schema `dicom-agent.status/1`. It has two halves:
- the live half (`agent`, `associations`, `counters`, `device`), known only to the running agent:
  open associations with the progress of the message each is moving now, counters since start;
- the stored half (`queue`, `commitment`, `worklist`, `mpps`, `procedures`, `printer`), read from the
  agent's database, so `status` can still answer it when the agent is not running (`source` is then
  "database" and the live keys are null).

Invariants:
- Version 1 only ever gains keys; a key is never renamed, removed or given another type. A change
  that cannot keep that is `dicom-agent.status/2`.
- Building the live half reads plain attributes only (no await, no I/O), so the event loop hands out
  a consistent snapshot; the stored half runs in a worker thread on its own read connection (WAL
  readers never wait for the agent's writers, and the agent's writers never wait for `status`).
- Times are Unix epoch seconds (float); durations are seconds; sizes are bytes.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent import __version__

if TYPE_CHECKING:
    from agent.app import Agent
    from agent.net.connection import DicomConnection
    from agent.profile import Profile

SCHEMA = "dicom-agent.status/1"

#: The top-level keys of version 1, in document order (docs/status.md describes each).
TOP_LEVEL_KEYS = (
    "schema", "source", "generated_at", "agent", "associations", "counters", "queue", "commitment",
    "worklist", "mpps", "procedures", "printer", "device",
)


def _sop_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).keyword
    return name or uid


def _transfer(t: Any) -> dict[str, Any] | None:
    if t is None:
        return None
    total = getattr(t, "dataset_total", None)  # known when sending from a file, not when receiving
    return {"command": t.command, "sop_class": _sop_name(t.sop_class) if t.sop_class else "",
            "bytes": t.dataset_bytes, "total": total}


def association_entry(conn: DicomConnection, direction: str, destination: str | None = None) -> dict[str, Any]:
    """One open association, as the live view shows it."""
    services = sorted({_sop_name(ctx.abstract_syntax) for ctx in conn.contexts.values()})
    return {
        "direction": direction,
        "destination": destination,
        "calling_ae": conn.calling_ae,
        "called_ae": conn.called_ae,
        "address": conn.address,
        "started_at": conn.started_at,
        "bytes_received": conn.bytes_received,
        "bytes_sent": conn.bytes_sent,
        "services": services,
        "requests": sum(conn.requests.values()),
        "receiving": _transfer(conn.receiving),
        "sending": _transfer(conn.sending),
    }


def live_status(agent: Agent, started_at: float) -> dict[str, Any]:
    """The live half, read from the running agent's objects without awaiting."""
    p = agent.profile
    associations: list[dict[str, Any]] = []
    listener = agent.listener
    if listener is not None:
        for conn in list(listener.open):
            associations.append(association_entry(conn, "in"))
    outbound: dict[str, Any] = {}
    if agent.outbound is not None:
        for name, state in sorted(agent.outbound.states.items()):
            if state.conn is not None and state.conn.is_open:
                associations.append(association_entry(state.conn, "out", name))
            outbound[name] = {"delivered": state.delivered, "failures": state.failures,
                              "last_error": state.last_error or None}
    requests: dict[str, int] = {}
    if listener is not None:
        for (command, sop), n in sorted(listener.requests.items()):
            key = f"{command} {_sop_name(sop)}"
            requests[key] = requests.get(key, 0) + n
    worklist = agent.workflow.worklist if agent.workflow is not None else None
    counters = {
        "associations_served": listener.served if listener else 0,
        "associations_open": listener.active if listener else 0,
        "connections_waiting": listener.waiting if listener else 0,
        "requests_served": requests,
        "instances_received": agent.storage_scp.received if agent.storage_scp else None,
        "worklist_refreshes": worklist.refreshes if worklist is not None else None,
        "device_events": agent.modality.recorded if agent.modality is not None else None,
        "outbound": outbound,
    }
    device = None
    if p.device is not None:
        st = agent.modality.device_status if agent.modality is not None else None
        device = {"driver": p.device.driver, "connected": None if st is None else st.connected,
                  "info": "" if st is None else st.info}
    now = time.time()
    return {
        "agent": {
            "ae_title": p.agent.ae_title, "version": __version__, "pid": os.getpid(),
            "profile": os.path.abspath(p.source),
            "ports": sorted(set(agent.bound_ports)), "started_at": started_at, "uptime": now - started_at,
        },
        "associations": associations,
        "counters": counters,
        "device": device,
    }


@dataclass
class StoredStatus:
    """Reads the stored half from one database connection (the agent's control task opens its own;
    the CLI opens the database when no agent answers). Store objects are made once: their
    constructors create missing tables, which a section the profile turns off never gets."""

    profile: Profile
    db: sqlite3.Connection
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        from agent.store.commitment import CommitmentStore
        from agent.store.mpps import MppsStore
        from agent.store.queue import JobQueue
        from agent.store.worklist import WorklistStore

        p = self.profile
        self.queue = JobQueue(self.db)
        self.commitments = CommitmentStore(self.db)
        self.worklist = WorklistStore(self.db)
        self.mpps = MppsStore(self.db)
        self.procedures: Any = None
        self.print_jobs: Any = None
        if p.device is not None:
            from agent.store.procedures import ProcedureStore

            self.procedures = ProcedureStore(self.db)
        if p.print is not None and p.print.serve:
            from agent.store.printjobs import PrintJobStore

            self.print_jobs = PrintJobStore(self.db)

    def read(self) -> dict[str, Any]:
        """The stored half (blocking: run it in a thread)."""
        now = self.clock()
        p = self.profile
        # Next retry per destination: the earliest pending job's due time (the queue's own column).
        due = dict(self.db.execute(
            "SELECT destination, MIN(next_attempt_at) FROM queue_jobs WHERE state = 'pending' GROUP BY destination"
        ).fetchall())
        destinations = {}
        for name, s in self.queue.stats().items():
            nxt = due.get(name)
            destinations[name] = {
                "pending": s.pending, "claimed": s.claimed, "dead": s.dead, "done": s.done,
                "oldest_pending_age": None if s.oldest_pending_created_at is None else now - s.oldest_pending_created_at,
                "next_attempt_at": None if nxt is None else float(nxt),
            }
        queue = {
            "depth": sum(d["pending"] + d["claimed"] for d in destinations.values()),
            "dead": sum(d["dead"] for d in destinations.values()),
            "destinations": destinations,
        }
        worklist = None
        if p.worklist is not None:
            source = p.worklist.source
            fs = self.worklist.fetch_state(source) if source else None
            worklist = {
                "source": source,
                "last_success_at": fs.fetched_at if fs else None,
                "last_attempt_at": fs.last_attempt if fs else None,
                "last_error": fs.last_error if fs else None,
                "items": fs.count if fs else None,
                "age": None if fs is None or fs.fetched_at is None else now - fs.fetched_at,
            }
        in_progress = [
            {"uid": m.uid, "origin": m.origin, "created_at": m.created_at, "updated_at": m.updated_at}
            for m in self.mpps.list() if not m.status.final
        ]
        procedures = None
        if self.procedures is not None:
            from agent.store.procedures import TERMINAL, ProcedureState

            rows = self.procedures.list([s for s in ProcedureState if s not in TERMINAL])
            procedures = {
                "counts": self.procedures.counts(),
                "open": [
                    {"procedure_key": r.procedure_key, "state": str(r.state), "accession_number": r.accession_number,
                     "patient_id": r.patient_id, "mpps_uid": r.mpps_uid, "started_at": r.started_at,
                     "images": len(r.images)}
                    for r in rows
                ],
            }
        printer = None
        if self.print_jobs is not None:
            seen = self.print_jobs.printer_status()
            printer = {
                "status": seen[0] if seen else None, "info": seen[1] if seen else None,
                "seen_at": seen[2] if seen else None, "jobs": self.print_jobs.counts(),
            }
        return {
            "queue": queue,
            "commitment": self.commitments.summary(),
            "worklist": worklist,
            "mpps": {"in_progress": in_progress},
            "procedures": procedures,
            "printer": printer,
        }


def document(source: str, live: dict[str, Any] | None, stored: dict[str, Any]) -> dict[str, Any]:
    """The whole document in version 1's key order; `live` None when read from the database alone."""
    live = live or {"agent": None, "associations": None, "counters": None, "device": None}
    doc = {"schema": SCHEMA, "source": source, "generated_at": time.time(), **live, **stored}
    return {key: doc[key] for key in TOP_LEVEL_KEYS}
