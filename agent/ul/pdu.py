"""DICOM Upper Layer PDUs and items (PS3.8 9.3 and Annex D), encoded and decoded exactly, no I/O.

Invariants:
- Every PDU and item is a frozen, slotted value class (`agent.ul.values.value`: a dataclass's behaviour) validated on construction; `encode_pdu(decode_pdu(b))`
  reproduces a well-formed PDU byte for byte, except for padding of UIDs and AE titles, which the decoder
  strips (trailing NULs and spaces) and the encoder normalises (AE titles space-padded to 16 bytes, UIDs
  written without padding: items carry their own lengths, PS3.8 9.3.2.2).
- Decoding is strict about structure (lengths that overrun, items of the wrong type where the standard
  fixes the type, missing mandatory items) and raises `PDUDecodeError` carrying the A-ABORT reason to
  send (PS3.8 9.3.8): 1 unrecognized PDU, 2 unexpected PDU, 4 unrecognized PDU parameter, 6 invalid
  PDU parameter value. Unknown user-information sub-items are kept as `UnknownSubItem` (PS3.7 D.3.3
  requires them to be ignored, not rejected).
- `PDUReader` is transactional over a buffer: it reads the 6-byte header, waits for the whole PDU, then
  commits; it enforces the local maximum receive length on P-DATA-TF PDUs (0 = unlimited) and a sanity
  cap on every other PDU.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Union

from agent.errors import ProtocolError
from agent.ul.values import value
from agent.ul.vr import AE_TITLE_RULE, is_ae_title

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

# PDU types (PS3.8 9.3.1)
A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

# A-ABORT reasons when source = 2 (service provider), PS3.8 Table 9-26
ABORT_REASON_NOT_SPECIFIED = 0
ABORT_UNRECOGNIZED_PDU = 1
ABORT_UNEXPECTED_PDU = 2
ABORT_UNRECOGNIZED_PARAMETER = 4
ABORT_UNEXPECTED_PARAMETER = 5
ABORT_INVALID_PARAMETER_VALUE = 6

# Sanity cap for PDUs other than P-DATA-TF (an A-ASSOCIATE-RQ with hundreds of contexts is ~100 KB).
MAX_CONTROL_PDU = 4 * 1024 * 1024

# Bytes of a P-DATA-TF's variable field that one PDV item takes before its data: item length (4),
# presentation context ID (1), message control header (1) (PS3.8 9.3.5.1).
PDV_OVERHEAD = 6
# The smallest Maximum Length (PS3.8 D.1, the limit on a P-DATA-TF's variable field) that can carry a
# PDV with at least one byte of a message; a peer announcing less (but not 0, "no limit") cannot be
# sent any DIMSE message, so the association is refused rather than accepted and then exceeded.
MIN_USABLE_MAX_LENGTH = PDV_OVERHEAD + 1


def max_pdv_data(max_length: int) -> int:
    """Message bytes that fit one PDV under the peer's Maximum Length; 0 when it has no limit."""
    if max_length == 0:
        return 0
    if max_length < MIN_USABLE_MAX_LENGTH:
        raise ValueError(f"maximum length {max_length} cannot carry a PDV (at least {MIN_USABLE_MAX_LENGTH})")
    return max_length - PDV_OVERHEAD

_HEADER = struct.Struct(">BBI")
_ITEM_HEADER = struct.Struct(">BBH")
_PDV_HEADER = struct.Struct(">IBB")
_LENGTH = struct.Struct(">I")


class PDUDecodeError(ProtocolError):
    """A received PDU is malformed; `reason` is the A-ABORT reason to answer with."""

    def __init__(self, message: str, reason: int = ABORT_INVALID_PARAMETER_VALUE) -> None:
        super().__init__(message, local=True, source=2, reason=reason)


def _check_ae(title: str, what: str) -> str:
    """The title without its padding. The one AE title rule (`agent.ul.vr`), except that a blank
    title is let through: a peer may send one, and the listener answers it (called AE check)."""
    if not isinstance(title, str):
        raise ValueError(f"{what} must be a string")
    stripped = title.strip(" ")
    if stripped and not is_ae_title(title.rstrip(" ")):
        raise ValueError(f"{what} {title!r} is not {AE_TITLE_RULE}")
    return stripped


def _check_uid(uid: str, what: str) -> str:
    if not isinstance(uid, str) or len(uid) > 64:
        raise ValueError(f"{what} must be a UID string of at most 64 characters")
    if uid.strip("0123456789."):
        raise ValueError(f"{what} {uid!r} has characters other than digits and dots")
    return uid


def _enc_uid(uid: str) -> bytes:
    return uid.encode("ascii")


def _dec_text(raw: bytes | memoryview) -> str:
    try:
        return bytes(raw).decode("ascii").rstrip("\x00 ").lstrip(" ")
    except UnicodeDecodeError as exc:
        raise PDUDecodeError(f"non-ASCII bytes in a UID or AE title: {bytes(raw)!r}") from exc


# ---------------------------------------------------------------- presentation context items


@value
class PresentationContextRQ:
    """Presentation Context Item of an A-ASSOCIATE-RQ (type 20H, PS3.8 9.3.2.2)."""

    id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not (1 <= self.id <= 255 and self.id % 2 == 1):
            raise ValueError(f"presentation context ID {self.id} must be odd, 1..255")
        _check_uid(self.abstract_syntax, "abstract syntax")
        if not self.transfer_syntaxes:
            raise ValueError("a proposed presentation context needs at least one transfer syntax")
        for ts in self.transfer_syntaxes:
            _check_uid(ts, "transfer syntax")


# Presentation context results (PS3.8 Table 9-18)
PC_ACCEPTANCE = 0
PC_USER_REJECTION = 1
PC_NO_REASON = 2
PC_ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
PC_TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


@value
class PresentationContextAC:
    """Presentation Context Item of an A-ASSOCIATE-AC (type 21H, PS3.8 9.3.3.2)."""

    id: int
    result: int
    transfer_syntax: str = ""

    def __post_init__(self) -> None:
        if not (1 <= self.id <= 255):
            raise ValueError(f"presentation context ID {self.id} out of range")
        if self.result not in range(0, 5):
            raise ValueError(f"presentation context result {self.result} is not 0..4")
        if self.result == PC_ACCEPTANCE and not self.transfer_syntax:
            raise ValueError("an accepted presentation context needs its transfer syntax")
        _check_uid(self.transfer_syntax, "transfer syntax")


# ---------------------------------------------------------------- user information sub-items


@value
class MaximumLength:
    """Maximum Length Sub-Item (51H, PS3.8 D.1): 0 means no limit."""

    max_length: int

    def __post_init__(self) -> None:
        if not (0 <= self.max_length <= 0xFFFFFFFF):
            raise ValueError("maximum length must fit in 32 bits")


@value
class ImplementationClassUID:
    """Implementation Class UID Sub-Item (52H, PS3.7 D.3.3.2.1)."""

    uid: str

    def __post_init__(self) -> None:
        _check_uid(self.uid, "implementation class UID")


@value
class ImplementationVersionName:
    """Implementation Version Name Sub-Item (55H, PS3.7 D.3.3.2.3): 1 to 16 characters."""

    name: str

    def __post_init__(self) -> None:
        if not (1 <= len(self.name) <= 16):
            raise ValueError("implementation version name must be 1 to 16 characters")
        if self.name != self.name.strip(" ") or any(not (0x20 <= ord(c) <= 0x7E) for c in self.name):
            raise ValueError("implementation version name must be printable ASCII without padding")


@value
class AsyncOperationsWindow:
    """Asynchronous Operations Window Sub-Item (53H, PS3.7 D.3.3.3); 0 = unlimited."""

    invoked: int
    performed: int

    def __post_init__(self) -> None:
        if not (0 <= self.invoked <= 0xFFFF and 0 <= self.performed <= 0xFFFF):
            raise ValueError("operations window values must fit in 16 bits")


@value
class RoleSelection:
    """SCP/SCU Role Selection Sub-Item (54H, PS3.7 D.3.3.4)."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool

    def __post_init__(self) -> None:
        _check_uid(self.sop_class_uid, "role selection SOP class UID")


@value
class SOPClassExtendedNegotiation:
    """SOP Class Extended Negotiation Sub-Item (56H, PS3.7 D.3.3.5)."""

    sop_class_uid: str
    info: bytes

    def __post_init__(self) -> None:
        _check_uid(self.sop_class_uid, "extended negotiation SOP class UID")


@value
class SOPClassCommonExtendedNegotiation:
    """SOP Class Common Extended Negotiation Sub-Item (57H, PS3.7 D.3.3.6)."""

    sop_class_uid: str
    service_class_uid: str
    related_general_sop_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_uid(self.sop_class_uid, "SOP class UID")
        _check_uid(self.service_class_uid, "service class UID")
        for uid in self.related_general_sop_classes:
            _check_uid(uid, "related general SOP class UID")


@value
class UserIdentityRQ:
    """User Identity Negotiation Sub-Item, RQ (58H, PS3.7 D.3.3.7.1). Types 1..5."""

    identity_type: int
    positive_response_requested: bool
    primary: bytes
    secondary: bytes = b""

    def __post_init__(self) -> None:
        if not (1 <= self.identity_type <= 255):
            raise ValueError("user identity type must be 1..255")
        if len(self.primary) > 0xFFFF or len(self.secondary) > 0xFFFF:
            raise ValueError("user identity fields are at most 65535 bytes")


@value
class UserIdentityAC:
    """User Identity Negotiation Sub-Item, AC (59H, PS3.7 D.3.3.7.2)."""

    server_response: bytes

    def __post_init__(self) -> None:
        if len(self.server_response) > 0xFFFF:
            raise ValueError("user identity server response is at most 65535 bytes")


@value
class UnknownSubItem:
    """A user-information sub-item we do not know; kept so that it can be logged, never fatal."""

    item_type: int
    data: bytes


SubItem = Union[
    MaximumLength,
    ImplementationClassUID,
    ImplementationVersionName,
    AsyncOperationsWindow,
    RoleSelection,
    SOPClassExtendedNegotiation,
    SOPClassCommonExtendedNegotiation,
    UserIdentityRQ,
    UserIdentityAC,
    UnknownSubItem,
]


# ---------------------------------------------------------------- PDUs


@value
class _AssociateBase:
    """The fields A-ASSOCIATE-RQ and -AC share (PS3.8 9.3.2, 9.3.3)."""

    called_ae: str
    calling_ae: str
    user_information: tuple[SubItem, ...] = ()
    application_context: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "called_ae", _check_ae(self.called_ae, "called AE title"))
        object.__setattr__(self, "calling_ae", _check_ae(self.calling_ae, "calling AE title"))
        _check_uid(self.application_context, "application context name")

    def _first(self, kind: type) -> object | None:
        for item in self.user_information:
            if isinstance(item, kind):
                return item
        return None

    @property
    def max_length(self) -> int | None:
        item = self._first(MaximumLength)
        return item.max_length if isinstance(item, MaximumLength) else None

    @property
    def implementation_class_uid(self) -> str | None:
        item = self._first(ImplementationClassUID)
        return item.uid if isinstance(item, ImplementationClassUID) else None

    @property
    def implementation_version_name(self) -> str | None:
        item = self._first(ImplementationVersionName)
        return item.name if isinstance(item, ImplementationVersionName) else None

    @property
    def role_selections(self) -> dict[str, RoleSelection]:
        return {i.sop_class_uid: i for i in self.user_information if isinstance(i, RoleSelection)}

    @property
    def async_window(self) -> AsyncOperationsWindow | None:
        item = self._first(AsyncOperationsWindow)
        return item if isinstance(item, AsyncOperationsWindow) else None


@value
class AAssociateRQ(_AssociateBase):
    """A-ASSOCIATE-RQ PDU (PS3.8 9.3.2)."""

    presentation_contexts: tuple[PresentationContextRQ, ...] = ()

    def __post_init__(self) -> None:
        _AssociateBase.__post_init__(self)
        ids = [pc.id for pc in self.presentation_contexts]
        if len(set(ids)) != len(ids):
            raise ValueError("presentation context IDs must be unique")

    @property
    def user_identity(self) -> UserIdentityRQ | None:
        item = self._first(UserIdentityRQ)
        return item if isinstance(item, UserIdentityRQ) else None


@value
class AAssociateAC(_AssociateBase):
    """A-ASSOCIATE-AC PDU (PS3.8 9.3.3)."""

    presentation_contexts: tuple[PresentationContextAC, ...] = ()


# A-ASSOCIATE-RJ result / source / reason (PS3.8 Table 9-21)
RJ_PERMANENT = 1
RJ_TRANSIENT = 2
RJ_SOURCE_USER = 1
RJ_SOURCE_ACSE = 2
RJ_SOURCE_PRESENTATION = 3
RJ_USER_NO_REASON = 1
RJ_USER_APPLICATION_CONTEXT_NOT_SUPPORTED = 2
RJ_USER_CALLING_AE_NOT_RECOGNIZED = 3
RJ_USER_CALLED_AE_NOT_RECOGNIZED = 7
RJ_ACSE_NO_REASON = 1
RJ_ACSE_PROTOCOL_VERSION_NOT_SUPPORTED = 2
RJ_PRESENTATION_TEMPORARY_CONGESTION = 1
RJ_PRESENTATION_LOCAL_LIMIT_EXCEEDED = 2

_RJ_TEXT = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}
_RJ_SOURCE = {1: "service user", 2: "service provider (ACSE)", 3: "service provider (presentation)"}


def describe_rejection(result: int, source: int, reason: int) -> str:
    kind = {1: "permanent", 2: "transient"}.get(result, f"result {result}")
    return (
        f"association rejected ({kind}) by the {_RJ_SOURCE.get(source, f'source {source}')}: "
        f"{_RJ_TEXT.get((source, reason), f'reason {reason}')}"
    )


@value
class AAssociateRJ:
    """A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""

    result: int
    source: int
    reason: int

    def __post_init__(self) -> None:
        for name in ("result", "source", "reason"):
            if not (0 <= getattr(self, name) <= 255):
                raise ValueError(f"{name} must fit in one byte")

    def describe(self) -> str:
        return describe_rejection(self.result, self.source, self.reason)


@value
class PDV:
    """Presentation Data Value item (PS3.8 9.3.5.1) with its message control header unpacked."""

    context_id: int
    is_command: bool
    is_last: bool
    data: bytes | memoryview = b""

    def __post_init__(self) -> None:
        if not (1 <= self.context_id <= 255):
            raise ValueError(f"presentation context ID {self.context_id} out of range")


@value
class PDataTF:
    """P-DATA-TF PDU (PS3.8 9.3.5): one or more PDVs."""

    pdvs: tuple[PDV, ...]

    def __post_init__(self) -> None:
        if not self.pdvs:
            raise ValueError("a P-DATA-TF PDU holds at least one PDV")


@value
class AReleaseRQ:
    """A-RELEASE-RQ PDU (PS3.8 9.3.6)."""


@value
class AReleaseRP:
    """A-RELEASE-RP PDU (PS3.8 9.3.7)."""


# A-ABORT sources (PS3.8 Table 9-26)
ABORT_SOURCE_USER = 0
ABORT_SOURCE_PROVIDER = 2


@value
class AAbort:
    """A-ABORT PDU (PS3.8 9.3.8)."""

    source: int = ABORT_SOURCE_USER
    reason: int = 0

    def __post_init__(self) -> None:
        if self.source not in (0, 1, 2) or not (0 <= self.reason <= 255):
            raise ValueError("A-ABORT source must be 0, 1 or 2 and reason fit in a byte")


PDU = Union[AAssociateRQ, AAssociateAC, AAssociateRJ, PDataTF, AReleaseRQ, AReleaseRP, AAbort]


# ---------------------------------------------------------------- encoding


def _item(item_type: int, body: bytes, reserved: int = 0) -> bytes:
    if len(body) > 0xFFFF:
        raise ValueError(f"item {item_type:02X}H is longer than 65535 bytes")
    return _ITEM_HEADER.pack(item_type, reserved, len(body)) + body


def _u16_prefixed(raw: bytes) -> bytes:
    return struct.pack(">H", len(raw)) + raw


def encode_sub_item(item: SubItem) -> bytes:
    if isinstance(item, MaximumLength):
        return _item(0x51, struct.pack(">I", item.max_length))
    if isinstance(item, ImplementationClassUID):
        return _item(0x52, _enc_uid(item.uid))
    if isinstance(item, AsyncOperationsWindow):
        return _item(0x53, struct.pack(">HH", item.invoked, item.performed))
    if isinstance(item, RoleSelection):
        body = _u16_prefixed(_enc_uid(item.sop_class_uid))
        return _item(0x54, body + bytes((int(item.scu_role), int(item.scp_role))))
    if isinstance(item, ImplementationVersionName):
        return _item(0x55, item.name.encode("ascii"))
    if isinstance(item, SOPClassExtendedNegotiation):
        return _item(0x56, _u16_prefixed(_enc_uid(item.sop_class_uid)) + item.info)
    if isinstance(item, SOPClassCommonExtendedNegotiation):
        related = b"".join(_u16_prefixed(_enc_uid(u)) for u in item.related_general_sop_classes)
        body = (
            _u16_prefixed(_enc_uid(item.sop_class_uid))
            + _u16_prefixed(_enc_uid(item.service_class_uid))
            + _u16_prefixed(related)
        )
        return _item(0x57, body)  # reserved byte = sub-item version 0
    if isinstance(item, UserIdentityRQ):
        body = (
            bytes((item.identity_type, int(item.positive_response_requested)))
            + _u16_prefixed(item.primary)
            + _u16_prefixed(item.secondary)
        )
        return _item(0x58, body)
    if isinstance(item, UserIdentityAC):
        return _item(0x59, _u16_prefixed(item.server_response))
    if isinstance(item, UnknownSubItem):
        return _item(item.item_type, item.data)
    raise TypeError(f"not a user information sub-item: {item!r}")


def _encode_associate(pdu_type: int, pdu: AAssociateRQ | AAssociateAC) -> bytes:
    parts = [
        struct.pack(">HH", pdu.protocol_version, 0),
        pdu.called_ae.encode("ascii").ljust(16, b" "),
        pdu.calling_ae.encode("ascii").ljust(16, b" "),
        bytes(32),
        _item(0x10, _enc_uid(pdu.application_context)),
    ]
    for pc in pdu.presentation_contexts:
        if isinstance(pc, PresentationContextRQ):
            sub = _item(0x30, _enc_uid(pc.abstract_syntax)) + b"".join(
                _item(0x40, _enc_uid(ts)) for ts in pc.transfer_syntaxes
            )
            parts.append(_item(0x20, bytes((pc.id, 0, 0, 0)) + sub))
        else:
            sub = _item(0x40, _enc_uid(pc.transfer_syntax))
            parts.append(_item(0x21, bytes((pc.id, 0, pc.result, 0)) + sub))
    user = b"".join(encode_sub_item(i) for i in pdu.user_information)
    parts.append(_item(0x50, user))
    body = b"".join(parts)
    return _HEADER.pack(pdu_type, 0, len(body)) + body


def encode_pdata_header(context_id: int, is_command: bool, is_last: bool, length: int) -> bytes:
    """Header of a P-DATA-TF PDU that carries exactly one PDV of `length` data bytes.

    The hot path sends `header + data` in one write without building a PDV object.
    """
    mch = (1 if is_command else 0) | (2 if is_last else 0)
    return _HEADER.pack(P_DATA_TF, 0, length + 6) + _PDV_HEADER.pack(length + 2, context_id, mch)


def encode_pdu(pdu: PDU) -> bytes:
    """Encode any PDU to its bytes on the wire (PS3.8 9.3)."""
    if isinstance(pdu, AAssociateRQ):
        return _encode_associate(A_ASSOCIATE_RQ, pdu)
    if isinstance(pdu, AAssociateAC):
        return _encode_associate(A_ASSOCIATE_AC, pdu)
    if isinstance(pdu, PDataTF):
        parts = []
        for pdv in pdu.pdvs:
            mch = (1 if pdv.is_command else 0) | (2 if pdv.is_last else 0)
            parts.append(_PDV_HEADER.pack(len(pdv.data) + 2, pdv.context_id, mch))
            parts.append(bytes(pdv.data))
        body = b"".join(parts)
        return _HEADER.pack(P_DATA_TF, 0, len(body)) + body
    if isinstance(pdu, AAssociateRJ):
        return _HEADER.pack(A_ASSOCIATE_RJ, 0, 4) + bytes((0, pdu.result, pdu.source, pdu.reason))
    if isinstance(pdu, AReleaseRQ):
        return _HEADER.pack(A_RELEASE_RQ, 0, 4) + bytes(4)
    if isinstance(pdu, AReleaseRP):
        return _HEADER.pack(A_RELEASE_RP, 0, 4) + bytes(4)
    if isinstance(pdu, AAbort):
        return _HEADER.pack(A_ABORT, 0, 4) + bytes((0, 0, pdu.source, pdu.reason))
    raise TypeError(f"not a PDU: {pdu!r}")


# ---------------------------------------------------------------- decoding


def _iter_items(body: memoryview, where: str) -> list[tuple[int, int, memoryview]]:
    items = []
    offset = 0
    while offset < len(body):
        if len(body) - offset < 4:
            raise PDUDecodeError(f"truncated item header in {where}")
        item_type, reserved, length = _ITEM_HEADER.unpack_from(body, offset)
        offset += 4
        if offset + length > len(body):
            raise PDUDecodeError(f"item {item_type:02X}H in {where} overruns its container")
        items.append((item_type, reserved, body[offset : offset + length]))
        offset += length
    return items


def _u16_field(body: memoryview, offset: int, what: str) -> tuple[memoryview, int]:
    if offset + 2 > len(body):
        raise PDUDecodeError(f"truncated {what} length")
    (length,) = struct.unpack_from(">H", body, offset)
    offset += 2
    if offset + length > len(body):
        raise PDUDecodeError(f"{what} overruns its sub-item")
    return body[offset : offset + length], offset + length


def decode_sub_item(item_type: int, reserved: int, body: memoryview) -> SubItem:
    try:
        if item_type == 0x51:
            if len(body) != 4:
                raise PDUDecodeError("maximum length sub-item must be 4 bytes")
            return MaximumLength(struct.unpack(">I", body)[0])
        if item_type == 0x52:
            return ImplementationClassUID(_dec_text(body))
        if item_type == 0x53:
            if len(body) != 4:
                raise PDUDecodeError("asynchronous operations window sub-item must be 4 bytes")
            invoked, performed = struct.unpack(">HH", body)
            return AsyncOperationsWindow(invoked, performed)
        if item_type == 0x54:
            uid, offset = _u16_field(body, 0, "role selection SOP class UID")
            if len(body) - offset != 2:
                raise PDUDecodeError("role selection sub-item must end with two role bytes")
            return RoleSelection(_dec_text(uid), bool(body[offset]), bool(body[offset + 1]))
        if item_type == 0x55:
            return ImplementationVersionName(_dec_text(body) or "?")
        if item_type == 0x56:
            uid, offset = _u16_field(body, 0, "extended negotiation SOP class UID")
            return SOPClassExtendedNegotiation(_dec_text(uid), bytes(body[offset:]))
        if item_type == 0x57:
            sop, offset = _u16_field(body, 0, "common extended SOP class UID")
            service, offset = _u16_field(body, offset, "service class UID")
            related_raw, offset = _u16_field(body, offset, "related general SOP classes")
            related = []
            r = 0
            while r < len(related_raw):
                uid, r = _u16_field(related_raw, r, "related general SOP class UID")
                related.append(_dec_text(uid))
            return SOPClassCommonExtendedNegotiation(_dec_text(sop), _dec_text(service), tuple(related))
        if item_type == 0x58:
            if len(body) < 2:
                raise PDUDecodeError("truncated user identity sub-item")
            primary, offset = _u16_field(body, 2, "user identity primary field")
            secondary, offset = _u16_field(body, offset, "user identity secondary field")
            return UserIdentityRQ(body[0], bool(body[1]), bytes(primary), bytes(secondary))
        if item_type == 0x59:
            response, _ = _u16_field(body, 0, "user identity server response")
            return UserIdentityAC(bytes(response))
    except ValueError as exc:
        raise PDUDecodeError(f"sub-item {item_type:02X}H: {exc}") from exc
    return UnknownSubItem(item_type, bytes(body))


def _decode_associate(pdu_type: int, body: memoryview) -> AAssociateRQ | AAssociateAC:
    name = "A-ASSOCIATE-RQ" if pdu_type == A_ASSOCIATE_RQ else "A-ASSOCIATE-AC"
    if len(body) < 68:
        raise PDUDecodeError(f"{name} shorter than its fixed fields")
    (version,) = struct.unpack_from(">H", body, 0)
    called = _dec_text(body[4:20])
    calling = _dec_text(body[20:36])
    app_context: str | None = None
    contexts: list[PresentationContextRQ | PresentationContextAC] = []
    user: list[SubItem] | None = None
    for item_type, _reserved, item in _iter_items(body[68:], name):
        if item_type == 0x10:
            app_context = _dec_text(item)
        elif item_type == 0x20 and pdu_type == A_ASSOCIATE_RQ:
            if len(item) < 4:
                raise PDUDecodeError("truncated presentation context item")
            abstract: str | None = None
            syntaxes: list[str] = []
            for sub_type, _r, sub in _iter_items(item[4:], "presentation context"):
                if sub_type == 0x30:
                    if abstract is not None:
                        raise PDUDecodeError("two abstract syntaxes in one presentation context")
                    abstract = _dec_text(sub)
                elif sub_type == 0x40:
                    syntaxes.append(_dec_text(sub))
                else:
                    raise PDUDecodeError(
                        f"unexpected sub-item {sub_type:02X}H in a presentation context",
                        ABORT_UNEXPECTED_PARAMETER,
                    )
            if abstract is None or not syntaxes:
                raise PDUDecodeError("presentation context without abstract or transfer syntax")
            try:
                contexts.append(PresentationContextRQ(item[0], abstract, tuple(syntaxes)))
            except ValueError as exc:
                raise PDUDecodeError(str(exc)) from exc
        elif item_type == 0x21 and pdu_type == A_ASSOCIATE_AC:
            if len(item) < 4:
                raise PDUDecodeError("truncated presentation context item")
            syntaxes = [
                _dec_text(sub) for t, _r, sub in _iter_items(item[4:], "presentation context") if t == 0x40
            ]
            result = item[2]
            ts = syntaxes[0] if syntaxes else ""
            if result == PC_ACCEPTANCE and len(syntaxes) != 1:
                raise PDUDecodeError("accepted presentation context must name one transfer syntax")
            try:
                contexts.append(PresentationContextAC(item[0], result, ts))
            except ValueError as exc:
                raise PDUDecodeError(str(exc)) from exc
        elif item_type == 0x50:
            if user is not None:
                raise PDUDecodeError("two user information items")
            user = [decode_sub_item(t, r, sub) for t, r, sub in _iter_items(item, "user information")]
        else:
            raise PDUDecodeError(f"unexpected item {item_type:02X}H in {name}", ABORT_UNEXPECTED_PARAMETER)
    if app_context is None:
        raise PDUDecodeError(f"{name} without an application context item")
    if user is None:
        raise PDUDecodeError(f"{name} without a user information item")
    try:
        if pdu_type == A_ASSOCIATE_RQ:
            return AAssociateRQ(
                called_ae=called,
                calling_ae=calling,
                user_information=tuple(user),
                application_context=app_context,
                protocol_version=version,
                presentation_contexts=tuple(c for c in contexts if isinstance(c, PresentationContextRQ)),
            )
        return AAssociateAC(
            called_ae=called,
            calling_ae=calling,
            user_information=tuple(user),
            application_context=app_context,
            protocol_version=version,
            presentation_contexts=tuple(c for c in contexts if isinstance(c, PresentationContextAC)),
        )
    except ValueError as exc:
        raise PDUDecodeError(f"{name}: {exc}") from exc


_new = object.__new__
_set_context_id, _set_is_command, _set_is_last, _set_data = (
    PDV.__dict__[name].__set__ for name in ("context_id", "is_command", "is_last", "data")
)
_set_pdvs = PDataTF.__dict__["pdvs"].__set__


def _decode_pdata(body: memoryview) -> PDataTF:
    """The P-DATA-TF's PDVs, checked here; the objects are then filled through their slots, skipping
    the __init__/__post_init__ frames whose checks (context ID 1-255, at least one PDV) this already
    made: two to three fewer Python calls per PDU on the receive hot path, objects equal to PDV(...)."""
    pdvs = []
    offset = 0
    end = len(body)
    while offset < end:
        if end - offset < 6:
            raise PDUDecodeError("truncated PDV item header")
        length, context_id, mch = _PDV_HEADER.unpack_from(body, offset)
        if length < 2 or offset + 4 + length > end:
            raise PDUDecodeError("PDV item length overruns its P-DATA-TF PDU")
        if not context_id & 1:  # 0 or even (a single byte, so never above 255)
            raise PDUDecodeError(f"PDV with invalid presentation context ID {context_id}")
        if mch & 0xFC:
            raise PDUDecodeError(f"PDV message control header {mch:#04x} has reserved bits set")
        pdv = _new(PDV)
        _set_context_id(pdv, context_id)
        _set_is_command(pdv, bool(mch & 1))
        _set_is_last(pdv, bool(mch & 2))
        _set_data(pdv, body[offset + 6 : offset + 4 + length])
        pdvs.append(pdv)
        offset += 4 + length
    if not pdvs:
        raise PDUDecodeError("P-DATA-TF PDU without a PDV")
    pdata = _new(PDataTF)
    _set_pdvs(pdata, tuple(pdvs))
    return pdata


def decode_pdu(data: bytes | bytearray | memoryview) -> PDU:
    """Decode one whole PDU (header included). Raises PDUDecodeError.

    A P-DATA-TF's PDV values are read-only views of `data`, not copies."""
    view = memoryview(data).toreadonly()
    if len(view) < 6:
        raise PDUDecodeError("PDU shorter than its header")
    pdu_type, _reserved, length = _HEADER.unpack_from(view, 0)
    if len(view) != length + 6:
        raise PDUDecodeError("PDU length field does not match the PDU")
    body = view[6:]
    if pdu_type == P_DATA_TF:  # first: the PDU of the hot path
        return _decode_pdata(body)
    if pdu_type in (A_ASSOCIATE_RQ, A_ASSOCIATE_AC):
        return _decode_associate(pdu_type, body)
    if pdu_type in (A_ASSOCIATE_RJ, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT):
        if length != 4:
            raise PDUDecodeError(f"PDU type {pdu_type:02X}H must have length 4, has {length}")
        if pdu_type == A_ASSOCIATE_RJ:
            return AAssociateRJ(body[1], body[2], body[3])
        if pdu_type == A_RELEASE_RQ:
            return AReleaseRQ()
        if pdu_type == A_RELEASE_RP:
            return AReleaseRP()
        if body[2] not in (0, 1, 2):
            raise PDUDecodeError(f"A-ABORT with invalid source {body[2]}")
        return AAbort(body[2], body[3])
    raise PDUDecodeError(f"unrecognized PDU type {pdu_type:02X}H", ABORT_UNRECOGNIZED_PDU)


#: ... and at most this long: the buffer is allocated from the length in the header before the bytes
#: arrive, so a peer announcing a huge PDU (possible when we advertise no maximum, PS3.8 D.1) must not
#: make us allocate it up front; such a PDU is buffered as its bytes come, through `feed`.
DIRECT_RECEIVE_MAX = 8 * 1024 * 1024
#: `PDUReader.wanted()` when any amount may be read.
WANT_ANY = 1 << 30
#: A PDU at least this long whose header is in is received straight into its own buffer
#: (`PDUReader.receive_buffer`): one copy from the kernel, none afterwards.
DIRECT_RECEIVE_MIN = 32 * 1024


@dataclass(slots=True)
class PDUReader:
    """Splits a byte stream into PDUs; transactional over its buffer (wsproto's Buffer idea).

    `max_pdata_length` is the Maximum Length we advertised (0 = unlimited): a P-DATA-TF PDU whose
    length exceeds it is a protocol error (PS3.8 D.1: the requestor shall not send more).

    Two ways in, freely mixed: `feed(bytes)` copies what a transport read into the buffer; a
    transport that can read into memory it is given asks `receive_buffer()` for the rest of a large
    PDU whose header is in, reads into it and reports `received_into(n)` (asyncio's BufferedProtocol
    idea). Every decoded PDU owns memory no later input reuses, so the memoryviews a PDataTF's PDVs
    hold stay valid after the reader moves on (the hot path hands them on without copying).
    """

    max_pdata_length: int = 0
    _buffer: bytearray = field(default_factory=bytearray)
    _pdu: bytearray | None = None  # a large PDU being received into its own buffer
    _filled: int = 0  # bytes of `_pdu` received so far
    _after_pdata: bool = False  # the last PDU completed was a P-DATA-TF (see `wanted`)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        pdu = self._pdu
        if pdu is not None:
            take = min(len(pdu) - self._filled, len(data))
            pdu[self._filled : self._filled + take] = data[:take]
            self._filled += take
            if take == len(data):
                return
            data = data[take:]
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer) + self._filled

    def receive_buffer(self) -> memoryview | None:
        """Writable memory for the rest of the large PDU being received, or None.

        None unless a PDU of DIRECT_RECEIVE_MIN to DIRECT_RECEIVE_MAX bytes has its header (and nothing after it
        is buffered): then the bytes already buffered move into a buffer of the PDU's exact size and
        the free part of it is returned. Checks on the header are those of `next_pdu`.
        """
        pdu = self._pdu
        if pdu is None:
            buf = self._buffer
            if len(buf) < 6:
                return None
            try:
                total = self._check_header(buf) + 6
            except PDUDecodeError:
                return None  # `next_pdu` raises it where the association expects it
            if not DIRECT_RECEIVE_MIN <= total <= DIRECT_RECEIVE_MAX or len(buf) >= total:
                return None  # small, already whole, or (no limit negotiated) larger than we pre-allocate
            pdu = self._pdu = bytearray(total)
            pdu[: len(buf)] = buf
            self._filled = len(buf)
            self._buffer = bytearray()
        return memoryview(pdu)[self._filled :]

    def wanted(self) -> int:
        """How many bytes a transport should read next so that the body of a large P-DATA-TF never
        goes through `feed` (a copy): the rest of a P-DATA-TF and the next PDU's header; after a
        P-DATA-TF, the next header alone. Anywhere else (the association's control PDUs, whose
        neighbours are read together as they arrived) no limit: WANT_ANY."""
        if self._pdu is not None:
            return len(self._pdu) - self._filled + 6
        buf = self._buffer
        if len(buf) < 6:
            return 6 - len(buf) if self._after_pdata else WANT_ANY
        if buf[0] != P_DATA_TF:
            return WANT_ANY
        (length,) = _LENGTH.unpack_from(buf, 2)
        return max(1, length + 12 - len(buf))

    def received_into(self, n: int) -> None:
        """`n` bytes were written at the start of the last `receive_buffer()`."""
        if self._pdu is None or self._filled + n > len(self._pdu):
            raise ValueError("received_into without a receive buffer, or past its end")
        self._filled += n

    def _check_header(self, buf: bytes | bytearray) -> int:
        """The PDU length from a buffered header, after the checks that need no more bytes."""
        pdu_type, _reserved, length = _HEADER.unpack_from(buf, 0)
        if pdu_type == P_DATA_TF:
            if self.max_pdata_length and length > self.max_pdata_length:
                raise PDUDecodeError(
                    f"P-DATA-TF of {length} bytes exceeds our maximum length {self.max_pdata_length}"
                )
        elif pdu_type not in (1, 2, 3, 5, 6, 7):
            raise PDUDecodeError(f"unrecognized PDU type {pdu_type:02X}H", ABORT_UNRECOGNIZED_PDU)
        elif length > MAX_CONTROL_PDU:
            raise PDUDecodeError(f"PDU type {pdu_type:02X}H of {length} bytes is implausibly long")
        return int(length)

    def next_pdu(self) -> PDU | None:
        """The next complete PDU, or None until more bytes arrive. Raises PDUDecodeError."""
        pdu = self._pdu
        if pdu is not None:
            if self._filled < len(pdu):
                return None
            self._pdu, self._filled = None, 0
            self._after_pdata = pdu[0] == P_DATA_TF
            return decode_pdu(pdu)
        buf = self._buffer
        if len(buf) < 6:
            return None
        total = self._check_header(buf) + 6
        if len(buf) < total:
            return None
        self._after_pdata = buf[0] == P_DATA_TF
        if len(buf) == total:
            # The buffer becomes the PDU's (no copy); a fresh one takes the next bytes.
            self._buffer = bytearray()
            return decode_pdu(buf)
        raw = buf[:total]  # one copy; bytearray's front deletion below is cheap
        del buf[:total]
        return decode_pdu(raw)
