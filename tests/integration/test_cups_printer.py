"""The `cups` printer driver against a real CUPS scheduler (Debian's cups, with the cups-pdf backend):
the film comes out of cups-pdf as a PDF whose page is the film's physical size, the job's state is
followed to DONE, and the queue's state becomes the printer's status."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from drivers.base import DriverError, Film, PrinterState, PrintJobState, open_printer
from tests.integration.cups_server import CupsServer, cups_pdf_outputs, pdf_media_box

pytestmark = pytest.mark.interop

DEADLINE = 60.0
T = TypeVar("T")


@pytest.fixture
def cups() -> Iterator[CupsServer]:
    with CupsServer.start() as server:
        server.add_pdf_queue("FILM")
        yield server


def poll(what: str, probe: Callable[[], T | None], deadline: float = DEADLINE) -> T:
    """Call `probe` until it returns something truthy (CUPS works asynchronously), at most `deadline` s."""
    end = time.monotonic() + deadline
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline:g} s")
        time.sleep(0.2)


def film(job_id: str, size_mm: tuple[float, float], dpi: int = 30) -> Film:
    cols, rows = round(size_mm[0] / 25.4 * dpi), round(size_mm[1] / 25.4 * dpi)
    pixels = np.tile(np.linspace(0, 255, cols).astype(np.uint8), (rows, 1))
    return Film(job_id=job_id, pixels=pixels, width_mm=size_mm[0], height_mm=size_mm[1], dpi=dpi)


@pytest.mark.parametrize(("size_id", "size_mm"), [("14INX17IN", (355.6, 431.8)), ("A4", (210.0, 297.0))])
def test_film_comes_out_of_cups_pdf_at_its_physical_size(
    cups: CupsServer, tmp_path: Path, size_id: str, size_mm: tuple[float, float]
) -> None:
    driver = open_printer("cups", {"queue": "FILM", "server": cups.socket, "film_sizes": [size_id]}, tmp_path)
    assert driver.status().state is PrinterState.NORMAL
    job_id = f"1.2.826.0.1.{uuid.uuid4().int % 10**12}"
    ref = driver.submit(film(job_id, size_mm))
    assert ref.startswith("FILM-")
    try:
        outputs = poll("the PDF from cups-pdf", lambda: cups_pdf_outputs(job_id))
        pdf = poll("the PDF complete", lambda: (data := outputs[0].read_bytes()).rstrip().endswith(b"%%EOF") and data)
        width, height = pdf_media_box(pdf)
        assert width == pytest.approx(size_mm[0] / 25.4 * 72, abs=1.0)
        assert height == pytest.approx(size_mm[1] / 25.4 * 72, abs=1.0)
        status = poll("job DONE", lambda: (s := driver.job_status(ref)).state is PrintJobState.DONE and s)
        assert status.state is PrintJobState.DONE
        # The journal answers for a restarted agent: the film is not sent again.
        again = open_printer("cups", {"queue": "FILM", "server": cups.socket}, tmp_path)
        assert again.lookup(job_id) == ref
        assert again.submit(film(job_id, size_mm)) == ref
        # Without the journal (a crash between lp and its write) the scheduler's job history answers.
        (tmp_path / "cups-printer.journal").unlink()
        assert open_printer("cups", {"queue": "FILM", "server": cups.socket}, tmp_path).lookup(job_id) == ref
        assert open_printer("cups", {"queue": "FILM", "server": cups.socket}, tmp_path).lookup(job_id + "9") is None
    finally:
        for path in cups_pdf_outputs(job_id):
            path.unlink()
    assert cups.run("lpstat", "-W", "all", "-o", "FILM").stdout.count("FILM-") == 1, cups.log()


def test_queue_state_is_the_printer_status_and_held_jobs_print_later(cups: CupsServer, tmp_path: Path) -> None:
    driver = open_printer("cups", {"queue": "FILM", "server": cups.socket}, tmp_path)
    cups.run("cupsdisable", "FILM")
    status = driver.status()
    assert (status.state, status.info) == (PrinterState.FAILURE, "PRINTER OFFLINE")
    job_id = f"1.2.826.0.2.{uuid.uuid4().int % 10**12}"
    ref = driver.submit(film(job_id, (203.2, 254.0)))
    assert driver.job_status(ref).state is PrintJobState.PENDING
    # A crash after lp and before the journal: the queue itself says the job is there.
    (tmp_path / "cups-printer.journal").unlink()
    assert open_printer("cups", {"queue": "FILM", "server": cups.socket}, tmp_path).lookup(job_id) == ref
    try:
        cups.run("cupsenable", "FILM")
        poll("job DONE after enable", lambda: driver.job_status(ref).state is PrintJobState.DONE)
        poll("the PDF from cups-pdf", lambda: cups_pdf_outputs(job_id))
    finally:
        for path in cups_pdf_outputs(job_id):
            path.unlink()
    cups.run("cupsreject", "FILM")
    status = driver.status()
    assert (status.state, status.info) == (PrinterState.FAILURE, "PRINTER DOWN")
    with pytest.raises(DriverError, match="lp refused"):
        driver.submit(film("1.2.3.rejected", (203.2, 254.0)))
    cups.run("cupsaccept", "FILM")
    assert driver.status().state is PrinterState.NORMAL


def test_canceled_job_is_a_failure(cups: CupsServer, tmp_path: Path) -> None:
    driver = open_printer("cups", {"queue": "FILM", "server": cups.socket}, tmp_path)
    cups.run("cupsdisable", "FILM")
    ref = driver.submit(film("1.2.826.0.3", (203.2, 254.0)))
    cups.run("cancel", ref)
    status = poll("job FAILURE", lambda: (s := driver.job_status(ref)).state is PrintJobState.FAILURE and s)
    assert status.state is PrintJobState.FAILURE


def test_unreachable_scheduler_and_unknown_queue_are_printer_down(cups: CupsServer, tmp_path: Path) -> None:
    for options in ({"queue": "FILM", "server": str(tmp_path / "no.sock")}, {"queue": "NOQUEUE", "server": cups.socket}):
        status = open_printer("cups", options, tmp_path).status()
        assert (status.state, status.info) == (PrinterState.FAILURE, "PRINTER DOWN")
