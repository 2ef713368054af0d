"""agent/store/procedures.py: UIDs reserved once per key, replays find them, older databases upgrade."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.store.db import open_database, transaction
from agent.store.procedures import ImageState, ProcedureState, ProcedureStore


def store(tmp_path: Path) -> tuple[sqlite3.Connection, ProcedureStore]:
    conn = open_database(tmp_path / "agent.db")
    return conn, ProcedureStore(conn)


def add(s: ProcedureStore, key: str = "P1") -> None:
    s.insert(procedure_key=key, state=ProcedureState.SELECTED, scheduled=False, item=None,
             patient={"PatientID": "X", "PatientName": "A^B"}, study_instance_uid="1.2.3",
             series_instance_uid="1.2.4", mpps_uid="1.2.5", pps_id="PPS", started_at=1.0)


def test_an_image_keeps_the_uid_it_was_first_given(tmp_path: Path) -> None:
    conn, s = store(tmp_path)
    add(s)
    first = s.reserve_image("P1", "img-a", "1.2.826.1", "1.2.840.10008.5.1.4.1.1.7")
    again = s.reserve_image("P1", "img-a", "1.2.826.999", "1.2.840.10008.5.1.4.1.1.7")  # a replay
    other = s.reserve_image("P1", "img-b", "1.2.826.2", "1.2.840.10008.5.1.4.1.1.7")
    assert again.sop_instance_uid == first.sop_instance_uid == "1.2.826.1"
    assert (first.instance_number, other.instance_number) == (1, 2)
    s.set_image("P1", "img-a", ImageState.STORED)
    row = s.get("P1")
    assert row is not None and [i.state for i in row.images] == ["stored", "pending"]
    assert s.get("P1", details=False).images == ()  # type: ignore[union-attr]


def test_a_rolled_back_transaction_leaves_no_reservation(tmp_path: Path) -> None:
    conn, s = store(tmp_path)
    add(s)
    try:
        with transaction(conn):
            s.reserve_image("P1", "img-a", "1.2.826.1", "1.2.840.10008.5.1.4.1.1.7")
            s.set_state("P1", ProcedureState.ACQUIRING)
            raise RuntimeError("power cut")
    except RuntimeError:
        pass
    row = s.get("P1")
    assert row is not None and row.images == () and row.state is ProcedureState.SELECTED


def test_states_counts_and_a_database_from_an_earlier_build(tmp_path: Path) -> None:
    conn, s = store(tmp_path)
    add(s, "P1")
    add(s, "P2")
    s.set_state("P2", ProcedureState.COMPLETED, ended_at=2.0)
    assert s.counts() == {"selected": 1, "completed": 1}
    assert [r.procedure_key for r in s.list(["completed"])] == ["P2"]
    conn.execute("DROP INDEX procedures_step")
    for column in ("step_study", "step_accession", "step_sps"):
        conn.execute(f"ALTER TABLE procedures DROP COLUMN {column}")
    again = ProcedureStore(conn)  # columns added back, rows kept
    assert [r.procedure_key for r in again.list()] == ["P1", "P2"] and again.taken_steps() == set()
