"""Start-up clean-up with a large store: correct, and a fixed number of database statements whatever
the number of instances (a look-up per object file made start-up quadratic: ~80 s at 20,000).

The store is filled with index rows and files by SQL and hard links (tests/integration/large_store.py),
plus a few instances received for real, and the damage a crash leaves: a temp file with received bytes,
an object file without a row, rows without a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.store.db import open_database
from agent.store.dicomfile import object_relpath
from agent.store.instances import InstanceStore
from tests.integration.large_store import fill_store
from tests.unit.test_instances import EXPLICIT, encode, make_dataset, receive

N = 5000


def test_cleanup_of_a_large_store_is_correct_and_issues_a_bounded_number_of_statements(tmp_path: Path) -> None:
    data = tmp_path / "data"
    filled = fill_store(data, N)
    conn = open_database(data / "agent.db")
    store = InstanceStore(data, conn)
    real = [f"1.2.826.0.1.3680043.8.498.88.{i}" for i in range(3)]
    for uid in real:
        receive(store, encode(make_dataset(uid), EXPLICIT), uid=uid)
    # Damage: two rows lose their file, an object file has no row, a temp file holds received bytes.
    gone = [filled[10], real[1]]
    for uid in gone:
        os.unlink(data / object_relpath(uid))
    orphan = data / object_relpath("1.2.826.0.1.3680043.8.498.99")
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"never acknowledged")
    (data / "tmp" / "partial.slot").write_bytes(b"half a data set")
    conn.close()

    conn = open_database(data / "agent.db")
    restarted = InstanceStore(data, conn)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    report = restarted.startup_cleanup()
    conn.set_trace_callback(None)

    assert (report.temp_files_removed, report.rows_removed, report.orphan_files_removed) == (1, 2, 1)
    assert len(statements) < 20, f"{len(statements)} statements for {N} instances"
    assert restarted.count() == N + 3 - 2
    assert not orphan.exists() and list((data / "tmp").iterdir()) == []
    for uid in (filled[0], filled[-1], real[0], real[2]):
        stored = restarted.get(uid)
        assert stored is not None and stored.path.is_file()
    assert restarted.get(gone[0]) is None and restarted.get(gone[1]) is None
    files = {str(p.relative_to(data)) for p in (data / "objects").rglob("*") if p.is_file()}
    rows = {r[0] for r in conn.execute("SELECT path FROM instances")}
    assert files == rows
