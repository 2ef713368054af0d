"""A printer out of film during a session (the sim driver, agent as a subprocess): the job waits, the
Printer and Print Job N-EVENT-REPORTs received by a pynetdicom SCU say so, the agent is killed with
SIGKILL while the job waits, and once film is loaded the restarted agent prints the film exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.conftest import free_port, wait_listening
from tests.interop.print_scu_peer import FILM_SESSION, PRINT_JOB, PRINTER, PrintSCU, image_box

pytestmark = [pytest.mark.trio, pytest.mark.interop]

OPTIONS = {"supply": 20, "supply_low": 2, "film_sizes": ["8INX10IN"], "dpi": 50}


def profile_text(tmp_path: Path, port: int) -> str:
    return f"""
[agent]
ae_title = "PRINTER"
bind = "127.0.0.1"
port = {port}
data_dir = "{tmp_path / 'data'}"
dimse_timeout = "10s"
idle_timeout = "60s"

[print]
serve = true
driver = "sim"
poll_interval = "0.3s"

[print.options]
supply = {OPTIONS['supply']}
supply_low = {OPTIONS['supply_low']}
film_sizes = ["8INX10IN"]
dpi = {OPTIONS['dpi']}
"""


def sim(data_dir: Path, **changes: object) -> dict[str, object]:
    from drivers.printer.sim import set_state

    return set_state(OPTIONS, data_dir, **changes)


def jobs(data_dir: Path) -> list:
    from agent.store.db import open_database
    from agent.store.printjobs import PrintJobStore

    db = open_database(data_dir / "agent.db")
    try:
        return PrintJobStore(db).list()
    finally:
        db.close()


async def until(predicate, timeout: float = 30) -> None:  # noqa: ANN001
    with trio.fail_after(timeout):
        while not await trio.to_thread.run_sync(predicate):
            await trio.sleep(0.1)


async def test_out_of_film_waits_survives_sigkill_and_prints_once(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    (tmp_path / "profile.toml").write_text(profile_text(tmp_path, port))
    log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115

    async def start() -> trio.Process:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "agent", "run", "--profile", str(tmp_path / "profile.toml")],
            stdout=log, stderr=subprocess.STDOUT)
        await wait_listening(port, proc, timeout=30)
        return proc

    proc = await start()
    try:
        scu = await trio.to_thread.run_sync(lambda: PrintSCU(port))
        status, attrs = await trio.to_thread.run_sync(scu.printer)
        assert (status, attrs.PrinterStatus) == (0, "NORMAL")

        # The film runs out during the session: a Printer FAILURE event says SUPPLY EMPTY.
        await trio.to_thread.run_sync(lambda: sim(data, supply=0))
        _, _, _, info = await scu.events.wait_for(lambda e: e[0] == PRINTER and e[2] == 3)
        assert info.PrinterStatusInfo == "SUPPLY EMPTY"

        def print_film() -> tuple[int, str]:
            scu.film_session(FilmSessionLabel="OUT OF FILM")
            _, box, boxes, _ = scu.film_box("STANDARD\\1,1", FilmSizeID="8INX10IN")
            scu.set_image(boxes[0], image_box(1))
            status, reply = scu.print_film_box(box)
            return status, str(reply[0x21000500].value[0].ReferencedSOPInstanceUID)

        status, job_uid = await trio.to_thread.run_sync(print_film)
        assert status == 0  # accepted and recorded: the printer's trouble is the job's, not the request's
        _, uid, _, info = await scu.events.wait_for(lambda e: e[0] == PRINT_JOB and e[2] == 1
                                                    and e[3].ExecutionStatusInfo == "SUPPLY EMPTY")
        assert uid == job_uid
        await until(lambda: [(j.id, j.state, j.info) for j in jobs(data)] == [(job_uid, "pending", "SUPPLY EMPTY")])
        await trio.to_thread.run_sync(lambda: scu.delete(FILM_SESSION, scu.session_uid))
        await trio.to_thread.run_sync(scu.release)

        # Killed while the job waits; still waiting after the restart while the printer is empty.
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        proc = await start()
        await trio.sleep(1.0)  # several poll intervals: the job must still be held
        assert [j.state for j in jobs(data)] == ["pending"]
        assert sim(data)["printed"] == 0

        # Film loaded: it prints, once.
        await trio.to_thread.run_sync(lambda: sim(data, supply=10))
        await until(lambda: [j.state for j in jobs(data)] == ["done"])
        assert sim(data)["printed"] == 1
        assert sim(data)["supply"] == 9
        assert len(list((data / "sim-films").glob("*.png"))) == 1
        await trio.sleep(1.0)
        assert sim(data)["printed"] == 1  # nothing printed twice
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        log.close()
