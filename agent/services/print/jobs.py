"""The print worker: hands recorded films to the printer driver, exactly once, and holds them while the
printer is in FAILURE.

Invariants:
- One worker per agent, one driver call at a time (a driver may block: every call runs in a thread
  under the worker's own CapacityLimiter(1), never on the event loop).
- Exactly once (with agent.store.printjobs): SUBMITTING is committed before `driver.submit(film)`, the
  driver's reference (PRINTING) after. A job found SUBMITTING (the agent died in between) is first
  looked up with `driver.lookup(job_id)`: a film the driver already has is never submitted again.
- A printer whose status is FAILURE (SUPPLY EMPTY, FILM JAM, COVER OPEN, PRINTER OFFLINE …) gets no
  new film: its jobs stay PENDING with the printer's Status Info as their Execution Status Info, also
  across restarts (they are rows), and go out once the status is NORMAL or WARNING again. A submit the
  driver refuses while the printer turned to FAILURE holds the job the same way; a refusal while the
  printer says it is fine fails the job (FAILED, retried only by the operator).
- The printer's status is polled every `poll_interval` seconds and on every wake-up (a new job, a
  Printer N-GET); each change is recorded for the CLI and reported to the print associations (Printer
  N-EVENT-REPORT). Every job state change is reported to the association that created the job (Print
  Job N-EVENT-REPORT: PENDING, PRINTING, DONE, FAILURE).
- Wake-ups go through a memory channel of size 1, so a wake that arrives while the worker is busy is
  never lost (at most one is kept: one pass handles every job).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from agent.services.blocking import Blocking
from agent.services.print import films
from agent.store.printjobs import JobState, PrintJob, PrintJobStore
from drivers.base import DriverError, PrinterDriver, PrinterState, PrinterStatus, PrintJobState

log = logging.getLogger("agent.print")

JobEvent = Callable[[PrintJob, str, str], Awaitable[None]]
PrinterEvent = Callable[[PrinterStatus], Awaitable[None]]


async def _no_job_event(job: PrintJob, execution: str, info: str) -> None:
    return None


async def _no_printer_event(status: PrinterStatus) -> None:
    return None


@dataclass
class PrintWorker:
    driver: PrinterDriver
    jobs: PrintJobStore
    blocking: Blocking
    poll_interval: float = 3.0
    on_job: JobEvent = _no_job_event
    on_printer: PrinterEvent = _no_printer_event
    keep_films: bool = False
    on_pass: Callable[[], None] = lambda: None  # e.g. the SCP forgetting associations that ended
    data_dir: Path | None = None  # where the SCP writes films; orphans are removed at start-up
    limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(1))
    last_status: PrinterStatus | None = None
    _wake_send: Any = None
    _wake_receive: Any = None
    _announced: dict[str, str] = field(default_factory=dict)  # job id -> last execution status reported

    def __post_init__(self) -> None:
        self._wake_send, self._wake_receive = trio.open_memory_channel[None](1)

    def wake(self) -> None:
        try:
            self._wake_send.send_nowait(None)
        except trio.WouldBlock:
            pass  # a wake-up is already waiting: the next pass sees every job

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    # ------------------------------------------------------------ status

    async def refresh_status(self) -> PrinterStatus:
        """Ask the driver; record and report a change. A driver that cannot answer is PRINTER DOWN."""
        try:
            status: PrinterStatus = await self._call(self.driver.status)
        except DriverError as exc:
            log.warning("printer status unavailable: %s", exc)
            status = PrinterStatus(PrinterState.FAILURE, "PRINTER DOWN")
        if status != self.last_status:
            previous, self.last_status = self.last_status, status
            await self.blocking.run(self.jobs.record_printer_status, str(status.state), status.info)
            if previous is not None or status.state is not PrinterState.NORMAL:
                log.log(logging.WARNING if status.state is not PrinterState.NORMAL else logging.INFO,
                        "printer status: %s %s", status.state, status.info)
                await self.on_printer(status)
        return status

    # ------------------------------------------------------------ the loop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover, then pass over the jobs on every wake-up and every `poll_interval`. A pass that
        fails (database or driver trouble) is logged and tried again: the worker never ends the agent."""
        directory = films.films_dir(self.data_dir) if self.data_dir is not None else None
        if directory is not None:
            keep = await self.blocking.run(self.jobs.film_ids)
            removed = await trio.to_thread.run_sync(films.remove_orphans, directory, keep)
            if removed:
                log.warning("start-up recovery: %d film file(s) without a print job removed", removed)
        await self.refresh_status()
        task_status.started()
        while True:
            try:
                await self.pass_once()
            except Exception:
                log.exception("print worker pass failed; trying again in %g s", self.poll_interval)
            with trio.move_on_after(self.poll_interval):
                await self._wake_receive.receive()

    async def pass_once(self) -> None:
        """One pass over every unfinished job (oldest first)."""
        self.on_pass()
        status = await self.refresh_status()
        for job in await self.blocking.run(self.jobs.unfinished):
            try:
                status = await self._advance(job, status)
            except DriverError as exc:  # job_status / lookup of a driver in trouble: try again next pass
                log.warning("print job %s: %s", job.id, exc)
            except Exception:  # a driver bug must not stop the worker (nor the agent): next pass
                log.exception("print job %s: unexpected error", job.id)

    async def _report(self, job: PrintJob, execution: str, info: str) -> None:
        if self._announced.get(job.id) == f"{execution}/{info}":
            return
        self._announced[job.id] = f"{execution}/{info}"
        await self.on_job(job, execution, info)
        if execution in ("DONE", "FAILURE"):
            self._announced.pop(job.id, None)

    async def _advance(self, job: PrintJob, status: PrinterStatus) -> PrinterStatus:
        if job.state is JobState.PRINTING:
            await self._follow(job)
            return status
        if job.state is JobState.SUBMITTING:
            ref = await self._call(self.driver.lookup, job.id)
            if ref is not None:  # the driver took the film before the crash: never submit it again
                log.info("print job %s: the driver already has it (%s)", job.id, ref)
                await self.blocking.run(self.jobs.mark_printing, job.id, ref)
                await self._report(job, "PRINTING", "NORMAL")
                await self._follow(job, ref)
                return status
        if status.state is PrinterState.FAILURE:
            await self._hold(job, status.info)
            return status
        return await self._submit(job)

    async def _hold(self, job: PrintJob, info: str) -> None:
        if job.state is not JobState.PENDING or job.info != info:
            await self.blocking.run(self.jobs.mark_pending, job.id, info)
            log.info("print job %s held: printer %s", job.id, info)
        await self._report(job, "PENDING", info)

    async def _submit(self, job: PrintJob) -> PrinterStatus:
        await self._report(job, "PENDING", "NORMAL")
        try:
            film = await self._call(films.load, job.film_path)
        except (OSError, ValueError) as exc:
            await self._fail(job, "INVALID PAGE DES", f"the rendered film is unreadable: {exc}")
            return self.last_status or PrinterStatus()
        await self.blocking.run(self.jobs.mark_submitting, job.id)
        try:
            ref: str = await self._call(self.driver.submit, film)
        except Exception as exc:  # DriverError, or a driver bug: the film did not go (lookup says so later)
            if not isinstance(exc, DriverError):
                log.exception("print job %s: the driver failed unexpectedly", job.id)
            status = await self.refresh_status()
            if status.state is PrinterState.FAILURE:
                await self._hold(job, status.info)
            else:
                await self._fail(job, "PRINTER DOWN", str(exc))
            return status
        del film
        await self.blocking.run(self.jobs.mark_printing, job.id, ref)
        log.info("print job %s submitted: %s", job.id, ref)
        await self._report(job, "PRINTING", "NORMAL")
        await self._follow(job, ref)
        return self.last_status or PrinterStatus()

    async def _follow(self, job: PrintJob, ref: str | None = None) -> None:
        ref = ref or job.driver_ref
        assert ref is not None
        js = await self._call(self.driver.job_status, ref)
        if js.state is PrintJobState.DONE:
            await self.blocking.run(self.jobs.mark_done, job.id, js.info)
            log.info("print job %s done", job.id)
            await self._report(job, "DONE", js.info)
            if not self.keep_films:
                await self._call(films.remove, job.film_path)
        elif js.state is PrintJobState.FAILURE:
            await self._fail(job, js.info, f"the printer failed the job: {js.info}")
        else:
            if js.info != job.info:
                await self.blocking.run(self.jobs.set_info, job.id, js.info)
            await self._report(job, "PRINTING" if js.state is PrintJobState.PRINTING else "PENDING", js.info)

    async def _fail(self, job: PrintJob, info: str, error: str) -> None:
        await self.blocking.run(self.jobs.mark_failed, job.id, info, error)
        log.error("print job %s failed: %s", job.id, error)
        await self._report(job, "FAILURE", info)


__all__ = ["PrintWorker"]
