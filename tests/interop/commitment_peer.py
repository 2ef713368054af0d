"""A pynetdicom archive for the Storage Commitment tests: a Storage SCP that writes what it receives
(by SOP Instance UID) and a Storage Commitment SCP that answers from that folder, reporting on the same
association or on a new one to the requester's listener (with or without role selection).

pynetdicom sends the N-ACTION-RSP only after the N-ACTION handler returns, so the report is sent by a
thread the handler starts; for "same" it uses the handler's association, for "new" it associates to the
agent itself (as field archives do, shortly after the request, even while the first association is open).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel
from pynetdicom.presentation import StoragePresentationContexts

WELL_KNOWN = "1.2.840.10008.1.20.1.1"


@dataclass
class PynetdicomArchive:
    out_dir: Path
    report: str = "same"  # "same" | "new" | "new-no-role" | "none"
    agent_port: int = 0
    agent_ae: str = "AGENT"
    ae_title: str = "PYARCHIVE"
    silent_first: int = 0  # ignore (report nothing for) the first N N-ACTIONs
    fail_first: int = 0  # report every instance of the first N N-ACTIONs as failed (0110)
    store_status_first: int | None = None  # C-STORE status for the first attempt of each instance
    stores_only: bool = False
    holdings: object = None  # callable() -> set of SOP Instance UIDs held (default: what we stored)
    actions: list[str] = field(default_factory=list)  # Transaction UIDs in arrival order
    reports_sent: list[tuple[str, int]] = field(default_factory=list)  # (Transaction UID, event type)
    report_statuses: list[int] = field(default_factory=list)
    seen_stores: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, port: int) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = 0
        for cx in StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax)
        if not self.stores_only:
            ae.add_supported_context(StorageCommitmentPushModel)
        self.ae = ae
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_N_ACTION, self._on_action)]
        self.server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)

    def stop(self) -> None:
        self.server.shutdown()

    def holds(self) -> set[str]:
        return {p.name for p in self.out_dir.iterdir()}

    # -- storage
    def _on_store(self, event) -> int:  # type: ignore[no-untyped-def]
        ds = event.dataset
        ds.file_meta = event.file_meta
        uid = str(ds.SOPInstanceUID)
        with self.lock:
            attempt = self.seen_stores.get(uid, 0)
            self.seen_stores[uid] = attempt + 1
        if attempt == 0 and self.store_status_first is not None:
            return self.store_status_first
        tmp = self.out_dir / f".{uid}.tmp"
        ds.save_as(tmp, enforce_file_format=True)
        tmp.rename(self.out_dir / uid)
        return 0x0000

    # -- commitment
    def _on_action(self, event):  # type: ignore[no-untyped-def]
        req = event.action_information
        tuid = str(req.TransactionUID)
        with self.lock:
            self.actions.append(tuid)
            n = len(self.actions)
        if n <= self.silent_first or self.report == "none":
            return 0x0000, None
        held = self.holdings() if callable(self.holdings) else self.holds()
        ok, failed = [], []
        for item in req.ReferencedSOPSequence:
            pair = (str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
            (ok if pair[1] in held and n > self.silent_first + self.fail_first else failed).append(pair)
        report = Dataset()
        report.TransactionUID = tuid
        if ok:
            report.ReferencedSOPSequence = [_ref(c, u) for c, u in ok]
        if failed:
            report.FailedSOPSequence = [_ref(c, u, 0x0110) for c, u in failed]
        event_type = 2 if failed else 1
        assoc = event.assoc
        threading.Thread(target=self._send_report, args=(assoc, report, event_type, tuid), daemon=True).start()
        return 0x0000, None

    def _send_report(self, assoc, report: Dataset, event_type: int, tuid: str) -> None:  # type: ignore[no-untyped-def]
        if self.report == "same":
            status, _ = assoc.send_n_event_report(report, event_type, StorageCommitmentPushModel, WELL_KNOWN, msg_id=99)
        else:
            ae = AE(ae_title=self.ae_title)
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
            role = []
            if self.report == "new":
                ae.add_requested_context(StorageCommitmentPushModel)
                role = [build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)]
            else:
                ae.add_requested_context(StorageCommitmentPushModel)
            other = ae.associate("127.0.0.1", self.agent_port, ae_title=self.agent_ae, ext_neg=role)
            if not other.is_established:
                return
            status, _ = other.send_n_event_report(report, event_type, StorageCommitmentPushModel, WELL_KNOWN)
            other.release()
        with self.lock:
            self.reports_sent.append((tuid, event_type))
            self.report_statuses.append(int(getattr(status, "Status", -1)))


def _ref(cls: str, uid: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = cls
    item.ReferencedSOPInstanceUID = uid
    if reason is not None:
        item.FailureReason = reason
    return item
