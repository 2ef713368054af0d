"""Agent to agent: a modality agent's Print SCU (through its durable queue) prints to a printer-host
agent's Print SCP with the simulated printer, grayscale and color; a printer out of film holds the
modality's job in its queue until film is loaded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import trio
from PIL import Image

from agent.services.print.scu import queue_print
from agent.services.print.scu_options import FilmOptions
from agent.store.queue import JobState
from tests.conftest import write_profile
from tests.interop.print_helpers import gradient8, rgb, write_image

pytestmark = pytest.mark.trio


async def _agents(tmp_path: Path, start_agent, *, color: bool = False, supply: int = 20):
    printer = await start_agent(write_profile(tmp_path / "printer", f"""
        [print]
        serve = true
        driver = "sim"

        [print.options]
        color = {"true" if color else "false"}
        supply = {supply}
        dpi = 50
        film_sizes = ["8INX10IN", "14INX17IN"]
        """, ae_title="FILMHOST"))
    modality = await start_agent(write_profile(tmp_path / "modality", f"""
        [peers.film]
        ae_title = "FILMHOST"
        host = "127.0.0.1"
        port = {printer.port}
        retry_base = "1s"
        retry_cap = "2s"

        [print]
        printer = "film"
        """, ae_title="MODALITY"))
    return printer, modality


async def _cli(*args: str) -> str:
    proc = await trio.run_process([sys.executable, "-m", "agent", *args], capture_stdout=True, capture_stderr=True,
                                  check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


async def _print(modality, paths: list[Path], options: FilmOptions) -> int:
    a = modality.agent
    job_id = await a.blocking.run(lambda: queue_print(a.queue, modality.data_dir, "film", paths, options))
    a.outbound.wake("film")
    return job_id


async def _job_state(modality, job_id: int) -> JobState:
    a = modality.agent
    job = await a.blocking.run(lambda: a.queue.get(job_id))
    assert job is not None
    return job.state


async def _wait_done(modality, job_id: int, timeout: float = 60) -> None:
    with trio.fail_after(timeout):
        while (state := await _job_state(modality, job_id)) is not JobState.DONE:
            assert state is not JobState.DEAD, (await modality.agent.blocking.run(
                lambda: modality.agent.queue.get(job_id))).last_error
            await trio.sleep(0.1)


async def _films(printer, count: int, timeout: float = 60) -> list[Path]:
    folder = printer.data_dir / "sim-films"
    with trio.fail_after(timeout):
        while len(found := sorted(folder.glob("*.png")) if folder.exists() else []) < count:
            await trio.sleep(0.1)
    return found


async def test_grayscale_agent_to_agent(tmp_path: Path, start_agent) -> None:
    printer, modality = await _agents(tmp_path, start_agent)
    a = write_image(tmp_path / "a.dcm", gradient8(96, 128))
    b = write_image(tmp_path / "b.dcm", 255 - gradient8(96, 128))
    job_id = await _print(modality, [a, b], FilmOptions(display_format="STANDARD\\2,1", film_size="8INX10IN",
                                                        copies=1, label="A2A"))
    await _wait_done(modality, job_id)
    (film,) = await _films(printer, 1)
    with Image.open(film) as im:
        assert im.mode in ("L", "I;16") and im.size == (400, 500)  # 8x10 in at 50 dpi, portrait
        pixels = np.asarray(im)
    assert pixels.min() < pixels.max()  # images printed, not an empty film
    # the printer host's service engineer sees the job and the printer
    jobs = json.loads(await _cli("printer", "jobs", "--profile", printer.profile.source, "--json"))
    assert len(jobs) == 1 and jobs[0]["state"] == "done" and jobs[0]["calling_ae"] == "MODALITY"
    status = json.loads(await _cli("printer", "status", "--profile", printer.profile.source, "--json"))
    assert status["status"] == "NORMAL" and status["jobs"].get("done") == 1


async def test_color_agent_to_agent(tmp_path: Path, start_agent) -> None:
    printer, modality = await _agents(tmp_path, start_agent, color=True)
    c = write_image(tmp_path / "c.dcm", rgb(60, 40))
    job_id = await _print(modality, [c], FilmOptions(film_size="8INX10IN"))
    await _wait_done(modality, job_id)
    (film,) = await _films(printer, 1)
    with Image.open(film) as im:
        assert im.mode == "RGB"
        pixels = np.asarray(im).astype(int)
    assert (np.abs(pixels[..., 0] - pixels[..., 1]) > 30).any()  # real color reached the film


async def test_printer_out_of_film_holds_the_job_until_loaded(tmp_path: Path, start_agent) -> None:
    from drivers.printer import sim

    printer, modality = await _agents(tmp_path, start_agent, supply=0)
    a = write_image(tmp_path / "a.dcm", gradient8())
    job_id = await _print(modality, [a], FilmOptions(film_size="8INX10IN"))
    with trio.fail_after(30):
        while (job := await modality.agent.blocking.run(lambda: modality.agent.queue.get(job_id))).attempts < 1:
            await trio.sleep(0.1)
    assert job.state is JobState.PENDING and "SUPPLY EMPTY" in (job.last_error or "")
    assert not (printer.data_dir / "sim-films").exists() or not list((printer.data_dir / "sim-films").glob("*.png"))
    sim.set_state(printer.profile.print.options, printer.data_dir, supply=5)  # film loaded
    await _wait_done(modality, job_id)
    assert len(await _films(printer, 1)) == 1


async def test_color_image_to_a_grayscale_printer_is_dead_with_the_reason(tmp_path: Path, start_agent) -> None:
    printer, modality = await _agents(tmp_path, start_agent, color=False)
    c = write_image(tmp_path / "c.dcm", rgb(60, 40))
    job_id = await _print(modality, [c], FilmOptions(film_size="8INX10IN"))
    with trio.fail_after(30):
        while await _job_state(modality, job_id) is not JobState.DEAD:
            await trio.sleep(0.1)
    job = await modality.agent.blocking.run(lambda: modality.agent.queue.get(job_id))
    assert "Basic Color Print Management Meta" in (job.last_error or "")
    assert not (printer.data_dir / "sim-films").exists() or not list((printer.data_dir / "sim-films").glob("*.png"))
