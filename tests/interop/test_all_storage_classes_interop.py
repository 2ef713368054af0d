"""pynetdicom stores one instance of every Storage SOP Class in pydicom's UID registry to the agent with
`accept = "all-storage"`: each presentation context is accepted, each C-STORE answered Success, and each
instance is on disk and indexed under its own SOP Class.

The list sent is built here, independently of the agent's own rule: every SOP Class of the registry with
"Storage" in its name, minus the three that PS3.4 does not store with C-STORE (transcribed below). More
than 128 presentation contexts do not fit one association (PS3.8 9.3.2.2), so they go over several.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, UID_dictionary, generate_uid

from tests.conftest import require_pynetdicom, write_profile
from tests.interop.storage_helpers import index_count, index_row

pytestmark = pytest.mark.interop

#: Named "... Storage" in the registry, but not Storage SOP Classes (PS3.10 DICOMDIR; PS3.4 Annex J).
NOT_STORED_WITH_C_STORE = {"1.2.840.10008.1.3.10", "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.2"}


def registry_storage_classes() -> list[str]:
    return [
        uid for uid, entry in UID_dictionary.items()
        if entry[1] == "SOP Class" and "Storage" in entry[0] and uid not in NOT_STORED_WITH_C_STORE
    ]


def instance_of(sop_class: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "ALL^CLASSES"
    ds.PatientID = "PID-ALL"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.300"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.300.1"
    ds.Modality = "OT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def send_all(port: int, classes: list[str]) -> dict[str, tuple[str, int | None]]:
    """Blocking (pynetdicom runs its own threads): sop class -> (instance UID, C-STORE status or None)."""
    from pynetdicom import AE

    results: dict[str, tuple[str, int | None]] = {}
    for start in range(0, len(classes), 128):
        chunk = classes[start : start + 128]
        ae = AE(ae_title="PYNETDICOM")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        for uid in chunk:
            ae.add_requested_context(uid, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="AGENT")
        assert assoc.is_established, "association refused"
        try:
            accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
            for uid in chunk:
                ds = instance_of(uid)
                if uid not in accepted:
                    results[uid] = (ds.SOPInstanceUID, None)
                    continue
                status = assoc.send_c_store(ds)
                results[uid] = (ds.SOPInstanceUID, int(status.Status) if "Status" in status else None)
        finally:
            assoc.release()
    return results


async def test_pynetdicom_stores_every_registry_storage_class(tmp_path: Path, start_agent) -> None:
    require_pynetdicom()
    from pynetdicom.sop_class import _STORAGE_CLASSES

    classes = registry_storage_classes()
    # pynetdicom's own storage list, where pydicom knows the class, is part of what is sent.
    assert {u for u in _STORAGE_CLASSES.values() if u in UID_dictionary} <= set(classes)
    assert len(classes) > 128

    running = await start_agent(write_profile(tmp_path / "agent", '[storage]\naccept = "all-storage"\n'))
    with trio.fail_after(600):
        results = await trio.to_thread.run_sync(send_all, running.port, classes)

    refused = sorted(UID_dictionary[u][0] for u, (_, status) in results.items() if status is None)
    assert refused == [], f"contexts not accepted: {refused}"
    failed = sorted(f"{UID_dictionary[u][0]}: {status:#06x}" for u, (_, status) in results.items() if status != 0)
    assert failed == [], f"C-STORE not Success: {failed}"
    for sop_class, (uid, _) in results.items():
        row = index_row(running.data_dir, uid)
        assert row is not None, f"{UID_dictionary[sop_class][0]}: no index row"
        assert row["sop_class_uid"] == sop_class
        assert (running.data_dir / row["path"]).is_file()
    assert index_count(running.data_dir) == len(classes)
