"""The print worker against a fake driver: exactly once across a crash between `submit` and recording its
reference, jobs held while the printer is in FAILURE, failures and operator retry, Print Job events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trio

from agent.services.blocking import Blocking
from agent.services.print import films
from agent.services.print.jobs import PrintWorker
from agent.store.db import open_database
from agent.store.printjobs import JobState, PrintJobStore
from drivers.base import (
    DriverError, Film, PrinterCapabilities, PrinterState, PrinterStatus, PrintJobState, PrintJobStatus,
)

pytestmark = pytest.mark.trio


class FakePrinter:
    def __init__(self) -> None:
        self.state = PrinterStatus()
        self.accepted: dict[str, str] = {}  # job id -> ref
        self.submits: list[str] = []
        self.refuse: str | None = None

    def capabilities(self) -> PrinterCapabilities:
        return PrinterCapabilities()

    def status(self) -> PrinterStatus:
        return self.state

    def submit(self, film: Film) -> str:
        if self.refuse or self.state.state is PrinterState.FAILURE:
            raise DriverError(self.refuse or self.state.info)
        self.submits.append(film.job_id)
        ref = f"ref-{len(self.submits)}"
        self.accepted[film.job_id] = ref
        return ref

    def lookup(self, job_id: str) -> str | None:
        return self.accepted.get(job_id)

    def job_status(self, ref: str) -> PrintJobStatus:
        return PrintJobStatus(PrintJobState.DONE)

    def close(self) -> None:
        pass


@pytest.fixture
def setup(tmp_path: Path):
    db = open_database(tmp_path / "agent.db")
    store = PrintJobStore(db)
    driver = FakePrinter()
    events: list[tuple[str, str, str]] = []

    async def on_job(job, execution: str, info: str) -> None:  # noqa: ANN001
        events.append((job.id, execution, info))

    worker = PrintWorker(driver, store, Blocking(), poll_interval=0.1, on_job=on_job)

    def add(job_id: str, priority: str = "MED") -> None:
        film = Film(job_id=job_id, pixels=np.zeros((4, 4), np.uint8), width_mm=1.0, height_mm=1.0, dpi=100)
        path = films.save(films.films_dir(tmp_path), film)
        store.add(job_id, str(path), film_box_uid="1.1", session_uid="1.2", calling_ae="SCU", priority=priority)

    yield store, driver, worker, events, add
    db.close()


async def test_a_job_prints_once_and_reports_pending_printing_done(setup) -> None:
    store, driver, worker, events, add = setup
    add("1.2.3")
    await worker.pass_once()
    await worker.pass_once()
    assert driver.submits == ["1.2.3"]
    assert store.get("1.2.3").state is JobState.DONE
    assert [e[1] for e in events] == ["PENDING", "PRINTING", "DONE"]
    assert not Path(store.get("1.2.3").film_path).exists()  # the printed film's file is removed


async def test_crash_after_submit_is_not_submitted_again(setup) -> None:
    store, driver, worker, events, add = setup
    add("1.2.4")
    store.mark_submitting("1.2.4")
    driver.accepted["1.2.4"] = "ref-before-crash"  # the driver took it; the agent died before recording
    await worker.pass_once()
    assert driver.submits == []
    job = store.get("1.2.4")
    assert job.state is JobState.DONE and job.driver_ref == "ref-before-crash"


async def test_crash_before_submit_reached_the_driver_submits_once(setup) -> None:
    store, driver, worker, events, add = setup
    add("1.2.5")
    store.mark_submitting("1.2.5")
    await worker.pass_once()
    await worker.pass_once()
    assert driver.submits == ["1.2.5"]
    assert store.get("1.2.5").state is JobState.DONE


async def test_failure_holds_jobs_until_normal(setup) -> None:
    store, driver, worker, events, add = setup
    driver.state = PrinterStatus(PrinterState.FAILURE, "FILM JAM")
    add("1.2.6")
    for _ in range(3):
        await worker.pass_once()
    job = store.get("1.2.6")
    assert (job.state, job.info, driver.submits) == (JobState.PENDING, "FILM JAM", [])
    assert events == [("1.2.6", "PENDING", "FILM JAM")]  # reported once, not per pass
    assert store.printer_status()[:2] == ("FAILURE", "FILM JAM")
    driver.state = PrinterStatus(PrinterState.WARNING, "SUPPLY LOW")  # printable again
    await worker.pass_once()
    assert driver.submits == ["1.2.6"] and store.get("1.2.6").state is JobState.DONE


async def test_refused_while_printer_says_normal_fails_and_retry_prints(setup) -> None:
    store, driver, worker, events, add = setup
    driver.refuse = "spooler refused"
    add("1.2.7")
    await worker.pass_once()
    job = store.get("1.2.7")
    assert job.state is JobState.FAILED and "spooler refused" in job.last_error
    assert events[-1][1] == "FAILURE"
    await worker.pass_once()
    assert driver.submits == []  # a failed job stays failed until the operator retries it
    driver.refuse = None
    store.retry("1.2.7")
    await worker.pass_once()
    assert driver.submits == ["1.2.7"] and store.get("1.2.7").state is JobState.DONE


async def test_wake_is_not_lost_while_busy(setup) -> None:
    store, driver, worker, events, add = setup
    worker.poll_interval = 3600  # only a wake-up can start the second pass
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        add("1.2.8")
        worker.wake()
        worker.wake()  # a second wake while one waits is kept as one
        with trio.fail_after(10):
            while store.get("1.2.8").state is not JobState.DONE:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_start_up_removes_films_without_a_job(setup, tmp_path: Path) -> None:
    store, driver, worker, events, add = setup
    add("1.2.9")
    orphan = Film(job_id="1.2.10", pixels=np.zeros((2, 2), np.uint8), width_mm=1.0, height_mm=1.0, dpi=100)
    orphan_path = films.save(films.films_dir(tmp_path), orphan)  # the agent died before its row committed
    worker.data_dir = tmp_path
    driver.state = PrinterStatus(PrinterState.FAILURE, "COVER OPEN")  # keep 1.2.9 waiting
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        nursery.cancel_scope.cancel()
    assert not orphan_path.exists() and not orphan_path.with_suffix(".json").exists()
    assert Path(store.get("1.2.9").film_path).exists()


async def test_held_jobs_go_out_by_print_priority_then_age(setup) -> None:
    store, driver, worker, events, add = setup
    driver.state = PrinterStatus(PrinterState.FAILURE, "SUPPLY EMPTY")
    add("1.3.1", "LOW")
    add("1.3.2", "MED")
    add("1.3.3", "HIGH")
    add("1.3.4", "HIGH")
    await worker.pass_once()
    driver.state = PrinterStatus()
    await worker.pass_once()
    assert driver.submits == ["1.3.3", "1.3.4", "1.3.2", "1.3.1"]


async def test_a_driver_bug_fails_the_job_and_the_worker_goes_on(setup) -> None:
    store, driver, worker, events, add = setup

    def broken(film: Film) -> str:
        raise RuntimeError("driver bug")

    driver.submit = broken  # type: ignore[method-assign]
    add("1.4.1")
    await worker.pass_once()
    job = store.get("1.4.1")
    assert job.state is JobState.FAILED and "driver bug" in job.last_error
    driver.job_status = lambda ref: (_ for _ in ()).throw(RuntimeError("status bug"))  # type: ignore[method-assign]
    store.mark_printing("1.4.1", "ref-x")
    await worker.pass_once()  # logged, not raised
    assert store.get("1.4.1").state is JobState.PRINTING
