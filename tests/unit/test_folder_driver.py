"""The watch-folder acquisition driver: complete files only, each once (also across restarts), moved
aside only when the consumer pulls the next event, bad files rejected with a reason."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import trio
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from drivers.acquisition.folder import Pending, WatchFolder, parse_options
from drivers.base import (
    DeviceStatus, DriverOptionError, ImageAcquired, ProcedureEnded, ProcedureStarted, open_device,
)


def settings(folder: Path, **extra: object):
    return parse_options({"path": str(folder), **extra}, folder.parent)


def scan(watch: WatchFolder, tries: int = 5) -> Pending | None:
    """Scan until an event other than a status is ready (a file needs two scans to be stable)."""
    for _ in range(tries):
        item = watch.next_event()
        if item is not None and not isinstance(item.event, DeviceStatus):
            return item
    return None


def take(watch: WatchFolder) -> Pending:
    item = scan(watch)
    assert item is not None, "no event"
    watch.acknowledge(item)
    return item


def png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG")


def gray(rows: int = 20, cols: int = 30) -> np.ndarray:
    return (np.arange(rows * cols) % 251).astype(np.uint8).reshape(rows, cols)


def sidecar(folder: Path, stem: str, **values: object) -> None:
    (folder / f"{stem}.json").write_text(json.dumps(values))


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    d = tmp_path / "watch"
    d.mkdir()
    return d


def test_a_png_with_its_sidecar_starts_the_procedure_then_is_one_image(inbox: Path) -> None:
    pixels = gray()
    png(inbox / "IMG1.png", pixels)
    sidecar(inbox, "IMG1", procedure="P1", worklist="ACC1", patient_id="PID1", patient_name="DOE^JANE",
            birth_date="19800101", sex="F", image="img-1")
    watch = WatchFolder(settings(inbox))
    start = take(watch).event
    assert start == ProcedureStarted(procedure_key="P1", worklist_key="ACC1", patient=start.patient,
                                     timestamp=start.timestamp)
    assert start.patient is not None and start.patient.patient_name == "DOE^JANE" and start.patient.sex == "F"
    item = scan(watch)
    assert isinstance(item.event, ImageAcquired)
    assert (item.event.procedure_key, item.event.image_key) == ("P1", "img-1")
    assert item.event.bits_stored == 8 and item.event.photometric == "MONOCHROME2"
    assert np.array_equal(item.event.pixels, pixels)
    assert (inbox / "IMG1.png").exists(), "moved before the consumer acknowledged"
    watch.acknowledge(item)
    assert sorted(p.name for p in (inbox / "done" / "P1").iterdir()) == ["IMG1.json", "IMG1.png"]
    assert not (inbox / "IMG1.png").exists() and scan(watch) is None


def test_a_file_is_taken_only_once_its_size_and_time_stand_still(inbox: Path) -> None:
    watch = WatchFolder(settings(inbox))
    assert isinstance(watch.next_event().event, DeviceStatus)
    sidecar(inbox, "A", procedure="P1")
    with open(inbox / "A.png", "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")  # the device is still writing
    assert watch.next_event() is None  # seen once
    with open(inbox / "A.png", "ab") as f:
        f.write(b"\0" * 100)
    assert watch.next_event() is None  # grew: not stable
    assert not (inbox / "rejected").exists()
    (inbox / "A.png").unlink()
    png(inbox / "A.png", gray())  # the complete file
    assert watch.next_event() is None
    assert isinstance(watch.next_event().event, ProcedureStarted)


def test_a_data_file_waits_for_its_sidecar_and_part_files_are_ignored(inbox: Path) -> None:
    png(inbox / "A.png", gray())
    png(inbox / "B.png.part", gray())
    (inbox / ".C.json").write_text("{}")
    watch = WatchFolder(settings(inbox))
    assert scan(watch) is None
    assert not (inbox / "rejected").exists()
    sidecar(inbox, "A", procedure="P1")
    assert isinstance(scan(watch).event, ProcedureStarted)


async def pull(agen, timeout: float = 30):
    with trio.fail_after(timeout):
        while True:
            event = await agen.__anext__()
            if not isinstance(event, DeviceStatus):
                return event


async def test_once_only_across_a_restart_and_moved_aside_only_on_pull(inbox: Path, tmp_path: Path) -> None:
    png(inbox / "IMG1.png", gray())
    sidecar(inbox, "IMG1", procedure="P1")
    png(inbox / "IMG2.png", gray() // 2)
    sidecar(inbox, "IMG2", procedure="P1")
    options = {"path": str(inbox), "poll": 0.02}

    first = open_device("folder", options, tmp_path).events()
    assert isinstance(await pull(first), ProcedureStarted)
    image = await pull(first)
    assert isinstance(image, ImageAcquired)
    await first.aclose()  # the agent dies before it recorded the image
    assert (inbox / f"{image.image_key}.png").exists()

    second = open_device("folder", options, tmp_path).events()
    again = await pull(second)  # the procedure had been acknowledged: no second start
    assert isinstance(again, ImageAcquired)
    assert (again.procedure_key, again.image_key) == (image.procedure_key, image.image_key)
    assert np.array_equal(again.pixels, image.pixels)
    other = await pull(second)
    assert isinstance(other, ImageAcquired) and other.image_key != image.image_key
    assert (inbox / "done" / "P1" / f"{image.image_key}.png").exists()
    await second.aclose()

    third = WatchFolder(settings(inbox))
    assert isinstance(scan(third).event, ImageAcquired)  # the second image was never acknowledged
    (inbox / "P1.end").write_text("")
    third.acknowledge(scan(third))
    end = take(third).event
    assert end == ProcedureEnded(procedure_key="P1")
    assert scan(third) is None
    assert sorted(p.name for p in (inbox / "done" / "P1").iterdir()) == [
        "IMG1.json", "IMG1.png", "IMG2.json", "IMG2.png", "P1.end"]
    assert [p.name for p in inbox.iterdir() if p.is_file()] == []


def test_a_crash_between_moving_the_image_and_its_sidecar_is_finished_without_a_second_event(inbox: Path) -> None:
    png(inbox / "A.png", gray())
    sidecar(inbox, "A", procedure="P1")
    watch = WatchFolder(settings(inbox))
    take(watch)
    (inbox / "A.png").rename(inbox / "done" / "P1" / "A.png")  # the data file moved, then power went
    restarted = WatchFolder(settings(inbox))
    assert scan(restarted) is None
    assert (inbox / "done" / "P1" / "A.json").exists() and not (inbox / "A.json").exists()


def test_end_marker_aborted_with_reason_and_images_after_the_end_are_rejected(inbox: Path) -> None:
    png(inbox / "A.png", gray())
    sidecar(inbox, "A", procedure="P1")
    (inbox / "P1.end").write_text("status=aborted\nreason=patient moved\n")
    watch = WatchFolder(settings(inbox))
    kinds = [type(take(watch).event) for _ in range(3)]
    assert kinds == [ProcedureStarted, ImageAcquired, ProcedureEnded]  # the marker waits for the image
    assert (inbox / "done" / "P1" / "P1.end").exists()
    png(inbox / "B.png", gray())
    sidecar(inbox, "B", procedure="P1")
    assert scan(watch) is None
    assert "already ended" in (inbox / "rejected" / "B.png.reason").read_text()
    assert (inbox / "rejected" / "B.json").exists()


def test_the_aborted_end_event_carries_status_and_reason(inbox: Path) -> None:
    png(inbox / "A.png", gray())
    sidecar(inbox, "A", procedure="P1")
    (inbox / "P1.end").write_text(json.dumps({"status": "aborted", "reason": "patient moved"}))
    watch = WatchFolder(settings(inbox))
    take(watch), take(watch)
    assert take(watch).event == ProcedureEnded(procedure_key="P1", aborted=True, reason="patient moved")


def test_an_end_marker_of_a_procedure_never_started_is_rejected(inbox: Path) -> None:
    (inbox / "NOPE.end").write_text("")
    (inbox / "P2.end").write_text("status=paused\n")
    watch = WatchFolder(settings(inbox))
    assert scan(watch) is None
    assert "no image in this folder" in (inbox / "rejected" / "NOPE.end.reason").read_text()
    assert "completed or aborted" in (inbox / "rejected" / "P2.end.reason").read_text()


def test_the_quiet_period_ends_a_procedure(inbox: Path) -> None:
    png(inbox / "A.png", gray())
    sidecar(inbox, "A", procedure="P1")
    watch = WatchFolder(settings(inbox, quiet=0.05))
    take(watch), take(watch)
    end = None
    limit = time.monotonic() + 30
    while end is None and time.monotonic() < limit:
        end = scan(watch, tries=1)
        time.sleep(0.02)
    assert end is not None and end.event == ProcedureEnded(procedure_key="P1")
    watch.acknowledge(end)
    assert "quiet period" in (inbox / "done" / "P1" / "P1.end").read_text()
    assert scan(watch) is None


@pytest.mark.parametrize(
    ("name", "content", "side", "reason"),
    [
        ("notes.bin", b"hello, not an image", {"procedure": "P1"}, "neither a DICOM file nor a PNG"),
        ("A.gif", None, {"procedure": "P1"}, "GIF images are not taken"),
        ("B.png", "png", {"image": "x"}, "no 'procedure' key"),
        ("C.png", "png", {"procedure": "P 1"}, "procedure must be 1-64"),
        ("D.png", "png", {"procedure": "P1", "colour": "red"}, "unknown key 'colour'"),
        ("E.png", "png", {"procedure": "P1", "sex": "X"}, "sex must be M, F or O"),
        ("F.png", "png", "{not json", "not valid JSON"),
        ("G.png", "truncated", {"procedure": "P1"}, "cannot be decoded"),
    ],
)
def test_bad_files_are_rejected_with_a_reason_and_a_log_line(
    inbox: Path, caplog: pytest.LogCaptureFixture, name: str, content: object, side: object, reason: str
) -> None:
    path = inbox / name
    if content == "png" or content == "truncated":
        png(path, gray())
        if content == "truncated":
            path.write_bytes(path.read_bytes()[:60])
    elif content is None:
        Image.fromarray(gray()).save(path, format="GIF")
    else:
        path.write_bytes(content)  # type: ignore[arg-type]
    stem = name.rsplit(".", 1)[0]
    (inbox / f"{stem}.json").write_text(side if isinstance(side, str) else json.dumps(side))
    watch = WatchFolder(settings(inbox))
    with caplog.at_level(logging.WARNING, logger="drivers.acquisition.folder"):
        assert scan(watch) is None
    assert reason in (inbox / "rejected" / f"{name}.reason").read_text()
    assert (inbox / "rejected" / name).exists() and (inbox / "rejected" / f"{stem}.json").exists()
    assert not path.exists() and not (inbox / "done").exists()
    assert any(reason in r.getMessage() and name in r.getMessage() for r in caplog.records)


def test_a_data_file_or_sidecar_alone_is_rejected_after_the_orphan_time(inbox: Path) -> None:
    png(inbox / "A.png", gray())
    sidecar(inbox, "B", procedure="P1")
    watch = WatchFolder(settings(inbox, orphan=0))
    assert scan(watch) is None
    assert "no sidecar" in (inbox / "rejected" / "A.png.reason").read_text()
    assert "no data file" in (inbox / "rejected" / "B.json.reason").read_text()


def test_a_txt_sidecar_with_key_value_lines(inbox: Path) -> None:
    png(inbox / "A.png", gray())
    (inbox / "A.txt").write_text("# written by the device\nprocedure = P9\nworklist=ACC9\nimage=first\n")
    watch = WatchFolder(settings(inbox))
    assert take(watch).event.worklist_key == "ACC9"
    assert take(watch).event.image_key == "first"


def test_jpeg_rgb_tiff_16_bit_and_dicom_are_decoded(inbox: Path) -> None:
    rgb = np.zeros((16, 24, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(inbox / "A.jpg", format="JPEG", quality=95)
    sidecar(inbox, "A", procedure="P1")
    deep = (np.arange(16 * 24, dtype=np.uint16).reshape(16, 24) * 10)
    Image.fromarray(deep).save(inbox / "B.tif", format="TIFF")
    sidecar(inbox, "B", procedure="P1", bits=12, pixel_spacing="0.5\\0.25")
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientID = SecondaryCaptureImageStorage, uid, "X"
    ds.save_as(inbox / "C.dcm", enforce_file_format=True)
    sidecar(inbox, "C", procedure="P1")
    watch = WatchFolder(settings(inbox))
    take(watch)
    images = {e.image_key: e for e in (take(watch).event for _ in range(3))}
    assert images["A"].photometric == "RGB" and images["A"].pixels.shape == (16, 24, 3)
    assert abs(int(images["A"].pixels[..., 0].mean()) - 200) < 5
    assert images["B"].pixels.dtype == np.uint16 and np.array_equal(images["B"].pixels, deep)
    assert images["B"].bits_stored == 12 and images["B"].pixel_spacing_mm == (0.5, 0.25)
    assert images["C"].pixels is None and images["C"].dicom_file == str(inbox / "C.dcm")


def test_a_16_bit_value_beyond_the_sidecar_bits_is_rejected(inbox: Path) -> None:
    Image.fromarray(np.full((8, 8), 5000, dtype=np.uint16)).save(inbox / "A.tif", format="TIFF")
    sidecar(inbox, "A", procedure="P1", bits=12)
    watch = WatchFolder(settings(inbox))
    assert scan(watch) is None  # checked before its procedure starts: nothing was started
    assert not (inbox / "done").exists()
    assert "needs more than bits = 12" in (inbox / "rejected" / "A.tif.reason").read_text()


def test_a_missing_watch_folder_is_a_device_status_not_an_error(tmp_path: Path) -> None:
    watch = WatchFolder(settings(tmp_path / "absent"))
    status = watch.next_event().event
    assert status == DeviceStatus(connected=False, info=f"watch folder {tmp_path / 'absent'} is missing")
    assert watch.next_event() is None
    (tmp_path / "absent").mkdir()
    assert watch.next_event().event.connected is True


@pytest.mark.parametrize(
    ("options", "key"),
    [({}, "path"), ({"path": "w", "pol": 1}, "pol"), ({"path": "w", "poll": 0}, "poll"),
     ({"path": "w", "quiet": -1}, "quiet"), ({"path": 3}, "path")],
)
def test_bad_options_name_the_key(tmp_path: Path, options: dict, key: str) -> None:
    with pytest.raises(DriverOptionError) as info:
        open_device("folder", options, tmp_path)
    assert info.value.key == key


def test_relative_paths_are_under_data_dir_and_done_rejected_under_the_folder(tmp_path: Path) -> None:
    s = parse_options({"path": "incoming", "done": "/srv/done"}, tmp_path)
    assert (s.path, s.done) == (tmp_path / "incoming", Path("/srv/done"))
    assert s.rejected == tmp_path / "incoming" / "rejected"


def test_a_folder_that_cannot_be_read_is_a_device_status(inbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import drivers.acquisition.folder as folder

    watch = WatchFolder(settings(inbox))
    assert watch.next_event().event.connected is True

    def refuse(path: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(folder.os, "scandir", refuse)
    status = watch.next_event().event
    assert status.connected is False and "Permission denied" in status.info
    monkeypatch.undo()
    assert watch.next_event().event.connected is True


def test_two_sidecars_for_one_file_are_rejected(inbox: Path) -> None:
    png(inbox / "A.png", gray())
    sidecar(inbox, "A", procedure="P1")
    (inbox / "A.txt").write_text("procedure=P2\n")
    watch = WatchFolder(settings(inbox, orphan=0))
    assert scan(watch) is None
    assert "two sidecars" in (inbox / "rejected" / "A.json.reason").read_text()
    assert (inbox / "rejected" / "A.txt").exists()
    assert "no sidecar" in (inbox / "rejected" / "A.png.reason").read_text()


def test_a_sidecar_may_carry_the_whole_name_of_its_file(inbox: Path) -> None:
    uid = "1.2.826.0.1.3680043.2.1125.1"
    png(inbox / uid, gray())  # a device that names its files by UID, no extension
    sidecar(inbox, uid, procedure="P1")
    png(inbox / "B.png", gray())
    sidecar(inbox, "B.png", procedure="P1")
    watch = WatchFolder(settings(inbox, orphan=0))
    take(watch)
    keys = {take(watch).event.image_key, take(watch).event.image_key}
    assert keys == {uid, "B.png"}
    assert scan(watch) is None and not (inbox / "rejected").exists()
    assert sorted(p.name for p in (inbox / "done" / "P1").iterdir()) == sorted(
        [uid, f"{uid}.json", "B.png", "B.png.json"])


def test_two_files_for_one_sidecar_are_rejected(inbox: Path) -> None:
    png(inbox / "A.png", gray())
    png(inbox / "A.tif", gray())
    sidecar(inbox, "A", procedure="P1")
    watch = WatchFolder(settings(inbox))
    assert scan(watch) is None
    assert "2 files share the sidecar A.json/.txt" in (inbox / "rejected" / "A.png.reason").read_text()
    assert (inbox / "rejected" / "A.tif").exists()
