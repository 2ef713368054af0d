"""The printer host's print service: driver, job store, worker and Print SCP built from `[print]`.

Invariants:
- The driver is opened once, at start-up, from `[print] driver` and `[print.options]` (the profile
  already validated both); its capabilities decide what the SCP accepts (color classes only for a
  color printer, film sizes, densities).
- The worker runs in the agent's nursery before the listener binds, so jobs left by a previous run
  (pending, or submitted when the agent died) are taken up at once.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from agent.net.server import ServiceRegistry
from agent.services.blocking import Blocking
from agent.services.print.jobs import PrintWorker
from agent.services.print.scp import PrintSCP
from agent.services.print.session import PrinterLimits
from agent.store.printjobs import PrintJobStore
from agent.profile import open_driver
from drivers.base import Film, PrinterCapabilities, PrinterDriver, open_printer


def _render(request: Any, caps: PrinterCapabilities) -> Film:
    from agent.services.print.render import render_film

    return render_film(request, caps)


def open_printer_driver(profile: Any) -> PrinterDriver:
    """The `[print]` driver with its options; a bad option is a ProfileError naming
    `print.options.KEY` (the agent exits 78), a driver that cannot start one naming `print.driver`."""
    return open_driver(profile, "print")  # type: ignore[return-value]


@dataclass
class PrintService:
    driver: PrinterDriver
    jobs: PrintJobStore
    worker: PrintWorker
    scp: PrintSCP

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.worker.run(task_status=task_status)
        finally:
            self.driver.close()


def build_print_service(settings: Any, data_dir: Path, db: sqlite3.Connection, blocking: Blocking,
                        registry: ServiceRegistry, *, driver: PrinterDriver | None = None,
                        render: Any = None) -> PrintService:
    """The Print SCP and its worker for `settings` (a `PrintSettings` with serve = true)."""
    driver = driver or open_printer(settings.driver, settings.options, data_dir)
    jobs = PrintJobStore(db)
    worker = PrintWorker(driver, jobs, blocking, poll_interval=settings.poll_interval, data_dir=data_dir)
    caps = driver.capabilities()
    scp = PrintSCP(
        PrinterLimits(caps, tuple(settings.formats)), jobs, blocking, data_dir, render or _render,
        status=worker.refresh_status, wake=worker.wake,
    )
    worker.on_job = scp.job_event
    worker.on_printer = scp.printer_event
    worker.on_pass = scp.prune
    scp.register(registry)
    return PrintService(driver, jobs, worker, scp)


__all__ = ["PrintService", "build_print_service", "open_printer_driver"]
