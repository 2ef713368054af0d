"""The [device] section in profiles (exit 78 naming the key) and `dicom-agent procedures list|show`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from agent.store.procedures import ProcedureState
from drivers.base import ProcedureEnded, ProcedureStarted
from tests.integration.test_workflow_modality import (
    image, start_hospital, start_modality, wait_state, worklist_item,
)

ROOT = Path(__file__).resolve().parents[2]
EX_FAILED, EX_CONFIG = 1, 78


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def write(folder: Path, device: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "p.toml"
    path.write_text(f'[agent]\nbind = "127.0.0.1"\nport = 0\ndata_dir = "{folder / "data"}"\n{extra}\n[device]\n{device}\n')
    return path


@pytest.mark.parametrize(("device", "key", "fragment"), [
    ('driver = "sims"', "device.driver", "an installed acquisition driver (did you mean 'sim'?"),
    ("", "device.driver", "this key is required"),
    ('driver = "sim"\nselect = "newest"', "device.select", "'accession', 'patient-id', 'key', 'first'"),
    ('driver = "sim"\nunscheduled = "maybe"', "device.unscheduled", "'allow', 'refuse'"),
    ('driver = "sim"\nsop_class = "ModalityWorklistInformationFind"', "device.sop_class", "Storage SOP Class"),
    ('driver = "sim"\nsend_to = ["pacs"]', "device.send_to[0]", "a peer defined in [peers]"),
    ('driver = "sim"\ncommit_with = "ris"', "device.commit_with", "a peer defined in [peers]"),
    ('driver = "sim"\nprint_format = "DIAGONAL\\\\3"', "device.print_format", "Image Display Format"),
    ('driver = "sim"\nstation_name = "A NAME LONGER THAN SIXTEEN"', "device.station_name", "at most 16"),
    ('driver = "sim"\nbogus = 1', "device.bogus", "a known key"),
])
def test_device_section_errors_name_the_key(tmp_path: Path, device: str, key: str, fragment: str) -> None:
    path = write(tmp_path, device)
    result = cli("check-profile", str(path))
    assert result.returncode == EX_CONFIG, result.stdout
    assert f"{path}: {key}: " in result.stderr and fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_commitment_needs_sending_and_one_requester(tmp_path: Path) -> None:
    peers = '[peers.pacs]\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 104\n' \
            '[peers.other]\nae_title = "OTHER"\nhost = "127.0.0.1"\nport = 105\n'
    path = write(tmp_path / "a", 'driver = "sim"\ncommit_with = "pacs"', peers)
    result = cli("check-profile", str(path))
    assert result.returncode == EX_CONFIG and "device.commit_with: device.send_to to be set too" in result.stderr
    storage = '[storage]\nforward_to = ["other"]\ncommit_with = "other"\n'
    path = write(tmp_path / "b", 'driver = "sim"\nsend_to = ["pacs"]\ncommit_with = "pacs"', peers + storage)
    result = cli("check-profile", str(path))
    assert result.returncode == EX_CONFIG and "the same peer as storage.commit_with" in result.stderr


@pytest.mark.parametrize("command", ["check-profile", "run"])
def test_a_bad_driver_option_is_a_profile_error_naming_the_option(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, 'driver = "sim"\noptions = { size = "big" }')
    result = cli(command, str(path)) if command == "check-profile" else cli("run", "--profile", str(path))
    assert result.returncode == EX_CONFIG
    assert f"{path}: device.options.size: " in result.stderr and "Traceback" not in result.stderr
    if command == "check-profile":
        assert not (tmp_path / "data").exists()  # checking creates nothing


def test_procedures_is_read_only_and_needs_the_section(tmp_path: Path) -> None:
    path = write(tmp_path, 'driver = "sim"')
    for args in (["list"], ["show", "P-1"], ["list", "--json"]):
        result = cli("procedures", *args, "--profile", str(path))
        assert result.returncode == EX_FAILED, result.stdout
        assert "no database at" in result.stderr
    assert not (tmp_path / "data").exists()
    plain = tmp_path / "plain.toml"
    plain.write_text(f'[agent]\ndata_dir = "{tmp_path / "data"}"\n')
    result = cli("procedures", "list", "--profile", str(plain))
    assert result.returncode == EX_CONFIG and "[device]" in result.stderr


@pytest.mark.trio
async def test_procedures_list_and_show(nursery: trio.Nursery, tmp_path: Path) -> None:
    item = worklist_item("ACC900", "PID900", "1.2.826.0.1.3680043.10.900")
    hospital = await start_hospital(nursery, tmp_path / "hospital", [item])
    modality = await start_modality(nursery, tmp_path / "modality", hospital.port)
    assert modality.device is not None
    await modality.device.feed(ProcedureStarted("P-90", worklist_key="ACC900"), image("P-90", 1), image("P-90", 2),
                               ProcedureEnded("P-90"))
    row = await wait_state(modality, "P-90", ProcedureState.COMPLETED)
    profile = str(tmp_path / "modality" / "profile.toml")

    result = await trio.to_thread.run_sync(lambda: cli("procedures", "list", "--profile", profile, "--json"))
    assert result.returncode == 0, result.stderr
    (report,) = json.loads(result.stdout)
    assert report["procedure_key"] == "P-90" and report["state"] == "completed" and report["scheduled"]
    assert report["accession_number"] == "ACC900" and report["mpps_uid"] == row.mpps_uid
    assert report["mpps"]["create"] == {"ris": "done"} and report["mpps"]["set"] == {"ris": "done"}
    assert [(i["image_key"], i["state"], i["forwarded"], i["committed"], i["in_store"]) for i in report["images"]] == [
        ("1", "stored", {"pacs": "done"}, True, True), ("2", "stored", {"pacs": "done"}, True, True)]

    result = await trio.to_thread.run_sync(lambda: cli("procedures", "show", "P-90", "--profile", profile))
    assert result.returncode == 0, result.stderr
    assert "procedure P-90: completed" in result.stdout and "scheduled, accession ACC900" in result.stdout
    assert f"MPPS {row.mpps_uid}: N-CREATE ris:done; N-SET ris:done" in result.stdout
    assert result.stdout.count("forwarded pacs:done  committed") == 2

    result = await trio.to_thread.run_sync(lambda: cli("procedures", "list", "--profile", profile))
    assert result.returncode == 0 and "P-90  completed" in result.stdout and "2/2 stored, 2 committed" in result.stdout
    result = await trio.to_thread.run_sync(lambda: cli("procedures", "show", "NOPE", "--profile", profile))
    assert result.returncode == EX_FAILED and "no procedure 'NOPE'" in result.stderr
