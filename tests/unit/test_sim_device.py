"""The simulated acquisition device: scripted runs from its options and from queued commands, its
progress kept in data_dir so a restart re-delivers the unacknowledged event and never skips or
invents one, and its faults."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import trio

from drivers.acquisition import sim
from drivers.base import (
    DeviceStatus, DriverOptionError, ImageAcquired, PatientData, ProcedureEnded, ProcedureStarted, open_device,
)

FAST = {"poll": 0.01}


async def pull(agen, timeout: float = 30):
    with trio.fail_after(timeout):
        while True:
            event = await agen.__anext__()
            if not isinstance(event, DeviceStatus):
                return event


async def pull_n(agen, n: int) -> list:
    return [await pull(agen) for _ in range(n)]


async def nothing_more(agen, wait: float = 0.3) -> None:
    """Nothing but status within `wait` s (the stream is cancelled: the caller is done with it)."""
    with trio.move_on_after(wait):
        event = await pull(agen)
        raise AssertionError(f"unexpected event {event!r}")


def shape(events: list) -> list[tuple]:
    out = []
    for e in events:
        if isinstance(e, ProcedureStarted):
            out.append(("start", e.procedure_key))
        elif isinstance(e, ImageAcquired):
            out.append(("image", e.procedure_key, e.image_key))
        else:
            out.append(("aborted" if e.aborted else "end", e.procedure_key))
    return out


async def test_the_profile_plans_procedures_once_with_faults(tmp_path: Path) -> None:
    options = {**FAST, "procedures": 2, "images": 3, "size": "40x30", "bits": 12, "abort_every": 2}
    stream = open_device("sim", options, tmp_path).events()
    events = await pull_n(stream, 8)
    assert shape(events[:8]) == [
        ("start", "SIM-0001"), ("image", "SIM-0001", "1"), ("image", "SIM-0001", "2"), ("image", "SIM-0001", "3"),
        ("end", "SIM-0001"), ("start", "SIM-0002"), ("image", "SIM-0002", "1"), ("aborted", "SIM-0002"),
    ]
    assert events[7].reason == "simulated fault: abort_every = 2"
    image = events[1]
    assert image.pixels.shape == (30, 40) and image.pixels.dtype == np.uint16 and image.bits_stored == 12
    assert int(image.pixels.max()) == 4095  # the label is drawn at full scale
    await nothing_more(stream)  # only two were planned
    assert not np.array_equal(events[1].pixels, events[2].pixels)
    assert events[0].worklist_key == "" and events[0].patient is None  # worklist = "first"


async def test_a_restart_redelivers_the_unacknowledged_event_and_plans_nothing_again(tmp_path: Path) -> None:
    options = {**FAST, "procedures": 1, "images": 2, "size": "32x32"}
    first = open_device("sim", options, tmp_path).events()
    start, image = await pull_n(first, 2)
    await first.aclose()  # the agent died before it recorded the image
    assert sim.read_state(tmp_path)["acked"] == 1

    second = open_device("sim", options, tmp_path).events()
    again = await pull(second)
    assert (again.procedure_key, again.image_key) == (image.procedure_key, image.image_key)
    assert np.array_equal(again.pixels, image.pixels)
    rest = await pull_n(second, 2)
    assert shape(rest) == [("image", "SIM-0001", "2"), ("end", "SIM-0001")]
    await second.aclose()  # the end was yielded but not acknowledged (that is the next pull)

    third = open_device("sim", {**options, "size": "64x64"}, tmp_path).events()
    end = await pull(third)
    assert end == ProcedureEnded(procedure_key="SIM-0001")
    await nothing_more(third)  # `procedures` is planned once, when the state is created
    state = sim.read_state(tmp_path)
    assert state["acked"] == 4 and state["delivered"] == {"procedures": 1, "images": 2, "ended": 1, "aborted": 0}


async def test_commands_from_the_spool_start_add_images_end_and_abort(tmp_path: Path) -> None:
    stream = open_device("sim", {**FAST, "size": "16x16", "bits": 8}, tmp_path).events()
    patient = {"patient_id": "P7", "patient_name": "DOE^JOHN", "birth_date": "19700102", "sex": "M"}
    sim.queue_command(tmp_path, {"op": "start", "procedure": "EXAM-1", "patient": patient, "description": "chest"})
    sim.queue_command(tmp_path, {"op": "image", "count": 2})
    cid = sim.queue_command(tmp_path, {"op": "end"})
    events = await pull_n(stream, 4)
    assert events[0] == ProcedureStarted(procedure_key="EXAM-1", worklist_key="", patient=PatientData(**patient),
                                         description="chest", timestamp=events[0].timestamp)
    assert shape(events[1:]) == [("image", "EXAM-1", "1"), ("image", "EXAM-1", "2"), ("end", "EXAM-1")]
    assert events[1].pixels.dtype == np.uint8
    assert sim.command_outcome(tmp_path, cid) == "planned"  # the end is not acknowledged yet
    sim.queue_command(tmp_path, {"op": "start", "worklist": "ACC42"})
    sim.queue_command(tmp_path, {"op": "abort", "reason": "patient moved"})
    started, aborted = await pull_n(stream, 2)
    assert sim.command_outcome(tmp_path, cid) == "delivered"
    assert (started.procedure_key, started.worklist_key) == ("SIM-0002", "ACC42")
    assert aborted == ProcedureEnded(procedure_key="SIM-0002", aborted=True, reason="patient moved")
    await stream.aclose()


async def test_a_run_command_plans_whole_procedures(tmp_path: Path) -> None:
    stream = open_device("sim", {**FAST, "size": "16x16", "worklist": "accession:A1"}, tmp_path).events()
    sim.queue_command(tmp_path, {"op": "run", "procedures": 2, "images": 1})
    events = await pull_n(stream, 6)
    assert shape(events) == [("start", "SIM-0001"), ("image", "SIM-0001", "1"), ("end", "SIM-0001"),
                             ("start", "SIM-0002"), ("image", "SIM-0002", "1"), ("end", "SIM-0002")]
    assert events[0].worklist_key == "A1"
    await stream.aclose()


@pytest.mark.parametrize(
    ("commands", "reason"),
    [
        ([{"op": "image"}], "no procedure is open"),
        ([{"op": "end"}], "no procedure is open"),
        ([{"op": "start"}, {"op": "start"}], "is still open"),
        ([{"op": "start"}, {"op": "run", "procedures": 1}], "is still open"),
        ([{"op": "start", "procedure": "K"}, {"op": "end"}, {"op": "start", "procedure": "K"}], "used before"),
        ([{"op": "start", "procedure": "a b"}], "procedure key must be"),
        ([{"op": "start", "patient": {"sex": "Q"}}], "sex must be"),
        ([{"op": "start"}, {"op": "image", "count": 0}], "count must be"),
        ([{"op": "start", "patient": "DOE"}], "patient must be an object"),
        ([{"op": "run", "procedures": 1000, "images": 1000}], "more than"),
    ],
)
async def test_commands_that_cannot_be_planned_are_rejected_with_a_reason(
    tmp_path: Path, commands: list, reason: str
) -> None:
    stream = open_device("sim", FAST, tmp_path).events()
    ids = [sim.queue_command(tmp_path, c) for c in commands]
    with trio.fail_after(30):
        while not sim.command_outcome(tmp_path, ids[-1]).startswith("rejected"):
            with trio.move_on_after(0.05):
                await pull(stream)
    assert reason in sim.command_outcome(tmp_path, ids[-1])
    assert any(reason in line for line in sim.spool(tmp_path)["rejected"])
    await stream.aclose()


async def test_a_command_planned_just_before_a_crash_is_not_planned_twice(tmp_path: Path) -> None:
    stream = open_device("sim", {**FAST, "size": "16x16"}, tmp_path).events()
    await stream.__anext__()  # the status: the state exists
    cid = sim.queue_command(tmp_path, {"op": "run", "procedures": 1, "images": 1})
    copy = tmp_path / "copy.json"
    shutil.copy(sim.sim_dir(tmp_path) / "inbox" / f"{cid}.json", copy)
    events = await pull_n(stream, 3)
    await stream.aclose()
    # The crash came after the plan was written and before the command file was deleted.
    shutil.copy(copy, sim.sim_dir(tmp_path) / "inbox" / f"{cid}.json")
    again = open_device("sim", {**FAST, "size": "16x16"}, tmp_path).events()
    assert await pull(again) == events[-1]  # the unacknowledged end, then nothing
    await nothing_more(again)
    assert sim.spool(tmp_path)["inbox"] == []


async def test_unscheduled_procedures_carry_generated_patient_data(tmp_path: Path) -> None:
    stream = open_device("sim", {**FAST, "procedures": 1, "images": 0, "unscheduled": True}, tmp_path).events()
    start, end = await pull_n(stream, 2)
    assert start.worklist_key == "" and start.patient is not None and start.patient.patient_id
    assert end == ProcedureEnded(procedure_key="SIM-0001")
    await stream.aclose()


async def test_worklist_keys_one_per_procedure_then_the_worklist_option(tmp_path: Path) -> None:
    options = {**FAST, "procedures": 3, "images": 0, "worklist_keys": ["K1", "K2"], "worklist": "patient:PID9"}
    stream = open_device("sim", options, tmp_path).events()
    starts = [e for e in await pull_n(stream, 6) if isinstance(e, ProcedureStarted)]
    assert [s.worklist_key for s in starts] == ["K1", "K2", ""]
    assert starts[2].patient == PatientData(patient_id="PID9")
    await stream.aclose()


async def test_color_images(tmp_path: Path) -> None:
    options = {**FAST, "procedures": 1, "images": 1, "color": True, "size": "48x32"}
    stream = open_device("sim", options, tmp_path).events()
    _, image = await pull_n(stream, 2)
    assert image.photometric == "RGB" and image.pixels.shape == (32, 48, 3) and image.pixels.dtype == np.uint8
    await stream.aclose()


def test_synthetic_images_are_a_function_of_their_numbers_and_show_them() -> None:
    a = sim.synthetic_image(1, 1, 128, 96, 12, False, 0)
    assert np.array_equal(a, sim.synthetic_image(1, 1, 128, 96, 12, False, 0))
    assert not np.array_equal(a, sim.synthetic_image(1, 2, 128, 96, 12, False, 0))
    assert not np.array_equal(a, sim.synthetic_image(1, 1, 128, 96, 12, False, 1))
    label = a[:48, :] == 4095
    assert 50 < label.sum() < label.size // 2  # text, not a block


@pytest.mark.parametrize(
    ("options", "key"),
    [({"size": "256"}, "size"), ({"size": "4x4"}, "size"), ({"bits": 17}, "bits"),
     ({"color": True, "bits": 12}, "bits"),
     ({"worklist": "mrn:3"}, "worklist"), ({"images": -1}, "images"), ({"procedure": 1}, "procedure"),
     ({"worklist_keys": "A"}, "worklist_keys"), ({"abort_every": True}, "abort_every")],
)
def test_bad_options_name_the_key(tmp_path: Path, options: dict, key: str) -> None:
    with pytest.raises(DriverOptionError) as info:
        open_device("sim", options, tmp_path)
    assert info.value.key == key
    assert not (tmp_path / "device-sim").exists()  # the factory only checks


def test_the_state_file_is_json_a_person_can_read(tmp_path: Path) -> None:
    device = sim.SimDevice(sim.parse_options({"procedures": 1, "images": 1}), tmp_path)
    device.open()
    state = json.loads((tmp_path / "device-sim" / "state.json").read_text())
    assert [p["t"] for p in state["pending"]] == ["start", "image", "end"] and state["commands"] == {"profile": 3}


async def test_bad_image_every_delivers_an_image_no_instance_can_be_made_of(tmp_path: Path) -> None:
    options = {**FAST, "procedures": 1, "images": 4, "size": "16x16", "bad_image_every": 2}
    stream = open_device("sim", options, tmp_path).events()
    images = [e for e in await pull_n(stream, 6) if isinstance(e, ImageAcquired)]
    assert [i.pixels.shape for i in images] == [(16, 16), (16, 16, 2), (16, 16), (16, 16, 2)]
    await stream.aclose()


async def test_a_generated_key_never_repeats_one_given_by_hand(tmp_path: Path) -> None:
    stream = open_device("sim", {**FAST, "size": "16x16"}, tmp_path).events()
    sim.queue_command(tmp_path, {"op": "start", "procedure": "SIM-0002"})
    sim.queue_command(tmp_path, {"op": "end"})
    sim.queue_command(tmp_path, {"op": "run", "procedures": 1, "images": 0})
    keys = [e.procedure_key for e in await pull_n(stream, 4) if isinstance(e, ProcedureStarted)]
    assert keys == ["SIM-0002", "SIM-0002-2"]
    await stream.aclose()
