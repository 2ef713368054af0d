"""Make a data directory as `dicom-agent run` finds it after many received instances, quickly.

`fill_store(data_dir, count)` writes `count` index rows in one transaction and gives each a file at the
path its row names: a hard link to a small Part 10 file (`data_dir/fill-template-<k>.dcm`, one per
50,000 instances), so 100,000 instances cost seconds and almost no space. Start-up treats them like received instances. Used by the start-up tests and the benchmarks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from agent.store.db import open_database
from agent.store.dicomfile import encode_file_meta, object_relpath
from agent.store.instances import InstanceStore

SOP_CLASS = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT = "1.2.840.10008.1.2.1"
UID_ROOT = "1.2.826.0.1.3680043.8.498.77"


def filler_uid(i: int) -> str:
    return f"{UID_ROOT}.{i}"


def fill_store(data_dir: Path, count: int, *, start: int = 0) -> list[str]:
    """Add `count` indexed instances (rows + files) to `data_dir`; returns their SOP Instance UIDs."""
    data_dir = Path(data_dir)
    conn = open_database(data_dir / "agent.db")
    try:
        InstanceStore(data_dir, conn)  # creates the folders and the schema
        meta = encode_file_meta(
            sop_class_uid=SOP_CLASS, sop_instance_uid=filler_uid(0), transfer_syntax_uid=EXPLICIT,
            implementation_class_uid="1.2.3", implementation_version_name="FILL",
        )
        # One element: (0010,0020) Patient ID "FILL" (Explicit VR Little Endian).
        body = meta + b"\x10\x00\x20\x00LO\x04\x00FILL"
        size = len(body)
        uids = [filler_uid(i) for i in range(start, start + count)]
        now = time.time()
        rows = []
        made_dirs: set[Path] = set()
        for n, uid in enumerate(uids, start=start):
            # ext4 allows 65,000 links to one inode: a template per 50,000 instances.
            template = data_dir / f"fill-template-{n // 50_000}.dcm"
            if not template.exists():
                template.write_bytes(body)
            rel = object_relpath(uid)
            target = data_dir / rel
            if target.parent not in made_dirs:
                target.parent.mkdir(mode=0o750, exist_ok=True)
                made_dirs.add(target.parent)
            os.link(template, target)
            rows.append((uid, SOP_CLASS, EXPLICIT, size, str(rel), now, "FILLER", "FILL", "OT"))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO instances (sop_instance_uid, sop_class_uid, transfer_syntax_uid, size, path, "
            "received_at, calling_ae, patient_id, modality) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
        return uids
    finally:
        conn.close()


__all__ = ["fill_store", "filler_uid"]
