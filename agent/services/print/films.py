"""Rendered films on disk, between the N-ACTION and the printer: `<data_dir>/print/films/<job id>.npy`
(the drive levels, lossless) and `<job id>.json` (physical size, dpi, copies and the other `Film` fields).

Invariants:
- `save` writes both files under temporary names, fsyncs them, renames them into place and fsyncs the
  directory: once it returns, the film survives a power cut. The JSON goes last, so a film whose JSON
  exists is whole.
- File names come from the job id, a UID checked to be `[0-9.]` only: nothing a peer sends names a path.
- Blocking (fsync): call from a worker thread.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np

from drivers.base import Film

_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")


def films_dir(data_dir: Path) -> Path:
    return data_dir / "print" / "films"


def _paths(directory: Path, job_id: str) -> tuple[Path, Path]:
    if not _UID_RE.fullmatch(job_id) or len(job_id) > 64:
        raise ValueError(f"not a UID: {job_id!r}")
    return directory / f"{job_id}.npy", directory / f"{job_id}.json"


def _fsync_write(path: Path, write: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)  # type: ignore[operator]
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(directory: Path, film: Film) -> Path:
    """Write `film` durably (see module invariants); returns the pixel file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    pixels_path, meta_path = _paths(directory, film.job_id)
    _fsync_write(pixels_path, lambda f: np.save(f, np.ascontiguousarray(film.pixels), allow_pickle=False))
    meta = {k: v for k, v in asdict(film).items() if k != "pixels"}
    _fsync_write(meta_path, lambda f: f.write(json.dumps(meta).encode()))
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return pixels_path


def load(pixels_path: str | Path) -> Film:
    """The film saved at `pixels_path` (its JSON beside it)."""
    pixels_path = Path(pixels_path)
    meta = json.loads(pixels_path.with_suffix(".json").read_text())
    pixels = np.load(pixels_path, allow_pickle=False)
    return Film(pixels=pixels, **meta)


def remove_orphans(directory: Path, keep: set[str]) -> int:
    """Delete films (and temporary files) whose job id is not in `keep`: written by an N-ACTION whose
    job row never committed (the agent died in between; the requestor got no success). Returns how many."""
    removed = 0
    if not directory.exists():
        return 0
    for path in directory.iterdir():
        job_id = path.name.split(".npy")[0].split(".json")[0]
        if job_id not in keep or path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def remove(pixels_path: str | Path) -> None:
    """Delete a printed film's files (missing files are fine)."""
    pixels_path = Path(pixels_path)
    for path in (pixels_path, pixels_path.with_suffix(".json")):
        path.unlink(missing_ok=True)


__all__ = ["films_dir", "load", "remove", "remove_orphans", "save"]
