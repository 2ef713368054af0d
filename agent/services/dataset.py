"""Data sets on the wire: decode and encode a DIMSE data set for a presentation context's transfer syntax.

Invariants:
- Only the uncompressed transfer syntaxes carry DIMSE data sets here (Implicit VR LE, Explicit VR LE,
  Explicit VR BE); anything else raises `DataSetError`, which services answer with their
  "cannot understand"/A900-style status, never a crash.
- `decode(..., eager=True)` converts every element (and every sequence item) once, so that matching
  over a cache does no lazy conversion per query; text is decoded with the data set's own
  Specific Character Set (an item inherits its parent's, PS3.5 6.1.2.5.3).
- `encode` writes text with the data set's Specific Character Set, so a response carries the item's own
  charset and ISO_IR 100 / ISO_IR 192 names round-trip.
"""

from __future__ import annotations

import warnings
from io import BytesIO

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

# One exception for "a data set we cannot read or write", whether it came in a DIMSE message or from a
# stored file: the store's (a StoreError, hence an AgentError).
from agent.store.dicomfile import DataSetError

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"

_ENCODINGS = {
    IMPLICIT_VR_LE: (True, True),
    EXPLICIT_VR_LE: (False, True),
    EXPLICIT_VR_BE: (False, False),
}


def _flags(transfer_syntax: str) -> tuple[bool, bool]:
    try:
        return _ENCODINGS[transfer_syntax]
    except KeyError:
        raise DataSetError(f"transfer syntax {transfer_syntax} is not supported for DIMSE data sets") from None


def decode(data: bytes | memoryview, transfer_syntax: str = EXPLICIT_VR_LE, *, eager: bool = False) -> Dataset:
    """The pydicom Dataset in `data`; `eager` converts every element now (see module invariants)."""
    implicit, little = _flags(transfer_syntax)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fp = DicomBytesIO(bytes(data))
            fp.is_implicit_VR = implicit
            fp.is_little_endian = little
            ds = read_dataset(fp, implicit, little)
            if eager:
                convert_all(ds)
    except DataSetError:
        raise
    except Exception as exc:  # pydicom raises many types on malformed input
        raise DataSetError(f"malformed data set: {exc}") from exc
    return ds


def convert_all(ds: Dataset) -> None:
    """Convert every raw element of `ds` (recursively) to its Python value."""
    for elem in ds:  # iteration converts RawDataElement -> DataElement
        if elem.VR == "SQ":
            for item in elem.value:
                convert_all(item)


def encode(ds: Dataset, transfer_syntax: str = EXPLICIT_VR_LE) -> bytes:
    """`ds` encoded for `transfer_syntax` (no File Meta, no preamble)."""
    implicit, little = _flags(transfer_syntax)
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_dataset(fp, ds)
    except Exception as exc:
        raise DataSetError(f"cannot encode data set: {exc}") from exc
    return fp.getvalue()


def read_part10(path_or_bytes: str | bytes, *, eager: bool = True) -> Dataset:
    """A worklist file (.wl, Part 10 with or without File Meta, as dump2dcm writes) as a Dataset."""
    from pydicom import dcmread

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
            ds = dcmread(src, force=True)
            if eager:
                convert_all(ds)
    except Exception as exc:
        raise DataSetError(f"cannot read {path_or_bytes if isinstance(path_or_bytes, str) else 'data'}: {exc}") from exc
    out = Dataset()
    out.update(ds)  # drop File Meta: only the data set itself is served
    return out


__all__ = ["DataSetError", "EXPLICIT_VR_BE", "EXPLICIT_VR_LE", "IMPLICIT_VR_LE", "convert_all", "decode",
           "encode", "read_part10"]
