"""The agent's Print SCP against pynetdicom's print SCU (its documented example, with the meta SOP class
and with the classes proposed one at a time), and bad input answered with the Annex H statuses while
the association goes on."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import trio
from PIL import Image
from pydicom import Dataset

from tests.conftest import write_profile
from tests.interop.print_scu_peer import (
    FILM_BOX, FILM_SESSION, GRAY_BOX, PRINT_JOB, PRINTER, PrintSCU, gray_image, image_box, print_one,
)

pytestmark = [pytest.mark.trio, pytest.mark.interop]

DPI = 100


def printer_profile(tmp_path: Path, driver: str = "file", options: str = "") -> object:
    return write_profile(tmp_path, f"""
        [print]
        serve = true
        driver = "{driver}"
        poll_interval = "0.5s"

        [print.options]
        film_sizes = ["8INX10IN", "14INX17IN"]
        dpi = {DPI}
        {'directory = "' + str(tmp_path / 'films') + '"' if driver == 'file' else ''}
        {options}
        """, ae_title="PRINTER")


async def wait_files(folder: Path, pattern: str, count: int = 1, timeout: float = 30) -> list[Path]:
    with trio.fail_after(timeout):
        while True:
            found = sorted(folder.glob(pattern)) if folder.exists() else []
            if len(found) >= count:
                return found
            await trio.sleep(0.05)


def tags(value: object) -> list[int]:
    """An Attribute Identifier List as pynetdicom gives it (one tag, or several)."""
    return [int(t) for t in value] if isinstance(value, (list, tuple)) or hasattr(value, "__len__") and not isinstance(value, int) else [int(value)]


def check_ramp_film(path: Path) -> None:
    """An 8x10 in film at DPI with one image box: the image (a dark-to-light ramp, MONOCHROME2) fills the
    box's width, centred; darker (lower drive level) on the left than on the right."""
    film = np.asarray(Image.open(path))
    assert film.shape[:2] == (10 * DPI, 8 * DPI)
    row = film[film.shape[0] // 2].astype(int)
    left, right = row[int(0.1 * DPI)], row[-int(0.1 * DPI)]
    assert left < right - 100, (left, right)
    assert np.all(np.diff(row[int(0.1 * DPI):-int(0.1 * DPI)]) >= 0), "ramp not monotonic across the box"


@pytest.mark.parametrize("meta", [True, False], ids=["meta-class", "one-class-at-a-time"])
async def test_pynetdicom_print_example(tmp_path: Path, start_agent, meta: bool) -> None:
    agent = await start_agent(printer_profile(tmp_path))
    out = await trio.to_thread.run_sync(lambda: print_one(agent.port, meta=meta, FilmSizeID="8INX10IN"))
    status, attrs = out["printer"]
    assert status == 0 and attrs.PrinterStatus == "NORMAL"
    assert out["session"][0] == 0 and out["session"][1]
    status, film_box, boxes, reply = out["film_box"]
    assert status == 0 and len(boxes) == 1
    assert reply.ReferencedImageBoxSequence[0].ReferencedSOPClassUID == GRAY_BOX
    assert out["image"] == [0]
    status, action = out["action"]
    assert status == 0
    job_uid = action[0x21000500].value[0].ReferencedSOPInstanceUID  # Referenced Print Job Sequence
    assert out["delete"] == 0
    films = await wait_files(tmp_path / "films", "*.png")
    assert len(films) == 1
    check_ramp_film(films[0])
    done = await out["events"].wait_for(lambda e: e[0] == PRINT_JOB and e[2] == 3)
    assert done[1] == job_uid


async def test_bad_input_gets_annex_h_statuses_and_the_association_goes_on(tmp_path: Path, start_agent) -> None:
    agent = await start_agent(printer_profile(tmp_path))

    def session() -> dict[str, object]:
        scu = PrintSCU(agent.port, meta=True)
        out: dict[str, object] = {}
        try:
            out["session"] = scu.film_session()
            status, film_box, boxes, _ = scu.film_box("STANDARD\\2,2", FilmSizeID="8INX10IN")
            out["boxes"] = len(boxes)
            # Empty film box: B603, nothing printed.
            out["empty"] = scu.print_film_box(film_box)[0]
            # An image box beyond the format's four: 0106 naming Image Box Position.
            status, rsp = scu.set_image(boxes[0], image_box(5))
            out["position"] = (status, rsp.get("AttributeIdentifierList"))
            # Wrong pixel format: 12 bits stored in 8 allocated; a color sequence in a grayscale box.
            bad = gray_image()
            bad.BitsStored, bad.HighBit = 12, 11
            status, rsp = scu.set_image(boxes[0], image_box(1, bad))
            out["bits"] = (status, rsp.get("AttributeIdentifierList"))
            wrong = Dataset()
            wrong.ImageBoxPosition = 1
            wrong.BasicColorImageSequence = [gray_image()]
            out["color"] = scu.set_image(boxes[0], wrong)[0]
            # Unknown SOP instances: 0112.
            out["unknown_box"] = scu.set_image("1.2.3.4.5.6", image_box(1))[0]
            out["unknown_action"] = scu.print_film_box("1.2.3.4.5.7")[0]
            out["unknown_delete"] = scu.delete(FILM_BOX, "1.2.3.4.5.8")
            # A film size the printer lacks: 0106 naming Film Size ID.
            status, _, _, _ = scu.film_box("STANDARD\\1,1", FilmSizeID="A3")
            out["film_size"] = status
            # Still going: a good image and a print on the same association.
            out["good"] = scu.set_image(boxes[0], image_box(1))[0]
            out["print"] = scu.print_film_box(film_box)[0]
            out["established"] = scu.assoc.is_established
        finally:
            scu.release()
        return out

    out = await trio.to_thread.run_sync(session)
    assert out["boxes"] == 4
    assert out["empty"] == 0xB603
    assert out["position"][0] == 0x0106 and 0x20200010 in tags(out["position"][1])
    assert out["bits"][0] == 0x0106 and 0x00280101 in tags(out["bits"][1])
    assert out["color"] == 0x0106
    assert out["unknown_box"] == 0x0112
    assert out["unknown_action"] == 0x0112
    assert out["unknown_delete"] == 0x0112
    assert out["film_size"] == 0x0106
    assert out["good"] == 0 and out["print"] == 0 and out["established"]
    films = await wait_files(tmp_path / "films", "*.png")
    assert len(films) == 1  # the empty film box printed nothing


async def test_two_associations_each_with_its_own_session(tmp_path: Path, start_agent) -> None:
    agent = await start_agent(printer_profile(tmp_path))

    def two() -> tuple[int, int, int]:
        a, b = PrintSCU(agent.port), PrintSCU(agent.port, meta=False)
        try:
            a.film_session()
            b.film_session()
            _, box_a, boxes_a, _ = a.film_box("STANDARD\\1,1", FilmSizeID="8INX10IN")
            # b cannot touch a's boxes: they do not exist on b's association.
            foreign = b.set_image(boxes_a[0], image_box(1))[0]
            a.set_image(boxes_a[0], image_box(1))
            _, box_b, boxes_b, _ = b.film_box("STANDARD\\1,2", FilmSizeID="8INX10IN")
            for i, uid in enumerate(boxes_b):
                b.set_image(uid, image_box(i + 1))
            return foreign, a.print_film_box(box_a)[0], b.print_film_box(box_b)[0]
        finally:
            a.release()
            b.release()

    foreign, status_a, status_b = await trio.to_thread.run_sync(two)
    assert foreign == 0x0112 and status_a == 0 and status_b == 0
    assert len(await wait_files(tmp_path / "films", "*.png", 2)) == 2


async def test_printer_events_reach_every_print_association(tmp_path: Path, start_agent) -> None:
    from drivers.printer.sim import set_state

    agent = await start_agent(printer_profile(tmp_path, "sim", "supply = 50"))
    scus = await trio.to_thread.run_sync(lambda: [PrintSCU(agent.port), PrintSCU(agent.port, meta=False),
                                                  PrintSCU(agent.port)])
    try:
        for scu in scus[:2]:  # these ask the printer first, as modalities do; the third sends nothing
            status, attrs = await trio.to_thread.run_sync(scu.printer)
            assert (status, attrs.PrinterStatus, attrs.PrinterStatusInfo) == (0, "NORMAL", "NORMAL")
        await trio.to_thread.run_sync(lambda: set_state(agent.profile.print.options, agent.data_dir, online=False))
        for scu in scus:
            _, uid, event, info = await scu.events.wait_for(lambda e: e[0] == PRINTER and e[2] == 3)
            assert info.PrinterStatusInfo == "PRINTER OFFLINE"
        await trio.to_thread.run_sync(lambda: set_state(agent.profile.print.options, agent.data_dir, online=True))
        for scu in scus:
            await scu.events.wait_for(lambda e: e[0] == PRINTER and e[2] == 1)
    finally:
        await trio.to_thread.run_sync(lambda: [s.release() for s in scus])


async def test_annotation_boxes_and_session_print(tmp_path: Path, start_agent) -> None:
    agent = await start_agent(printer_profile(tmp_path))

    def run() -> tuple[int, int, int, int]:
        from tests.interop.print_scu_peer import ANNOTATION_BOX

        scu = PrintSCU(agent.port, extra=(PRINT_JOB, ANNOTATION_BOX))
        try:
            scu.film_session()
            status, box, boxes, reply = scu.film_box("STANDARD\\1,1", FilmSizeID="8INX10IN", AnnotationDisplayFormatID="2")
            notes = [str(i.ReferencedSOPInstanceUID) for i in reply.ReferencedBasicAnnotationBoxSequence]
            scu.set_image(boxes[0], image_box(1))
            note = scu.set_annotation(notes[0], 1, "PATIENT^TEST")
            return status, len(notes), note, scu.print_session()[0]
        finally:
            scu.release()

    status, n, note, printed = await trio.to_thread.run_sync(run)
    assert (status, n, note, printed) == (0, 2, 0, 0)
    await wait_files(tmp_path / "films", "*.png")


async def test_print_job_and_printer_configuration_n_get(tmp_path: Path, start_agent) -> None:
    from pydicom.tag import Tag

    from tests.interop.print_scu_peer import PRINT_JOB

    config_class, config_instance = "1.2.840.10008.5.1.1.16.376", "1.2.840.10008.5.1.1.17.376"
    agent = await start_agent(printer_profile(tmp_path))

    def run() -> tuple[Dataset, Dataset, int]:
        scu = PrintSCU(agent.port, extra=(PRINT_JOB, config_class))
        try:
            scu.film_session(FilmSessionLabel="N-GET")
            _, box, boxes, _ = scu.film_box("STANDARD\\1,1", FilmSizeID="8INX10IN")
            scu.set_image(boxes[0], image_box(1))
            _, reply = scu.print_film_box(box)
            job = reply[0x21000500].value[0].ReferencedSOPInstanceUID
            end = time.monotonic() + 30
            while time.monotonic() < end:
                status, attrs = scu.assoc.send_n_get([Tag(0x2100, 0x0020), Tag(0x2100, 0x0030), Tag(0x2100, 0x0070)],
                                                     PRINT_JOB, job, msg_id=90)
                if attrs is not None and attrs.ExecutionStatus == "DONE":
                    break
                time.sleep(0.1)
            status, config = scu.assoc.send_n_get([], config_class, config_instance, msg_id=91)
            unknown = int(scu.assoc.send_n_get([], PRINT_JOB, "1.2.3.999", msg_id=92)[0].Status)
            return attrs, config, unknown
        finally:
            scu.release()

    job, config, unknown = await trio.to_thread.run_sync(run)
    assert (job.ExecutionStatus, job.ExecutionStatusInfo, job.Originator) == ("DONE", "NORMAL", "MODALITY")
    assert "ExecutionStatus" in job and "PrintPriority" not in job  # only what was asked for
    item = config.PrinterConfigurationSequence[0]
    assert "1.2.840.10008.5.1.1.9" in item.SOPClassesSupported
    assert {(m.FilmSizeID, m.MediumType) for m in item.MediaInstalledSequence} >= {("8INX10IN", "PAPER")}
    assert unknown == 0x0112


@pytest.mark.parametrize("color_printer", [False, True], ids=["grayscale-printer", "color-printer"])
async def test_color_meta_class_only_on_a_color_printer(tmp_path: Path, start_agent, color_printer: bool) -> None:
    from pynetdicom import AE
    from pydicom.sequence import Sequence

    from tests.interop.print_scu_peer import COLOR_BOX

    color_meta = "1.2.840.10008.5.1.1.18"
    agent = await start_agent(printer_profile(tmp_path, options=f"color = {'true' if color_printer else 'false'}"))

    def run() -> tuple[bool, int]:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(color_meta)
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", agent.port, ae_title="PRINTER")
        try:
            accepted = any(c.abstract_syntax == color_meta for c in assoc.accepted_contexts)
            if not accepted:
                return False, -1
            session = Dataset()
            session.NumberOfCopies = "1"
            session_uid, box_uid = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
            assoc.send_n_create(session, FILM_SESSION, session_uid, meta_uid=color_meta)
            box = Dataset()
            box.ImageDisplayFormat = "STANDARD\\1,1"
            box.FilmSizeID = "8INX10IN"
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = FILM_SESSION, session_uid
            box.ReferencedFilmSessionSequence = Sequence([ref])
            _, reply = assoc.send_n_create(box, FILM_BOX, box_uid, meta_uid=color_meta)
            image_uid = reply.ReferencedImageBoxSequence[0].ReferencedSOPInstanceUID
            assert reply.ReferencedImageBoxSequence[0].ReferencedSOPClassUID == COLOR_BOX
            item = Dataset()
            item.SamplesPerPixel, item.PhotometricInterpretation, item.PlanarConfiguration = 3, "RGB", 1
            item.Rows = item.Columns = 32
            item.BitsAllocated, item.BitsStored, item.HighBit, item.PixelRepresentation = 8, 8, 7, 0
            planes = np.zeros((3, 32, 32), np.uint8)
            planes[2] = 255  # blue
            item.PixelData = planes.tobytes()
            image = Dataset()
            image.ImageBoxPosition = 1
            image.BasicColorImageSequence = Sequence([item])
            assoc.send_n_set(image, COLOR_BOX, image_uid, meta_uid=color_meta)
            status, _ = assoc.send_n_action(None, 1, FILM_BOX, box_uid, meta_uid=color_meta)
            return True, int(status.Status)
        finally:
            assoc.release()

    accepted, status = await trio.to_thread.run_sync(run)
    assert accepted is color_printer
    if color_printer:
        assert status == 0
        [film] = await wait_files(tmp_path / "films", "*.png")
        pixels = np.asarray(Image.open(film))
        centre = pixels[pixels.shape[0] // 2, pixels.shape[1] // 2]
        assert pixels.ndim == 3 and centre[2] > 200 and centre[0] < 50


async def test_a_film_that_cannot_be_stored_is_c602_and_the_association_goes_on(tmp_path: Path, start_agent,
                                                                                monkeypatch) -> None:
    import errno

    from agent.services.print import films

    agent = await start_agent(printer_profile(tmp_path))
    real_save = films.save
    full = {"on": True}

    def save(directory: Path, film: object) -> Path:
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(directory, film)

    monkeypatch.setattr(films, "save", save)

    def run() -> tuple[int, int, int]:
        scu = PrintSCU(agent.port)
        try:
            scu.film_session()
            _, box, boxes, _ = scu.film_box("STANDARD\\1,1", FilmSizeID="8INX10IN")
            scu.set_image(boxes[0], image_box(1))
            box_status = scu.print_film_box(box)[0]
            session_status = scu.print_session()[0]
            full["on"] = False  # space again: the same film box prints
            return box_status, session_status, scu.print_film_box(box)[0]
        finally:
            scu.release()

    assert await trio.to_thread.run_sync(run) == (0xC602, 0xC601, 0)
    assert len(await wait_files(tmp_path / "films", "*.png")) == 1
