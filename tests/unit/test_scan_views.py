"""`scan_dataset_views` (the receive path's check of a data set still in memory, as the fragments its
PDUs brought) finds exactly what `scan_dataset` finds in the file holding the same bytes, wherever the
fragments are cut: every Part 10 file of pydicom's test data, whole and truncated."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agent.store.dicomfile import DEFLATED_TRANSFER_SYNTAXES, DataSetError, read_meta, scan_dataset, scan_dataset_views
from agent.store.index_columns import INDEX_TAGS
from tests.unit.test_dicomfile_index import _part10_test_files


def _outcome(scan):  # type: ignore[no-untyped-def]
    try:
        return scan()
    except DataSetError as exc:
        return f"DataSetError: {exc}"


def test_same_scan_from_fragments_as_from_the_file(tmp_path: Path) -> None:
    rng = random.Random(11)
    compared = 0
    for name in _part10_test_files():
        try:
            meta = read_meta(Path(name))
        except Exception:  # noqa: BLE001 - not a file this store would have written
            continue
        if meta.transfer_syntax_uid in DEFLATED_TRANSFER_SYNTAXES:
            continue
        data = Path(name).read_bytes()[meta.dataset_offset :]
        for size in (len(data), len(data) * 2 // 3, 7):  # whole, cut inside an element, inside a header
            copy = tmp_path / "copy.dcm"
            copy.write_bytes(data[:size])
            from_file = _outcome(lambda: scan_dataset(copy, 0, meta.transfer_syntax_uid, INDEX_TAGS))
            for _ in range(3):
                cuts = sorted(rng.sample(range(1, size), min(size - 1, rng.randint(0, 8)))) if size > 1 else []
                views = [memoryview(data)[a:b] for a, b in zip([0, *cuts], [*cuts, size])]
                assert _outcome(lambda: scan_dataset_views(views, meta.transfer_syntax_uid, INDEX_TAGS)) == from_file
                compared += 1
    assert compared > 100


def test_no_fragments_is_an_empty_data_set() -> None:
    with pytest.raises(DataSetError, match="empty"):
        scan_dataset_views([], "1.2.840.10008.1.2.1")
