"""The renderer's grayscale pipeline against DCMTK's: the same P-values, densities, viewing conditions
and printer characteristic give the same drive levels.

DCMTK `dcm2pnm` calibrates an image for a printer described by a characteristic file (drive level ->
optical density) with the Grayscale Standard Display Function (`+Dp FILE +Dg`, Min/Max Density `+Dn`
`+Dx`, Illumination `+Di`, Reflected Ambient Light `+Da`): PS3.14 7.2 as DCMTK implements it. The agent
renders the same ramp of every 12-bit (or 8-bit) value, one image pixel per printer pixel, through a
characteristic curve with the same points; every value must come out within one drive level (rounding).
Presentation LUT Shape IDENTITY and LIN OD (`+Pid`, `+Pod`: DCMTK also reads LIN OD values as densities,
0 at Min Density). LIN OD is compared at 0.20..3.00 OD, 2000 and 10 cd/m² only: dcm2pnm builds its LIN OD
table from the image's own hardcopy values, which it leaves at those defaults whatever +Dn/+Dx/+Di/+Da
say (with other values its output is not linear in density).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from agent.services.print.layout import film_layout, parse_display_format
from agent.services.print.model import FILM_SIZES_MM, FilmRequest, ImageRequest, PresentationLut
from agent.services.print.render import render_film
from drivers.base import PrinterCapabilities
from tests.conftest import require_tool

pytestmark = pytest.mark.interop

DPI = 600  # 8INX10IN is 4800 pixels wide: a 4096-pixel ramp fits without magnification


def ramp_file(path: Path, bits: int) -> np.ndarray:
    values = np.arange(1 << bits, dtype=np.uint16 if bits > 8 else np.uint8).reshape(1, -1)
    ds = Dataset()
    uid = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = values.astype("<u2" if bits > 8 else "u1").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return values


@pytest.mark.parametrize("bits,d_min,d_max,l0,la,shape", [
    (12, 0.20, 3.00, 2000, 10, "IDENTITY"), (8, 0.10, 3.60, 1000, 40, "IDENTITY"),
    (12, 0.25, 2.50, 600, 5, "IDENTITY"), (12, 0.20, 3.00, 2000, 10, "LIN OD"), (8, 0.20, 3.00, 2000, 10, "LIN OD"),
])
def test_drive_levels_match_dcmtk_gsdf_printer_calibration(tmp_path: Path, bits: int, d_min: float,
                                                           d_max: float, l0: int, la: int, shape: str) -> None:
    dcm2pnm = require_tool("dcm2pnm")
    values = ramp_file(tmp_path / "ramp.dcm", bits)
    # The printer: drive level 0..255, density linear in drive level from d_max down to d_min, given
    # point by point so that DCMTK's interpolation between points has nothing to interpolate.
    points = [(ddl, d_max - ddl / 255 * (d_max - d_min)) for ddl in range(256)]
    lut = tmp_path / "printer.lut"
    lut.write_text(f"max 255\nlum {l0}\namb {la}\n" + "".join(f"{ddl} {od:.6f}\n" for ddl, od in points))
    subprocess.run([dcm2pnm, "+Dp", str(lut), "+Dg", "+Dn", str(d_min), "+Dx", str(d_max), "+Di", str(l0),
                    "+Da", str(la), "+Pod" if shape == "LIN OD" else "+Pid",
                    str(tmp_path / "ramp.dcm"), str(tmp_path / "out.pgm")],
                   check=True, capture_output=True, timeout=60)
    theirs = np.asarray(Image.open(tmp_path / "out.pgm"))[0].astype(int)

    caps = PrinterCapabilities(film_sizes=("8INX10IN",), dpi=DPI, min_density=round(d_min * 100),
                               max_density=round(d_max * 100), drive_bits=8,
                               characteristic_curve=tuple((od, ddl) for ddl, od in reversed(points)))
    request = FilmRequest(job_id="1.2.3", film_size_id="8INX10IN", illumination=float(l0),
                          reflected_ambient_light=float(la), presentation_lut=PresentationLut(shape=shape),
                          images=(ImageRequest(1, values, bits_stored=bits, magnification_type="NONE"),))
    px = render_film(request, caps).pixels
    w_mm, h_mm = FILM_SIZES_MM["8INX10IN"]
    box = film_layout(parse_display_format("STANDARD\\1,1"), round(w_mm * DPI / 25.4), round(h_mm * DPI / 25.4),
                      DPI).boxes[0]
    x0 = box[0] + (box[2] - box[0] - values.shape[1]) // 2  # centred in its box
    y0 = box[1] + (box[3] - box[1] - 1) // 2
    ours = px[y0, x0:x0 + values.shape[1]].astype(int)
    assert theirs.shape == ours.shape
    assert np.abs(ours - theirs).max() <= 1, np.nonzero(np.abs(ours - theirs) > 1)
    # the ramp spans the printer's range: dark to light for P-values, light to dark for LIN OD
    dark, light = (theirs[0], theirs[-1]) if shape == "IDENTITY" else (theirs[-1], theirs[0])
    assert dark <= 1 and light >= 254
