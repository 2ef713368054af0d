"""DCMTK's print SCU to the agent's Print SCP: `dcmpsprt` renders a print job (Stored Print + Hardcopy
Grayscale objects) from images, `dcmprscu` sends it (Presentation LUT and Annotation Box negotiated);
the agent's file driver writes the film, whose layout and pixels are checked."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import trio
from PIL import Image
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.conftest import require_tool, write_profile

pytestmark = [pytest.mark.trio, pytest.mark.interop]

DPI = 100


def secondary_capture(path: Path, pixels: np.ndarray) -> Path:
    """An 8-bit MONOCHROME2 Secondary Capture image with what DCMTK's presentation state code needs."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "PRINT^DCMTK", "P1", "", ""
    ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "20260101", "120000", "", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.ConversionType = "OT", "1", "1", "WSD"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def dcmpstat_cfg(tmp_path: Path, port: int) -> Path:
    """A complete dcmpstat.cfg with one [[COMMUNICATION]] PRINTER entry, AGENT, for the agent."""
    for d in ("log", "spool", "db", "lut"):
        (tmp_path / d).mkdir(exist_ok=True)
    cfg = tmp_path / "dcmpstat.cfg"
    cfg.write_text(f"""[[GENERAL]]
[APPLICATION]
LogDirectory = {tmp_path / 'log'}
LogLevel = INFO
[PRINT]
Spooler = dcmprscu
Server = dcmprscp
Directory = {tmp_path / 'spool'}
DetailedLog = false
Sleep = 1
MinPrintResolution = 256\\256
MaxPrintResolution = 8192\\8192
DefaultIllumination = 2000
DefaultReflection = 10
DeletePrintJobs = false
[DATABASE]
Directory = {tmp_path / 'db'}
[LUT]
Directory = {tmp_path / 'lut'}
[NETWORK]
aetitle = MODALITY
[[COMMUNICATION]]
[AGENT]
Type = PRINTER
Aetitle = PRINTER
Description = dicom-agent Print SCP
Hostname = 127.0.0.1
Port = {port}
MaxPDU = 32768
ImplicitOnly = false
DisableNewVRs = false
Supports12Bit = true
SupportsPresentationLUT = true
SupportsImageSize = true
SupportsDecimateCrop = true
SupportsTrim = true
DisplayFormat = 1,1\\2,2
FilmSizeID = 8INX10IN
MediumType = PAPER
MagnificationType = REPLICATE\\BILINEAR\\CUBIC\\NONE
BorderDensity = BLACK\\WHITE
EmptyImageDensity = BLACK\\WHITE
MaxDensity = 300
MinDensity = 20
Annotation = 1\\ANNOTATION
FilmDestination = MAGAZINE\\PROCESSOR
""")
    return cfg


async def run(cmd: list[str], cwd: Path) -> str:
    result = await trio.run_process(cmd, cwd=cwd, capture_stdout=True, stderr=subprocess.STDOUT, check=False)
    out = result.stdout.decode(errors="replace")
    assert result.returncode == 0, f"{cmd[0]} exited {result.returncode}:\n{out}"
    return out


async def wait_film(folder: Path, timeout: float = 30) -> np.ndarray:
    with trio.fail_after(timeout):
        while not (folder.exists() and list(folder.glob("*.png"))):
            await trio.sleep(0.05)
    [path] = list(folder.glob("*.png"))
    return np.asarray(Image.open(path))


async def print_with_dcmtk(tmp_path: Path, start_agent, images: list[np.ndarray], layout: tuple[int, int],
                           extra: list[str] = (), render: list[str] = ()) -> np.ndarray:
    dcmpsprt, dcmprscu = require_tool("dcmpsprt"), require_tool("dcmprscu")
    agent = await start_agent(write_profile(tmp_path / "agent", f"""
        [print]
        serve = true
        driver = "file"
        [print.options]
        directory = "{tmp_path / 'films'}"
        film_sizes = ["8INX10IN"]
        dpi = {DPI}
        """, ae_title="PRINTER"))
    cfg = dcmpstat_cfg(tmp_path, agent.port)
    files = [str(secondary_capture(tmp_path / f"img{i}.dcm", img)) for i, img in enumerate(images)]
    await run([dcmpsprt, "-c", str(cfg), "-p", "AGENT", "--filmsize", "8INX10IN", "-l", str(layout[0]),
               str(layout[1]), *render, *files], tmp_path)
    [stored_print] = [str(p) for p in (tmp_path / "db").glob("SP_*.dcm")]
    out = await run([dcmprscu, "-c", str(cfg), "-p", "AGENT", *extra, "-v", stored_print], tmp_path)
    assert "Association accepted" in out
    return await wait_film(tmp_path / "films")


@pytest.mark.parametrize("extra, render", [([], []), (["--session-print"], []), ([], ["--identity"])],
                         ids=["film-box-print", "session-print", "presentation-lut-identity"])
async def test_dcmtk_prints_a_ramp(tmp_path: Path, start_agent, extra: list[str], render: list[str]) -> None:
    ramp = np.tile(np.linspace(0, 255, 128).round(), (128, 1))
    film = await print_with_dcmtk(tmp_path, start_agent, [ramp], (1, 1), extra, render)
    assert film.shape == (10 * DPI, 8 * DPI)  # 8x10 in portrait at the printer's dpi
    middle = film[film.shape[0] // 2].astype(int)
    inner = middle[int(0.1 * DPI):-int(0.1 * DPI)]
    assert np.all(np.diff(inner) >= 0) and inner[0] < 10 and inner[-1] > 200  # dark to light, left to right
    # A square image in a tall box: centred, full width, with border above and below.
    column = film[:, film.shape[1] // 2].astype(int)
    image_rows = np.flatnonzero(column != column[0])
    height = image_rows[-1] - image_rows[0] + 1
    assert abs(height - (8 * DPI - 2 * 0.08 * DPI)) < 0.1 * DPI, height
    assert abs((image_rows[0] + image_rows[-1]) / 2 - film.shape[0] / 2) < 3


async def test_dcmtk_2x2_layout_puts_images_in_position_order(tmp_path: Path, start_agent) -> None:
    levels = [40, 100, 160, 220]
    images = [np.full((64, 64), v, dtype=np.uint8) for v in levels]
    # With an annotation: DCMTK asks for Annotation Display Format ID ANNOTATION and sets its box.
    film = await print_with_dcmtk(tmp_path, start_agent, images, (2, 2),
                                  render=["-a", "DCMTK", "-pd", "-pn", "-pl"])
    h, w = film.shape
    centres = [film[h // 4, w // 4], film[h // 4, 3 * w // 4], film[3 * h // 4, w // 4], film[3 * h // 4, 3 * w // 4]]
    assert all(a < b for a, b in zip(centres, centres[1:])), centres  # row by row, brighter each time
    band = film[: int(8 / 25.4 * DPI)]  # the annotation band at the top holds the text
    assert (band != band[0, 0]).sum() > 20
