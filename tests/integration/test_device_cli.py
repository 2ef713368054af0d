"""`dicom-agent device …`: the commands it queues are what the simulated device then delivers, to the
driver alone and to a running agent; its exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import trio

from drivers.base import DeviceStatus, ImageAcquired, PatientData, ProcedureEnded, ProcedureStarted, open_device
from tests.conftest import write_profile

SIM = """
[device]
driver = "sim"
options = { size = "24x16", bits = 8, poll = 0.05 }
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120)


async def acli(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(120):
        return await trio.run_process([sys.executable, "-m", "agent", *args], capture_stdout=True,
                                      capture_stderr=True, check=False)


async def pull(agen, timeout: float = 30):
    with trio.fail_after(timeout):
        while True:
            event = await agen.__anext__()
            if not isinstance(event, DeviceStatus):
                return event


async def test_queued_commands_are_what_the_driver_delivers(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, SIM)
    p = str(profile.source)
    r = cli("device", "start", "--profile", p, "--procedure", "EX1", "--patient-id", "P1",
            "--patient-name", "DOE^JANE", "--birth-date", "19800101", "--sex", "F", "--description", "knee")
    assert r.returncode == 0, r.stderr
    assert "queued" in r.stdout
    assert cli("device", "image", "--profile", p, "--count", "2").returncode == 0
    assert cli("device", "abort", "--profile", p, "--reason", "patient moved").returncode == 0

    stream = open_device("sim", profile.device.options, profile.agent.data_dir).events()
    start = await pull(stream)
    assert start == ProcedureStarted(procedure_key="EX1", patient=PatientData("P1", "DOE^JANE", "19800101", "F"),
                                     description="knee", timestamp=start.timestamp)
    images = [await pull(stream), await pull(stream)]
    assert [(i.procedure_key, i.image_key) for i in images] == [("EX1", "1"), ("EX1", "2")]
    assert all(isinstance(i, ImageAcquired) and i.pixels.shape == (16, 24) and i.pixels.dtype == np.uint8
               for i in images)
    assert await pull(stream) == ProcedureEnded(procedure_key="EX1", aborted=True, reason="patient moved")
    await stream.aclose()

    status = cli("device", "status", "--profile", p, "--json")
    assert status.returncode == 0, status.stderr
    sim = json.loads(status.stdout)["sim"]
    assert sim["delivered"] == {"procedures": 1, "images": 2, "ended": 0, "aborted": 0}  # the abort is not yet pulled
    assert sim["next_event"] == "abort of EX1" and sim["inbox"] == []


async def test_wait_returns_once_delivered_and_a_refused_command_exits_1(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, SIM)
    p = str(profile.source)
    received: list[object] = []

    async def consume() -> None:
        async for event in open_device("sim", profile.device.options, profile.agent.data_dir).events():
            received.append(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        r = await acli("device", "run", "--profile", p, "--procedures", "2", "--images", "1", "--wait", "60", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["outcome"] == "delivered"
        kinds = [type(e).__name__ for e in received if not isinstance(e, DeviceStatus)]
        # Delivered means acknowledged: the consumer pulled past the last event of the command.
        assert kinds == ["ProcedureStarted", "ImageAcquired", "ProcedureEnded"] * 2

        refused = await acli("device", "image", "--profile", p, "--wait", "60")
        assert refused.returncode == 1
        assert b"no procedure is open" in refused.stderr
        nursery.cancel_scope.cancel()


def test_wait_without_a_running_agent_exits_75_and_the_command_stays_queued(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, SIM)
    r = cli("device", "end", "--profile", str(profile.source), "--wait", "0.3")
    assert r.returncode == 75
    assert "not delivered within 0.3 s" in r.stderr
    status = json.loads(cli("device", "status", "--profile", str(profile.source), "--json").stdout)
    assert len(status["sim"]["inbox"]) == 1 and status["sim"]["started"] is False


def test_a_profile_whose_device_is_not_the_sim_exits_2(tmp_path: Path) -> None:
    folder = write_profile(tmp_path / "f", '[device]\ndriver = "folder"\noptions = { path = "incoming" }\n')
    r = cli("device", "start", "--profile", str(folder.source))
    assert r.returncode == 2 and "driver = 'folder', not \"sim\"" in r.stderr
    none = write_profile(tmp_path / "n", "")
    r = cli("device", "image", "--profile", str(none.source))
    assert r.returncode == 2 and "no [device] section" in r.stderr
    assert cli("device", "status", "--profile", str(none.source)).returncode == 2
    assert not (tmp_path / "f" / "data" / "device-sim").exists()


def test_bad_arguments_exit_2_and_a_bad_sim_option_exits_78(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, SIM)
    p = str(profile.source)
    for args in (["start", "--birth-date", "1980"], ["start", "--procedure", "a b"], ["image", "--count", "0"],
                 ["run", "--procedures", "x"], ["end", "--wait", "-1"]):
        r = cli("device", *args, "--profile", p)
        assert r.returncode == 2, (args, r.stderr)
    bad = write_profile(tmp_path / "bad", '[device]\ndriver = "sim"\noptions = { size = "huge" }\n')
    r = cli("device", "start", "--profile", str(bad.source))
    assert r.returncode == 78 and "device.options.size: COLUMNSxROWS" in r.stderr
    assert not (tmp_path / "bad" / "data" / "device-sim").exists()  # nothing queued


def test_status_of_a_folder_device_shows_waiting_and_rejected_files(tmp_path: Path) -> None:
    from drivers.acquisition.folder import WatchFolder, parse_options

    profile = write_profile(tmp_path, '[device]\ndriver = "folder"\noptions = { path = "incoming" }\n')
    incoming = profile.agent.data_dir / "incoming"
    incoming.mkdir(parents=True)
    (incoming / "junk.bin").write_bytes(b"not an image")
    (incoming / "junk.json").write_text('{"procedure": "P1"}')
    watch = WatchFolder(parse_options(profile.device.options, profile.agent.data_dir))
    for _ in range(3):
        watch.next_event()  # rejects the junk
    (incoming / "later.png").write_bytes(b"")
    r = cli("device", "status", "--profile", str(profile.source))
    assert r.returncode == 0, r.stderr
    assert f"watch folder {incoming}: 1 file(s) waiting" in r.stdout
    assert "rejected junk.bin: junk.bin: neither a DICOM file nor a PNG, JPEG or TIFF image" in r.stdout


async def test_a_running_agent_performs_what_the_cli_queues(tmp_path: Path, start_agent) -> None:
    profile = write_profile(tmp_path, SIM + 'select = "first"\n')
    running = await start_agent(profile)
    p = str(profile.source)
    r = await acli("device", "run", "--profile", p, "--procedures", "1", "--images", "2", "--wait", "90")
    assert r.returncode == 0, r.stderr
    with trio.fail_after(60):
        while True:
            status = await acli("device", "status", "--profile", p, "--json")
            assert status.returncode == 0, status.stderr
            recorded = json.loads(status.stdout)["recorded"]
            if recorded and recorded["latest"] and recorded["latest"][-1]["state"] == "completed":
                break
            await trio.sleep(0.2)
    assert recorded["latest"][-1]["procedure_key"] == "SIM-0001" and recorded["latest"][-1]["images"] == 2
    assert recorded["counts"] == {"completed": 1}  # no store destination: completed once ended
    text = await acli("device", "status", "--profile", p)
    assert b"SIM-0001: completed, 2 image(s)" in text.stdout
    running.cancel_scope.cancel()


async def test_a_running_agent_takes_a_watch_folder_procedure_and_rejects_junk(tmp_path: Path, start_agent) -> None:
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    profile = write_profile(tmp_path, '[device]\ndriver = "folder"\nselect = "first"\n'
                                      'options = { path = "incoming", poll = 0.05 }\n')
    incoming = profile.agent.data_dir / "incoming"
    incoming.mkdir(parents=True)
    Image.fromarray((np.arange(24 * 16) % 256).astype(np.uint8).reshape(16, 24)).save(incoming / "a.png")
    (incoming / "a.txt").write_text("procedure=F1\npatient_id=PF1\npatient_name=ROE^RICHARD\n")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 4, 4, 8, 8, 7
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.PixelData = bytes(range(16))
    ds.save_as(incoming / "b.dcm", enforce_file_format=True)
    (incoming / "b.json").write_text('{"procedure": "F1"}')
    (incoming / "c.doc").write_bytes(b"a letter, not an image")
    (incoming / "c.json").write_text('{"procedure": "F1"}')
    (incoming / "F1.end").write_text("status=completed\n")

    running = await start_agent(profile)
    p = str(profile.source)
    with trio.fail_after(60):
        while True:
            status = await acli("device", "status", "--profile", p, "--json")
            assert status.returncode == 0, status.stderr
            report = json.loads(status.stdout)
            recorded = report["recorded"]
            # The end marker moves aside when the agent pulls the next event, after it recorded the end.
            if (recorded and recorded["latest"] and recorded["latest"][-1]["state"] == "completed"
                    and report["folder"]["waiting"] == 0):
                break
            await trio.sleep(0.2)
    assert recorded["latest"][-1]["procedure_key"] == "F1" and recorded["latest"][-1]["images"] == 2
    assert report["folder"]["waiting"] == 0 and report["folder"]["procedures_done"] == 1
    assert [r.split(":")[0] for r in report["folder"]["rejected"]] == ["c.doc"]
    assert sorted(p.name for p in (incoming / "done" / "F1").iterdir()) == [
        "F1.end", "a.png", "a.txt", "b.dcm", "b.json"]
    running.cancel_scope.cancel()


async def test_sigkilled_agents_perform_a_queued_run_once_and_whole(tmp_path: Path) -> None:
    """`device run` queued, the agent (a subprocess) killed with SIGKILL three times while the sim
    delivers: afterwards every procedure is completed, every image has exactly one instance, and the
    device delivered each of its events once (its counters), nothing skipped or invented."""
    import os
    import signal

    from drivers.acquisition import sim

    profile = write_profile(tmp_path, """
        [device]
        driver = "sim"
        select = "first"
        options = { size = "32x32", bits = 8, poll = 0.05, interval = 0.05 }
        """)
    p = str(profile.source)
    data_dir = profile.agent.data_dir
    assert cli("device", "run", "--profile", p, "--procedures", "3", "--images", "3").returncode == 0
    total = 3 * 5  # start, 3 images, end

    def acked() -> int:
        state = sim.read_state(data_dir)
        return state["acked"] if state else 0

    for kill_at in (2, 6, 11):
        proc = await trio.lowlevel.open_process([sys.executable, "-m", "agent", "run", "--profile", p],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with trio.fail_after(90):
                while acked() < kill_at:
                    assert proc.poll() is None, f"agent exited with {proc.returncode}"
                    await trio.sleep(0.01)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
    proc = await trio.lowlevel.open_process([sys.executable, "-m", "agent", "run", "--profile", p],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(90):
            while True:
                listed = await acli("procedures", "list", "--profile", p, "--json")
                report = json.loads(listed.stdout) if listed.returncode == 0 else []
                if acked() >= total and len(report) == 3 and all(r["state"] == "completed" for r in report):
                    break
                await trio.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(30):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert [r["procedure_key"] for r in report] == ["SIM-0001", "SIM-0002", "SIM-0003"]
    for r in report:
        assert [i["image_key"] for i in r["images"]] == ["1", "2", "3"]
        assert all(i["state"] == "stored" for i in r["images"])
    uids = [i["sop_instance_uid"] for r in report for i in r["images"]]
    assert len(set(uids)) == 9
    assert sim.read_state(data_dir)["delivered"] == {"procedures": 3, "images": 9, "ended": 3, "aborted": 0}


async def test_sigkilled_agents_take_each_watch_folder_file_once(tmp_path: Path) -> None:
    """Two procedures of three PNGs each in the watch folder, the agent SIGKILLed twice while it takes
    them: afterwards both procedures are completed with one instance per image, and every file is in
    done/ exactly once."""
    import os
    import signal

    from PIL import Image

    profile = write_profile(tmp_path, '[device]\ndriver = "folder"\nselect = "first"\n'
                                      'options = { path = "incoming", poll = 0.05 }\n')
    p = str(profile.source)
    incoming = profile.agent.data_dir / "incoming"
    incoming.mkdir(parents=True)
    for proc_key in ("F1", "F2"):
        for n in range(3):
            Image.fromarray(np.full((16, 16), n * 40, dtype=np.uint8)).save(incoming / f"{proc_key}-{n}.png")
            (incoming / f"{proc_key}-{n}.json").write_text(json.dumps({"procedure": proc_key, "image": str(n)}))
        (incoming / f"{proc_key}.end").write_text("")
    total = 2 * (3 * 2 + 1)

    def taken() -> int:
        done = incoming / "done"
        return sum(1 for d in done.iterdir() for _ in d.iterdir()) if done.is_dir() else 0

    for kill_at in (2, 7):
        proc = await trio.lowlevel.open_process([sys.executable, "-m", "agent", "run", "--profile", p],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with trio.fail_after(90):
                while taken() < kill_at:
                    assert proc.poll() is None, f"agent exited with {proc.returncode}"
                    await trio.sleep(0.005)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
    proc = await trio.lowlevel.open_process([sys.executable, "-m", "agent", "run", "--profile", p],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(90):
            while True:
                listed = await acli("procedures", "list", "--profile", p, "--json")
                report = json.loads(listed.stdout) if listed.returncode == 0 else []
                if (taken() == total and len(report) == 2
                        and all(r["state"] == "completed" for r in report)):
                    break
                await trio.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(30):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert sorted(r["procedure_key"] for r in report) == ["F1", "F2"]
    for r in report:
        assert sorted(i["image_key"] for i in r["images"]) == ["0", "1", "2"]
        assert all(i["state"] == "stored" for i in r["images"])
    assert len({i["sop_instance_uid"] for r in report for i in r["images"]}) == 6
    assert [f for f in incoming.iterdir() if f.is_file()] == [] and not (incoming / "rejected").exists()


async def test_a_bad_image_from_the_device_is_failed_with_a_reason_and_the_rest_is_kept(
    tmp_path: Path, start_agent
) -> None:
    profile = write_profile(tmp_path, '[device]\ndriver = "sim"\nselect = "first"\n'
                                      'options = { size = "16x16", bits = 8, poll = 0.05, bad_image_every = 2 }\n')
    await start_agent(profile)
    p = str(profile.source)
    r = await acli("device", "run", "--profile", p, "--procedures", "1", "--images", "3", "--wait", "90")
    assert r.returncode == 0, r.stderr
    shown = await acli("procedures", "show", "SIM-0001", "--profile", p, "--json")
    assert shown.returncode == 0, shown.stderr
    images = {i["image_key"]: i for i in json.loads(shown.stdout)["images"]}
    assert [images[k]["state"] for k in ("1", "2", "3")] == ["stored", "failed", "stored"]
    assert "shape (16, 16, 2)" in images["2"]["error"]  # the reason is kept with the image
