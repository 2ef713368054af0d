"""Film rendering: the agent's renderer against DCMTK `dcmpsprt`, on this machine, in one run.

    python tests/bench/print.py [-n 5] [--workdir DIR] [--keep]

Not collected by pytest (no test_ prefix). The job, the same for both: 20 DICOM images of 512x512,
12 bits stored in 16 (Secondary Capture, MONOCHROME2), on one 14x17 in film, STANDARD\\4,5, BILINEAR.

What each side does, exactly:
- agent, render: `render_film` in this process on images already decoded: lay out the film at 320 dpi
  (4480x5440 pixels), resample each image into its box (about 1089x1058), map every stored value
  through Presentation LUT IDENTITY -> P-value -> optical density (PS3.14 GSDF, 0.20..3.00 OD,
  L0 2000, La 10) -> 8-bit drive level (one lookup table), and fill borders and empty boxes.
  Median of N films; peak memory is tracemalloc's peak during one render (numpy buffers; Pillow's
  own are not traced). A second row includes reading and decoding the 20 files with pydicom.
- agent, process: a fresh `python` that imports the renderer and pydicom, reads and decodes the 20
  files, renders the film and writes it to disk (`numpy.save`, as a print job keeps it): what a
  one-shot command would cost, interpreter start-up included. Peak RSS from GNU time.
- dcmpsprt: `dcmpsprt -c CFG -p BENCH --layout 4 5 --filmsize 14INX17IN --magnification BILINEAR
  IMAGES`, a fresh process each time, fresh spool folders: it reads and decodes each image, renders it
  through its presentation state into a 12-bit print bitmap, scales it up by the integer factor that
  reaches the configured MinPrintResolution (1024x1024, so 2x), writes one Hardcopy Grayscale Image
  (2 MB) per image and one Stored Print object for the film. It does not compose a film raster and
  does not compute densities (DCMTK leaves both to the printer); it is DCMTK's rendering step of a
  print job, the nearest thing it has. Peak RSS from GNU time (/usr/bin/time), when installed.

Prints wall time (median, min, max of N), CPU time (user + system, all threads; the fairer measure on a
shared machine, and the renderer draws boxes on up to 4 threads) and peak memory, and the ratios to the
agent's render; the goal is under 0.5 s per film and at least as fast as dcmpsprt. Never asserts a
timing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

IMAGES = 20
FORMAT = "STANDARD\\4,5"
DPI = 320

DCMPSTAT_CFG = """\
[[GENERAL]]
[PRINT]
Directory = {root}/spool
MinPrintResolution = 1024\\1024
MaxPrintResolution = 8192\\8192
DefaultIllumination = 2000
DefaultReflection = 10
DeletePrintJobs = false
[DATABASE]
Directory = {root}/database
[LUT]
Directory = {root}/lut
[[COMMUNICATION]]
[BENCH]
Type = PRINTER
Aetitle = BENCH
Description = benchmark printer, never contacted (no --spool)
Hostname = localhost
Port = 10005
MaxPDU = 32768
ImplicitOnly = false
DisableNewVRs = false
FilmSizeID = 14INX17IN
MagnificationType = REPLICATE\\BILINEAR\\CUBIC\\NONE
DisplayFormat = 4,5
MinDensity = 20
MaxDensity = 300
Supports12Bit = true
SupportsPresentationLUT = true
SupportsTrim = true
SupportsDecimateCrop = true
SupportsImageSize = true
BorderDensity = BLACK\\WHITE
EmptyImageDensity = BLACK\\WHITE
"""

CHILD = """\
import sys, time
t0 = time.perf_counter()
from pathlib import Path
import numpy as np
from pydicom import dcmread
from agent.services.print.model import FilmRequest, ImageRequest
from agent.services.print.render import render_film
from drivers.base import PrinterCapabilities
paths = sorted(Path(sys.argv[1]).glob("img*.dcm"))
images = tuple(ImageRequest(i + 1, dcmread(p).pixel_array, bits_stored=12) for i, p in enumerate(paths))
film = render_film(FilmRequest(job_id="bench", image_display_format=sys.argv[3], film_size_id="14INX17IN",
                               magnification_type="BILINEAR", images=images),
                   PrinterCapabilities(dpi=int(sys.argv[4])))
np.save(sys.argv[2], film.pixels)
"""


# ---------------------------------------------------------------- workload


def make_images(folder: Path, count: int = IMAGES) -> list[Path]:
    """`count` Secondary Capture images, 512x512, 12 bits stored in 16, distinct ramps."""
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:512, 0:512]
    paths = []
    for i in range(count):
        uid = generate_uid()
        ds = Dataset()
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = uid
        ds.PatientName = "BENCH^PRINT"
        ds.PatientID = "BENCH"
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.777"
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.777.1"
        ds.Modality = "OT"
        ds.ConversionType = "WSD"
        ds.InstanceNumber = i + 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = ((x + 2 * y + 100 * i) % 4096).astype("<u2").tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        path = folder / f"img{i:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- runs


GNU_TIME = "/usr/bin/time"


def run_process(cmd: Sequence[str], cwd: Path,
                env: dict[str, str] | None = None) -> tuple[float, float | None, int | None]:
    """Run `cmd` to its end; (wall seconds, CPU seconds (user + system) or None, peak RSS in kB or
    None). Raises on a non-zero exit.

    The peak comes from GNU time (`%M`) when installed: a child forked from this process would inherit
    its high-water mark (Linux copies it on fork and keeps it across exec), so wait4's ru_maxrss here
    would report this benchmark's own peak, not the child's."""
    wrap = [GNU_TIME, "-f", "PEAK_KB %M %U %S"] if os.path.exists(GNU_TIME) else []
    t0 = time.perf_counter()
    proc = subprocess.run([*wrap, *cmd], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          check=False)
    wall = time.perf_counter() - t0
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {err.strip()[-500:]}")
    stats = [line.split()[1:] for line in err.splitlines() if line.startswith("PEAK_KB ")]
    if not stats:
        return wall, None, None
    return wall, float(stats[-1][1]) + float(stats[-1][2]), int(stats[-1][0])


def _request(paths: list[Path]) -> object:
    from pydicom import dcmread

    from agent.services.print.model import FilmRequest, ImageRequest

    images = tuple(ImageRequest(i + 1, dcmread(p).pixel_array, bits_stored=12) for i, p in enumerate(paths))
    return FilmRequest(job_id="bench", image_display_format=FORMAT, film_size_id="14INX17IN",
                       magnification_type="BILINEAR", images=images)


def bench_render(paths: list[Path], runs: int, *, read: bool) -> tuple[list[float], list[float], int]:
    """Median render time on decoded images, or (`read`) reading and decoding the files included."""
    from agent.services.print.render import render_film
    from drivers.base import PrinterCapabilities

    caps = PrinterCapabilities(dpi=DPI)
    request = _request(paths)
    film = render_film(request, caps)  # warm-up (imports, first allocations)
    assert film.pixels.shape == (5440, 4480), film.pixels.shape
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()  # process_time: every thread's CPU
        render_film(_request(paths) if read else request, caps)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    tracemalloc.start()
    render_film(_request(paths) if read else request, caps)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return times, cpu, peak // 1024


def bench_agent_process(work: Path, runs: int) -> tuple[list[float], list[float], int | None]:
    script = work / "child.py"
    script.write_text(CHILD)
    times: list[float] = []
    cpu: list[float] = []
    peak: int | None = None
    for i in range(runs):
        out = work / f"film{i}.npy"
        wall, cpu_s, rss = run_process([sys.executable, str(script), str(work / "images"), str(out), FORMAT, str(DPI)],
                                cwd=Path.cwd())
        assert np.load(out, mmap_mode="r").shape == (5440, 4480)
        out.unlink()
        times.append(wall)
        cpu.extend([cpu_s] if cpu_s is not None else [])
        peak = rss if peak is None or rss is None else max(peak, rss)
    return times, cpu, peak


def bench_dcmpsprt(work: Path, paths: list[Path], runs: int) -> tuple[list[float], list[float], int | None]:
    times: list[float] = []
    cpu: list[float] = []
    peak: int | None = None
    env = {**os.environ, "TCP_NODELAY": "1"}
    for i in range(runs):
        root = work / f"dcmtk{i}"
        for sub in ("spool", "database", "lut"):
            (root / sub).mkdir(parents=True)
        cfg = root / "dcmpstat.cfg"
        cfg.write_text(DCMPSTAT_CFG.format(root=root))
        cmd = ["dcmpsprt", "-c", str(cfg), "-p", "BENCH", "--layout", "4", "5", "--filmsize", "14INX17IN",
               "--magnification", "BILINEAR", *map(str, paths)]
        wall, cpu_s, rss = run_process(cmd, cwd=root, env=env)
        made = sorted(p.name[:3] for p in (root / "database").glob("*.dcm"))
        if made.count("HG_") != len(paths) or made.count("SP_") != 1:
            raise RuntimeError(f"dcmpsprt made {made}, expected {len(paths)} HG_ and 1 SP_")
        times.append(wall)
        cpu.extend([cpu_s] if cpu_s is not None else [])
        peak = rss if peak is None or rss is None else max(peak, rss)
        shutil.rmtree(root)
    return times, cpu, peak


# ---------------------------------------------------------------- report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=5, help="films per measurement (median reported)")
    parser.add_argument("--workdir", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-print-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        paths = make_images(work / "images")
        print(f"work folder {work}; {IMAGES} images 512x512 12-bit, {FORMAT}, 14INX17IN at {DPI} dpi, "
              f"{args.runs} runs each; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
        rows: list[tuple[str, list[float], list[float], int | None, str]] = []
        rows.append(("agent render_film (in process)", *bench_render(paths, args.runs, read=False),
                     "tracemalloc peak"))
        rows.append(("agent read 20 files + render (in process)", *bench_render(paths, args.runs, read=True),
                     "tracemalloc peak"))
        rows.append(("agent, fresh process: read+render+save", *bench_agent_process(work, args.runs), "peak RSS"))
        if shutil.which("dcmpsprt"):
            rows.append(("DCMTK dcmpsprt (fresh process)", *bench_dcmpsprt(work, paths, args.runs), "peak RSS"))
        else:
            print("dcmpsprt (DCMTK) is not on PATH: skipped", file=sys.stderr)
        print()
        print(f"{'program':42} {'wall s/film':>11} {'min':>6} {'max':>6} {'CPU s':>6} {'peak MB':>8}  memory")
        for name, ts, cpu, kb, measure in rows:
            mb = f"{kb / 1024:8.1f}" if kb is not None else f"{'n/a':>8}"
            cpu_s = f"{statistics.median(cpu):6.3f}" if cpu else f"{'n/a':>6}"
            print(f"{name:42} {statistics.median(ts):11.3f} {min(ts):6.3f} {max(ts):6.3f} {cpu_s} {mb}  {measure}")
        base, base_cpu = statistics.median(rows[0][1]), statistics.median(rows[0][2])
        print()
        print(f"goal: render under 0.5 s per film: {base:.3f} s wall -> {'met' if base < 0.5 else 'NOT met'} "
              f"(CPU {base_cpu:.3f} s; load {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)")
        for name, ts, cpu, _, _ in rows[1:]:
            line = f"ratio {name} / agent render: wall {statistics.median(ts) / base:.2f}x"
            if cpu:
                line += f", CPU {statistics.median(cpu) / base_cpu:.2f}x"
            print(line)
        return 0
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
