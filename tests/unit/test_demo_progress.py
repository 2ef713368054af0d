"""What the demo says and when it counts as done, from snapshots of the two agents' databases."""

from __future__ import annotations

import datetime
from pathlib import Path

from agent.demo import DemoLayout, worklist_items
from agent.demo_progress import Progress, Snapshot

ITEMS = worklist_items(2, today=datetime.date(2026, 1, 2))


def done_snapshot(fetched: int) -> Snapshot:
    snap = Snapshot(fetched=fetched, films=["a.png", "b.png"])
    for ds in ITEMS:
        acc = str(ds.AccessionNumber)
        snap.procedures[acc] = (f"SIM-{acc}", "completed", "")
        snap.local_mpps[acc] = snap.ris_mpps[acc] = "COMPLETED"
        snap.stored[acc] = snap.committed[acc] = 1
        snap.at_pacs[acc] = (1, 1)
    return snap


def test_a_later_refresh_that_serves_nothing_does_not_undo_the_fetch(tmp_path: Path) -> None:
    # Performed steps drop out of the worklist, so once every procedure is done the RIS serves none.
    progress, said = Progress(DemoLayout(tmp_path), ITEMS, images=1), []
    progress.update(Snapshot(fetched=2), said.append)
    progress.update(done_snapshot(fetched=0), said.append)
    report = progress.report(1.0)
    assert report.complete, report.missing()
    assert report.fetched == 2
    assert said.count("worklist: 2 item(s) fetched from the RIS") == 1


def test_each_step_is_said_once_in_order_even_when_one_poll_sees_several(tmp_path: Path) -> None:
    progress, said = Progress(DemoLayout(tmp_path), ITEMS, images=1), []
    progress.update(Snapshot(fetched=2), said.append)
    progress.update(done_snapshot(fetched=2), said.append)
    progress.update(done_snapshot(fetched=2), said.append)
    first = [line for line in said if line.startswith("procedure DEMO0001")]
    assert first == [
        "procedure DEMO0001 (DOE^JANE): started by the device as SIM-DEMO0001, MPPS IN PROGRESS queued for the RIS",
        "procedure DEMO0001 (DOE^JANE): MPPS IN PROGRESS received by the RIS",
        "procedure DEMO0001 (DOE^JANE): image 1/1 stored",
        "procedure DEMO0001 (DOE^JANE): image 1/1 forwarded to the PACS",
        "procedure DEMO0001 (DOE^JANE): MPPS COMPLETED received by the RIS",
        "procedure DEMO0001 (DOE^JANE): image 1/1 committed by the PACS",
        "procedure DEMO0001 (DOE^JANE): completed",
    ]
    assert said.count("film printed: a.png") == 1


def test_an_image_at_the_pacs_without_the_worklists_patient_is_not_done(tmp_path: Path) -> None:
    progress = Progress(DemoLayout(tmp_path), ITEMS, images=1)
    snap = done_snapshot(fetched=2)
    snap.at_pacs["DEMO0002"] = (1, 0)  # there, but not with the item's patient ID and Study Instance UID
    progress.update(snap, lambda line: None)
    report = progress.report(1.0)
    assert not report.complete
    assert report.missing() == ["procedure DEMO0002: 0/1 images at the PACS with the worklist's patient and study"]


def test_a_discontinued_procedure_ends_the_wait_and_is_named(tmp_path: Path) -> None:
    progress, said = Progress(DemoLayout(tmp_path), ITEMS, images=1), []
    snap = done_snapshot(fetched=2)
    snap.procedures["DEMO0002"] = ("SIM-0002", "discontinued", "simulated fault")
    progress.update(snap, said.append)
    report = progress.report(1.0)
    assert report.failed and not report.complete
    assert "procedure DEMO0002 (ROE^RICHARD): DISCONTINUED: simulated fault" in said
    assert "procedure DEMO0002: the modality's procedure is discontinued, not completed" in report.missing()[0]
