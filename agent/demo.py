"""`dicom-agent demo`: the whole modality loop on one machine, in one process, over loopback.

Two agents (agent.app.Agent) run in one trio nursery, each with its own profile, database and store:
- the *hospital* (AE DEMO_HOSPITAL): the RIS (MWL SCP over generated local worklist items, MPPS SCP),
  the PACS (Storage SCP and Storage Commitment SCP) and the film printer (Print SCP, `file` driver);
- the *modality* (AE DEMO_MODALITY): a simulated acquisition device (the `sim` driver) and the modality
  workflow, which fetches the worklist from the RIS, reports MPPS, stores, forwards and commits every
  image at the PACS, and prints a film.

Invariants:
- Loopback only: both agents bind 127.0.0.1 on ports the OS picks (port 0); the modality's profile is
  written once the hospital's port is known.
- The demo folder is the demo's own: a folder that exists, is not empty and was not made by the demo
  (no `.dicom-agent-demo` marker) is refused and left untouched; one the demo made is emptied first, so
  every run starts from nothing and its numbers are its own.
- The profiles the demo ran are written into the folder (`hospital.toml`, `modality.toml`), so every
  other command (`worklist`, `mpps list`, `queue`, `procedures`, `printer jobs`) can be pointed at them.
- Progress is observed, not driven: `agent.demo_progress` reads both databases (read-only connections)
  and reports each step as it becomes visible there; the demo is done when every step of every
  procedure is, or fails when `timeout` passes first.
"""

from __future__ import annotations

import datetime
import math
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from agent.demo_progress import DemoReport, Progress
from agent.errors import AgentError

MARKER = ".dicom-agent-demo"
HOSPITAL_AE = "DEMO_HOSPITAL"
MODALITY_AE = "DEMO_MODALITY"
DEFAULT_FOLDER = Path("dicom-agent-demo")
#: The ports of the shipped copy of the modality profile (profiles/demo.toml).
SHIPPED_HOSPITAL_PORT = 11113
SHIPPED_MODALITY_PORT = 11112

HOSPITAL_PROFILE = """\
# The hospital side of `dicom-agent demo`: RIS (worklist and MPPS), PACS (storage and commitment) and
# film printer, all in one agent. Written by the demo; it ran on 127.0.0.1 on a port the OS picked.

[agent]
ae_title = "{hospital_ae}"
bind = "127.0.0.1"
port = 0
data_dir = "hospital"                # database (agent.db) and the PACS store (objects/)
log_level = "warning"

[peers.modality]                     # where a commitment report goes when the request's association is gone
ae_title = "{modality_ae}"
host = "127.0.0.1"
port = {modality_port}

[storage]                            # PACS: Storage SCP
accept = "all-storage"

[commitment]                         # PACS: Storage Commitment SCP, reports on the request's association
report_on = "same-association"

[worklist]                           # RIS: MWL SCP over the demo's generated items
serve = true

[mpps]                               # RIS: MPPS SCP
serve = true

[print]                              # film printer: Print SCP, films written as PNG files
serve = true
driver = "file"
poll_interval = "1s"

[print.options]
directory = "films"                  # relative to data_dir
format = "png"
film_sizes = ["8INX10IN", "10INX12IN", "14INX17IN"]
dpi = {dpi}                            # enough for the images at their own size in the film's layout
"""

MODALITY_PROFILE = """\
# The modality side of `dicom-agent demo`: a simulated device, its worklist from the RIS, MPPS to the
# RIS, every image stored, forwarded and committed at the PACS, one film per procedure to the printer.
# The demo writes this file into its folder with the ports it picked, and the hospital side (RIS, PACS,
# printer) as hospital.toml next to it; profiles/demo.toml is the copy for the default options with
# the hospital on port {shipped_port}. Other commands read it too, e.g.
# `dicom-agent procedures list --profile modality.toml`.

[agent]
ae_title = "{modality_ae}"
bind = "127.0.0.1"
# A commitment report on a new association comes to this port.
port = {modality_port}
data_dir = "modality"                # database (agent.db) and the local store (objects/)
log_level = "warning"

[peers.ris]
ae_title = "{hospital_ae}"
host = "127.0.0.1"
port = {hospital_port}
retry_base = "1s"
retry_cap = "5s"

[peers.pacs]
ae_title = "{hospital_ae}"
host = "127.0.0.1"
port = {hospital_port}
retry_base = "1s"
retry_cap = "5s"
linger = "2s"

[peers.printer]
ae_title = "{hospital_ae}"
host = "127.0.0.1"
port = {hospital_port}
retry_base = "1s"
retry_cap = "5s"

[worklist]
source = "ris"                       # MWL SCU
refresh = "2s"
date = "any"
serve = false

[mpps]
send_to = ["ris"]

[storage]                            # how the device's images are committed ([device] commit_with)
commit_idle = "0s"                   # ask as soon as the procedure's images are at the PACS
commit_report_wait = "10s"           # and wait this long on that association for the report
{device}"""

DEVICE_SECTION = """
[device]
driver = "sim"                       # the simulated acquisition device
select = "accession"                 # the device names the worklist item by its accession number
unscheduled = "refuse"               # an unknown accession is an error, not a new unscheduled study
modality = "OT"
send_to = ["pacs"]                   # every image is stored at the PACS ...
commit_with = "pacs"                 # ... and committed there
print_to = "printer"                 # one film per procedure
print_format = "{print_format}"

[device.options]
procedures = {procedures}
images = {images}
size = "{columns}x{rows}"
bits = 12
interval = 0.0
worklist_keys = [{worklist_keys}]
"""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    folder: Path = DEFAULT_FOLDER
    procedures: int = 3
    images: int = 4
    timeout: float = 120.0
    rows: int = 256
    columns: int = 256


@dataclass(frozen=True, slots=True)
class DemoLayout:
    """Where everything of one demo run is."""

    folder: Path

    @property
    def hospital_profile(self) -> Path:
        return self.folder / "hospital.toml"

    @property
    def modality_profile(self) -> Path:
        return self.folder / "modality.toml"

    @property
    def hospital(self) -> Path:
        return self.folder / "hospital"

    @property
    def modality(self) -> Path:
        return self.folder / "modality"

    @property
    def pacs_store(self) -> Path:
        return self.hospital / "objects"

    @property
    def films(self) -> Path:
        return self.hospital / "films"

    @property
    def hospital_db(self) -> Path:
        return self.hospital / "agent.db"

    @property
    def modality_db(self) -> Path:
        return self.modality / "agent.db"


class DemoFolderError(AgentError):
    """The demo folder cannot be used (someone else's files, or not writable)."""


def prepare_folder(folder: Path) -> DemoLayout:
    """Make `folder` an empty demo folder; refuse one with files the demo did not make."""
    folder = folder.absolute()
    try:
        if folder.exists():
            if not folder.is_dir():
                raise DemoFolderError(f"{folder} is not a folder; choose another with --dir")
            if any(folder.iterdir()) and not (folder / MARKER).exists():
                raise DemoFolderError(f"{folder} is not empty and was not made by `dicom-agent demo`; "
                                      "nothing was changed: choose another folder with --dir")
            for entry in folder.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                elif entry.name != MARKER:
                    entry.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text("made by dicom-agent demo; emptied by the next run\n")
    except OSError as exc:
        raise DemoFolderError(f"cannot use {folder} as the demo folder: {exc.strerror or exc}") from None
    return DemoLayout(folder)


def modality_profile_text(hospital_port: int, modality_port: int, device: str) -> str:
    return MODALITY_PROFILE.format(shipped_port=SHIPPED_HOSPITAL_PORT, modality_ae=MODALITY_AE, hospital_ae=HOSPITAL_AE,
                                   hospital_port=hospital_port, modality_port=modality_port, device=device)


def shipped_modality_profile() -> str:
    """profiles/demo.toml: the modality profile the demo writes for its default options, with the
    hospital on SHIPPED_HOSPITAL_PORT and the modality on SHIPPED_MODALITY_PORT."""
    o = DemoOptions()
    accessions = [str(ds.AccessionNumber) for ds in worklist_items(o.procedures)]
    return modality_profile_text(SHIPPED_HOSPITAL_PORT, SHIPPED_MODALITY_PORT,
                                 device_section(accessions, o.images, o.rows, o.columns))


def device_section(accessions: list[str], images: int, rows: int = 256, columns: int = 256) -> str:
    """The modality's [device] section: the `sim` driver performing one procedure per accession, in order,
    each printed on one film whose layout (STANDARD\\C,R, PS3.3 C.13.3) holds all its images."""
    cols = math.ceil(math.sqrt(images))
    return DEVICE_SECTION.format(
        print_format=f"STANDARD\\\\{cols},{math.ceil(images / cols)}", procedures=len(accessions), images=images,
        rows=rows, columns=columns, worklist_keys=", ".join(f'"{a}"' for a in accessions),
    )


def hospital_profile_text(modality_port: int, dpi: int = 100) -> str:
    return HOSPITAL_PROFILE.format(hospital_ae=HOSPITAL_AE, modality_ae=MODALITY_AE, modality_port=modality_port,
                                   dpi=dpi)


def film_dpi(images: int, rows: int, columns: int) -> int:
    """The printer's resolution for one procedure's film (8x10 in, portrait, the layout of
    `device_section`): high enough that each image box holds its image at its own size with a quarter
    to spare for borders (a smaller box would demagnify it and the Print SCP warn, B604), from 100 dpi
    up to 300 dpi."""
    cols = math.ceil(math.sqrt(images))
    lines = math.ceil(images / cols)
    need = max(cols * columns / 8.0, lines * rows / 10.0) * 1.25
    return min(300, max(100, math.ceil(need)))


def free_loopback_port() -> int:
    """A port free on 127.0.0.1 now: the modality's, which the hospital must know before either starts
    (the hospital's own port is chosen by its listener, port 0). Another program could take it in
    between; the modality then fails to bind, and the demo says so."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ the worklist

_PATIENTS = (
    ("DOE^JANE", "F", "19800214"), ("ROE^RICHARD", "M", "19721103"), ("SMITH^ANNA", "F", "19950630"),
    ("MILLER^JOHN", "M", "19601225"), ("GARCIA^MARIA", "F", "19881009"), ("NGUYEN^BAO", "M", "20010417"),
)


def worklist_items(count: int, *, station_ae: str = MODALITY_AE, today: datetime.date | None = None) -> list[Dataset]:
    """`count` scheduled items for `station_ae` today (PS3.4 K.6.1.2.2 attributes a modality uses)."""
    day = (today or datetime.date.today()).strftime("%Y%m%d")
    items = []
    for k in range(1, count + 1):
        name, sex, birth = _PATIENTS[(k - 1) % len(_PATIENTS)]
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName = name
        ds.PatientID = f"DEMO-P{k:03d}"
        ds.PatientBirthDate = birth
        ds.PatientSex = sex
        ds.AccessionNumber = f"DEMO{k:04d}"
        ds.StudyInstanceUID = generate_uid()
        ds.RequestedProcedureID = f"RP{k:04d}"
        ds.RequestedProcedureDescription = "Demo examination"
        ds.ReferringPhysicianName = "DEMO^REFERRER"
        code = Dataset()
        code.CodeValue = "DEMO01"
        code.CodingSchemeDesignator = "99DEMO"
        code.CodeMeaning = "Demo protocol"
        sps = Dataset()
        sps.ScheduledStationAETitle = station_ae
        sps.ScheduledProcedureStepStartDate = day
        sps.ScheduledProcedureStepStartTime = f"{8 + (k - 1) // 4 % 10:02d}{(k - 1) % 4 * 15:02d}00"
        sps.Modality = "OT"
        sps.ScheduledProcedureStepID = f"SPS{k:04d}"
        sps.ScheduledProcedureStepDescription = "Demo acquisition"
        sps.ScheduledProtocolCodeSequence = DicomSequence([code])
        ds.ScheduledProcedureStepSequence = DicomSequence([sps])
        items.append(ds)
    return items


# ------------------------------------------------------------------ running it


Say = Callable[[str], None]


async def run_demo(options: DemoOptions, say: Say) -> DemoReport:
    """Run the demo; `say` gets one line per step as it happens. Returns the report (see demo_progress)."""
    from agent.app import Agent
    from agent.profile import load_profile
    from agent.services.dataset import EXPLICIT_VR_LE, encode

    layout = await trio.to_thread.run_sync(prepare_folder, options.folder)
    modality_port = free_loopback_port()
    dpi = film_dpi(options.images, options.rows, options.columns)
    layout.hospital_profile.write_text(hospital_profile_text(modality_port, dpi))
    hospital = Agent(load_profile(layout.hospital_profile))
    items = worklist_items(options.procedures)
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        await nursery.start(hospital.run)
        port = hospital.bound_ports[0]
        say(f"hospital: RIS, PACS and printer ({HOSPITAL_AE}) listening on 127.0.0.1:{port}")
        store = hospital.worklist_store
        assert store is not None

        def schedule() -> None:
            for ds in items:
                store.add_local(f"{ds.AccessionNumber}.wl", encode(ds, EXPLICIT_VR_LE))

        await hospital.blocking.run(schedule)
        say(f"RIS: {len(items)} procedure(s) scheduled for {MODALITY_AE}, {options.images} image(s) each")
        layout.modality_profile.write_text(modality_profile_text(port, modality_port, device_section(
            [str(ds.AccessionNumber) for ds in items], options.images, options.rows, options.columns)))
        modality = Agent(load_profile(layout.modality_profile))
        await nursery.start(modality.run)
        say(f"modality: {MODALITY_AE} with a simulated device on 127.0.0.1:{modality.bound_ports[0]}")
        progress = Progress(layout, items, options.images)
        with trio.move_on_after(max(0.0, options.timeout - (time.monotonic() - started))):
            await progress.watch(say)
        nursery.cancel_scope.cancel()
    return progress.report(time.monotonic() - started)

__all__ = ["DemoLayout", "DemoOptions", "DemoReport", "DemoFolderError", "prepare_folder", "run_demo",
           "worklist_items", "modality_profile_text", "hospital_profile_text"]
