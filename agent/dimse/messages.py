"""DIMSE messages as values, and their command-set codec (PS3.7 9.3 and 10.3).

Invariants:
- One frozen, slotted value class (`agent.ul.values.value`: a dataclass's behaviour) per DIMSE message (PS3.7 Tables 9.3-1 .. 9.3-14 and 10.3-1 .. 10.3-12);
  all fields are keyword-only and named after the command element keywords in snake case.
- A message is valid once constructed: mandatory fields have no default and are range-checked
  (16-bit integers 0..65535, UIDs 1..64 ASCII characters, AE titles 1..16 and Error Comment 1..64
  printable ASCII without leading/trailing spaces since those are padding (PS3.5 6.2), tags
  32-bit, tag lists non-empty); conditional and user-optional fields default to None and are left out on encoding.
- `has_dataset` is the Command Data Set Type (0000,0800): encoded 0x0001 when True and 0x0101 when
  False; on decoding any value other than 0x0101 means a data set follows (PS3.7 E.1).
- `decode_message(encode_message(m)) == m` for every valid message `m`.
- `decode_message` raises `DIMSEError` naming the problem: an unknown Command Field, a mandatory element
  missing for that command, or a value out of range. Elements a command does not use are ignored.
- `decode_command` (what the assembler uses) is the same, except for a *request* whose Message ID is
  sound but whose SOP Class or Instance UID cannot be carried as one (over 64 characters, a NUL or a
  space inside, non-ASCII bytes): such a command is still well formed and answerable, so it decodes to
  an `UnusableRequest` carrying the failure response to send instead of a protocol error that would
  abort the association: C000 Cannot understand for a C-STORE (PS3.4 B.2.3, what the Storage SCP
  answers for any UID it cannot use), otherwise 0122 SOP Class Not Supported for a class UID and 0117
  Invalid SOP Instance for an instance UID (PS3.7 C.5). Services never see such a value; a printable
  value such as "1.2.abc" is carried and the service decides.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeAlias, TypeVar

from agent.dimse.commands import (
    DATA_SET_PRESENT,
    NO_DATA_SET,
    CommandField,
    CommandValue,
    Priority,
    Tag,
    decode_command_set,
    encode_command_set,
)
from agent.dimse.errors import DIMSEError
from agent.ul.values import value
from agent.ul.vr import is_ae_title

__all__ = [
    "CCancelRQ", "CEchoRQ", "CEchoRSP", "CFindRQ", "CFindRSP", "CGetRQ", "CGetRSP", "CMoveRQ",
    "CMoveRSP", "CStoreRQ", "CStoreRSP", "DIMSEError", "Message", "NActionRQ", "NActionRSP",
    "NCreateRQ", "NCreateRSP", "NDeleteRQ", "NDeleteRSP", "NEventReportRQ", "NEventReportRSP",
    "NGetRQ", "NGetRSP", "NSetRQ", "NSetRSP", "Request", "Response", "UnusableRequest", "command_name",
    "decode_command", "decode_message", "describe_command", "encode_message", "is_request",
]

# field name -> command element tag (PS3.7 Annex E)
_FIELD_TAGS: dict[str, int] = {
    "affected_sop_class_uid": Tag.AffectedSOPClassUID,
    "requested_sop_class_uid": Tag.RequestedSOPClassUID,
    "message_id": Tag.MessageID,
    "message_id_being_responded_to": Tag.MessageIDBeingRespondedTo,
    "move_destination": Tag.MoveDestination,
    "priority": Tag.Priority,
    "status": Tag.Status,
    "offending_element": Tag.OffendingElement,
    "error_comment": Tag.ErrorComment,
    "error_id": Tag.ErrorID,
    "affected_sop_instance_uid": Tag.AffectedSOPInstanceUID,
    "requested_sop_instance_uid": Tag.RequestedSOPInstanceUID,
    "event_type_id": Tag.EventTypeID,
    "attribute_identifier_list": Tag.AttributeIdentifierList,
    "action_type_id": Tag.ActionTypeID,
    "number_of_remaining_suboperations": Tag.NumberOfRemainingSuboperations,
    "number_of_completed_suboperations": Tag.NumberOfCompletedSuboperations,
    "number_of_failed_suboperations": Tag.NumberOfFailedSuboperations,
    "number_of_warning_suboperations": Tag.NumberOfWarningSuboperations,
    "move_originator_ae_title": Tag.MoveOriginatorApplicationEntityTitle,
    "move_originator_message_id": Tag.MoveOriginatorMessageID,
}

_US_FIELDS = frozenset({
    "message_id", "message_id_being_responded_to", "status", "error_id", "event_type_id",
    "action_type_id", "number_of_remaining_suboperations", "number_of_completed_suboperations",
    "number_of_failed_suboperations", "number_of_warning_suboperations", "move_originator_message_id",
})
_UID_FIELDS = frozenset({
    "affected_sop_class_uid", "requested_sop_class_uid", "affected_sop_instance_uid",
    "requested_sop_instance_uid",
})
_AE_FIELDS = frozenset({"move_destination", "move_originator_ae_title"})
_TAG_LIST_FIELDS = frozenset({"offending_element", "attribute_identifier_list"})


def _uid_fits(value: Any) -> bool:
    """What a UI command element can carry: 1..64 printable ASCII characters, no space (PS3.5 6.2).
    Whether the digits make a valid UID is the service's question (it may answer C000)."""
    return (
        isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() and value.isprintable()
        and " " not in value
    )


def _check(name: str, value: Any) -> None:
    """Raise ValueError unless `value` fits the command element behind field `name`."""
    if name in _US_FIELDS:
        if type(value) is bool or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise ValueError(f"{name} must be an integer 0..65535, got {value!r}")
    elif name in _UID_FIELDS:
        if not _uid_fits(value):
            raise ValueError(f"{name} must be a UID of 1..64 ASCII characters, got {value!r}")
    elif name in _AE_FIELDS:
        # The one AE title rule; decoding strips the padding, so none may be left (PS3.5 6.2).
        if not is_ae_title(value) or value != value.strip(" "):
            raise ValueError(f"{name} must be an AE title of 1..16 characters, got {value!r}")
    elif name == "error_comment":
        if (
            not isinstance(value, str) or not 0 < len(value) <= 64 or value != value.strip(" ")
            or not value.isascii() or not value.isprintable() or "\\" in value
        ):
            raise ValueError(
                f"error_comment must be 1..64 printable ASCII characters without padding, got {value!r}"
            )
    elif name in _TAG_LIST_FIELDS:
        if (
            not isinstance(value, tuple) or not value
            or not all(type(t) is int and 0 <= t <= 0xFFFF_FFFF for t in value)
        ):
            raise ValueError(f"{name} must be a non-empty tuple of 32-bit tags, got {value!r}")


_R = TypeVar("_R", bound="_Base")


class _Base:
    """Shared behaviour; concrete messages are the dataclasses below."""

    __slots__ = ()
    COMMAND_FIELD: ClassVar[CommandField]
    _TAGS: ClassVar[tuple[tuple[str, int], ...]]
    _REQUIRED: ClassVar[tuple[str, ...]]

    def __post_init__(self) -> None:
        for name, _tag in self._TAGS:
            value = getattr(self, name)
            if value is None:
                if name in self._REQUIRED:
                    raise ValueError(f"{type(self).__name__}: {name} is required")
                continue
            if name == "priority":
                try:
                    object.__setattr__(self, name, Priority(value))
                except ValueError:
                    raise ValueError(f"priority must be 0, 1 or 2, got {value!r}") from None
                continue
            _check(name, value)
        if not isinstance(getattr(self, "has_dataset"), bool):
            raise ValueError("has_dataset must be a bool")

    def _respond(self, cls: type[_R], status: int, copy: dict[str, Any], kw: dict[str, Any]) -> _R:
        return cls(status=status, **{**copy, **kw})

# `value` rather than dataclass: the same classes without compiling six functions each at import, a
# cost every `dicom-agent store` run paid (agent/ul/values.py). Every class keeps its own docstring.
_frozen = value(kw_only=True)


@_frozen
class _StatusDetail(_Base):
    """Fields every response carries: the status and its detail elements (PS3.7 Annex C)."""

    message_id_being_responded_to: int
    status: int
    offending_element: tuple[int, ...] | None = None
    error_comment: str | None = None
    error_id: int | None = None


@_frozen
class _NStatusDetail(_StatusDetail):
    """DIMSE-N responses: Affected SOP Class/Instance and Attribute Identifier List (PS3.7 C.4.2)."""

    affected_sop_class_uid: str | None = None
    affected_sop_instance_uid: str | None = None
    attribute_identifier_list: tuple[int, ...] | None = None


# --- DIMSE-C (PS3.7 9.3) ---------------------------------------------------------------------


@_frozen
class CEchoRSP(_StatusDetail):
    """C-ECHO-RSP, the response (PS3.7 9.3.5)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.C_ECHO_RSP
    affected_sop_class_uid: str | None = None
    has_dataset: bool = False


@_frozen
class CEchoRQ(_Base):
    """C-ECHO-RQ, the request (PS3.7 9.3.5)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.C_ECHO_RQ
    message_id: int
    affected_sop_class_uid: str
    has_dataset: bool = False

    def response(self, status: int = 0x0000, **kw: Any) -> CEchoRSP:
        copy = {"message_id_being_responded_to": self.message_id,
                "affected_sop_class_uid": self.affected_sop_class_uid}
        return self._respond(CEchoRSP, status, copy, kw)


@_frozen
class CStoreRSP(_StatusDetail):
    """C-STORE-RSP, the response (PS3.7 9.3.1)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.C_STORE_RSP
    affected_sop_class_uid: str | None = None
    affected_sop_instance_uid: str | None = None
    has_dataset: bool = False


@_frozen
class CStoreRQ(_Base):
    """C-STORE-RQ, the request (PS3.7 9.3.1)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.C_STORE_RQ
    message_id: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    priority: Priority = Priority.MEDIUM
    move_originator_ae_title: str | None = None
    move_originator_message_id: int | None = None
    has_dataset: bool = True

    def response(self, status: int, **kw: Any) -> CStoreRSP:
        copy = {"message_id_being_responded_to": self.message_id,
                "affected_sop_class_uid": self.affected_sop_class_uid,
                "affected_sop_instance_uid": self.affected_sop_instance_uid}
        return self._respond(CStoreRSP, status, copy, kw)


@_frozen
class CFindRSP(_StatusDetail):
    """C-FIND-RSP, the response (PS3.7 9.3.2)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.C_FIND_RSP
    affected_sop_class_uid: str | None = None
    has_dataset: bool = False  # True for Pending responses carrying an Identifier


@_frozen
class CFindRQ(_Base):
    """C-FIND-RQ, the request (PS3.7 9.3.2)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.C_FIND_RQ
    message_id: int
    affected_sop_class_uid: str
    priority: Priority = Priority.MEDIUM
    has_dataset: bool = True

    def response(self, status: int, **kw: Any) -> CFindRSP:
        copy = {"message_id_being_responded_to": self.message_id,
                "affected_sop_class_uid": self.affected_sop_class_uid}
        return self._respond(CFindRSP, status, copy, kw)


@_frozen
class CGetRSP(_StatusDetail):
    """C-GET-RSP, the response (PS3.7 9.3.3)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.C_GET_RSP
    affected_sop_class_uid: str | None = None
    number_of_remaining_suboperations: int | None = None
    number_of_completed_suboperations: int | None = None
    number_of_failed_suboperations: int | None = None
    number_of_warning_suboperations: int | None = None
    has_dataset: bool = False


@_frozen
class CGetRQ(_Base):
    """C-GET-RQ, the request (PS3.7 9.3.3)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.C_GET_RQ
    message_id: int
    affected_sop_class_uid: str
    priority: Priority = Priority.MEDIUM
    has_dataset: bool = True

    def response(self, status: int, **kw: Any) -> CGetRSP:
        copy = {"message_id_being_responded_to": self.message_id,
                "affected_sop_class_uid": self.affected_sop_class_uid}
        return self._respond(CGetRSP, status, copy, kw)


@_frozen
class CMoveRSP(_StatusDetail):
    """C-MOVE-RSP, the response (PS3.7 9.3.4)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.C_MOVE_RSP
    affected_sop_class_uid: str | None = None
    number_of_remaining_suboperations: int | None = None
    number_of_completed_suboperations: int | None = None
    number_of_failed_suboperations: int | None = None
    number_of_warning_suboperations: int | None = None
    has_dataset: bool = False


@_frozen
class CMoveRQ(_Base):
    """C-MOVE-RQ, the request (PS3.7 9.3.4)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.C_MOVE_RQ
    message_id: int
    affected_sop_class_uid: str
    move_destination: str
    priority: Priority = Priority.MEDIUM
    has_dataset: bool = True

    def response(self, status: int, **kw: Any) -> CMoveRSP:
        copy = {"message_id_being_responded_to": self.message_id,
                "affected_sop_class_uid": self.affected_sop_class_uid}
        return self._respond(CMoveRSP, status, copy, kw)


@_frozen
class CCancelRQ(_Base):
    """C-CANCEL-RQ (PS3.7 9.3.2.3 and others): cancels the operation with that Message ID."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.C_CANCEL_RQ
    message_id_being_responded_to: int
    has_dataset: bool = False


# --- DIMSE-N (PS3.7 10.3) --------------------------------------------------------------------


@_frozen
class NEventReportRSP(_NStatusDetail):
    """N-EVENT-REPORT-RSP, the response (PS3.7 10.3.1)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.N_EVENT_REPORT_RSP
    event_type_id: int | None = None
    has_dataset: bool = False


@_frozen
class NEventReportRQ(_Base):
    """N-EVENT-REPORT-RQ, the request (PS3.7 10.3.1)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.N_EVENT_REPORT_RQ
    message_id: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    event_type_id: int
    has_dataset: bool = True

    def response(self, status: int, **kw: Any) -> NEventReportRSP:
        copy = {"message_id_being_responded_to": self.message_id,
                "affected_sop_class_uid": self.affected_sop_class_uid,
                "affected_sop_instance_uid": self.affected_sop_instance_uid,
                "event_type_id": self.event_type_id}
        return self._respond(NEventReportRSP, status, copy, kw)


@_frozen
class NGetRSP(_NStatusDetail):
    """N-GET-RSP, the response (PS3.7 10.3.2)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.N_GET_RSP
    has_dataset: bool = False  # True when the Attribute List follows


@_frozen
class NGetRQ(_Base):
    """N-GET-RQ, the request (PS3.7 10.3.2)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.N_GET_RQ
    message_id: int
    requested_sop_class_uid: str
    requested_sop_instance_uid: str
    attribute_identifier_list: tuple[int, ...] | None = None
    has_dataset: bool = False

    def response(self, status: int, **kw: Any) -> NGetRSP:
        copy = {"message_id_being_responded_to": self.message_id,
                "affected_sop_class_uid": self.requested_sop_class_uid,
                "affected_sop_instance_uid": self.requested_sop_instance_uid}
        return self._respond(NGetRSP, status, copy, kw)


@_frozen
class NSetRSP(_NStatusDetail):
    """N-SET-RSP, the response (PS3.7 10.3.3)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.N_SET_RSP
    has_dataset: bool = False


@_frozen
class NSetRQ(_Base):
    """N-SET-RQ, the request (PS3.7 10.3.3)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.N_SET_RQ
    message_id: int
    requested_sop_class_uid: str
    requested_sop_instance_uid: str
    has_dataset: bool = True

    def response(self, status: int, **kw: Any) -> NSetRSP:
        copy = {"message_id_being_responded_to": self.message_id,
                "affected_sop_class_uid": self.requested_sop_class_uid,
                "affected_sop_instance_uid": self.requested_sop_instance_uid}
        return self._respond(NSetRSP, status, copy, kw)


@_frozen
class NActionRSP(_NStatusDetail):
    """N-ACTION-RSP, the response (PS3.7 10.3.4)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.N_ACTION_RSP
    action_type_id: int | None = None
    has_dataset: bool = False


@_frozen
class NActionRQ(_Base):
    """N-ACTION-RQ, the request (PS3.7 10.3.4)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.N_ACTION_RQ
    message_id: int
    requested_sop_class_uid: str
    requested_sop_instance_uid: str
    action_type_id: int
    has_dataset: bool = True

    def response(self, status: int, **kw: Any) -> NActionRSP:
        copy = {"message_id_being_responded_to": self.message_id,
                "affected_sop_class_uid": self.requested_sop_class_uid,
                "affected_sop_instance_uid": self.requested_sop_instance_uid,
                "action_type_id": self.action_type_id}
        return self._respond(NActionRSP, status, copy, kw)


@_frozen
class NCreateRSP(_NStatusDetail):
    """N-CREATE-RSP, the response (PS3.7 10.3.5)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.N_CREATE_RSP
    has_dataset: bool = False


@_frozen
class NCreateRQ(_Base):
    """N-CREATE-RQ, the request (PS3.7 10.3.5)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.N_CREATE_RQ
    message_id: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str | None = None  # the SCP assigns one when absent (PS3.7 10.1.5)
    has_dataset: bool = True

    def response(self, status: int, **kw: Any) -> NCreateRSP:
        """The response; pass ``affected_sop_instance_uid=`` when the SCP assigned the UID."""
        copy = {"message_id_being_responded_to": self.message_id,
                "affected_sop_class_uid": self.affected_sop_class_uid,
                "affected_sop_instance_uid": self.affected_sop_instance_uid}
        return self._respond(NCreateRSP, status, copy, kw)


@_frozen
class NDeleteRSP(_NStatusDetail):
    """N-DELETE-RSP, the response (PS3.7 10.3.6)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.N_DELETE_RSP
    has_dataset: bool = False


@_frozen
class NDeleteRQ(_Base):
    """N-DELETE-RQ, the request (PS3.7 10.3.6)."""

    COMMAND_FIELD: ClassVar[CommandField] = CommandField.N_DELETE_RQ
    message_id: int
    requested_sop_class_uid: str
    requested_sop_instance_uid: str
    has_dataset: bool = False

    def response(self, status: int, **kw: Any) -> NDeleteRSP:
        copy = {"message_id_being_responded_to": self.message_id,
                "affected_sop_class_uid": self.requested_sop_class_uid,
                "affected_sop_instance_uid": self.requested_sop_instance_uid}
        return self._respond(NDeleteRSP, status, copy, kw)


Request: TypeAlias = (
    CEchoRQ | CStoreRQ | CFindRQ | CGetRQ | CMoveRQ | CCancelRQ | NEventReportRQ | NGetRQ | NSetRQ
    | NActionRQ | NCreateRQ | NDeleteRQ
)
Response: TypeAlias = (
    CEchoRSP | CStoreRSP | CFindRSP | CGetRSP | CMoveRSP | NEventReportRSP | NGetRSP | NSetRSP
    | NActionRSP | NCreateRSP | NDeleteRSP
)
Message: TypeAlias = Request | Response

_CLASSES: tuple[type[_Base], ...] = (
    CEchoRQ, CEchoRSP, CStoreRQ, CStoreRSP, CFindRQ, CFindRSP, CGetRQ, CGetRSP, CMoveRQ, CMoveRSP,
    CCancelRQ, NEventReportRQ, NEventReportRSP, NGetRQ, NGetRSP, NSetRQ, NSetRSP, NActionRQ,
    NActionRSP, NCreateRQ, NCreateRSP, NDeleteRQ, NDeleteRSP,
)
for _cls in _CLASSES:
    _fields = [f for f in dataclasses.fields(_cls) if f.name != "has_dataset"]  # type: ignore[arg-type]
    _cls._TAGS = tuple(sorted(((f.name, _FIELD_TAGS[f.name]) for f in _fields), key=lambda p: p[1]))
    _cls._REQUIRED = tuple(
        f.name for f in _fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
_BY_COMMAND_FIELD: dict[int, type[_Base]] = {c.COMMAND_FIELD: c for c in _CLASSES}
del _cls, _fields


def encode_message(msg: Message) -> bytes:
    """The command set of `msg`, Implicit VR Little Endian with its group length (PS3.7 6.3.1)."""
    elements: dict[int, CommandValue] = {
        Tag.CommandField: msg.COMMAND_FIELD,
        Tag.CommandDataSetType: DATA_SET_PRESENT if msg.has_dataset else NO_DATA_SET,
    }
    for name, tag in msg._TAGS:
        value = getattr(msg, name)
        if value is not None:
            elements[tag] = value
    return encode_command_set(elements)


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Decode a complete command set into its message; raises `DIMSEError` (see module docstring)."""
    elements = decode_command_set(data)
    command_field = elements.get(Tag.CommandField)
    if command_field is None:
        raise DIMSEError("command set has no (0000,0100) Command Field")
    cls = _BY_COMMAND_FIELD.get(command_field)  # type: ignore[arg-type]
    if cls is None:
        raise DIMSEError(f"unknown Command Field 0x{command_field:04X}")
    data_set_type = elements.get(Tag.CommandDataSetType)
    if data_set_type is None:
        raise DIMSEError(f"{cls.__name__} has no (0000,0800) Command Data Set Type")
    kwargs = {name: elements[tag] for name, tag in cls._TAGS if tag in elements}
    missing = [name for name in cls._REQUIRED if name not in kwargs]
    if missing:
        raise DIMSEError(f"{cls.__name__} is missing mandatory element(s): {', '.join(missing)}")
    try:
        return cls(has_dataset=data_set_type != NO_DATA_SET, **kwargs)  # type: ignore[return-value]
    except (ValueError, TypeError) as exc:
        raise DIMSEError(f"{cls.__name__}: {exc}") from None


# --- requests that are well formed but name something that is not a UID -----------------------

_RESPONSE_OF: dict[type[_Base], type[_Base]] = {
    CEchoRQ: CEchoRSP, CStoreRQ: CStoreRSP, CFindRQ: CFindRSP, CGetRQ: CGetRSP, CMoveRQ: CMoveRSP,
    NEventReportRQ: NEventReportRSP, NGetRQ: NGetRSP, NSetRQ: NSetRSP, NActionRQ: NActionRSP,
    NCreateRQ: NCreateRSP, NDeleteRQ: NDeleteRSP,
}
_INSTANCE_FIELDS = ("affected_sop_instance_uid", "requested_sop_instance_uid")
_CLASS_FIELDS = ("affected_sop_class_uid", "requested_sop_class_uid")
_KEYWORD = {
    "affected_sop_class_uid": "Affected SOP Class UID", "requested_sop_class_uid": "Requested SOP Class UID",
    "affected_sop_instance_uid": "Affected SOP Instance UID",
    "requested_sop_instance_uid": "Requested SOP Instance UID",
}
INVALID_SOP_INSTANCE = 0x0117  # PS3.7 C.5 "Invalid SOP Instance" (violates the UID rules)
SOP_CLASS_NOT_SUPPORTED = 0x0122  # PS3.7 C.5 "Refused: SOP Class not supported"
CANNOT_UNDERSTAND = 0xC000  # PS3.4 B.2.3 Storage "Error: Cannot understand"


@value
class UnusableRequest:
    """A request that cannot be acted on but must be answered: `response` is the failure to send.

    `has_dataset` says whether a data set follows (it is read and discarded); `problem` says why, for
    the log. The bad value itself is kept only in `problem`, escaped."""

    request_type: type
    message_id: int
    has_dataset: bool
    response: Response
    problem: str


def decode_command(data: bytes | bytearray | memoryview) -> Message | UnusableRequest:
    """`decode_message`, or an `UnusableRequest` for a request with a bad UID (module docstring)."""
    try:
        return decode_message(data)
    except DIMSEError:
        unusable = _unusable(data)
        if unusable is None:
            raise
        return unusable


def _unusable(data: bytes | bytearray | memoryview) -> UnusableRequest | None:
    elements = decode_command_set(data)
    cls = _BY_COMMAND_FIELD.get(elements.get(Tag.CommandField))  # type: ignore[arg-type]
    response_cls = _RESPONSE_OF.get(cls)  # type: ignore[arg-type]
    message_id = elements.get(Tag.MessageID)
    data_set_type = elements.get(Tag.CommandDataSetType)
    if cls is None or response_cls is None or data_set_type is None:
        return None
    if type(message_id) is not int or not 0 <= message_id <= 0xFFFF:
        return None
    kwargs = {name: elements[tag] for name, tag in cls._TAGS if tag in elements}
    bad = [name for name in _INSTANCE_FIELDS + _CLASS_FIELDS if name in kwargs and not _uid_fits(kwargs[name])]
    if not bad:
        return None  # something else is wrong: a protocol error after all
    for name in bad:
        kwargs[name] = "1"  # a stand-in, only to check that nothing *else* is wrong
    try:
        cls(has_dataset=data_set_type != NO_DATA_SET, **kwargs)
    except (ValueError, TypeError):
        return None
    if cls is CStoreRQ:
        status = CANNOT_UNDERSTAND  # the Storage service's own failure (PS3.4 B.2.3), as for a bad UID in the data set
    elif any(n in _CLASS_FIELDS for n in bad):
        status = SOP_CLASS_NOT_SUPPORTED
    else:
        status = INVALID_SOP_INSTANCE
    problem = "; ".join(f"{_KEYWORD[n]} is not a UID: {elements[_FIELD_TAGS[n]]!r}" for n in bad)
    # Echo only values that are sound; a response is never built from the bad one.
    good = {"affected_sop_class_uid": None, "affected_sop_instance_uid": None}
    for name in ("affected_sop_class_uid", "affected_sop_instance_uid"):
        requested = name.replace("affected", "requested")
        for source in (name, requested):
            if source in kwargs and source not in bad:
                good[name] = kwargs[source]
    fields = {f.name for f in dataclasses.fields(response_cls)}  # type: ignore[arg-type]
    comment = f"{_KEYWORD[bad[0]]} is not a UID"
    response = response_cls(
        message_id_being_responded_to=message_id, status=status, error_comment=comment,
        **{k: v for k, v in good.items() if k in fields and v is not None},
    )
    return UnusableRequest(cls, message_id, data_set_type != NO_DATA_SET, response, problem)  # type: ignore[arg-type]


# --- for the log -------------------------------------------------------------------------------


def command_name(message: Message | UnusableRequest) -> str:
    """The standard's name of the command: 'C-STORE-RQ', 'N-EVENT-REPORT-RSP'."""
    cls = message.request_type if isinstance(message, UnusableRequest) else type(message)
    return cls.COMMAND_FIELD.name.replace("_", "-")  # type: ignore[attr-defined, no-any-return]


def is_request(message: Message | UnusableRequest) -> bool:
    """Requests (and C-CANCEL) have bit 15 of the Command Field clear (PS3.7 Annex E)."""
    cls = message.request_type if isinstance(message, UnusableRequest) else type(message)
    return not cls.COMMAND_FIELD & 0x8000  # type: ignore[attr-defined]


def describe_command(message: Message | UnusableRequest) -> str:
    """The command's fields as `name=value` (statuses in hex); never anything of a data set."""
    if isinstance(message, UnusableRequest):
        return f"message_id={message.message_id}, unusable: {message.problem}"
    parts = []
    first = ("message_id", "message_id_being_responded_to")
    for name in [n for n in first if any(n == t for t, _ in message._TAGS)] + [
        n for n, _ in message._TAGS if n not in first
    ]:
        value = getattr(message, name)
        if value is None:
            continue
        if name == "status":
            parts.append(f"status=0x{value:04X}")
        elif name == "priority":
            parts.append(f"priority={Priority(value).name}")
        else:
            parts.append(f"{name}={value}")
    parts.append(f"has_dataset={message.has_dataset}")
    return ", ".join(parts)
