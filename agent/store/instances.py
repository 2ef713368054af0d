"""The durable local instance store: Part 10 files under `data_dir/objects/` and their SQLite index.

Durability design (what "stored" means when the C-STORE-RSP says Success): the files are the truth.
- The acknowledgement point is the flush of the instance's file: it was received into a *slot*, an
  empty file `tmp/<random>.slot` (mode SLOT_MODE) made in batches of `SLOT_BATCH` whose names are
  flushed with one directory fsync per batch, so its name is already durable; once the data set is
  complete and checked, the file gets FILE_MODE (the completion mark) and one `fsync` flushes its data,
  size and mode. That is the only flush per new instance.
- The file is then renamed to `objects/<2 hex of sha1(uid)>/<uid>.dcm` (no directory flush) and its
  index row is committed, in one transaction with the caller's `on_commit` (forwarding jobs), with
  `synchronous=NORMAL` for that COMMIT: it survives a process crash (the WAL is written before the
  response is sent), not necessarily a power cut (any later FULL commit flushes it too).
- A power cut may so lose the row and the forwarding jobs, and the rename too (a journaling filesystem
  keeps a rename atomic: the file is under one of its two names). `startup_cleanup(on_commit)`, before
  the listeners start, indexes again every whole file that has no row - an object file, or a slot with
  the completion mark - from its header exactly as at receive, and runs `on_commit` (the agent passes
  the Storage SCP's forwarding hook), so the acknowledged instance is indexed and forwarded again.
  A row whose rename was lost is repaired from the slot it names (`staged`).
- Consequence, by design: a whole file whose response never reached the peer (a crash after its flush,
  before the response) is kept and indexed; the peer sends it again and it is a duplicate. Nothing is
  left *half*: a slot without the mark (its data set never completed: a cut exactly between two
  elements would walk as a whole one), a file that does not walk as a whole data set, and a row whose
  file is neither at its path nor in its slot are removed at start-up.
- Replacing an acknowledged instance keeps the flushed path (journal below, directory fsync, FULL
  COMMIT): it is rare.
- Assumption: the filesystem keeps a rename atomic across a crash and shows no stale data inside a
  flushed file's size (ext4 data=ordered, XFS, btrfs).

Invariants:
- Replacing an acknowledged instance (a re-sent UID under `duplicate = "replace"`) overwrites a file that
  has a row, so it is journalled: the old file is first hard-linked into `tmp/` (directory fsync'ed),
  then a row in `instance_replacements` records that link (committed), then the new file is renamed over
  the old one; the commit of the new index row deletes the journal row. `startup_cleanup()` puts back
  every journalled link before it empties `tmp/`, so a crash at any step leaves the old instance with its
  row or the new one with its row.
- Paths are built from validated UIDs only (`dicomfile.validate_uid`); reads take the path from the
  index, never from a caller.
- Memory is bounded whatever the object's size: bytes go to the fd as received (`write()` keeps no
  reference to the caller's buffer once it returns), and `prepare()` walks element headers once,
  seeking over values and keeping only the index attributes (`dicomfile.scan_dataset` on the file,
  or `scan_dataset_views` on the received fragments when the caller still holds the whole data set
  it wrote; `index_columns.py`), so no pydicom Dataset is built on the receive path.
- `Incoming` holds only its own fd and path plus a reference to its store, so `write()`, `prepare()`
  (check and flush, no database) and `install()` (rename and index commit, the database's thread) may
  run in different worker threads; none runs on the event loop. The store serialises its use of the
  shared connection with its own lock.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import shutil
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

from agent import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from agent.errors import StoreError
from agent.store.db import DIR_MODE, FILE_MODE, make_private_dirs, transaction
from agent.store.header import index_values
from agent.store.index_columns import INDEX_COLUMNS, INDEX_TAGS, IndexColumn
from agent.store.dicomfile import (
    DEFLATED_TRANSFER_SYNTAXES,
    DataSetError,
    FileMeta,
    InvalidUID,
    NotDicom,
    scan_dataset,
    scan_dataset_views,
    encode_file_meta,
    object_relpath,
    read_meta,
    validate_uid,
)

__all__ = [
    "CleanupReport",
    "CommitResult",
    "DataSetError",
    "FileMeta",
    "Incoming",
    "InstanceNotFound",
    "InstanceStore",
    "InvalidUID",
    "NotDicom",
    "OutOfResources",
    "SOP_CLASS_MISMATCH_WARNING",
    "SOP_INSTANCE_MISMATCH_WARNING",
    "StoredInstance",
    "read_meta",
]

log = logging.getLogger(__name__)

#: The warnings `commit()` reports when the data set's SOP Class UID, or its SOP Instance UID, differs
#: from the command's; the Storage SCP answers B007 (PS3.4 Table B.2-1) but the instance is stored.
SOP_CLASS_MISMATCH_WARNING = "data set SOP Class UID differs from the command's"
SOP_INSTANCE_MISMATCH_WARNING = "data set SOP Instance UID differs from the command's"


class OutOfResources(StoreError):
    """Not enough disk space (free-space floor reached, or ENOSPC/EDQUOT): the SCP answers A7xx."""


class InstanceNotFound(StoreError):
    """No indexed instance with that SOP Instance UID, or its file is gone."""


#: Columns every row has, whatever the index attributes are (`path` is relative to `data_dir`).
_CORE_COLUMNS = (
    ("sop_instance_uid", "TEXT PRIMARY KEY"),
    ("sop_class_uid", "TEXT NOT NULL"),
    ("transfer_syntax_uid", "TEXT NOT NULL"),
    ("size", "INTEGER NOT NULL"),
    ("path", "TEXT NOT NULL"),
    ("received_at", "REAL NOT NULL"),
    ("calling_ae", "TEXT NOT NULL"),
    ("committed_at", "REAL"),
    # The name in tmp/ the file was received under (a slot, see the module invariants), from which a
    # rename that a power cut lost after the row committed is redone at start-up.
    ("staged", "TEXT"),
)


def _sql_type(column: IndexColumn) -> str:
    return "INTEGER" if column.kind == "int" else "TEXT"


#: Every column of `instances`: the core ones, then one per row of `INDEX_COLUMNS`.
_ALL_COLUMNS: tuple[str, ...] = (*(c for c, _ in _CORE_COLUMNS), *(c.column for c in INDEX_COLUMNS))

#: A slot's mode until its data set is complete and checked; `prepare()` then sets FILE_MODE before
#: its flush. So a slot file with FILE_MODE holds a whole, checked data set whose data was flushed:
#: start-up indexes such a slot if no row names it (a power cut lost its row and its rename), and
#: removes any other (a data set cut off between two elements would walk as a whole one).
SLOT_MODE = 0o600

#: Slots made per directory flush (measured: a batch of 32 cost ~20 ms on a virtio disk, mostly the
#: flush; larger batches spread it thinner, and an empty file costs only an inode).
SLOT_BATCH = 128

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS instances (\n    "
    + ",\n    ".join(
        [f"{name} {decl}" for name, decl in _CORE_COLUMNS]
        + [f"{c.column} {_sql_type(c)}" for c in INDEX_COLUMNS]
    )
    + "\n)",
    "CREATE INDEX IF NOT EXISTS instances_study ON instances(study_instance_uid)",
    "CREATE INDEX IF NOT EXISTS instances_series ON instances(series_instance_uid)",
    "CREATE INDEX IF NOT EXISTS instances_patient ON instances(patient_id)",
    "CREATE INDEX IF NOT EXISTS instances_received ON instances(received_at)",
    # One row per replace in progress: `backup` is the name in tmp/ of a hard link to the acknowledged
    # file, or NULL when there was no file to keep (see the module invariants).
    """CREATE TABLE IF NOT EXISTS instance_replacements (
        sop_instance_uid TEXT PRIMARY KEY,
        backup TEXT
    )""",
)


_INSERT = (
    f"INSERT OR REPLACE INTO instances ({', '.join(_ALL_COLUMNS)}) VALUES ({', '.join('?' * len(_ALL_COLUMNS))})"
)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """A database made before a row was added to `INDEX_COLUMNS` gets the column (NULL in old rows)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(instances)")}
    if "staged" not in have:
        conn.execute("ALTER TABLE instances ADD COLUMN staged TEXT")
    for column in INDEX_COLUMNS:
        if column.column not in have:
            conn.execute(f"ALTER TABLE instances ADD COLUMN {column.column} {_sql_type(column)}")


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """One row of `instances`; `path` is absolute (the row holds it relative to `data_dir`)."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    patient_id: str | None
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None
    study_instance_uid: str | None
    study_date: str | None
    study_time: str | None
    accession_number: str | None
    study_id: str | None
    study_description: str | None
    referring_physician_name: str | None
    series_instance_uid: str | None
    series_number: int | None
    modality: str | None
    instance_number: int | None
    size: int
    path: Path
    received_at: float
    calling_ae: str
    committed_at: float | None
    specific_character_set: str | None


#: The columns `StoredInstance` carries; a row may have more (an index column added for queries).
_FIELDS = frozenset(f.name for f in fields(StoredInstance))


@dataclass(frozen=True, slots=True)
class CommitResult:
    stored: StoredInstance
    warnings: list[str]
    #: An instance with this SOP Instance UID was already indexed.
    duplicate: bool
    #: keep-first policy: the earlier file and row were kept, the received bytes dropped.
    kept_existing: bool = False


@dataclass(frozen=True, slots=True)
class CleanupReport:
    temp_files_removed: int
    rows_removed: int
    orphan_files_removed: int


OnCommit = Callable[[sqlite3.Connection, StoredInstance], None]


def _source_ae(path: Path) -> str:
    """The File Meta's Source Application Entity Title, which the store writes from the index's
    calling AE (start-up re-indexing only: pydicom is fine off the receive path)."""
    from pydicom.filereader import read_file_meta_info

    return str(read_file_meta_info(path).get("SourceApplicationEntityTitle", "") or "").strip()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(path: Path) -> None:
    """mkdir `path` (DIR_MODE, whatever the umask) if missing; fsync its parent so the entry is durable."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)
    _fsync_dir(path.parent)


def _os_error(exc: OSError, what: str) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutOfResources(f"{what}: {exc.strerror}")
    return StoreError(f"{what}: {exc}")


def _db_error(exc: sqlite3.Error, what: str) -> StoreError:
    """SQLITE_FULL ("database or disk is full") is the disk running out under the index, like ENOSPC."""
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
        return OutOfResources(f"{what}: {exc}")
    return StoreError(f"{what}: {exc}")


@dataclass(slots=True)
class _Placed:
    """An instance renamed into place (or a kept-first duplicate), its row not yet committed."""

    stored: StoredInstance
    #: The row to write; None for a kept-first duplicate (the earlier row stays).
    values: dict[str, Any] | None
    warnings: list[str]
    existing: StoredInstance | None
    journalled: bool
    backup: str | None


@dataclass(slots=True)
class _GroupEntry:
    incoming: Incoming
    on_commit: OnCommit | None
    finished: bool = False
    result: CommitResult | None = None
    error: BaseException | None = None


class _State(enum.Enum):
    OPEN = "open"
    COMMITTING = "committing"
    PREPARED = "prepared"
    DONE = "done"


#: At most this many buffers per writev (Linux IOV_MAX is 1024).
_IOV_MAX = 1024


class Incoming:
    """One data set being received: `write()` chunks as they arrive, then `commit()` or `abort()`."""

    def __init__(
        self,
        store: InstanceStore,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        calling_ae: str,
        called_ae: str,
        temp_path: Path,
        fd: int,
        dataset_offset: int,
    ) -> None:
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
        self.transfer_syntax_uid = transfer_syntax_uid
        self.calling_ae = calling_ae
        self.called_ae = called_ae
        self.temp_path = temp_path
        self.dataset_offset = dataset_offset
        self.received_at = time.time()
        self._store = store
        self._fd: int | None = fd
        self._state = _State.OPEN
        self._written = 0
        self._prepared: tuple[dict[str, Any], list[str]] | None = None

    @property
    def size(self) -> int:
        """Bytes of the Part 10 file written so far, File Meta Information included."""
        return self._written

    @property
    def bytes_received(self) -> int:
        """Data set bytes written so far (File Meta Information excluded)."""
        return self._written - self.dataset_offset

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append data set bytes exactly as received. No fsync here: that is `commit()`'s job."""
        if self._state is not _State.OPEN or self._fd is None:
            raise StoreError(f"write to a {self._state.value} incoming instance")
        view = memoryview(chunk).cast("B")
        while view:
            try:
                n = os.write(self._fd, view)
            except OSError as exc:
                self._discard()
                raise _os_error(exc, f"writing {self.sop_instance_uid}") from exc
            view = view[n:]
            self._written += n

    def write_all(self, chunks: Sequence[bytes | bytearray | memoryview]) -> None:
        """`write()` each chunk in order, with as few system calls as possible (writev)."""
        if self._state is not _State.OPEN or self._fd is None:
            raise StoreError(f"write to a {self._state.value} incoming instance")
        views = [memoryview(c).cast("B") for c in chunks if len(c)]
        try:
            while views:
                batch = views[:_IOV_MAX]
                n = os.writev(self._fd, batch)
                self._written += n
                done = 0
                for view in batch:  # drop what was written; a partial write leaves a view's tail
                    if n >= len(view):
                        n -= len(view)
                        done += 1
                    else:
                        views[done] = view[n:]
                        break
                del views[:done]
        except OSError as exc:
            self._discard()
            raise _os_error(exc, f"writing {self.sop_instance_uid}") from exc
        finally:
            del views  # no reference to a caller's buffer outlives the call

    def commit(self, *, on_commit: OnCommit | None = None) -> CommitResult:
        """`prepare()` then `install()`: check, flush, rename into place and index; blocking.

        `on_commit(conn, stored)` runs inside the index row's transaction, so whatever it writes (e.g.
        forwarding jobs) commits atomically with the row. On any failure nothing of the instance is
        left: no temp file, no final file, no row (a kept-first earlier instance stays as it was).
        """
        self.prepare()
        return self.install(on_commit=on_commit)

    def prepare(self, dataset: Sequence[bytes | bytearray | memoryview] | None = None) -> None:
        """Check the data set (one walk, which also reads the index attributes) and flush the file's
        data; touches no database, so it may run in any worker thread, beside other instances' flushes.
        `dataset`, when the caller still has it: the whole data set exactly as written (its received
        fragments), walked in memory instead of read back from the file. On failure the received
        bytes are dropped."""
        if self._state is not _State.OPEN or self._fd is None:
            raise StoreError(f"commit of a {self._state.value} incoming instance")
        self._state = _State.COMMITTING
        try:
            self._prepared = self._check(dataset)
            fd, self._fd = self._fd, None
            try:
                # The completion mark (see SLOT_MODE), then one flush of data, size and mode: the
                # acknowledgement's only flush (the file's name was made durable with its slot).
                os.fchmod(fd, FILE_MODE)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self._discard()
            raise _os_error(exc, f"storing {self.sop_instance_uid}") from exc
        except BaseException:
            self._discard()
            raise
        self._state = _State.PREPARED

    def install(self, *, on_commit: OnCommit | None = None) -> CommitResult:
        """Rename the prepared file into place and commit its index row: the acknowledgement point.
        Uses the store's database connection (run it where that connection may be used)."""
        if self._state is not _State.PREPARED or self._prepared is None:
            raise StoreError(f"install of a {self._state.value} incoming instance")
        index, warnings = self._prepared
        self._state = _State.COMMITTING
        try:
            return self._store._install(self, index, warnings, on_commit)
        finally:
            self._state = _State.DONE

    def abort(self) -> None:
        """Drop the received bytes. Idempotent; a no-op once committed."""
        if self._state in (_State.OPEN, _State.PREPARED):
            self._discard()

    def _check(self, dataset: Sequence[bytes | bytearray | memoryview] | None) -> tuple[dict[str, Any], list[str]]:
        # One walk checks the structure and keeps the index attributes' raw values (no Dataset built).
        if dataset is not None and self.transfer_syntax_uid not in DEFLATED_TRANSFER_SYNTAXES:
            if sum(len(v) for v in dataset) != self.bytes_received:
                raise StoreError(f"{self.sop_instance_uid}: the data set given is not the one written")
            scan = scan_dataset_views(dataset, self.transfer_syntax_uid, INDEX_TAGS)
        else:
            scan = scan_dataset(self.temp_path, self.dataset_offset, self.transfer_syntax_uid, INDEX_TAGS)
        try:
            index, ds_class, ds_instance = index_values(scan)
        except (LookupError, ValueError) as exc:  # an unknown or undecodable character set
            raise DataSetError(f"cannot decode the data set of {self.sop_instance_uid}: {exc}") from exc
        warnings = []
        if ds_class != self.sop_class_uid:
            warnings.append(SOP_CLASS_MISMATCH_WARNING)
        if ds_instance != self.sop_instance_uid:
            warnings.append(SOP_INSTANCE_MISMATCH_WARNING)
        if warnings:
            log.warning(
                "%s from %s: data set has SOP Class %s / Instance %s, command has %s / %s",
                self.sop_instance_uid, self.calling_ae, ds_class, ds_instance,
                self.sop_class_uid, self.sop_instance_uid,
            )
        return index, warnings

    def _discard(self) -> None:
        self._state = _State.DONE
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass


class InstanceStore:
    """Part 10 files under `data_dir/objects/` indexed in the `instances` table of `conn`."""

    def __init__(
        self,
        data_dir: Path,
        conn: sqlite3.Connection,
        *,
        free_space_floor: int = 0,
        duplicate: str = "replace",
    ) -> None:
        if duplicate not in ("replace", "keep-first"):
            raise ValueError(f"duplicate must be 'replace' or 'keep-first', not {duplicate!r}")
        self.data_dir = Path(data_dir).absolute()
        self.conn = conn
        self.free_space_floor = free_space_floor
        self.duplicate = duplicate
        self._objects = self.data_dir / "objects"
        self._tmp = self.data_dir / "tmp"
        self._lock = threading.RLock()
        self._slot_lock = threading.Lock()
        self._group_cond = threading.Condition()
        self._group: list[_GroupEntry] = []
        self._group_leader = False
        self._slots: list[Path] = []
        make_private_dirs(self.data_dir)
        for own in (self._objects, self._tmp):
            _ensure_dir(own)
            if own.stat().st_mode & 0o027:  # made by an earlier version under a loose umask
                os.chmod(own, DIR_MODE)
        self._make_buckets()
        with self._lock, transaction(conn):
            for statement in _SCHEMA:
                conn.execute(statement)
            _add_missing_columns(conn)

    # -- receiving ----------------------------------------------------------------------------------

    def begin(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        *,
        calling_ae: str,
        called_ae: str = "",
    ) -> Incoming:
        """Open a temp file holding the File Meta Information; the data set follows via `write()`."""
        for uid in (sop_class_uid, sop_instance_uid, transfer_syntax_uid):
            validate_uid(uid)
        free = shutil.disk_usage(self.data_dir).free
        if free < self.free_space_floor:
            raise OutOfResources(f"{free} bytes free in {self.data_dir}, floor {self.free_space_floor}")
        meta = encode_file_meta(
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION_NAME,
            source_ae=calling_ae,
            receiving_ae=called_ae,
        )
        try:
            temp_path = self._take_slot()
            fd = os.open(temp_path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _os_error(exc, "creating a file to receive into") from exc
        incoming = Incoming(
            self,
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            calling_ae=calling_ae,
            called_ae=called_ae,
            temp_path=temp_path,
            fd=fd,
            dataset_offset=len(meta),
        )
        incoming.write(meta)
        return incoming

    def _take_slot(self) -> Path:
        """An empty file in tmp/ whose name is already durable (see the module invariants)."""
        with self._slot_lock:
            if not self._slots:
                self._slots = self._make_slots(SLOT_BATCH)
            return self._slots.pop()

    def _make_buckets(self) -> None:
        """Make every `objects/<2 hex>` folder once, with one flush of objects/ for all of them, so
        no received instance pays a directory flush for a new bucket."""
        made = False
        for i in range(256):
            try:
                os.mkdir(self._objects / f"{i:02x}", DIR_MODE)
            except FileExistsError:
                continue
            os.chmod(self._objects / f"{i:02x}", DIR_MODE)
            made = True
        if made:
            _fsync_dir(self._objects)

    def _make_slots(self, count: int) -> list[Path]:
        made: list[Path] = []
        try:
            for _ in range(count):
                path = self._tmp / f"{uuid.uuid4().hex}.slot"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, SLOT_MODE)
                made.append(path)
                try:
                    os.fchmod(fd, SLOT_MODE)  # the umask may have taken bits away; it must not decide
                finally:
                    os.close(fd)
            _fsync_dir(self._tmp)  # one directory flush makes every slot's name durable
        except OSError:
            for path in made:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        return made

    def _install(
        self,
        incoming: Incoming,
        index: dict[str, Any],
        warnings: list[str],
        on_commit: OnCommit | None,
    ) -> CommitResult:
        with self._lock:
            placed = self._place(incoming, index, warnings)
            try:
                with self._row_commit(not placed.journalled), transaction(self.conn) as conn:
                    self._write_row(conn, placed, on_commit)
            except BaseException as exc:
                self._unplace(placed)
                if isinstance(exc, sqlite3.Error):
                    raise _db_error(exc, f"indexing {incoming.sop_instance_uid}") from exc
                raise
            return self._placed_result(placed)

    def install_group(self, incoming: Incoming, on_commit: OnCommit | None,
                      exclusive: Callable[..., Any]) -> CommitResult:
        """`incoming.install(on_commit)`, sharing one index COMMIT (one WAL flush) with the instances
        other threads are installing at the same moment (group commit). Blocking; from a worker thread.

        The first thread in becomes the leader: once it holds the database's lock (`exclusive(fn)`) it
        takes every instance waiting at that moment, those that queued while it waited for the lock
        included, and installs them in one transaction; the others wait for their result. Each instance's row and `on_commit` run in a savepoint, so one failing
        instance fails alone. Nothing is acknowledged before the shared COMMIT.
        """
        if incoming._state is not _State.PREPARED or incoming._prepared is None:
            raise StoreError(f"install of a {incoming._state.value} incoming instance")
        entry = _GroupEntry(incoming, on_commit)
        with self._group_cond:
            self._group.append(entry)
            while not entry.finished:
                if self._group_leader:
                    self._group_cond.wait()
                    continue
                self._group_leader = True
                self._group_cond.release()
                batch: list[_GroupEntry] = []
                try:
                    batch = exclusive(self._lead_group)
                finally:
                    self._group_cond.acquire()
                    self._group_leader = False
                    for done in batch:
                        done.finished = True
                    self._group_cond.notify_all()
        incoming._state = _State.DONE
        if entry.error is not None:
            raise entry.error
        assert entry.result is not None
        return entry.result

    def _lead_group(self) -> list[_GroupEntry]:
        """With the database lock held: take every instance waiting now (all that queued while the
        lock was busy) and install them together; returns them, each with its result or error."""
        with self._group_cond:
            batch: list[_GroupEntry] = []
            later: list[_GroupEntry] = []
            seen: set[str] = set()
            for waiting in self._group:  # one instance per UID in a group: the next one replaces it
                uid = waiting.incoming.sop_instance_uid
                (later if uid in seen else batch).append(waiting)
                seen.add(uid)
            self._group = later
        try:
            self._install_many(batch)
        except BaseException as exc:  # noqa: BLE001 - every waiting thread must get an answer
            for entry in batch:
                if entry.result is None and entry.error is None:
                    entry.error = exc
        return batch

    def _install_many(self, batch: list[_GroupEntry]) -> None:
        with self._lock:
            placed: list[tuple[_GroupEntry, _Placed]] = []
            for entry in batch:
                index, warnings = entry.incoming._prepared or ({}, [])
                try:
                    placed.append((entry, self._place(entry.incoming, index, warnings)))
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                    entry.error = exc
            written: list[tuple[_GroupEntry, _Placed]] = []
            try:
                relaxed = not any(one.journalled for _, one in placed)
                alone = len(placed) == 1
                with self._row_commit(relaxed), transaction(self.conn) as conn:
                    for entry, one in placed:
                        if alone:  # its failure is the transaction's: no savepoint needed
                            self._write_row(conn, one, entry.on_commit)
                            written.append((entry, one))
                            continue
                        conn.execute("SAVEPOINT instance")
                        try:
                            self._write_row(conn, one, entry.on_commit)
                        except Exception as exc:  # noqa: BLE001 - this instance fails alone
                            if not conn.in_transaction:
                                raise  # SQLite rolled the whole transaction back (disk full, I/O)
                            conn.execute("ROLLBACK TO instance")
                            conn.execute("RELEASE instance")
                            entry.error = (
                                _db_error(exc, f"indexing {entry.incoming.sop_instance_uid}")
                                if isinstance(exc, sqlite3.Error) else exc
                            )
                            self._unplace(one)
                            continue
                        conn.execute("RELEASE instance")
                        written.append((entry, one))
            except BaseException as exc:  # noqa: BLE001 - the shared COMMIT failed: every instance fails
                what = f"indexing {placed[0][0].incoming.sop_instance_uid}" if len(placed) == 1 else (
                    "indexing a group of instances")
                failure = _db_error(exc, what) if isinstance(exc, sqlite3.Error) else exc
                for entry, one in placed:
                    if entry.error is None:
                        entry.error = failure
                        self._unplace(one)
                return
            for entry, one in written:
                entry.result = self._placed_result(one)

    @contextlib.contextmanager
    def _row_commit(self, relaxed: bool) -> Iterator[None]:
        """The new rows' COMMIT without its own flush (`synchronous=NORMAL`) when `relaxed`: it survives
        a process crash; a power cut may lose it, and start-up then indexes the files again (module
        docstring). A replace keeps the flushed COMMIT (FULL), as does everything else."""
        if not relaxed:
            yield
            return
        self.conn.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self.conn.execute("PRAGMA synchronous=FULL")

    def _place(self, incoming: Incoming, index: dict[str, Any], warnings: list[str]) -> _Placed:
        """Everything before the row's transaction: the duplicate policy, the replace journal and the
        rename into objects/. On failure nothing of the instance is left."""
        uid = incoming.sop_instance_uid
        rel = object_relpath(uid)
        final = self.data_dir / rel
        existing = self.get(uid)  # a new UID (the usual case) finds no row: nothing decoded
        if existing is not None and self.duplicate == "keep-first" and existing.path.exists():
            os.unlink(incoming.temp_path)
            return _Placed(existing, None, warnings, existing, False, None)
        journalled = False
        backup: str | None = None
        try:
            if existing is not None or os.path.lexists(final):
                backup = self._journal_replace(uid, final)
                journalled = True
            try:
                os.rename(incoming.temp_path, final)
            except FileNotFoundError:
                if final.parent.is_dir():
                    raise  # the slot itself is gone
                # The buckets are made at start-up (_make_buckets); one removed since is made again.
                _ensure_dir(final.parent)
                os.rename(incoming.temp_path, final)
            if journalled:
                # A replace keeps the whole-flush path: the old file's link and journal row are
                # only undone safely if the new name is durable before its row.
                _fsync_dir(final.parent)
        except (OSError, sqlite3.Error, StoreError) as exc:
            with contextlib.suppress(OSError):
                os.unlink(incoming.temp_path)
            if journalled:
                self._undo_replace(uid, final, backup)
            if isinstance(exc, StoreError):
                raise
            if isinstance(exc, sqlite3.Error):
                raise _db_error(exc, f"indexing {uid}") from exc
            raise _os_error(exc, f"installing {uid}") from exc
        stored = StoredInstance(
            sop_instance_uid=uid,
            sop_class_uid=incoming.sop_class_uid,
            transfer_syntax_uid=incoming.transfer_syntax_uid,
            size=incoming.size,
            path=final,
            received_at=incoming.received_at,
            calling_ae=incoming.calling_ae,
            committed_at=None,
            **{k: v for k, v in index.items() if k in _FIELDS},
        )
        values = {
            **index,
            **{c: getattr(stored, c) for c, _ in _CORE_COLUMNS if c in _FIELDS},
            "path": str(rel),
            "staged": None if journalled else incoming.temp_path.name,
        }
        return _Placed(stored, values, warnings, existing, journalled, backup)

    def _write_row(self, conn: sqlite3.Connection, placed: _Placed, on_commit: OnCommit | None) -> None:
        if placed.values is not None:
            conn.execute(_INSERT, [placed.values.get(c) for c in _ALL_COLUMNS])
            # The new row is acknowledged: no journalled replace of this UID may be undone any
            # more (also a stale one an interrupted undo could not delete).
            conn.execute(
                "DELETE FROM instance_replacements WHERE sop_instance_uid = ?", (placed.stored.sop_instance_uid,)
            )
        if on_commit is not None:
            on_commit(conn, placed.stored)

    def _unplace(self, placed: _Placed) -> None:
        """Undo `_place` after its row could not be written (a kept-first instance has nothing to undo)."""
        if placed.values is None:
            return
        final = placed.stored.path
        if placed.journalled:
            self._undo_replace(placed.stored.sop_instance_uid, final, placed.backup)
        else:
            with contextlib.suppress(OSError):
                os.unlink(final)
                _fsync_dir(final.parent)

    def _placed_result(self, placed: _Placed) -> CommitResult:
        if placed.values is None:
            return CommitResult(placed.stored, placed.warnings, duplicate=True, kept_existing=True)
        if placed.backup is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp / placed.backup)
        return CommitResult(placed.stored, placed.warnings, duplicate=placed.existing is not None)

    def _journal_replace(self, uid: str, final: Path) -> str | None:
        """Keep the acknowledged file under a hard link in tmp/ and journal it; returns the link's name."""
        backup: str | None = None
        if os.path.lexists(final):
            backup = f"{uid}.{uuid.uuid4().hex}.bak"
            os.link(final, self._tmp / backup)
            _fsync_dir(self._tmp)  # the link must be durable before the journal row points at it
        try:
            with transaction(self.conn) as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO instance_replacements (sop_instance_uid, backup) VALUES (?, ?)",
                    (uid, backup),
                )
        except BaseException:
            if backup is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._tmp / backup)
            raise
        return backup

    def _undo_replace(self, uid: str, final: Path, backup: str | None) -> None:
        """Put the acknowledged file back (or remove the new one if there was none) and drop the journal
        row. Idempotent: `startup_cleanup()` repeats it for a row this could not delete."""
        try:
            if backup is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(final)
            else:
                # A missing link means it was already put back (by an earlier undo): final is the old file.
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self._tmp / backup, final)
            _fsync_dir(final.parent)
            with transaction(self.conn) as conn:
                conn.execute("DELETE FROM instance_replacements WHERE sop_instance_uid = ?", (uid,))
        except (OSError, sqlite3.Error) as exc:
            log.error("could not undo the replace of %s (start-up recovery will): %s", uid, exc)

    # -- recovery -----------------------------------------------------------------------------------

    def startup_cleanup(self, on_commit: OnCommit | None = None) -> CleanupReport:
        """Recover what a crash interrupted, index again what a power cut un-indexed, then remove what
        was never completed.

        Run before the listeners start: whatever this removes was never acknowledged to a peer. In order:
        undo interrupted replaces (journal), redo the slot -> object renames a power cut lost after
        their row committed (`staged`), drop rows that still have no file, index again every whole file
        without a row (an object file, or a completed slot in tmp/: see SLOT_MODE) with `on_commit` in
        its row's transaction as at receive (forwarding jobs), then remove the rest of tmp/ and every
        object file that is not a whole data set. One query and one listing of objects/, whatever the store's size, plus a
        look-up per row whose file is missing (a look-up per file made start-up quadratic: minutes at
        tens of thousands of instances).
        """
        with self._lock:
            for row in self.conn.execute(
                "SELECT sop_instance_uid, backup FROM instance_replacements"
            ).fetchall():
                uid, backup = row["sop_instance_uid"], row["backup"]
                log.warning("a replace of %s was interrupted; keeping the acknowledged instance", uid)
                final = self.data_dir / object_relpath(uid)
                self._undo_replace(uid, final, None if backup is None else Path(backup).name)
            with self._slot_lock:
                self._slots = []  # tmp/ is emptied below; no slot of this process may survive it
            # Per bucket, the names on disk (os.listdir: C speed); each row found removes its name,
            # so what is left afterwards is the orphans. Rows hold `objects/<2 hex>/<uid>.dcm`.
            listing = self._object_listing()
            cursor = self.conn.cursor()
            cursor.row_factory = None  # plain tuples: sqlite3.Row costs twice as much at 100,000 rows
            missing: list[str] = []
            redone: set[Path] = set()
            for (rel,) in cursor.execute("SELECT path FROM instances"):
                names = listing.get(rel[8:10]) if rel[:8] == "objects/" and rel[10:11] == "/" else None
                name = rel[11:]
                if names is not None and name in names:
                    names.discard(name)
                    continue
                uid, staged = self.conn.execute(
                    "SELECT sop_instance_uid, staged FROM instances WHERE path = ? AND sop_instance_uid = ?",
                    (rel, Path(rel).stem),
                ).fetchone() or (Path(rel).stem, None)
                if staged and self._redo_rename(uid, rel, staged):
                    redone.add((self.data_dir / rel).parent)
                    continue
                log.warning("index row %s has no file; removing the row", uid)
                missing.append(uid)
            for folder in redone:
                _fsync_dir(folder)
            if redone:
                _fsync_dir(self._tmp)
            if missing:
                with transaction(self.conn) as conn:
                    conn.executemany(
                        "DELETE FROM instances WHERE sop_instance_uid = ?", [(u,) for u in missing]
                    )
            orphans = 0
            for bucket, names in sorted(listing.items()):  # files without a row: index or remove
                for name in sorted(names):
                    path = self._objects / bucket / name
                    if path.is_file() and not self._reindex(path, on_commit):
                        log.warning("object file objects/%s/%s has no index row; removing it", bucket, name)
                        os.unlink(path)
                        orphans += 1
            temp = 0
            for entry in os.scandir(self._tmp):
                if entry.is_dir(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                if st.st_size == 0 and entry.name.endswith(".slot"):
                    os.unlink(entry.path)  # an unused slot is not news
                    continue
                complete = entry.name.endswith(".slot") and stat.S_IMODE(st.st_mode) == FILE_MODE
                if not (complete and self._reindex(Path(entry.path), on_commit)):
                    temp += 1  # received bytes never completed, so never acknowledged
                    os.unlink(entry.path)
        if temp:
            log.info("removed %d leftover temp files", temp)
        return CleanupReport(temp, len(missing), orphans)

    def _reindex(self, path: Path, on_commit: OnCommit | None) -> bool:
        """Index the whole Part 10 file `path` (an object file, or a completed slot moved into objects/
        first) that has no row, exactly as at receive, with `on_commit` in the row's transaction.
        False, leaving the file for the caller to remove, if it is not a whole data set or its UID has
        a row (or, for a slot, a file) already."""
        try:
            meta = read_meta(path)
            validate_uid(meta.sop_instance_uid)
            scan = scan_dataset(path, meta.dataset_offset, meta.transfer_syntax_uid, INDEX_TAGS)
            index, _, _ = index_values(scan)
            calling_ae = _source_ae(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is removed, never fatal at start-up
            log.warning("%s is not a whole data set (%s)", path, exc)
            return False
        uid = meta.sop_instance_uid
        rel = object_relpath(uid)
        final = self.data_dir / rel
        if self.get(uid) is not None:
            return False
        if path.parent == self._tmp:
            if os.path.lexists(final):
                return False
            _ensure_dir(final.parent)
            os.rename(path, final)
            _fsync_dir(final.parent)  # the name before the row: a row never points at no file
        elif path != final:
            return False
        st = final.stat()
        stored = StoredInstance(
            sop_instance_uid=uid, sop_class_uid=meta.sop_class_uid,
            transfer_syntax_uid=meta.transfer_syntax_uid, size=st.st_size, path=final,
            received_at=st.st_mtime, calling_ae=calling_ae, committed_at=None,
            **{k: v for k, v in index.items() if k in _FIELDS},
        )
        values = {
            **index,
            **{c: getattr(stored, c) for c, _ in _CORE_COLUMNS if c in _FIELDS},
            "path": str(rel),
            "staged": None,
        }
        with transaction(self.conn) as conn:
            self._write_row(conn, _Placed(stored, values, [], None, False, None), on_commit)
        log.warning("instance %s had no index row (a power cut lost it); indexed again from %s", uid, path.name)
        return True

    def _object_listing(self) -> dict[str, set[str]]:
        """bucket name -> the names in objects/<bucket>/ (folders other than buckets are not looked at)."""
        listing: dict[str, set[str]] = {}
        for bucket in os.scandir(self._objects):
            if bucket.is_dir(follow_symlinks=False):
                listing[bucket.name] = set(os.listdir(bucket.path))
        return listing

    def _redo_rename(self, uid: str, rel: str, staged: str) -> bool:
        """Put an acknowledged file back from its slot name; False if the slot is not there either."""
        name = Path(staged).name  # a name in tmp/, never a path a row could steer elsewhere
        source = self._tmp / name
        if not source.is_file():
            return False
        target = self.data_dir / object_relpath(uid)
        if str(target.relative_to(self.data_dir)) != rel:
            return False
        _ensure_dir(target.parent)
        os.rename(source, target)
        log.warning("instance %s: its rename into objects/ was lost; redone from %s", uid, name)
        return True

    # -- lookups ------------------------------------------------------------------------------------

    def _row(self, row: sqlite3.Row) -> StoredInstance:
        values = {k: row[k] for k in row.keys() if k in _FIELDS}
        rel = Path(values["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise StoreError(f"index row {values['sop_instance_uid']} has an unsafe path {rel}")
        values["path"] = self.data_dir / rel
        return StoredInstance(**values)

    def get(self, sop_instance_uid: str) -> StoredInstance | None:
        with self._lock:
            row = self.conn.execute(
                "SELECT * FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        return None if row is None else self._row(row)

    def open_for_read(self, sop_instance_uid: str) -> BinaryIO:
        """Open the stored Part 10 file (binary); the path comes from the index."""
        stored = self.get(sop_instance_uid)
        if stored is None:
            raise InstanceNotFound(f"no instance {sop_instance_uid!r}")
        try:
            return open(stored.path, "rb")
        except FileNotFoundError as exc:
            raise InstanceNotFound(f"file of instance {sop_instance_uid} is missing") from exc

    def find(self, **equal_filters: Any) -> list[StoredInstance]:
        """Rows whose columns equal the given values (None matches NULL), oldest first."""
        unknown = set(equal_filters) - _FIELDS - {"path"}
        if unknown or "path" in equal_filters:
            raise ValueError(f"not filterable: {sorted(unknown | ({'path'} & set(equal_filters)))}")
        clauses = [f"{c} IS ?" for c in equal_filters]
        sql = "SELECT * FROM instances"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY received_at, sop_instance_uid"
        with self._lock:
            rows = self.conn.execute(sql, list(equal_filters.values())).fetchall()
        return [self._row(r) for r in rows]

    def mark_committed(self, uids: Iterable[str], when: float) -> int:
        """Record a successful Storage Commitment; returns how many rows were updated."""
        with self._lock, transaction(self.conn) as conn:
            cur = conn.executemany(
                "UPDATE instances SET committed_at = ? WHERE sop_instance_uid = ?",
                [(when, u) for u in uids],
            )
            return max(cur.rowcount, 0)

    def delete(self, sop_instance_uid: str) -> bool:
        """Remove the file (durably), then the row. False if no such instance."""
        with self._lock:
            stored = self.get(sop_instance_uid)
            if stored is None:
                return False
            try:
                stored.path.unlink(missing_ok=True)
                _fsync_dir(stored.path.parent)
            except OSError as exc:
                raise _os_error(exc, f"deleting {sop_instance_uid}") from exc
            with transaction(self.conn) as conn:
                conn.execute("DELETE FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))
            return True

    def eligible_for_deletion(self, retention_seconds: float, now: float) -> list[StoredInstance]:
        """Committed instances whose commitment is older than the retention period."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT * FROM instances WHERE committed_at IS NOT NULL AND committed_at <= ? "
                "ORDER BY committed_at",
                (now - retention_seconds,),
            ).fetchall()
        return [self._row(r) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self.conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0])

    def total_size(self) -> int:
        with self._lock:
            return int(self.conn.execute("SELECT COALESCE(SUM(size), 0) FROM instances").fetchone()[0])
