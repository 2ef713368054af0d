"""Housekeeping: one task that keeps the agent's tables and in-memory lists from growing forever.

Each pass (at start-up, then every `Retention.interval` seconds) does, in this order:
- Expired leases: CLAIMED jobs whose lease ran out go back to PENDING (a worker that died without
  giving them back; start-up recovery covers the process dying).
- Finished queue jobs: DONE jobs are deleted `done_jobs` (7 days) after they finished; DEAD jobs stay
  until an operator retries or drops them. With Storage Commitment asked for (`[storage]
  commit_with`), a DONE `store` job is kept while its instance still awaits commitment (that is how
  the commitment batcher knows the instance was forwarded), and deleted after the same 7 days once
  the instance is committed or no longer stored.
- Storage Commitment: requests answered or expired, with their instance lists, and reports already
  sent, are deleted `commitments` (30 days) after their last change.
- MPPS instances: deleted once past `[mpps] instance_lifetime` (7 days by default).
- Performed worklist steps: a local item (`dicom-agent worklist add`) whose step was performed more
  than `performed_steps` (7 days) ago is removed; the record that a step was performed is deleted
  once it is that old *and* no source (RIS cache, local items, folder) lists the step any more, so a
  performed step never reappears in the worklist while a source still carries it.
- Modality procedures (`[device]`): a procedure that ended (completed, discontinued, failed) is
  deleted with its image and measurement records `procedures` (30 days) after its last change; its
  instances stay in the store under the store's own retention.
The MPPS SCP's list of recent operations is bounded where it is kept (agent.services.mpps).

Every step is one short transaction through `Blocking.run`; a failing step is logged and the others
still run, and the next pass tries again.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from agent.errors import AgentError
from agent.services.blocking import Blocking
from agent.services.dataset import DataSetError, EXPLICIT_VR_LE, decode
from agent.services.forward import STORE_JOB
from agent.services.worklist import load_stored_dated, read_folder_dated, scan_folder, step_ref
from agent.store.commitment import CommitmentStore
from agent.store.mpps import MppsStore
from agent.store.procedures import ProcedureStore
from agent.store.queue import JobQueue
from agent.store.worklist import WorklistStore

log = logging.getLogger("agent.maintenance")

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Retention:
    """How long finished records are kept, in seconds (module docstring), and how often to look."""

    done_jobs: float = 7 * DAY
    commitments: float = 30 * DAY
    performed_steps: float = 7 * DAY
    procedures: float = 30 * DAY
    interval: float = 600.0


@dataclass
class Maintenance:
    blocking: Blocking
    queue: JobQueue
    commitments: CommitmentStore | None = None
    worklist: WorklistStore | None = None
    worklist_folder: Path | None = None
    mpps: MppsStore | None = None
    procedures: ProcedureStore | None = None
    #: `[storage] commit_with` is set: keep DONE store jobs of instances awaiting commitment.
    commitment_requested: bool = False
    retention: Retention = field(default_factory=Retention)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.blocking.run(self.run_once)
            await trio.sleep(self.retention.interval)

    def run_once(self) -> dict[str, int]:
        """One pass (blocking). Returns what each step removed or recovered, by name."""
        done: dict[str, int] = {}
        for name, step in self._steps():
            try:
                done[name] = step()
            except (AgentError, OSError, DataSetError, sqlite3.Error) as exc:
                log.error("maintenance: %s failed (tried again in %.0f s): %s", name, self.retention.interval, exc)
                continue
            if done[name]:
                log.info("maintenance: %s: %d", name, done[name])
        return done

    def _steps(self) -> list[tuple[str, Callable[[], int]]]:
        r = self.retention
        kept = (STORE_JOB,) if self.commitment_requested and self.commitments is not None else ()
        steps: list[tuple[str, Callable[[], int]]] = [
            ("expired leases returned to the queue", self.queue.recover_expired),
            ("finished jobs deleted", lambda: self.queue.purge_done(r.done_jobs, except_kinds=kept)),
        ]
        commitments = self.commitments
        if commitments is not None:
            if kept:
                steps.append(("forwarded and committed store jobs deleted",
                              lambda: commitments.purge_settled_store_jobs(r.done_jobs)))
            steps.append(("finished commitment requests and reports deleted",
                          lambda: sum(commitments.purge_finished(r.commitments))))
        if self.mpps is not None:
            steps.append(("expired MPPS instances deleted", self.mpps.purge_expired))
        if self.worklist is not None:
            steps.append(("performed worklist steps forgotten", self._prune_performed))
        procedures = self.procedures
        if procedures is not None:
            steps.append(("finished procedures deleted", lambda: procedures.purge_finished(r.procedures)))
        return steps

    def _prune_performed(self) -> int:
        store = self.worklist
        assert store is not None
        cutoff = store.clock() - self.retention.performed_steps
        old = [(row_id, ref) for row_id, ref, at in store.performed_entries() if at < cutoff]
        if not old:
            return 0
        removed = 0
        for name, data in store.local():
            try:
                ref = step_ref(decode(data, EXPLICIT_VR_LE, eager=True))
            except DataSetError:
                continue
            if any(done.refers_to(ref) for _, done in old) and store.remove_local(name):
                log.info("maintenance: local worklist item %r removed (performed)", name)
                removed += 1
        listed = [step_ref(item) for _at, item in load_stored_dated(store)]
        if self.worklist_folder is not None:
            folder = self.worklist_folder
            listed += [step_ref(item) for _at, item in read_folder_dated(folder, scan_folder(folder))]
        gone = [row_id for row_id, done in old if not any(done.refers_to(ref) for ref in listed)]
        return removed + store.forget_performed(gone)


__all__ = ["DAY", "Maintenance", "Retention"]
