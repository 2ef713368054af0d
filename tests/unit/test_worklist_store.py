"""The worklist tables: cache replacement, failures keeping the cache, staleness, local items, performed
steps hiding items, version counter."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.services.dataset import EXPLICIT_VR_LE, encode
from agent.services.worklist import build_query, not_performed, query_date, served_items, step_ref
from agent.profile import WorklistSettings
from agent.store.db import open_database
from agent.store.worklist import StepRef, WorklistStore
from tests.interop.worklist_items import ISO_IR_192_NAME, make_item, standard_items, write_wl


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> WorklistStore:
    return WorklistStore(open_database(tmp_path / "agent.db"), clock=clock)


def test_refresh_replaces_and_failure_keeps(store: WorklistStore, clock: Clock) -> None:
    assert store.fetch_state("ris").fetched_at is None
    assert store.fetch_state("ris").is_stale(clock.now, 600)
    store.replace_cache("ris", [b"a", b"b"])
    assert store.cached("ris") == [b"a", b"b"]
    clock.now += 10
    store.replace_cache("ris", [b"c"])
    assert store.cached("ris") == [b"c"]
    state = store.fetch_state("ris")
    assert state.fetched_at == 1010 and state.count == 1 and not state.is_stale(clock.now, 600)
    clock.now += 700
    store.record_failure("ris", "refused")
    state = store.fetch_state("ris")
    assert store.cached("ris") == [b"c"]
    assert state.fetched_at == 1010 and state.last_attempt == 1710 and state.last_error == "refused"
    assert state.is_stale(clock.now, 600)
    store.replace_cache("ris", [])
    assert store.cached("ris") == [] and store.fetch_state("ris").last_error is None


def test_version_changes_on_every_write(store: WorklistStore) -> None:
    v0 = store.version()
    store.replace_cache("ris", [b"x"])
    v1 = store.version()
    store.add_local("x.wl", b"y")
    v2 = store.version()
    store.mark_performed([StepRef(study_uid="1.2")], "9.9", "COMPLETED")
    assert v0 < v1 < v2 < store.version()


def test_served_items_hide_performed_steps(tmp_path: Path, store: WorklistStore) -> None:
    items = standard_items()
    store.replace_cache("ris", [encode(i, EXPLICIT_VR_LE) for i in items[:3]])
    store.add_local("local.wl", encode(items[3], EXPLICIT_VR_LE))
    write_wl(tmp_path / "wl" / "five.wl", items[4])
    served = served_items(store, tmp_path / "wl")
    assert [str(i.AccessionNumber) for i in served] == ["ACC001", "ACC002", "ACC003", "ACC004", "ACC005"]
    assert str(served[1].PatientName) == ISO_IR_192_NAME
    store.mark_performed([StepRef(study_uid=items[1].StudyInstanceUID, sps_id="SPSACC002")], "1.9", "COMPLETED")
    store.mark_performed([StepRef(accession="ACC005")], "1.8", "DISCONTINUED")
    assert [str(i.AccessionNumber) for i in served_items(store, tmp_path / "wl")] == ["ACC001", "ACC003", "ACC004"]


def test_step_ref_matching_rules() -> None:
    a = make_item("A1", "X^Y", study_uid="1.2.3", sps_id="S1")
    b = make_item("A1", "X^Y", study_uid="1.2.3", sps_id="S2")  # same request, another step
    assert StepRef(study_uid="1.2.3", sps_id="S1").refers_to(step_ref(a))
    assert not StepRef(study_uid="1.2.3", sps_id="S1").refers_to(step_ref(b))
    assert StepRef(accession="A1").refers_to(step_ref(b))
    assert not StepRef(sps_id="S1").refers_to(step_ref(a))  # an SPS ID alone is not unique enough
    assert [i.AccessionNumber for i in not_performed([a, b], [StepRef(study_uid="1.2.3", sps_id="S2")])] == ["A1"]


def test_query_keys() -> None:
    settings = WorklistSettings(station_ae="CT01", modality="CT", date="20260115")
    q = build_query(settings)
    sps = q.ScheduledProcedureStepSequence[0]
    assert sps.ScheduledStationAETitle == "CT01" and sps.Modality == "CT"
    assert sps.ScheduledProcedureStepStartDate == "20260115"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
                    "RequestedProcedureID", "StudyInstanceUID", "ReferringPhysicianName"):
        assert keyword in q and not q[keyword].value
    assert query_date("any") == ""
    import datetime

    assert query_date("today", datetime.date(2026, 1, 2)) == "20260102"


def test_prefilter_never_drops_a_match() -> None:
    """The SCP's pre-filter only saves work: with it, every query finds what the matcher alone finds."""
    import random

    from pydicom import Dataset
    from pydicom.sequence import Sequence

    from agent.matching import compile_identifier
    from agent.services.dataset import decode
    from agent.services.worklist import prefilter, summarize

    rng = random.Random(7)
    items = [decode(encode(make_item(f"A{i}", "X^Y", date=f"202601{1 + rng.randrange(28):02d}",
                                     modality=rng.choice(["CT", "MR", "US"]),
                                     station=rng.choice(["AGENT", "OTHER"]))), eager=True)
             for i in range(300)]
    items.append(decode(encode(make_item("EMPTY", "X^Y", date="", modality="")), eager=True))
    keys = [("ScheduledProcedureStepStartDate", ["20260110", "20260105-20260112", "-20260103", "20260120-", ""]),
            ("Modality", ["CT", "MR", "C*", ""]), ("ScheduledStationAETitle", ["AGENT", "", "A?ENT"])]
    dropped_any = False
    for _ in range(200):
        sps = Dataset()
        for keyword, values in keys:
            if rng.random() < 0.7:
                setattr(sps, keyword, rng.choice(values))
        q = Dataset()
        q.AccessionNumber = ""
        q.ScheduledProcedureStepSequence = Sequence([sps])
        q = decode(encode(q))
        matcher = compile_identifier(q)
        expected = [i.AccessionNumber for i in items if matcher.matches(i)]
        keep = prefilter(q)
        kept = items if keep is None else [i for i in items if keep(summarize(i))]
        dropped_any |= len(kept) < len(items)
        assert [i.AccessionNumber for i in kept if matcher.matches(i)] == expected
    assert dropped_any


def test_one_answer_per_step_the_freshest_source_wins(tmp_path: Path, store: WorklistStore, clock: Clock) -> None:
    import os

    study = "1.2.826.0.1.3680043.8.498.7002"
    store.replace_cache("ris", [encode(make_item("A1", "RIS^OLD", study_uid=study, sps_id="S1"), EXPLICIT_VR_LE)],
                        at=1000.0)
    clock.now = 2000.0
    store.add_local("same", encode(make_item("A1", "LOCAL^NEWER", study_uid=study, sps_id="S1"), EXPLICIT_VR_LE))
    # No Study Instance UID: the accession number identifies the step instead.
    bare = make_item("A9", "NO^STUDY", sps_id="S9")
    del bare.StudyInstanceUID
    store.add_local("bare", encode(bare, EXPLICIT_VR_LE))
    path = write_wl(tmp_path / "wl" / "f.wl", make_item("A1", "FOLDER^NEWEST", study_uid=study, sps_id="S1"))
    os.utime(path, (3000.0, 3000.0))
    write_wl(tmp_path / "wl" / "g.wl", bare)  # same accession, no study: the same step
    os.utime(tmp_path / "wl" / "g.wl", (1500.0, 1500.0))
    served = served_items(store, tmp_path / "wl")
    assert sorted(str(i.PatientName) for i in served) == ["FOLDER^NEWEST", "NO^STUDY"]
    # The folder file older than both stored copies: the newer of those (the local item) wins.
    os.utime(path, (500.0, 500.0))
    assert sorted(str(i.PatientName) for i in served_items(store, tmp_path / "wl")) == ["LOCAL^NEWER", "NO^STUDY"]
