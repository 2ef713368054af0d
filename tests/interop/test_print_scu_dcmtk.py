"""The agent's Print SCU against DCMTK's print SCP (`dcmprscp`), which stores a Hardcopy Grayscale
Image object per image box instead of printing: those objects must hold exactly the pixels we sent.

dcmprscp takes everything from its configuration file (a [[PRINTER]]-style section chosen with -p) and
refuses any optional attribute that configuration does not list; it serves one association at a time.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import trio
from pydicom import dcmread

from agent.services.print.scu_images import grayscale_pixels
from tests.conftest import free_port, require_tool, wait_listening, write_profile
from tests.interop.print_helpers import gradient8, image12, write_image
from tests.interop.storage_helpers import run, start_peer

pytestmark = [pytest.mark.trio, pytest.mark.interop]

HARDCOPY_GRAYSCALE = "1.2.840.10008.5.1.1.29"


def dcmpstat_cfg(folder: Path, port: int) -> Path:
    (folder / "db").mkdir(parents=True)
    (folder / "spool").mkdir()
    cfg = folder / "dcmpstat.cfg"
    cfg.write_text(textwrap.dedent(f"""\
        [[GENERAL]]
        [DATABASE]
        Directory = {folder / 'db'}
        [PRINT]
        Directory = {folder / 'spool'}
        [[COMMUNICATION]]
        [FILMPRN]
        Type = LOCALPRINTER
        Aetitle = FILMPRN
        Description = test printer
        Hostname = localhost
        Port = {port}
        DisplayFormat = 1,1\\2,1\\2,2
        FilmSizeID = 8INX10IN\\14INX17IN
        MagnificationType = REPLICATE\\BILINEAR\\NONE
        MediumType = PAPER\\BLUE FILM
        FilmDestination = MAGAZINE\\PROCESSOR
        MaxDensity = 320
        MinDensity = 20
        SupportsPresentationLUT = true
        PresentationLUTMatchRequired = false
        PresentationLUTinFilmSession = false
        Supports12Bit = true
        ImplicitOnly = false
        DisableNewVRs = false
        MaxPDU = 32768
        """))
    return cfg


@pytest.fixture
async def dcmprscp(tmp_path: Path, nursery: trio.Nursery):
    tool = require_tool("dcmprscp")
    port = free_port()
    cfg = dcmpstat_cfg(tmp_path / "dcmprscp", port)
    proc = await start_peer(nursery, [tool, "-c", str(cfg), "-p", "FILMPRN"], tmp_path / "dcmprscp.log")
    await wait_listening(port, proc)
    yield port, tmp_path / "dcmprscp" / "db"
    proc.kill()


def _profile(tmp_path: Path, port: int):
    return write_profile(tmp_path / "agent", f"""
        [peers.film]
        ae_title = "FILMPRN"
        host = "127.0.0.1"
        port = {port}

        [print]
        printer = "film"
        """)


async def _cli(*args: str) -> tuple[int, str]:
    return await run([sys.executable, "-m", "agent", *args], timeout=60)


def _stored(db: Path) -> list:
    return [ds for ds in (dcmread(p) for p in sorted(db.glob("HG_*.dcm"))) if ds.SOPClassUID == HARDCOPY_GRAYSCALE]


async def test_dcmprscp_stores_our_pixels(tmp_path: Path, dcmprscp) -> None:
    port, db = dcmprscp
    profile = _profile(tmp_path, port)
    a = write_image(tmp_path / "a.dcm", gradient8())
    b = write_image(tmp_path / "b.dcm", image12(), bits_stored=12, window=(1800, 3000))
    rc, out = await _cli("print", "--profile", profile.source, "--format", "STANDARD\\2,1",
                         "--film-size", "14INX17IN", "--copies", "2", "--medium", "PAPER", str(a), str(b))
    assert rc == 0, out
    assert "film 1 printed (2 image(s)" in out and "done" in out
    stored = _stored(db)
    assert len(stored) == 2, out
    by_shape = {ds.pixel_array.shape: ds for ds in stored}
    assert np.array_equal(by_shape[(48, 64)].pixel_array, gradient8())
    ds_b = dcmread(b)
    expected = grayscale_pixels(ds_b, ds_b.pixel_array, 8)
    assert np.array_equal(by_shape[(40, 50)].pixel_array, expected)
    # the window was applied: values below 1800 - 1500 are black, above 1800 + 1500 white
    assert expected[image12() < 300].max() == 0 and expected[image12() >= 3300].min() == 255


async def test_dcmprscp_twelve_bits(tmp_path: Path, dcmprscp) -> None:
    port, db = dcmprscp
    profile = _profile(tmp_path, port)
    b = write_image(tmp_path / "b.dcm", image12(), bits_stored=12)
    rc, out = await _cli("print", "--profile", profile.source, "--bits", "12", str(b))
    assert rc == 0, out
    (stored,) = _stored(db)
    assert stored.BitsStored == 12
    # no window: the 12-bit range is stretched to 0..4095, i.e. kept as it is here
    assert np.array_equal(stored.pixel_array, image12())


async def test_refused_optional_attribute_is_dropped_with_a_warning(tmp_path: Path, dcmprscp) -> None:
    port, db = dcmprscp
    profile = _profile(tmp_path, port)
    a = write_image(tmp_path / "a.dcm", gradient8())
    # this dcmprscp configuration lists no border density: it answers 0105 naming nothing
    rc, out = await _cli("print", "--profile", profile.source, "--border-density", "WHITE", str(a))
    assert rc == 0, out
    assert "sent again without BorderDensity" in out
    (stored,) = _stored(db)
    assert np.array_equal(stored.pixel_array, gradient8())


async def test_film_size_refused_is_not_dropped(tmp_path: Path, dcmprscp) -> None:
    port, db = dcmprscp
    profile = _profile(tmp_path, port)
    a = write_image(tmp_path / "a.dcm", gradient8())
    rc, out = await _cli("print", "--profile", profile.source, "--film-size", "A4", str(a))
    assert rc == 1, out
    assert "Film Box N-CREATE" in out and "failed" in out
    assert _stored(db) == []
    rc, listing = await _cli("queue", "list", "--profile", profile.source)
    assert "dead" in listing and "print" in listing


async def test_refusal_learnt_once_per_session(tmp_path: Path, dcmprscp) -> None:
    port, db = dcmprscp
    profile = _profile(tmp_path, port)
    images = [write_image(tmp_path / f"{i}.dcm", gradient8(20 + i, 30)) for i in range(3)]
    rc, out = await _cli("print", "--profile", profile.source, "--border-density", "WHITE", *map(str, images))
    assert rc == 0, out
    assert out.count("sent again without BorderDensity") == 1  # three films, one refusal
    assert "film 3 printed" in out
    assert sorted(ds.Rows for ds in _stored(db)) == [20, 21, 22]
