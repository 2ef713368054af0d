"""The agent's Q/R SCU against the agent's own Q/R SCP (`[query]`): an archive agent filled by `store`,
and `dicom-agent find|move|get` with a client profile (the CLI runs in a worker thread, so one trio run
hosts the archive and the test drives the command as a user would).

- find: both roots, wildcards and ranges, an ISO_IR 192 name both as a key and in the answers; the
  archive requires a User Identity for Q/R, which the client's profile peer sends (without it: refused).
- get, and move to the client agent while it runs (its own listener receives), put the archive's
  instances into the client's store.
- a move to a destination the archive does not know: its A801, exit 1, nothing stored.
- the priors of a procedure come from the archive agent by C-GET.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from pathlib import Path

import pydicom
import pytest
import trio

from tests.conftest import free_port, write_profile
from tests.interop.qr_peers import POLISH, ROOT, all_images, make_archive

pytestmark = pytest.mark.trio


def cli(*argv: str) -> tuple[int, str, str]:
    """`dicom-agent ARGV` in this thread, its stdout and stderr captured."""
    from agent.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


async def run_cli(*argv: str) -> tuple[int, str, str]:
    return await trio.to_thread.run_sync(lambda: cli(*argv))


def stored(data_dir: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(data_dir / "agent.db")) as conn:
        return {r[0] for r in conn.execute("SELECT sop_instance_uid FROM instances")}


async def test_find_move_get_against_the_agent(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    from agent.security.identity import hash_password

    client_port = free_port()
    archive = write_profile(tmp_path / "archive", f"""
        [peers.client]
        ae_title = "CLIENT"
        host = "127.0.0.1"
        port = {client_port}

        [storage]

        [query]

        [security]
        users = {{ reader = "{hash_password('s3cret')}" }}
        require_identity = ["query"]
        """, ae_title="ARCHIVE")
    running = await start_agent(archive)
    files = make_archive(tmp_path / "files")
    code, out, err = await run_cli("store", "--aec", "ARCHIVE", "127.0.0.1", str(running.port), *map(str, files))
    assert code == 0, err
    client = write_profile(tmp_path / "client", f"""
        [peers.archive]
        ae_title = "ARCHIVE"
        host = "127.0.0.1"
        port = {running.port}

        [peers.archive.identity]
        type = "username-passcode"
        username = "reader"
        passcode = "s3cret"

        [storage]
        """, ae_title="CLIENT", port=client_port).source

    # Q/R needs an authenticated user here: without the profile peer's identity the query is refused.
    code, out, err = await run_cli("find", "127.0.0.1", str(running.port), "--aec", "ARCHIVE", "--profile", client)
    assert code == 1 and "rejected" in err.lower(), err

    code, out, err = await run_cli("find", "archive", "--profile", client, "--json", "-k", "PatientName=Wałęsa*")
    assert code == 0, err
    matches = [pydicom.Dataset.from_json(m) for m in json.loads(out)["matches"]]
    assert [(str(m.PatientName), str(m.StudyInstanceUID)) for m in matches] == [(POLISH, f"{ROOT}.3")]
    code, out, err = await run_cli("find", "archive", "--profile", client, "--json", "-k", "StudyDate=20240101-")
    assert code == 0, err
    assert {m["0020000D"]["Value"][0] for m in json.loads(out)["matches"]} == {f"{ROOT}.2", f"{ROOT}.3", f"{ROOT}.4"}
    code, out, err = await run_cli("find", "archive", "--profile", client, "--root", "patient", "-k", "PatientID=QR-P*")
    assert code == 0, err
    assert len(out.splitlines()) == 4 and "MÜLLER^JÜRGEN" in out
    code, out, err = await run_cli("find", "archive", "--profile", client, "--level", "IMAGE",
                                   "-k", f"StudyInstanceUID={ROOT}.4", "-k", f"SeriesInstanceUID={ROOT}.4.1")
    assert code == 0, err
    assert "2 match(es)" in err

    code, out, err = await run_cli("get", "archive", "--profile", client, "-k", f"StudyInstanceUID={ROOT}.1")
    assert code == 0, err
    assert "get: 2 completed" in out
    code, out, err = await run_cli("move", "archive", "--profile", client, "--dest", "NOWHERE",
                                   "-k", f"StudyInstanceUID={ROOT}.2")
    assert code == 1 and "A801" in out
    data_dir = tmp_path / "client" / "data"
    assert stored(data_dir) == {f"{ROOT}.1.1.1", f"{ROOT}.1.1.2"}
    # The client agent runs: its listener, not a temporary one, receives what is moved to it.
    from agent.profile import load_profile

    client_agent = await start_agent(load_profile(client))
    code, out, err = await run_cli("move", "archive", "--profile", client,
                                   "-k", "StudyInstanceUID=" + "\\".join(f"{ROOT}.{n}" for n in (2, 3, 4)))
    assert code == 0, err
    assert "move to CLIENT: 5 completed" in out and "the running agent's listener" in err
    assert stored(data_dir) == set(all_images())
    assert client_agent.agent.storage_scp.received == 5

    # Priors of a procedure, by C-GET from the archive agent into a modality agent's store.
    from agent.app import Agent
    from tests.interop.test_priors_interop import COMPLETED, Device, run_procedure, wait_local

    modality = write_profile(tmp_path / "modality", f"""
        [peers.archive]
        ae_title = "ARCHIVE"
        host = "127.0.0.1"
        port = {running.port}

        [peers.archive.identity]
        type = "username-passcode"
        username = "reader"
        passcode = "s3cret"

        [device]
        driver = "sim"
        priors_from = "archive"
        priors_retrieve = "get"
        """, ae_title="MODALITY")
    device = Device()
    async with trio.open_nursery() as nursery:
        await nursery.start(Agent(modality, device_driver=device).run)
        await run_procedure(device, "P9", "QR-P3")
        await wait_local(modality.agent.data_dir,
                         lambda uids, states: states.get("P9") == COMPLETED and f"{ROOT}.4.2.1" in uids,
                         "the prior study of QR-P3 in the modality's store")
        nursery.cancel_scope.cancel()
    assert {u for u in stored(modality.agent.data_dir) if u.startswith(ROOT)} == {
        f"{ROOT}.4.1.1", f"{ROOT}.4.1.2", f"{ROOT}.4.2.1"}
