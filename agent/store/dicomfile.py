"""DICOM Part 10 file framing without decoding: File Meta Information and data set structure.

Invariants:
- Nothing here loads an element value into memory except the small group 0002 values and the few
  top-level values a caller asks for (`scan_dataset(wanted=...)`, each at most `MAX_WANTED_VALUE`
  bytes): the File Meta Information is encoded and read with `struct`, and a data set is checked by
  walking element headers and seeking over values, so a 1 GiB object costs a few reads (PS3.10 7.1,
  PS3.5 7.1). The same walk that checks the structure yields the wanted values: one pass. A wanted
  top-level sequence is kept as the bytes of its items, read while they are walked (bounded the same
  way; one over the bound is named in `DataSetScan.oversized`).
- A UID that will name a path is validated first (`validate_uid`, PS3.5 9.1): digits and dots only, no
  empty component, no leading zero, at most 64 characters.
- Every failure is an `agent.errors.StoreError` subclass; no OSError, struct.error or RecursionError
  escapes a function here for malformed input.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Protocol

from agent.errors import StoreError

PREAMBLE = b"\x00" * 128 + b"DICM"

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
#: Transfer syntaxes whose data set is deflated as a whole (PS3.5 A.5; JPIP Referenced Deflate, A.7).
DEFLATED_TRANSFER_SYNTAXES = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})

#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 Table 7.1-1).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
#: A wanted value longer than this is skipped and named in `DataSetScan.oversized` (index attributes
#: are a few dozen bytes; an indexed sequence a few hundred).
MAX_WANTED_VALUE = 1 << 16
_MAX_DEPTH = 64
_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\Z")


class InvalidUID(StoreError):
    """A UID is not a valid DICOM UID (PS3.5 9.1), so it may not name a file."""


class NotDicom(StoreError):
    """The file is not a DICOM Part 10 file (no 'DICM' after the 128-byte preamble)."""


class DataSetError(StoreError):
    """The received data set cannot be parsed, is empty, or is truncated."""


def validate_uid(uid: str) -> str:
    """Return `uid` if it is a valid DICOM UID, else raise `InvalidUID`."""
    if not isinstance(uid, str) or len(uid) > 64 or not _UID_RE.match(uid):
        raise InvalidUID(f"invalid UID {uid!r}")
    return uid


# -- File Meta Information (PS3.10 7.1), always Explicit VR Little Endian ---------------------------


def _element(elem: int, vr: bytes, value: bytes) -> bytes:
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xI", 0x0002, elem, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, elem, vr, len(value)) + value


def _ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


@lru_cache(maxsize=64)  # AE titles: the same few for every instance received
def _text(value: str, max_len: int) -> bytes:
    # AE and SH: default character repertoire, no backslash (it separates values), space-padded.
    cleaned = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in value.strip())[:max_len]
    raw = cleaned.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def encode_file_meta(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    implementation_class_uid: str,
    implementation_version_name: str,
    source_ae: str = "",
    receiving_ae: str = "",
) -> bytes:
    """The preamble, 'DICM' and group 0002 with a correct (0002,0000) group length."""
    body = [
        _element(0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, b"UI", _ui(sop_class_uid)),
        _element(0x0003, b"UI", _ui(sop_instance_uid)),
        _element(0x0010, b"UI", _ui(transfer_syntax_uid)),
        _element(0x0012, b"UI", _ui(implementation_class_uid)),
    ]
    if implementation_version_name:
        body.append(_element(0x0013, b"SH", _text(implementation_version_name, 16)))
    if source_ae.strip():
        body.append(_element(0x0016, b"AE", _text(source_ae, 16)))
    if receiving_ae.strip():
        body.append(_element(0x0018, b"AE", _text(receiving_ae, 16)))
    payload = b"".join(body)
    return PREAMBLE + _element(0x0000, b"UL", struct.pack("<I", len(payload))) + payload


@dataclass(frozen=True, slots=True)
class FileMeta:
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    #: Byte offset of the first data set element: send `[dataset_offset, EOF)` as is.
    dataset_offset: int


_META_READ = 4096


def read_meta(path: str | os.PathLike[str]) -> FileMeta:
    """Parse the preamble and group 0002 of a Part 10 file; the data set is not read.

    The group is walked element by element (the group length is not trusted: some writers get it wrong),
    accepting the Implicit VR encoding some old writers used for it.
    """
    try:
        with open(path, "rb") as f:
            # One read: the File Meta Information is small. Reading element by element with a seek
            # after each one discards the buffer every time (0.75 ms a file; this is ~0.05 ms).
            buf = f.read(_META_READ)
            if len(buf) < 132 or buf[128:132] != b"DICM":
                raise NotDicom(f"{os.fspath(path)}: no 'DICM' prefix after the 128-byte preamble")
            values: dict[int, bytes] = {}
            offset = 132
            while True:
                if offset + 12 > len(buf):
                    buf += f.read(_META_READ)  # a File Meta Information larger than one read (rare)
                header = buf[offset : offset + 8]
                if len(header) < 8:
                    break
                group, elem = struct.unpack("<HH", header[:4])
                if group != 0x0002:
                    break
                vr = header[4:6]
                if vr.isalpha() and vr.isupper():
                    if vr in _LONG_VRS:
                        extra = buf[offset + 8 : offset + 12]
                        if len(extra) < 4:
                            raise NotDicom(f"{os.fspath(path)}: truncated File Meta Information")
                        (length,) = struct.unpack("<I", extra)
                        hlen = 12
                    else:
                        (length,) = struct.unpack("<H", header[6:8])
                        hlen = 8
                else:
                    (length,) = struct.unpack("<I", header[4:8])
                    hlen = 8
                if length == _UNDEFINED or length > 1 << 20:
                    raise NotDicom(f"{os.fspath(path)}: bad length in File Meta Information")
                while offset + hlen + length > len(buf):
                    more = f.read(max(_META_READ, offset + hlen + length - len(buf)))
                    if not more:
                        break
                    buf += more
                value = buf[offset + hlen : offset + hlen + length]
                if len(value) < length:
                    raise NotDicom(f"{os.fspath(path)}: truncated File Meta Information")
                values[elem] = value
                offset += hlen + length
    except OSError as exc:
        raise StoreError(f"cannot read {os.fspath(path)}: {exc}") from exc

    def text(elem: int) -> str:
        return values.get(elem, b"").decode("ascii", "replace").rstrip("\x00 ").strip()

    ts = text(0x0010)
    if not ts:
        raise NotDicom(f"{os.fspath(path)}: File Meta Information has no Transfer Syntax UID")
    return FileMeta(ts, text(0x0002), text(0x0003), offset)


# -- Data set structure walk (PS3.5 7.1 elements, 7.5 sequences, A.4 encapsulation) ------------------


class _Source(Protocol):
    def read(self, n: int) -> bytes: ...
    def skip(self, n: int) -> bool: ...


class _FileSource:
    """Reads and seeks within [offset, size) of an open file; `skip` refuses to pass the end."""

    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        self._f = f
        self._pos = offset
        self._size = size
        f.seek(offset)

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        self._pos += len(data)
        return data

    def skip(self, n: int) -> bool:
        if self._pos + n > self._size:
            return False
        self._pos += n
        self._f.seek(self._pos)
        return True


class _ViewsSource:
    """Reads and skips within the concatenation of `views` (a data set still in memory, as received:
    its PDUs' fragments), without joining them; `skip` refuses to pass the end."""

    def __init__(self, views: Sequence[bytes | bytearray | memoryview]) -> None:
        self._views = [memoryview(v).cast("B") for v in views if len(v)]
        self._i = 0  # the view being read
        self._pos = 0  # within it
        self._left = sum(len(v) for v in self._views)

    def read(self, n: int) -> bytes:
        n = min(n, self._left)
        view = self._views[self._i] if n else b""
        if self._pos + n <= len(view):  # the usual case: within one fragment
            data = bytes(view[self._pos : self._pos + n])
            self._advance(n)
            return data
        parts = []
        want = n
        while want:
            view = self._views[self._i]
            take = min(want, len(view) - self._pos)
            parts.append(view[self._pos : self._pos + take])
            self._advance(take)
            want -= take
        return b"".join(parts)

    def skip(self, n: int) -> bool:
        if n > self._left:
            return False
        self._advance(n)
        return True

    def _advance(self, n: int) -> None:
        self._left -= n
        pos, i, views = self._pos + n, self._i, self._views
        while i < len(views) - 1 and pos >= len(views[i]):
            pos -= len(views[i])
            i += 1
        self._i, self._pos = i, pos


class _InflatingSource:
    """A deflated data set (PS3.5 A.5), inflated in bounded chunks as it is walked."""

    _CHUNK = 1 << 16

    def __init__(self, f: BinaryIO, offset: int) -> None:
        self._f = f
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buf = b""
        self._eof = False
        f.seek(offset)

    def _fill(self, n: int) -> None:
        while len(self._buf) < n and not self._eof:
            if self._z.eof:
                # The deflate stream ended; bytes after it (a writer's even-length padding) are not
                # data set bytes. Without this the loop fed them to a finished stream forever.
                self._eof = True
                break
            if self._z.unconsumed_tail:
                data = self._z.unconsumed_tail
            else:
                data = self._f.read(self._CHUNK)
                if not data:
                    self._buf += self._z.flush()
                    self._eof = True
                    break
            try:
                self._buf += self._z.decompress(data, self._CHUNK)
            except zlib.error as exc:
                raise DataSetError(f"deflated data set is corrupt: {exc}") from exc

    def read(self, n: int) -> bytes:
        self._fill(n)
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def skip(self, n: int) -> bool:
        while n > 0:
            step = min(n, self._CHUNK)
            if len(self.read(step)) < step:
                return False
            n -= step
        return True


class _Recording:
    """A source that keeps what is read through it (skips become reads) up to `MAX_WANTED_VALUE` bytes;
    past that it forgets them (`parts` None) and skips again. Used only inside a wanted sequence."""

    def __init__(self, src: _Source) -> None:
        self._src = src
        self.parts: list[bytes] | None = []
        self._size = 0

    def _keep(self, data: bytes) -> None:
        if self.parts is not None:
            self._size += len(data)
            if self._size > MAX_WANTED_VALUE:
                self.parts = None
            else:
                self.parts.append(data)

    def read(self, n: int) -> bytes:
        data = self._src.read(n)
        self._keep(data)
        return data

    def skip(self, n: int) -> bool:
        if self.parts is None or self._size + n > MAX_WANTED_VALUE:
            self.parts = None
            return self._src.skip(n)
        data = self._src.read(n)
        self._keep(data)
        return len(data) == n


#: (element tag's group and element, a 4-byte length, a 2-byte length) unpackers, by little endian.
_UNPACK_HH_I_H = {
    little: (struct.Struct(e + "HH").unpack_from, struct.Struct(e + "I").unpack_from, struct.Struct(e + "H").unpack_from)
    for little, e in ((True, "<"), (False, ">"))
}


def _tag(group: int, elem: int) -> str:
    return f"({group:04X},{elem:04X})"


class _Walker:
    def __init__(
        self, src: _Source, *, implicit: bool, little: bool, wanted: frozenset[int] = frozenset()
    ) -> None:
        self.src = src
        self.implicit = implicit
        self.little = little
        self.wanted = wanted
        #: tag -> (VR as encoded, or b"" when implicit; raw value) for the wanted top-level elements.
        self.values: dict[int, tuple[bytes, bytes]] = {}
        #: Wanted top-level elements skipped because their value is over `MAX_WANTED_VALUE`.
        self.oversized: set[int] = set()

    def _exact(self, n: int, what: str) -> bytes:
        data = self.src.read(n)
        if len(data) < n:
            raise DataSetError(f"data set truncated in {what}")
        return data

    def _skip(self, n: int, what: str) -> None:
        if not self.src.skip(n):
            raise DataSetError(f"{what}: length {n} overruns the end of the data set")

    def elements(self, *, implicit: bool, little: bool, in_item: bool, depth: int) -> int:
        """Walk elements to EOF (top level) or to an Item Delimitation Item; return their count."""
        if depth > _MAX_DEPTH:
            raise DataSetError("sequences nested too deeply")
        unpack_hh, unpack_i, unpack_h = _UNPACK_HH_I_H[little]
        count = 0
        while True:
            header = self.src.read(8)
            if not header:
                if in_item:
                    raise DataSetError("data set truncated: item of undefined length not delimited")
                return count
            if len(header) < 8:
                raise DataSetError("data set truncated in an element header")
            group, elem = unpack_hh(header)
            if group == 0xFFFE:
                if in_item and elem == 0xE00D:
                    return count
                raise DataSetError(f"unexpected delimiter {_tag(group, elem)} in a data set")
            vr = b""
            if implicit:
                (length,) = unpack_i(header, 4)
            else:
                vr = header[4:6]
                if vr in _LONG_VRS:
                    (length,) = unpack_i(self._exact(4, "an element header"))
                elif vr.isalpha() and vr.isupper():
                    (length,) = unpack_h(header, 6)
                else:
                    raise DataSetError(f"element {_tag(group, elem)} has no valid VR")
            tag = group << 16 | elem
            if length != _UNDEFINED and not (depth == 0 and tag in self.wanted):
                # The usual element: skipped, its name formatted only for an error.
                if not self.src.skip(length):
                    raise DataSetError(f"element {_tag(group, elem)}: length {length} overruns the end of the data set")
                count += 1
                continue
            what = f"element {_tag(group, elem)}"
            if length == _UNDEFINED:
                if (group, elem) == (0x7FE0, 0x0010) or vr in (b"OB", b"OW"):
                    self.fragments(little=little)
                elif implicit or vr in (b"SQ", b"UN"):
                    # UN of undefined length holds an Implicit VR Little Endian sequence (PS3.5 6.2.2).
                    nested_implicit = implicit or vr == b"UN"
                    nested_little = little or vr == b"UN"
                    if depth == 0 and tag in self.wanted:
                        self._kept_sequence(tag, vr, nested_implicit, nested_little)
                    else:
                        self.sequence(implicit=nested_implicit, little=nested_little, depth=depth + 1)
                else:
                    raise DataSetError(f"{what} has undefined length but VR {vr.decode('ascii')}")
            elif length <= MAX_WANTED_VALUE:  # defined length here means wanted at the top level
                self.values[tag] = (vr, self._exact(length, what))
            else:
                self.oversized.add(tag)
                self._skip(length, what)
            count += 1

    def _kept_sequence(self, tag: int, vr: bytes, implicit: bool, little: bool) -> None:
        """Walk a wanted top-level sequence of undefined length, keeping its bytes (at most
        `MAX_WANTED_VALUE`) as a defined-length value: its items without the Sequence Delimitation Item."""
        outer = self.src
        recorder = _Recording(outer)
        self.src = recorder
        try:
            self.sequence(implicit=implicit, little=little, depth=1)
        finally:
            self.src = outer
        if recorder.parts is None:
            self.oversized.add(tag)
        else:
            self.values[tag] = (vr, b"".join(recorder.parts)[:-8])

    def sequence(self, *, implicit: bool, little: bool, depth: int) -> None:
        e = "<" if little else ">"
        while True:
            group, elem, length = struct.unpack(e + "HHI", self._exact(8, "a sequence"))
            if (group, elem) == (0xFFFE, 0xE0DD):
                return
            if (group, elem) != (0xFFFE, 0xE000):
                raise DataSetError(f"expected an item in a sequence, found {_tag(group, elem)}")
            if length == _UNDEFINED:
                self.elements(implicit=implicit, little=little, in_item=True, depth=depth)
            else:
                self._skip(length, "sequence item")

    def fragments(self, *, little: bool) -> None:
        # Encapsulated pixel data: Basic Offset Table item, fragment items, then the Sequence
        # Delimitation Item (PS3.5 A.4); every item has a defined length.
        e = "<" if little else ">"
        while True:
            group, elem, length = struct.unpack(e + "HHI", self._exact(8, "encapsulated pixel data"))
            if (group, elem) == (0xFFFE, 0xE0DD):
                return
            if (group, elem) != (0xFFFE, 0xE000) or length == _UNDEFINED:
                raise DataSetError(f"bad item {_tag(group, elem)} in encapsulated pixel data")
            self._skip(length, "pixel data fragment")


@dataclass(frozen=True, slots=True)
class DataSetScan:
    """What one walk of a data set found: its top-level element count and the wanted raw values."""

    count: int
    #: tag -> (VR as encoded, b"" in Implicit VR; raw value bytes), top level only. A sequence's value
    #: is its items as a defined-length value (an undefined-length one loses its delimitation item).
    values: dict[int, tuple[bytes, bytes]]
    implicit: bool
    little: bool
    #: Wanted tags present but not kept: value over `MAX_WANTED_VALUE` bytes.
    oversized: frozenset[int] = frozenset()


def scan_dataset(
    path: str | os.PathLike[str],
    offset: int,
    transfer_syntax_uid: str,
    wanted: frozenset[int] = frozenset(),
) -> DataSetScan:
    """Walk the top-level elements of the data set at `offset` to EOF, keeping the `wanted` values.

    Raises `DataSetError` if the data set is empty, an element's length overruns the file, or an
    undefined-length sequence or encapsulated pixel data is not delimited before EOF.
    """
    try:
        with open(path, "rb", buffering=1 << 16) as f:
            src: _Source
            if transfer_syntax_uid in DEFLATED_TRANSFER_SYNTAXES:
                src = _InflatingSource(f, offset)
            else:
                src = _FileSource(f, offset, os.fstat(f.fileno()).st_size)
            return _scan(src, transfer_syntax_uid, wanted)
    except OSError as exc:
        raise StoreError(f"cannot read {os.fspath(path)}: {exc}") from exc


def scan_dataset_views(
    views: Sequence[bytes | bytearray | memoryview],
    transfer_syntax_uid: str,
    wanted: frozenset[int] = frozenset(),
) -> DataSetScan:
    """`scan_dataset` of a whole data set still in memory as the fragments it was received in (what
    was just written to its file, so no read back). Not for a deflated transfer syntax."""
    if transfer_syntax_uid in DEFLATED_TRANSFER_SYNTAXES:
        raise ValueError("a deflated data set is scanned from its file")
    return _scan(_ViewsSource(views), transfer_syntax_uid, wanted)


def _scan(src: _Source, transfer_syntax_uid: str, wanted: frozenset[int]) -> DataSetScan:
    implicit = transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN
    little = transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN
    walker = _Walker(src, implicit=implicit, little=little, wanted=wanted)
    count = walker.elements(implicit=implicit, little=little, in_item=False, depth=0)
    if count == 0:
        raise DataSetError("data set is empty")
    return DataSetScan(count, walker.values, implicit, little,
                       frozenset(walker.oversized) if walker.oversized else frozenset())


def check_dataset(path: str | os.PathLike[str], offset: int, transfer_syntax_uid: str) -> int:
    """`scan_dataset` keeping no values; returns the number of top-level elements."""
    return scan_dataset(path, offset, transfer_syntax_uid).count


def object_relpath(sop_instance_uid: str) -> Path:
    """`objects/<2 hex of sha1(uid)>/<uid>.dcm`, relative to the data directory."""
    uid = validate_uid(sop_instance_uid)
    bucket = hashlib.sha1(uid.encode("ascii")).hexdigest()[:2]
    return Path("objects", bucket, f"{uid}.dcm")
