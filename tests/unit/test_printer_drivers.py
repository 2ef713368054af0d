"""The printer drivers file, raw and sim (cups: tests/integration/test_cups_printer.py), through the
entry points the agent uses: what a consumer of their files, a device on their line or an operator
changing the simulated printer would observe."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drivers.base import (
    DriverError, DriverOptionError, Film, PrinterDriver, PrinterState, PrintJobState, driver_names, load_factory,
    open_printer,
)
from drivers.printer import sim
from tests.conftest import require_tool

MM_PER_INCH = 25.4


def film(job_id: str = "1.2.3.4.5", size_mm: tuple[float, float] = (203.2, 254.0), dpi: int = 40, copies: int = 1,
         color: bool = False, bits: int = 8) -> Film:
    """A film with a recognisable raster: a ramp across, a dark band on top."""
    cols, rows = round(size_mm[0] / MM_PER_INCH * dpi), round(size_mm[1] / MM_PER_INCH * dpi)
    top = (1 << bits) - 1
    ramp = (np.arange(cols, dtype=np.uint32) * top // max(1, cols - 1)).astype(np.uint16 if bits > 8 else np.uint8)
    pixels = np.tile(ramp, (rows, 1))
    pixels[: rows // 5] = 0
    if color:
        pixels = np.stack([pixels, pixels[::-1], np.full_like(pixels, 77)], axis=2)
    return Film(job_id=job_id, pixels=pixels, width_mm=size_mm[0], height_mm=size_mm[1], dpi=dpi, copies=copies)


# ------------------------------------------------------------------ registry


def test_every_entry_point_loads_and_the_four_printers_are_listed(tmp_path: Path) -> None:
    assert {"file", "cups", "raw", "sim"} <= set(driver_names("printer"))
    for name in ("file", "cups", "raw", "sim"):
        assert callable(load_factory("printer", name))
    for name, options in (("file", {}), ("sim", {}), ("raw", {"port": "loop://"}), ("cups", {"queue": "FILM"})):
        driver = open_printer(name, options, tmp_path / name)
        assert isinstance(driver, PrinterDriver)
        assert driver.capabilities().film_sizes
        driver.close()
    with pytest.raises(KeyError):
        open_printer("no-such-printer", {}, tmp_path)


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("name", "options", "key"),
    [
        ("file", {"formt": "png"}, "formt"),
        ("file", {"format": "jpeg"}, "format"),
        ("file", {"dpi": "300"}, "dpi"),
        ("file", {"dpi": True}, "dpi"),
        ("file", {"dpi": 5000}, "dpi"),
        ("file", {"film_sizes": ["14INX17IN", "15INX17IN"]}, "film_sizes"),
        ("file", {"film_sizes": "14INX17IN"}, "film_sizes"),
        ("file", {"min_density": 300, "max_density": 200}, "min_density"),
        ("file", {"max_density": 3000}, "max_density"),
        ("file", {"color": "yes"}, "color"),
        ("file", {"drive_bits": 12}, "drive_bits"),
        ("file", {"color": True, "drive_bits": 16}, "drive_bits"),
        ("file", {"curve": [[0.2, 255], [0.1, 0]]}, "curve"),
        ("file", {"curve": [[0.2, 255], [1.0, 0]]}, "curve"),  # stops short of max_density 3.0
        ("file", {"curve": [[0.2, 256], [3.0, 0]]}, "curve"),
        ("file", {"directory": 7}, "directory"),
        ("sim", {"supply": -1}, "supply"),
        ("sim", {"format": "png"}, "format"),
        ("raw", {}, "port"),
        ("raw", {"device": "/dev/null", "port": "loop://"}, "device"),
        ("raw", {"device": "/dev/null", "baudrate": 9600}, "baudrate"),
        ("raw", {"port": "loop://", "baudrate": 0}, "baudrate"),
        ("raw", {"port": "nosuch://x"}, "port"),
        ("raw", {"port": "ttyS0"}, "port"),
        ("cups", {}, "queue"),
        ("cups", {"queue": "FILM; rm -rf /"}, "queue"),
        ("cups", {"queue": "FILM", "lp_options": ["-d OTHER"]}, "lp_options"),
        ("cups", {"queue": "FILM", "sever": "localhost"}, "sever"),
    ],
)
def test_bad_options_are_refused_naming_the_key(tmp_path: Path, name: str, options: dict[str, object], key: str) -> None:
    with pytest.raises(DriverOptionError) as caught:
        open_printer(name, options, tmp_path)
    assert caught.value.key == key
    assert caught.value.expected


def test_unknown_option_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(DriverOptionError, match="did you mean 'format'"):
        open_printer("file", {"formt": "pdf"}, tmp_path)


def test_capabilities_come_from_the_options(tmp_path: Path) -> None:
    curve = [[0.1, 255], [1.0, 120], [3.2, 0]]
    caps = open_printer(
        "file",
        {"film_sizes": ["8INX10IN", "A4"], "dpi": 150, "min_density": 15, "max_density": 320, "color": True, "curve": curve},
        tmp_path,
    ).capabilities()
    assert caps.film_sizes == ("8INX10IN", "A4")
    assert (caps.dpi, caps.min_density, caps.max_density, caps.color, caps.drive_bits) == (150, 15, 320, True, 8)
    assert caps.curve() == ((0.1, 255), (1.0, 120), (3.2, 0))
    plain = open_printer("file", {}, tmp_path).capabilities()
    assert "14INX17IN" in plain.film_sizes
    assert plain.curve()[0] == (0.2, 255) and plain.curve()[-1] == (3.0, 0)
    # The default is the sRGB encoding of relative transmittance, so the film file looks on a screen as
    # the film on a light box; computed here independently: 1.0 OD transmits 10**-0.8 of what 0.2 OD does.
    relative = (10 ** -1.0 - 10 ** -3.0) / (10 ** -0.2 - 10 ** -3.0)
    expected = round(255 * (1.055 * relative ** (1 / 2.4) - 0.055))
    assert abs(dict(plain.curve())[min(dict(plain.curve()), key=lambda d: abs(d - 1.0))] - expected) <= 2
    assert expected > 100  # not the nearly black file a transmittance-linear curve gives (about 40)


# ------------------------------------------------------------------ file


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_file_png_and_tiff_carry_the_physical_size_and_the_exact_levels(tmp_path: Path, fmt: str) -> None:
    driver = open_printer("file", {"format": fmt, "directory": "out"}, tmp_path)
    f = film(size_mm=(355.6, 431.8), dpi=50)
    ref = driver.submit(f)
    path = tmp_path / "out" / ref  # a relative directory is under data_dir
    assert path.name == f"1.2.3.4.5.{fmt}"
    with Image.open(path) as im:
        assert im.size == (700, 850)
        dpi_x, dpi_y = im.info["dpi"]
        assert im.size[0] / dpi_x == pytest.approx(14.0, abs=0.01)  # inches, as printed
        assert im.size[1] / dpi_y == pytest.approx(17.0, abs=0.01)
        assert np.array_equal(np.asarray(im), f.pixels)
    assert driver.job_status(ref).state is PrintJobState.DONE


def test_file_sixteen_bit_and_color_survive(tmp_path: Path) -> None:
    deep = open_printer("file", {"drive_bits": 16}, tmp_path)
    f16 = film("deep", bits=16)
    with Image.open(tmp_path / "films" / deep.submit(f16)) as im:
        assert np.array_equal(np.asarray(im).astype(np.uint16), f16.pixels)
    rgb = open_printer("file", {"color": True, "format": "tiff"}, tmp_path)
    fc = film("rgb", color=True)
    with Image.open(tmp_path / "films" / rgb.submit(fc)) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), fc.pixels)


def _pdf_image(data: bytes) -> tuple[tuple[float, float], np.ndarray, str]:
    """MediaBox size, the decoded image and the content stream of our one-page PDF."""
    box = re.search(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", data)
    assert box is not None
    head = re.search(rb"/Width (\d+) /Height (\d+) /ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode /Length (\d+) >>\nstream\n", data)
    assert head is not None
    cols, rows, length = (int(v) for v in head.groups())
    pixels = np.frombuffer(zlib.decompress(data[head.end(): head.end() + length]), dtype=np.uint8).reshape(rows, cols)
    content = re.search(rb"stream\n(q .*? Do Q)\n", data)
    assert content is not None
    return (float(box.group(1)), float(box.group(2))), pixels, content.group(1).decode()


def test_file_pdf_page_is_the_film_and_the_raster_fills_it(tmp_path: Path) -> None:
    driver = open_printer("file", {"format": "pdf"}, tmp_path)
    f = film(size_mm=(240.0, 300.0), dpi=60)  # 24CMX30CM: not a whole number of points
    data = (tmp_path / "films" / driver.submit(f)).read_bytes()
    (width, height), pixels, content = _pdf_image(data)
    assert width == pytest.approx(240.0 / MM_PER_INCH * 72, abs=0.01)
    assert height == pytest.approx(300.0 / MM_PER_INCH * 72, abs=0.01)
    assert content == f"q {width:.4f} 0 0 {height:.4f} 0 0 cm /Film Do Q"  # image scaled to the whole page
    assert np.array_equal(pixels, f.pixels)  # lossless, unlike a JPEG page
    assert data.startswith(b"%PDF-1.") and data.rstrip().endswith(b"%%EOF")


def test_file_pdf_renders_with_ghostscript_at_the_film_size(tmp_path: Path) -> None:
    gs = require_tool("gs")  # Ghostscript, installed by .ci/run with cups-pdf
    driver = open_printer("file", {"format": "pdf"}, tmp_path)
    f = film(size_mm=(203.2, 254.0), dpi=40)
    path = tmp_path / "films" / driver.submit(f)
    out = tmp_path / "page.pgm"
    subprocess.run([gs, "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-sDEVICE=pgmraw", "-r40", f"-sOutputFile={out}", str(path)],
                   check=True, timeout=120)
    with Image.open(out) as im:
        page = np.asarray(im).astype(int)
    assert page.shape == f.pixels.shape
    assert np.abs(page - f.pixels).max() <= 1  # ghostscript's gray conversion rounds


def test_file_exactly_once_lookup_and_copies(tmp_path: Path) -> None:
    driver = open_printer("file", {}, tmp_path)
    assert driver.lookup("7.7") is None
    ref = driver.submit(film("7.7", copies=3))
    names = sorted(p.name for p in (tmp_path / "films").iterdir())
    assert names == ["7.7-c1of3.png", "7.7-c2of3.png", "7.7-c3of3.png"]
    again = open_printer("file", {}, tmp_path)  # a restarted agent
    assert again.lookup("7.7") == ref
    # A crash in the middle of the copies: lookup says "not printed", and printing again rewrites the
    # same names; no copy doubles.
    (tmp_path / "films" / "7.7-c2of3.png").unlink()
    assert again.lookup("7.7") is None
    assert again.submit(film("7.7", copies=3)) == ref
    assert sorted(p.name for p in (tmp_path / "films").iterdir()) == names


def test_file_left_over_temporary_file_is_not_a_film(tmp_path: Path) -> None:
    driver = open_printer("file", {}, tmp_path)
    (tmp_path / "films").mkdir()
    (tmp_path / "films" / ".tmp-1.2.3").write_bytes(b"half a film")
    assert driver.lookup("1.2.3") is None


def test_file_job_ids_never_name_a_path(tmp_path: Path) -> None:
    driver = open_printer("file", {}, tmp_path)
    refs = {driver.submit(film(job)) for job in ("../../etc/x", "a/b", "a_b", ".hidden")}
    assert len(refs) == 4
    assert {p.parent for p in (tmp_path / "films").rglob("*")} == {tmp_path / "films"}
    assert not any(p.name.startswith(".") for p in (tmp_path / "films").iterdir())
    assert driver.lookup("../../etc/x") in refs and driver.lookup("a/b") != driver.lookup("a_b")


def test_file_status_printer_down_when_the_folder_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("not a folder")
    driver = open_printer("file", {"directory": str(tmp_path / "plain-file" / "films")}, tmp_path)
    status = driver.status()
    assert (status.state, status.info) == (PrinterState.FAILURE, "PRINTER DOWN")
    with pytest.raises(DriverError):
        driver.submit(film())
    assert open_printer("file", {}, tmp_path).status().state is PrinterState.NORMAL


def test_file_status_supply_from_free_disk_space() -> None:
    from drivers.printer.file import supply_status

    assert supply_status(10, 100).info == "SUPPLY EMPTY"
    assert supply_status(10, 100).state is PrinterState.FAILURE
    assert (supply_status(500, 100).state, supply_status(500, 100).info) == (PrinterState.WARNING, "SUPPLY LOW")
    assert supply_status(10_000, 100).state is PrinterState.NORMAL


# ------------------------------------------------------------------ raw


def _parse_postscript(job: bytes, f: Film) -> None:
    """Check a job is a well-formed one-page PostScript file the film's size, holding its pixels."""
    text = job.decode("ascii")
    assert text.startswith("%!PS-Adobe-3.0\n")
    width, height = f.width_mm / MM_PER_INCH * 72, f.height_mm / MM_PER_INCH * 72
    box = re.search(r"^%%BoundingBox: 0 0 (\d+) (\d+)$", text, re.M)
    assert box is not None and (int(box.group(1)), int(box.group(2))) == (round(width), round(height))
    assert f"/PageSize [{width:.4f} {height:.4f}]" in text
    assert f"/NumCopies {f.copies}" in text
    assert text.endswith("showpage\n%%Trailer\n%%EOF\n")
    data = text[text.index("image\n") + len("image\n"): text.index("~>")]
    pixels = np.frombuffer(base64.a85decode(data.replace("\n", "")), dtype=np.uint8)
    assert np.array_equal(pixels.reshape(f.pixels.shape), f.pixels)


def _read_until_eof(fd: int, out: bytearray) -> None:
    while not out.endswith(b"%%EOF\n"):
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        out += chunk


@pytest.mark.parametrize("key", ["device", "port"])
def test_raw_postscript_arrives_over_a_pseudo_terminal(tmp_path: Path, key: str) -> None:
    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        driver = open_printer("raw", {key: name}, tmp_path)
        assert driver.status().state is PrinterState.NORMAL
        f = film("9.8.7", size_mm=(355.6, 431.8), dpi=20, copies=2)
        received = bytearray()
        reader = threading.Thread(target=_read_until_eof, args=(master, received), daemon=True)
        reader.start()
        ref = driver.submit(f)
        reader.join(timeout=60)
        assert not reader.is_alive()
        _parse_postscript(bytes(received), f)
        assert driver.job_status(ref).state is PrintJobState.DONE
        driver.close()
    finally:
        os.close(master)
        os.close(slave)


def test_raw_loop_url_and_the_journal_sends_a_film_once(tmp_path: Path) -> None:
    driver = open_printer("raw", {"port": "loop://", "baudrate": 115200}, tmp_path)
    assert driver.status().state is PrinterState.NORMAL  # opens the port, which stays open
    port = driver.port  # type: ignore[attr-defined]
    port.timeout = 0.5
    f = film("4.4", dpi=10)
    received = bytearray()

    def read() -> None:  # the loop holds a few KiB: read while the driver writes
        while not received.endswith(b"%%EOF\n"):
            received.extend(port.read(65536))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ref = driver.submit(f)
    reader.join(timeout=60)
    assert not reader.is_alive()
    _parse_postscript(bytes(received), f)
    # Submitting the same job again (the agent after a crash) sends nothing.
    assert driver.submit(f) == ref
    assert port.read(100) == b""
    restarted = open_printer("raw", {"port": "loop://"}, tmp_path)
    assert restarted.lookup("4.4") == ref and restarted.lookup("4.5") is None
    journal = (tmp_path / "raw-printer.journal").read_text().splitlines()
    assert [json.loads(line)["job"] for line in journal] == ["4.4"]
    driver.close()


def test_raw_journal_survives_a_torn_last_line(tmp_path: Path) -> None:
    (tmp_path / "raw-printer.journal").write_text('{"job": "1", "ref": "raw-1"}\n{"job": "2", "re')
    driver = open_printer("raw", {"device": os.devnull}, tmp_path)
    assert driver.lookup("1") == "raw-1" and driver.lookup("2") is None
    driver.submit(film("2", dpi=10))
    assert open_printer("raw", {"device": os.devnull}, tmp_path).lookup("2") == "raw-2"


def test_raw_over_a_tcp_socket_url(tmp_path: Path) -> None:
    """`socket://host:port`: a printer's raw TCP port; the connection's end is the job's end."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(60)
        port = server.getsockname()[1]
        driver = open_printer("raw", {"port": f"socket://127.0.0.1:{port}"}, tmp_path)
        f = film("5.5", dpi=15)
        received = bytearray()

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                while chunk := conn.recv(65536):
                    received.extend(chunk)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        driver.submit(f)
        thread.join(timeout=60)
        assert not thread.is_alive()  # the driver closed the connection after the job
        _parse_postscript(bytes(received), f)


def test_raw_status_offline_when_the_device_cannot_be_opened(tmp_path: Path) -> None:
    for options in ({"device": str(tmp_path / "no-such-lp0")}, {"port": str(tmp_path / "no-such-ttyS0")}):
        driver = open_printer("raw", options, tmp_path)
        status = driver.status()
        assert (status.state, status.info) == (PrinterState.FAILURE, "PRINTER OFFLINE")
        with pytest.raises(DriverError):
            driver.submit(film("6.6", dpi=10))
        assert driver.lookup("6.6") is None  # nothing recorded: it prints when the device is back


@pytest.mark.parametrize("color", [False, True])
def test_raw_postscript_renders_with_ghostscript(tmp_path: Path, color: bool) -> None:
    gs = require_tool("gs")  # Ghostscript, installed by .ci/run with cups-pdf
    from drivers.printer.encode import encode_postscript

    f = film("gs", size_mm=(203.2, 254.0), dpi=40, color=color)
    (tmp_path / "job.ps").write_bytes(encode_postscript(f, "gs"))
    out = tmp_path / "page.pnm"
    device = "ppmraw" if color else "pgmraw"
    subprocess.run([gs, "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", f"-sDEVICE={device}", "-r40", f"-sOutputFile={out}",
                    str(tmp_path / "job.ps")], check=True, timeout=120)
    with Image.open(out) as im:
        page = np.asarray(im).astype(int)
    assert page.shape == f.pixels.shape
    assert np.abs(page - f.pixels).max() <= 1


# ------------------------------------------------------------------ sim


def test_sim_supply_runs_low_then_empty_and_refuses_until_loaded(tmp_path: Path) -> None:
    options = {"supply": 3, "supply_low": 1}
    driver = open_printer("sim", options, tmp_path)
    assert driver.status().state is PrinterState.NORMAL
    driver.submit(film("s1"))
    assert driver.status().state is PrinterState.NORMAL
    driver.submit(film("s2"))
    status = driver.status()
    assert (status.state, status.info) == (PrinterState.WARNING, "SUPPLY LOW")
    driver.submit(film("s3"))
    status = driver.status()
    assert (status.state, status.info) == (PrinterState.FAILURE, "SUPPLY EMPTY")
    with pytest.raises(DriverError, match="SUPPLY EMPTY"):
        driver.submit(film("s4"))
    assert driver.lookup("s4") is None
    assert sorted(p.name for p in (tmp_path / "sim-films").iterdir()) == ["s1.png", "s2.png", "s3.png"]
    state = sim.set_state(options, tmp_path, supply=5)
    assert state["supply"] == 5 and state["printed"] == 3
    assert driver.status().state is PrinterState.NORMAL
    assert driver.lookup("s4") is None and driver.lookup("s3") == "s3.png"
    driver.submit(film("s4"))
    assert sim.get_state(tmp_path)["supply"] == 4


@pytest.mark.parametrize(
    ("change", "info"), [({"jammed": True}, "FILM JAM"), ({"cover_open": True}, "COVER OPEN"), ({"online": False}, "PRINTER OFFLINE")]
)
def test_sim_failures_hold_films_until_cleared(tmp_path: Path, change: dict[str, bool], info: str) -> None:
    driver = open_printer("sim", {}, tmp_path)
    sim.set_state({}, tmp_path, **change)
    assert (driver.status().state, driver.status().info) == (PrinterState.FAILURE, info)
    with pytest.raises(DriverError, match=info):
        driver.submit(film("held"))
    assert not (tmp_path / "sim-films").exists() or not list((tmp_path / "sim-films").iterdir())
    sim.set_state({}, tmp_path, **{key: not value for key, value in change.items()})
    assert driver.status().state is PrinterState.NORMAL
    assert driver.submit(film("held")) == "held.png"


def test_sim_state_is_shared_with_another_process_and_survives_a_restart(tmp_path: Path) -> None:
    driver = open_printer("sim", {"supply": 50}, tmp_path)
    code = (
        "import sys; from pathlib import Path; from drivers.printer import sim; "
        "sim.set_state({}, Path(sys.argv[1]), supply=0, jammed=None)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    assert driver.status().info == "SUPPLY EMPTY"
    # A new agent with the same options does not reload the supply: the state file wins.
    assert open_printer("sim", {"supply": 50}, tmp_path).status().info == "SUPPLY EMPTY"


def test_sim_copies_take_one_film_each_and_are_all_or_nothing(tmp_path: Path) -> None:
    driver = open_printer("sim", {"supply": 3}, tmp_path)
    with pytest.raises(DriverError, match="4 copies"):
        driver.submit(film("big", copies=4))
    assert sim.get_state(tmp_path)["supply"] == 3 and driver.lookup("big") is None
    ref = driver.submit(film("two", copies=2))
    assert ref == "two-c1of2.png" and driver.lookup("two") == ref
    assert sim.get_state(tmp_path)["supply"] == 1
    with Image.open(tmp_path / "sim-films" / ref) as im:
        assert im.info["dpi"][0] == pytest.approx(40, abs=0.01)


def test_sim_set_state_refuses_bad_fields_and_values(tmp_path: Path) -> None:
    open_printer("sim", {"supply": 7}, tmp_path)
    with pytest.raises(DriverOptionError) as caught:
        sim.set_state({}, tmp_path, jam=True)
    assert caught.value.key == "jam"
    with pytest.raises(DriverOptionError) as caught:
        sim.set_state({}, tmp_path, supply=-2)
    assert caught.value.key == "supply"
    with pytest.raises(DriverOptionError) as caught:
        sim.set_state({}, tmp_path, online="yes")
    assert caught.value.key == "online"
    assert sim.get_state(tmp_path)["supply"] == 7  # unchanged


# ------------------------------------------------------------------ IPP (what the cups driver asks)


def test_ipp_round_trip_and_malformed_answers() -> None:
    from drivers.printer import ipp

    request = ipp.encode_request(ipp.GET_JOBS, 7, [(ipp.KEYWORD, "requested-attributes", ["job-id", "job-name"])])
    assert request[:8] == bytes([2, 0, 0, 0x0A, 0, 0, 0, 7])  # version 2.0, Get-Jobs, request id
    assert request.endswith(b"\x44\x00\x00\x00\x08job-name\x03")  # an additional value has no name
    # A response: status 0 (successful-ok), one job group with an integer, a name and a 1setOf keyword.
    job = (
        b"\x02" + b"\x21\x00\x06job-id\x00\x04\x00\x00\x00\x0c"
        + b"\x42\x00\x08job-name\x00\x0dACME film 1.2"
        + b"\x44\x00\x11job-state-reasons\x00\x04none" + b"\x44\x00\x00\x00\x05other"
    )
    answer = bytes([2, 0, 0, 0, 0, 0, 0, 7]) + b"\x01" + b"\x47\x00\x12attributes-charset\x00\x05utf-8" + job + b"\x03"
    status, groups = ipp.decode_response(answer)
    assert status == 0
    assert groups == [{"job-id": [12], "job-name": ["ACME film 1.2"], "job-state-reasons": ["none", "other"]}]
    with pytest.raises(ipp.IppError):
        ipp.decode_response(answer[:5])
    for cut in range(9, len(answer)):  # a cut anywhere: IppError or a partial answer, never a crash
        with contextlib.suppress(ipp.IppError):
            ipp.decode_response(answer[:cut])


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MiB tmpfs: a disk that fills up. Needs the right to mount (root, as in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_file_status_and_submit_on_a_disk_that_fills_up(tmp_path: Path, small_disk: Path) -> None:
    small = {"directory": str(small_disk / "films"), "film_sizes": ["8INX10IN"], "dpi": 60, "format": "tiff"}
    driver = open_printer("file", small, tmp_path)  # one film: 480 x 600 px, 288 kB raw
    assert (driver.status().state, driver.status().info) == (PrinterState.WARNING, "SUPPLY LOW")  # < 10 films
    big = open_printer("file", {**small, "film_sizes": ["14INX17IN"], "dpi": 300}, tmp_path)
    assert (big.status().state, big.status().info) == (PrinterState.FAILURE, "SUPPLY EMPTY")
    (small_disk / "filler").write_bytes(b"\0" * (2 * 1024 * 1024 - 150_000))
    noise = np.random.default_rng(3).integers(0, 256, (500, 400), dtype=np.uint8)  # does not compress
    f = Film(job_id="full", pixels=noise, width_mm=203.2, height_mm=254.0, dpi=50)
    with pytest.raises(DriverError, match="cannot write film full"):
        driver.submit(f)
    assert driver.lookup("full") is None
    assert list((small_disk / "films").iterdir()) == []  # no half film left behind
    assert driver.status().info == "SUPPLY EMPTY"
