"""C-FIND's coalesced pending responses (one command set encoded once, queued with
DicomConnection.queue_encoded) respect a peer's small Maximum Length: every P-DATA-TF the agent sends
fits it, every response names the request's Message ID, and all matches arrive, then Success. A
pynetdicom SCU that accepts at most 256-byte PDUs queries 40 images at the IMAGE level; the agent runs in
this process."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.conftest import require_pynetdicom, write_profile
from tests.interop.storage_helpers import SERIES_UID, STUDY_UID, make_images

pytestmark = pytest.mark.interop

MAX_PDU = 256


async def test_coalesced_find_responses_fit_the_peers_maximum_length(
    tmp_path: Path, start_agent  # type: ignore[no-untyped-def]
) -> None:
    require_pynetdicom()
    from pynetdicom import AE, evt
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind

    images = make_images(tmp_path / "images", 40)
    running = await start_agent(write_profile(tmp_path / "agent", '[storage]\nfree_space_floor = "1MB"\n\n[query]\n'))
    sizes: list[int] = []
    ids: list[int] = []

    def on_pdu(event: evt.Event) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            sizes.append(len(event.pdu.encode()))

    def on_dimse(event: evt.Event) -> None:  # every C-FIND-RSP as decoded from the wire
        if type(event.message).__name__ == "C_FIND_RSP":
            ids.append(int(event.message.command_set.MessageIDBeingRespondedTo))

    def run() -> tuple[list[int], list[str]]:
        ae = AE(ae_title="SMALLPDU")
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", running.port, ae_title="AGENT", max_pdu=MAX_PDU,
                             evt_handlers=[(evt.EVT_PDU_RECV, on_pdu), (evt.EVT_DIMSE_RECV, on_dimse)])
        assert assoc.is_established
        try:
            for path in images:
                assert int(assoc.send_c_store(dcmread(path)).Status) == 0
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.StudyInstanceUID = STUDY_UID
            query.SeriesInstanceUID = SERIES_UID
            query.SOPInstanceUID = ""
            query.SOPClassUID = ""
            query.InstanceNumber = ""
            query.PatientName = ""
            query.PatientID = ""
            query.StudyDate = ""
            statuses, uids = [], []
            responses = assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind, msg_id=77)
            for status, identifier in responses:
                statuses.append(int(status.Status))
                if identifier is not None and int(status.Status) in (0xFF00, 0xFF01):
                    uids.append(str(identifier.SOPInstanceUID))
            return statuses, uids
        finally:
            assoc.release()

    statuses, uids = await trio.to_thread.run_sync(run)
    assert statuses == [0xFF00] * 40 + [0x0000]
    assert ids == [77] * 41
    assert sorted(uids) == sorted(str(dcmread(p).SOPInstanceUID) for p in images)
    # Maximum Length bounds a P-DATA-TF's variable field (PS3.8 9.3.1): the PDU with its 6-byte header.
    assert len(sizes) > 2 * 41 and max(sizes) <= MAX_PDU + 6, max(sizes)  # the data sets were cut
    running.cancel_scope.cancel()
