"""DIMSE status codes and their categories (PS3.7 Annex C, PS3.4 service-specific statuses).

Invariants:
- `category(code)` is total: every 16-bit code maps to exactly one `StatusCategory`, following the
  general rules of PS3.7 C.1 (0000 success; FF00/FF01 pending; FE00 cancel; 0001, 0107, 0116 and
  Bxxx warning; everything else, including Axxx, Cxxx, 01xx and 02xx, failure).
- `Status` holds one name per code (no aliases); a code that is not in `Status` is still a valid
  status and is described by its category.
- Pure data and functions; no I/O.
"""

from __future__ import annotations

from enum import Enum, IntEnum

__all__ = ["Status", "StatusCategory", "category", "describe"]


class StatusCategory(Enum):
    """The five status classes of PS3.7 C.1."""

    SUCCESS = "Success"
    PENDING = "Pending"
    CANCEL = "Cancel"
    WARNING = "Warning"
    FAILURE = "Failure"


class Status(IntEnum):
    """Status codes the agent sends or interprets, named as in PS3.7 Annex C and PS3.4."""

    # PS3.7 C.1 general statuses
    SUCCESS = 0x0000
    PENDING = 0xFF00
    PENDING_WARNING = 0xFF01  # PS3.4 C.4.1.1.4: optional keys not supported
    CANCEL = 0xFE00
    # PS3.7 C.4 / C.5: DIMSE-N and common warnings and failures
    NO_SUCH_ATTRIBUTE = 0x0105
    INVALID_ATTRIBUTE_VALUE = 0x0106
    ATTRIBUTE_LIST_ERROR = 0x0107  # warning
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_SOP_INSTANCE = 0x0112  # "No such object instance"
    NO_SUCH_EVENT_TYPE = 0x0113
    INVALID_ARGUMENT = 0x0115  # "Invalid argument value"
    ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116  # warning
    INVALID_OBJECT_INSTANCE = 0x0117
    NO_SUCH_SOP_CLASS = 0x0118
    CLASS_INSTANCE_CONFLICT = 0x0119
    MISSING_ATTRIBUTE = 0x0120
    MISSING_ATTRIBUTE_VALUE = 0x0121
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NO_SUCH_ACTION = 0x0123  # "No such action type"
    NOT_AUTHORIZED = 0x0124
    DUPLICATE_INVOCATION = 0x0210
    UNRECOGNIZED_OPERATION = 0x0211
    MISTYPED_ARGUMENT = 0x0212
    RESOURCE_LIMITATION = 0x0213
    # PS3.4 B.2.3 (Storage), C.4 (Query/Retrieve)
    OUT_OF_RESOURCES = 0xA700
    OUT_OF_RESOURCES_MATCHES = 0xA701
    OUT_OF_RESOURCES_SUBOPS = 0xA702
    MOVE_DESTINATION_UNKNOWN = 0xA801
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    UNABLE_TO_PROCESS = 0xC001
    UNABLE_TO_PROCESS_NOW = 0xC002  # C-MOVE: a transient condition, ask again (seed C-MOVE status table)
    COERCION = 0xB000  # also "Sub-operations complete, one or more failures" for C-GET/C-MOVE
    ELEMENTS_DISCARDED = 0xB006
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xB007
    # PS3.4 H.4 (Print Management) warnings
    MEMORY_ALLOCATION_NOT_SUPPORTED = 0xB600
    FILM_SESSION_PRINTING_NOT_SUPPORTED = 0xB601
    FILM_SESSION_EMPTY_PAGE = 0xB602
    FILM_BOX_EMPTY_PAGE = 0xB603
    IMAGE_DEMAGNIFIED = 0xB604
    DENSITY_OUT_OF_RANGE = 0xB605
    IMAGE_CROPPED = 0xB609
    IMAGE_DECIMATED = 0xB60A
    # PS3.4 H.4 (Print Management) failures
    FILM_SESSION_NO_FILM_BOX = 0xC600
    PRINT_QUEUE_FULL_FILM_SESSION = 0xC601
    PRINT_QUEUE_FULL_FILM_BOX = 0xC602
    IMAGE_LARGER_THAN_IMAGE_BOX = 0xC603
    INSUFFICIENT_PRINTER_MEMORY = 0xC605
    COMBINED_IMAGE_LARGER_THAN_IMAGE_BOX = 0xC613
    UNPRINTED_FILM_BOX_EXISTS = 0xC616


_WARNING_CODES = frozenset({0x0001, 0x0107, 0x0116})


def category(code: int) -> StatusCategory:
    """The class of a status code per PS3.7 C.1 (total over 0x0000..0xFFFF)."""
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f"status code out of range: {code!r}")
    if code == 0x0000:
        return StatusCategory.SUCCESS
    if code in (0xFF00, 0xFF01):
        return StatusCategory.PENDING
    if code == 0xFE00:
        return StatusCategory.CANCEL
    if code in _WARNING_CODES or code & 0xF000 == 0xB000:
        return StatusCategory.WARNING
    return StatusCategory.FAILURE


_DESCRIPTIONS: dict[int, str] = {
    Status.SUCCESS: "Success",
    Status.PENDING: "Pending: matches are continuing",
    Status.PENDING_WARNING: "Pending: matches are continuing, optional keys not supported",
    Status.CANCEL: "Cancel: operation terminated due to cancel request",
    0x0001: "Warning: requested optional attributes are not supported",
    Status.NO_SUCH_ATTRIBUTE: "Failure: no such attribute",
    Status.INVALID_ATTRIBUTE_VALUE: "Failure: invalid attribute value",
    Status.ATTRIBUTE_LIST_ERROR: "Warning: attribute list error",
    Status.PROCESSING_FAILURE: "Failure: processing failure",
    Status.DUPLICATE_SOP_INSTANCE: "Failure: duplicate SOP instance",
    Status.NO_SUCH_SOP_INSTANCE: "Failure: no such object instance",
    Status.NO_SUCH_EVENT_TYPE: "Failure: no such event type",
    Status.INVALID_ARGUMENT: "Failure: invalid argument value",
    Status.ATTRIBUTE_VALUE_OUT_OF_RANGE: "Warning: attribute value out of range",
    Status.INVALID_OBJECT_INSTANCE: "Failure: invalid object instance",
    Status.NO_SUCH_SOP_CLASS: "Failure: no such SOP class",
    Status.CLASS_INSTANCE_CONFLICT: "Failure: class-instance conflict",
    Status.MISSING_ATTRIBUTE: "Failure: missing attribute",
    Status.MISSING_ATTRIBUTE_VALUE: "Failure: missing attribute value",
    Status.SOP_CLASS_NOT_SUPPORTED: "Failure: SOP class not supported",
    Status.NO_SUCH_ACTION: "Failure: no such action type",
    Status.NOT_AUTHORIZED: "Refused: not authorized",
    Status.DUPLICATE_INVOCATION: "Failure: duplicate invocation",
    Status.UNRECOGNIZED_OPERATION: "Failure: unrecognized operation",
    Status.MISTYPED_ARGUMENT: "Failure: mistyped argument",
    Status.RESOURCE_LIMITATION: "Failure: resource limitation",
    Status.OUT_OF_RESOURCES: "Refused: out of resources",
    Status.OUT_OF_RESOURCES_MATCHES: "Refused: out of resources, unable to calculate number of matches",
    Status.OUT_OF_RESOURCES_SUBOPS: "Refused: out of resources, unable to perform sub-operations",
    Status.MOVE_DESTINATION_UNKNOWN: "Refused: move destination unknown",
    Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: "Error: identifier does not match SOP class",
    Status.CANNOT_UNDERSTAND: "Error: cannot understand",
    Status.UNABLE_TO_PROCESS: "Failure: unable to process",
    Status.UNABLE_TO_PROCESS_NOW: "Failure: unable to process at this time",
    Status.COERCION: "Warning: coercion of data elements (or sub-operations complete with failures)",
    Status.ELEMENTS_DISCARDED: "Warning: elements discarded",
    Status.DATASET_DOES_NOT_MATCH_SOP_CLASS: "Warning: data set does not match SOP class",
    Status.MEMORY_ALLOCATION_NOT_SUPPORTED: "Warning: memory allocation not supported",
    Status.FILM_SESSION_PRINTING_NOT_SUPPORTED: "Warning: film session printing (collation) is not supported",
    Status.FILM_SESSION_EMPTY_PAGE: "Warning: film session contains no image boxes (empty page)",
    Status.FILM_BOX_EMPTY_PAGE: "Warning: film box contains no image boxes (empty page)",
    Status.IMAGE_DEMAGNIFIED: "Warning: image larger than image box, demagnified",
    Status.DENSITY_OUT_OF_RANGE: "Warning: min or max density outside the printer's operating range",
    Status.IMAGE_CROPPED: "Warning: image larger than image box, cropped to fit",
    Status.IMAGE_DECIMATED: "Warning: image larger than image box, decimated to fit",
    Status.FILM_SESSION_NO_FILM_BOX: "Failure: film session contains no film boxes",
    Status.PRINT_QUEUE_FULL_FILM_SESSION: "Failure: unable to create print job, print queue is full",
    Status.PRINT_QUEUE_FULL_FILM_BOX: "Failure: unable to create print job, print queue is full",
    Status.IMAGE_LARGER_THAN_IMAGE_BOX: "Failure: image larger than image box",
    Status.INSUFFICIENT_PRINTER_MEMORY: "Failure: insufficient memory in printer to store the image",
    Status.COMBINED_IMAGE_LARGER_THAN_IMAGE_BOX: "Failure: combined print image larger than image box",
    Status.UNPRINTED_FILM_BOX_EXISTS: "Failure: an unprinted film box exists and film session printing is not supported",
}


def describe(code: int) -> str:
    """A one-line human description, e.g. ``"0xA700 Refused: out of resources"``."""
    text = _DESCRIPTIONS.get(code)
    if text is None:
        cat = category(code)
        if cat is StatusCategory.FAILURE and code & 0xF000 == 0xA000:
            text = "Refused: out of resources"
        elif cat is StatusCategory.FAILURE and code & 0xF000 == 0xC000:
            text = "Error: cannot understand"
        else:
            text = f"{cat.value}: unknown status"
    return f"0x{code:04X} {text}"
