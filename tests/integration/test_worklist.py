"""The MWL SCU and SCP against the agent itself: offline RIS (stale cache still served), C-CANCEL,
refused identifiers on a still-usable association, local items, folder rescans."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence

from agent.dimse import CCancelRQ, CFindRQ
from agent.net.client import associate
from agent.net.connection import DicomConnection, Timeouts
from agent.net.requests import responses
from agent.services.dataset import decode, encode
from agent.services.worklist import MWL_FIND
from agent.ul.negotiation import ProposedContext
from tests.conftest import free_port, write_profile
from tests.interop.worklist_items import ISO_IR_100_NAME, make_item, make_wlmscpfs_db, standard_items, write_wl

pytestmark = pytest.mark.trio
TIMEOUTS = Timeouts(artim=5, dimse=10, idle=30, connect=5)


def connect(port: int):
    return associate("127.0.0.1", port, calling_ae="CONSOLE", called_ae="AGENT",
                     proposals=[ProposedContext(MWL_FIND)], timeouts=TIMEOUTS)


async def find(conn: DicomConnection, identifier: Dataset) -> tuple[list[Dataset], int]:
    ctx = conn.context_for(MWL_FIND)
    assert ctx is not None
    rq = CFindRQ(message_id=conn.next_message_id(), affected_sop_class_uid=MWL_FIND)
    found, status = [], -1
    async for reply in responses(conn, ctx.id, rq, encode(identifier, ctx.transfer_syntax)):
        status = reply.status
        if reply.dataset is not None:
            found.append(decode(reply.dataset, ctx.transfer_syntax))
    return found, status


def query(**sps_keys: str) -> Dataset:
    ds = Dataset()
    ds.PatientName = ""
    ds.AccessionNumber = ""
    sps = Dataset()
    for k, v in sps_keys.items():
        setattr(sps, k, v)
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


def cli(profile_path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args, "--profile", profile_path],
                          capture_output=True, text=True, encoding="utf-8", check=False)


async def test_offline_ris_cache_served_and_stale(tmp_path: Path, start_agent) -> None:
    # the RIS is a second agent serving a worklist folder
    folder = make_wlmscpfs_db(tmp_path / "wl", "RIS", standard_items())
    ris_port = free_port()
    ris = await start_agent(write_profile(tmp_path / "ris", f'[worklist]\nfolder = "{folder}"\n',
                                          port=ris_port, ae_title="RIS"))
    profile = write_profile(tmp_path / "modality", f"""
        [peers.ris]
        ae_title = "RIS"
        host = "127.0.0.1"
        port = {ris_port}
        retry_base = "1s"

        [worklist]
        source = "ris"
        date = "any"
        refresh = "1h"
        stale_after = "1h"
        """)
    # Staleness without a race against start-up: the agent and the first CLI run use stale_after = 1h
    # (fresh however slow the machine), a copy of the profile with stale_after = 1s (same data_dir) reads
    # the cache once the RIS is gone; from 1 s after the last fetch on, it is STALE for good.
    stale_soon = Path(profile.source).with_name("stale-soon.toml")
    stale_soon.write_text(Path(profile.source).read_text().replace('stale_after = "1h"', 'stale_after = "1s"'))
    agent = await start_agent(profile)
    service = agent.agent.workflow.worklist
    with trio.fail_after(30):
        while (await service.fetch_state()).fetched_at is None:
            await trio.sleep(0.02)
    out = await trio.to_thread.run_sync(cli, str(profile.source), "worklist")
    assert out.returncode == 0 and "fresh" in out.stdout.splitlines()[0], out
    # the RIS goes away; a refresh fails and the cache stays
    ris.cancel_scope.cancel()
    refreshes_failed = (await service.fetch_state()).last_attempt
    service.request_refresh()
    with trio.fail_after(30):
        while (await service.fetch_state()).last_error is None or (await service.fetch_state()).last_attempt == refreshes_failed:
            await trio.sleep(0.02)
    with trio.fail_after(60):
        while True:
            out = await trio.to_thread.run_sync(cli, str(stale_soon), "worklist")
            if "STALE" in out.stdout.splitlines()[0]:
                break
            await trio.sleep(0.1)
    assert ISO_IR_100_NAME in out.stdout and "ACC004" in out.stdout
    assert "cannot connect" in out.stdout.splitlines()[0]
    # --refresh: exit 69, still prints the stale cache
    out = await trio.to_thread.run_sync(cli, str(stale_soon), "worklist", "--refresh", "--json")
    assert out.returncode == 69
    import json

    doc = json.loads(out.stdout)
    assert doc["fresh"] is False and {i["accession"] for i in doc["items"]} == {"ACC001", "ACC002", "ACC003", "ACC004"}
    # the agent's MWL SCP still serves the cache
    async with connect(agent.port) as conn:
        found, status = await find(conn, query(Modality="CT"))
    assert status == 0 and {str(d.AccessionNumber) for d in found} == {"ACC001", "ACC003"}


async def test_cancel_and_bad_identifiers_keep_association_usable(tmp_path: Path, start_agent) -> None:
    items = [make_item(f"A{i:04d}", f"PATIENT^{i:04d}") for i in range(300)]
    folder = make_wlmscpfs_db(tmp_path / "wl", "WL", items)
    agent = await start_agent(write_profile(tmp_path / "agent", f'[worklist]\nfolder = "{folder}"\n'))
    async with connect(agent.port) as conn:
        ctx = conn.context_for(MWL_FIND)
        assert ctx is not None
        # C-CANCEL right behind the request: FE00 before all 300 matches went out
        rq = CFindRQ(message_id=conn.next_message_id(), affected_sop_class_uid=MWL_FIND)
        await conn.send_message(ctx.id, rq, encode(query(), ctx.transfer_syntax))
        await conn.send_message(ctx.id, CCancelRQ(message_id_being_responded_to=rq.message_id))
        statuses = [r.status async for r in responses(conn, ctx.id, rq, sent=True)]
        assert statuses[-1] == 0xFE00 and len(statuses) - 1 < 300
        # wrong VR for a key -> A900
        bad = Dataset()
        bad.add(DataElement(0x00100010, "DA", "20200101"))  # Patient's Name as DA
        assert (await find(conn, bad))[1] == 0xA900
        # invalid range -> A900
        assert (await find(conn, query(ScheduledProcedureStepStartDate="20260120-2026")))[1] == 0xA900
        # unknown character set -> C001
        charset = query()
        charset.SpecificCharacterSet = "ISO_IR 999"
        assert (await find(conn, charset))[1] == 0xC001
        # and the association still answers
        found, status = await find(conn, query())
        assert status == 0 and len(found) == 300


async def test_local_items_and_folder_changes(tmp_path: Path, start_agent) -> None:
    folder = tmp_path / "wl"
    folder.mkdir()
    profile = write_profile(tmp_path / "agent", f'[worklist]\nfolder = "{folder}"\n')
    agent = await start_agent(profile)
    async with connect(agent.port) as conn:
        assert (await find(conn, query())) == ([], 0)
        write_wl(folder / "one.wl", make_item("F1", "FOLDER^ONE"))
        found, _ = await find(conn, query())
        assert [str(d.AccessionNumber) for d in found] == ["F1"]
        extra = write_wl(tmp_path / "extra.wl", make_item("L1", ISO_IR_100_NAME, charset="ISO_IR 100"))
        out = await trio.to_thread.run_sync(cli, str(profile.source), "worklist", "add", str(extra))
        assert out.returncode == 0, out
        found, _ = await find(conn, query())
        assert {str(d.AccessionNumber) for d in found} == {"F1", "L1"}
        local = next(d for d in found if d.AccessionNumber == "L1")
        assert local.SpecificCharacterSet == "ISO_IR 100" and str(local.PatientName) == ISO_IR_100_NAME
        (folder / "one.wl").unlink()
        found, _ = await find(conn, query())
        assert [str(d.AccessionNumber) for d in found] == ["L1"]
