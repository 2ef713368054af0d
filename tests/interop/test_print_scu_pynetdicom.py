"""The agent's Print SCU against a pynetdicom Print SCP: the message sequence, what each message holds,
events answered, a printer in FAILURE or down (the job waits in the durable queue), a refusal (dead)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trio

from agent.cli.printing import run_print_job
from agent.services.print.scu import queue_print
from agent.services.print.scu_options import FilmOptions
from agent.store.db import DB_FILENAME, open_database
from agent.store.queue import JobQueue, JobState
from tests.conftest import write_profile
from tests.interop.print_helpers import (
    ANNOTATION_BOX, COLOR_BOX, COLOR_META, FILM_BOX, FILM_SESSION, GRAY_BOX, PRESENTATION_LUT, PRINTER,
    PRINTER_INSTANCE, PrintRecorder, gradient8, image12, rgb, write_image,
)

pytestmark = [pytest.mark.trio, pytest.mark.interop]


@pytest.fixture
def printers():
    made: list[PrintRecorder] = []

    def make(**kw) -> PrintRecorder:
        r = PrintRecorder(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def _profile(tmp_path: Path, port: int, extra: str = ""):
    return write_profile(tmp_path / "agent", f"""
        [peers.film]
        ae_title = "PRINTER"
        host = "127.0.0.1"
        port = {port}
        retry_base = "1s"
        retry_cap = "2s"
        {extra}
        [print]
        printer = "film"
        """)


def _queue(profile) -> JobQueue:
    profile.agent.data_dir.mkdir(parents=True, exist_ok=True)
    return JobQueue(open_database(profile.agent.data_dir / DB_FILENAME))


async def test_grayscale_session_sequence_and_contents(tmp_path: Path, printers) -> None:
    printer = printers(send_job_event=True)
    profile = _profile(tmp_path, printer.port)
    queue = _queue(profile)
    a = write_image(tmp_path / "a.dcm", gradient8())
    b = write_image(tmp_path / "b.dcm", image12(), bits_stored=12, window=(2048, 4096))
    options = FilmOptions(display_format="STANDARD\\2,1", copies=2, film_size="14INX17IN", label="CHEST",
                          annotations=("PRINT^TEST",), orientation="LANDSCAPE")
    job_id = queue_print(queue, profile.agent.data_dir, "film", [a, b], options)
    lines: list[str] = []
    result = await run_print_job(profile, queue, job_id, lines.append)
    assert result["state"] == "done" and result["exit"] == 0, result
    assert printer.operations() == [
        ("N-GET", PRINTER), ("N-CREATE", FILM_SESSION), ("N-CREATE", PRESENTATION_LUT), ("N-CREATE", FILM_BOX),
        ("N-SET", GRAY_BOX), ("N-SET", GRAY_BOX), ("N-SET", ANNOTATION_BOX), ("N-ACTION", FILM_BOX),
        ("N-DELETE", FILM_BOX), ("N-DELETE", FILM_SESSION), ("N-DELETE", PRESENTATION_LUT),
    ]
    ev = printer.snapshot()
    assert ev[0][2] == PRINTER_INSTANCE
    session = ev[1][3]
    assert session.NumberOfCopies == 2 and session.FilmSessionLabel == "CHEST"
    assert "MediumType" not in session and "PrintPriority" not in session  # not given: not sent
    assert ev[2][3].PresentationLUTShape == "IDENTITY"
    box = ev[3][3]
    assert box.ImageDisplayFormat == "STANDARD\\2,1" and box.FilmSizeID == "14INX17IN"
    assert box.FilmOrientation == "LANDSCAPE" and box.AnnotationDisplayFormatID == "1"
    assert box.ReferencedFilmSessionSequence[0].ReferencedSOPInstanceUID == ev[1][2]
    assert box.ReferencedPresentationLUTSequence[0].ReferencedSOPInstanceUID == ev[2][2]
    for absent in ("MagnificationType", "BorderDensity", "MinDensity", "MaxDensity", "Trim", "RequestedResolutionID"):
        assert absent not in box
    first = ev[4][3]
    assert first.ImageBoxPosition == 1
    item = first.BasicGrayscaleImageSequence[0]
    assert (item.Rows, item.Columns, item.BitsStored, item.PhotometricInterpretation) == (48, 64, 8, "MONOCHROME2")
    sent = np.frombuffer(item.PixelData, np.uint8)[: 48 * 64].reshape(48, 64)
    assert np.array_equal(sent, gradient8())  # an 8-bit image goes out bit for bit
    second = ev[5][3].BasicGrayscaleImageSequence[0]
    got = np.frombuffer(second.PixelData, np.uint8).reshape(40, 50)
    # window 2048/4096 over 12-bit values: y = ((x - 2047.5) / 4095 + 0.5) * 255
    expected = np.clip(np.rint(((image12() - 2047.5) / 4095 + 0.5) * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(got, expected)
    assert ev[6][3].TextString == "PRINT^TEST" and ev[6][3].AnnotationPosition == 1
    # the Print Job event sent during N-ACTION was answered Success and reported
    assert printer.event_replies == [0]
    assert any("Print Job DONE" in line for line in lines), lines
    assert not (profile.agent.data_dir / "print-spool").exists() or not any((profile.agent.data_dir / "print-spool").iterdir())


async def test_color_images_use_the_color_meta_class(tmp_path: Path, printers) -> None:
    printer = printers()
    profile = _profile(tmp_path, printer.port)
    queue = _queue(profile)
    c = write_image(tmp_path / "c.dcm", rgb())
    g = write_image(tmp_path / "g.dcm", gradient8(20, 10))
    job_id = queue_print(queue, profile.agent.data_dir, "film", [c, g], FilmOptions(display_format="STANDARD\\1,1"))
    result = await run_print_job(profile, queue, job_id, lambda line: None)
    assert result["state"] == "done", result
    ops = printer.operations()
    # two images, one box per film: two films in one session, no Presentation LUT for color
    assert ops == [
        ("N-GET", PRINTER), ("N-CREATE", FILM_SESSION),
        ("N-CREATE", FILM_BOX), ("N-SET", COLOR_BOX), ("N-ACTION", FILM_BOX), ("N-DELETE", FILM_BOX),
        ("N-CREATE", FILM_BOX), ("N-SET", COLOR_BOX), ("N-ACTION", FILM_BOX), ("N-DELETE", FILM_BOX),
        ("N-DELETE", FILM_SESSION),
    ]
    item = printer.snapshot()[3][3].BasicColorImageSequence[0]
    assert (item.SamplesPerPixel, item.PhotometricInterpretation, item.PlanarConfiguration) == (3, "RGB", 1)
    planes = np.frombuffer(item.PixelData, np.uint8)[: 3 * 30 * 20].reshape(3, 30, 20)
    assert np.array_equal(np.moveaxis(planes, 0, 2), rgb())
    gray_as_rgb = printer.snapshot()[7][3].BasicColorImageSequence[0]
    planes = np.frombuffer(gray_as_rgb.PixelData, np.uint8)[: 3 * 200].reshape(3, 20, 10)
    assert all(np.array_equal(p, gradient8(20, 10)) for p in planes)


async def test_printer_in_failure_keeps_the_job_queued_until_normal(tmp_path: Path, printers, start_agent) -> None:
    printer = printers(status="FAILURE", info="SUPPLY EMPTY")
    profile = _profile(tmp_path, printer.port)
    queue = _queue(profile)
    a = write_image(tmp_path / "a.dcm", gradient8())
    job_id = queue_print(queue, profile.agent.data_dir, "film", [a], FilmOptions())
    result = await run_print_job(profile, queue, job_id, lambda line: None)
    assert result["state"] == "queued" and result["exit"] == 75, result
    assert "SUPPLY EMPTY" in result["error"]
    assert printer.operations() == [("N-GET", PRINTER)]  # nothing created while the printer is in FAILURE
    with trio.fail_after(15):  # the association ends politely: the printer did nothing wrong
        while not printer.endings:
            await trio.sleep(0.05)
    assert printer.endings == ["released"]
    job = queue.get(job_id)
    assert job is not None and job.state is JobState.PENDING and job.attempts == 1
    # film loaded: the running agent's queue worker prints it
    printer.status, printer.info = "NORMAL", "NORMAL"
    await start_agent(profile)
    await printer.wait_for(lambda ev: ("N-ACTION", FILM_BOX) in [(e[0], e[1]) for e in ev])
    with trio.fail_after(30):
        while queue.get(job_id).state is not JobState.DONE:  # type: ignore[union-attr]
            await trio.sleep(0.1)


async def test_printer_down_job_waits_and_goes_out_when_it_is_back(tmp_path: Path, printers, start_agent) -> None:
    from tests.conftest import free_port

    port = free_port()
    profile = _profile(tmp_path, port)
    queue = _queue(profile)
    a = write_image(tmp_path / "a.dcm", gradient8())
    job_id = queue_print(queue, profile.agent.data_dir, "film", [a], FilmOptions(display_format="STANDARD\\1,1"))
    result = await run_print_job(profile, queue, job_id, lambda line: None)
    assert result["state"] == "queued" and result["exit"] == 75, result
    agent = await start_agent(profile)
    # the agent tries while nothing listens: the job stays pending, its spool folder kept
    with trio.fail_after(30):
        while queue.get(job_id).attempts < 2:  # type: ignore[union-attr]
            await trio.sleep(0.1)
    assert queue.get(job_id).state is JobState.PENDING  # type: ignore[union-attr]
    spool = profile.agent.data_dir / queue.get(job_id).payload["spool"]  # type: ignore[union-attr]
    assert spool.is_dir()
    # the printer comes up on that port
    printer = printers(port=port)
    agent.agent.outbound.wake("film")
    await printer.wait_for(lambda ev: ("N-DELETE", FILM_SESSION) in [(e[0], e[1]) for e in ev], timeout=40)
    with trio.fail_after(30):
        while queue.get(job_id).state is not JobState.DONE:  # type: ignore[union-attr]
            await trio.sleep(0.1)
    assert not spool.exists()


async def test_refusal_is_permanent(tmp_path: Path, printers) -> None:
    printer = printers(action_status=0xC602)  # "film box SOP instance hierarchy does not contain image box"
    profile = _profile(tmp_path, printer.port)
    queue = _queue(profile)
    a = write_image(tmp_path / "a.dcm", gradient8())
    job_id = queue_print(queue, profile.agent.data_dir, "film", [a], FilmOptions())
    result = await run_print_job(profile, queue, job_id, lambda line: None)
    assert result["state"] == "dead" and result["exit"] == 1, result
    assert "N-ACTION" in result["error"] and "C602" in result["error"].upper()
    assert queue.get(job_id).state is JobState.DEAD  # type: ignore[union-attr]
