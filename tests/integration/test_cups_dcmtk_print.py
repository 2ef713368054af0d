"""Through CUPS, end to end: DCMTK's print SCU (`dcmpsprt` renders, `dcmprscu` sends) prints to the
agent's Print SCP, whose `cups` driver hands the film to a real CUPS scheduler; the film comes out of
cups-pdf as a PDF whose page is the film's physical size (8 x 10 in = 576 x 720 pt)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import trio

from drivers.printer.ipp import IppClient
from tests.conftest import require_tool, write_profile
from tests.integration.cups_server import CupsServer, cups_pdf_outputs, pdf_media_box
from tests.interop.test_print_dcmtk_interop import dcmpstat_cfg, run, secondary_capture

pytestmark = [pytest.mark.trio, pytest.mark.interop]

DEADLINE = 60


@pytest.fixture
def cups() -> Iterator[CupsServer]:
    with CupsServer.start() as server:
        server.add_pdf_queue("FILM")
        yield server


async def test_dcmtk_film_comes_out_of_cups_pdf_at_8x10_inches(tmp_path: Path, start_agent, cups: CupsServer) -> None:
    dcmpsprt, dcmprscu = require_tool("dcmpsprt"), require_tool("dcmprscu")
    agent = await start_agent(write_profile(tmp_path / "agent", f"""
        [print]
        serve = true
        driver = "cups"
        [print.options]
        queue = "FILM"
        server = "{cups.socket}"
        film_sizes = ["8INX10IN"]
        dpi = 60
        """, ae_title="PRINTER"))
    cfg = dcmpstat_cfg(tmp_path, agent.port)
    ramp = np.tile(np.linspace(0, 255, 128).round(), (128, 1))
    image = secondary_capture(tmp_path / "img.dcm", ramp)
    await run([dcmpsprt, "-c", str(cfg), "-p", "AGENT", "--filmsize", "8INX10IN", "-l", "1", "1", str(image)], tmp_path)
    [stored_print] = [str(p) for p in (tmp_path / "db").glob("SP_*.dcm")]
    out = await run([dcmprscu, "-c", str(cfg), "-p", "AGENT", "-v", stored_print], tmp_path)
    assert "Association accepted" in out

    ipp = IppClient(cups.socket, 30)
    outputs: list[Path] = []
    try:
        with trio.fail_after(DEADLINE):
            while not (jobs := await trio.to_thread.run_sync(ipp.jobs, "FILM")):
                await trio.sleep(0.2)  # the agent's job reaches the queue...
            [job] = jobs
            job = await trio.to_thread.run_sync(ipp.job, job["job-id"][0])
            [name] = job["job-name"]  # ... titled with its Print Job UID
            assert name.startswith("dicom-agent 1.2.")
            # cups-pdf names the PDF after the title, cut to a length of its own: match a prefix.
            stem = name.removeprefix("dicom-agent ")[:40]
            while not (outputs := cups_pdf_outputs(stem)) or not outputs[0].read_bytes().rstrip().endswith(b"%%EOF"):
                await trio.sleep(0.2)
        width, height = pdf_media_box(outputs[0].read_bytes())
        assert width == pytest.approx(576, abs=1.0) and height == pytest.approx(720, abs=1.0), cups.log()
    finally:
        for path in outputs:
            path.unlink(missing_ok=True)
