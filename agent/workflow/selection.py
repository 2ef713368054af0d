"""Which worklist item a device's procedure performs (`[device] select`).

Candidates are exactly what the agent's MWL SCP serves (RIS cache, local items, folder items, minus steps
already performed), minus items another of our procedures already took, so a device never performs one
scheduled step twice. Rules:
- "accession": the device's worklist key equals the Accession Number.
- "patient-id": the key (or, when empty, the device's own patient ID) equals the Patient ID; of several
  items the one scheduled earliest.
- "key": the key equals the Accession Number, Requested Procedure ID, Scheduled Procedure Step ID or
  Study Instance UID (whatever the device was given).
- "first": the earliest scheduled item for this station: its SPS Scheduled Station AE Title is ours or
  empty, and its SPS Modality is ours or empty (when we know ours).
A key is compared after stripping padding spaces; matching is exact (no wildcards: a device key is not a
query).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydicom import Dataset

from agent.store.procedures import step_identity

SELECT_MODES = ("accession", "patient-id", "key", "first")


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _sps(item: Dataset) -> Dataset:
    return (item.get("ScheduledProcedureStepSequence") or [Dataset()])[0]


def _start(item: Dataset) -> str:
    sps = _sps(item)
    return _text(sps, "ScheduledProcedureStepStartDate") + _text(sps, "ScheduledProcedureStepStartTime")


def select_item(items: Sequence[Dataset], *, mode: str, key: str, patient_id: str = "", station_ae: str,
                modality: str | None = None, taken: Iterable[tuple[str, str, str]] = ()) -> Dataset | None:
    """The item to perform, or None (module rules)."""
    used = set(taken)
    free = [i for i in items if step_identity(i) not in used]
    key = (key or "").strip()
    if mode == "accession":
        found = [i for i in free if key and _text(i, "AccessionNumber") == key]
    elif mode == "patient-id":
        wanted = key or (patient_id or "").strip()
        found = [i for i in free if wanted and _text(i, "PatientID") == wanted]
    elif mode == "key":
        found = [i for i in free if key and key in (
            _text(i, "AccessionNumber"), _text(i, "RequestedProcedureID"),
            _text(_sps(i), "ScheduledProcedureStepID"), _text(i, "StudyInstanceUID"))]
    elif mode == "first":
        def for_us(item: Dataset) -> bool:
            sps = _sps(item)
            ae = _text(sps, "ScheduledStationAETitle")
            mod = _text(sps, "Modality")
            return ae in ("", station_ae) and (modality is None or mod in ("", modality))

        found = [i for i in free if for_us(i)]
    else:
        raise ValueError(f"unknown selection mode {mode!r}")
    if not found:
        return None
    return min(found, key=_start) if mode != "accession" else found[0]


__all__ = ["SELECT_MODES", "select_item"]
