"""C-CANCEL of a C-FIND (PS3.7 9.3.2.3) against the agent's Q/R SCP, and a C-FIND whose matches exceed
`[query] max_results`: the agent in-process, its index filled with 300 studies' rows (C-FIND never
opens files), the agent's own SCU sending the request and the cancel back to back."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from pydicom import Dataset

from agent.dimse import CCancelRQ, CFindRQ
from agent.net.client import associate
from agent.net.connection import Timeouts
from agent.net.requests import responses
from agent.services.dataset import EXPLICIT_VR_LE, encode
from agent.services.query.models import STUDY_ROOT_FIND
from agent.ul.negotiation import ProposedContext
from tests.conftest import write_profile

pytestmark = pytest.mark.trio

STUDIES = 300


def fill(data_dir: Path, studies: int = STUDIES) -> None:
    """`studies` one-instance CT studies (patients DOE^n), straight into the index; their files are never read."""
    with contextlib.closing(sqlite3.connect(data_dir / "agent.db", timeout=30)) as conn, conn:
        conn.executemany(
            "INSERT INTO instances (sop_instance_uid, sop_class_uid, transfer_syntax_uid, size, path, received_at, "
            "calling_ae, series_instance_uid, study_instance_uid, modality, patient_id, patient_name) "
            "VALUES (?, '1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.1.2.1', 1, 'x', 0, 'T', ?, ?, 'CT', ?, ?)",
            [(f"1.2.3.{n}.1.1", f"1.2.3.{n}.1", f"1.2.3.{n}", f"P{n}", f"DOE^{n}") for n in range(studies)],
        )


async def test_c_cancel_ends_a_c_find_with_fe00_and_max_results_with_a700(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    profile = write_profile(tmp_path, """
        [storage]

        [query]
        max_results = 250
        """)
    agent = await start_agent(profile)
    fill(agent.data_dir)
    identifier = Dataset()
    identifier.QueryRetrieveLevel, identifier.StudyInstanceUID, identifier.PatientName = "STUDY", "", "DOE*"
    body = encode(identifier, EXPLICIT_VR_LE)
    async with associate("127.0.0.1", agent.port, calling_ae="SCU", called_ae="AGENT",
                         proposals=[ProposedContext(STUDY_ROOT_FIND, (EXPLICIT_VR_LE,))], timeouts=Timeouts()) as conn:
        ctx = conn.context_for(STUDY_ROOT_FIND)
        assert ctx is not None
        rq = CFindRQ(message_id=conn.next_message_id(), affected_sop_class_uid=STUDY_ROOT_FIND)
        await conn.send_message(ctx.id, rq, body)
        await conn.send_message(ctx.id, CCancelRQ(message_id_being_responded_to=rq.message_id))
        statuses = [reply.status async for reply in responses(conn, ctx.id, rq, sent=True)]
        assert statuses[-1] == 0xFE00
        assert 1 <= len(statuses) - 1 < STUDIES and set(statuses[:-1]) == {0xFF00}

        # The association is still usable; without a cancel: the first 250 matches, then A700.
        rq = CFindRQ(message_id=conn.next_message_id(), affected_sop_class_uid=STUDY_ROOT_FIND)
        replies = [reply async for reply in responses(conn, ctx.id, rq, body)]
        assert [r.status for r in replies[:-1]] == [0xFF00] * 250
        assert replies[-1].status == 0xA700 and "250" in str(replies[-1].message.error_comment)  # type: ignore[attr-defined]
