"""Readable one-line descriptions of PDUs for the debug wire trace (in the manner of DCMTK's `-d`).

Invariants:
- Pure functions from PDU values (or a PDU's raw header) to text; no I/O, no logging here.
- Nothing of a data set is ever described: a P-DATA-TF is its PDV headers and sizes only.
- No credential is ever described: a User Identity sub-item (PS3.7 D.3.3.7) shows its type and, for
  the username types, the username; a passcode, a Kerberos ticket, a SAML assertion, a JSON Web Token
  and a server response only as "not shown" with their size.
- UIDs are shown with their name from pydicom's dictionary when it has one (imported only when a
  description is asked for: the trace is off unless the log level is debug).
"""

from __future__ import annotations

import struct

from agent.ul import pdu as P

PDU_NAMES = {
    P.A_ASSOCIATE_RQ: "A-ASSOCIATE-RQ",
    P.A_ASSOCIATE_AC: "A-ASSOCIATE-AC",
    P.A_ASSOCIATE_RJ: "A-ASSOCIATE-RJ",
    P.P_DATA_TF: "P-DATA-TF",
    P.A_RELEASE_RQ: "A-RELEASE-RQ",
    P.A_RELEASE_RP: "A-RELEASE-RP",
    P.A_ABORT: "A-ABORT",
}
_PC_RESULTS = {
    P.PC_ACCEPTANCE: "accepted",
    P.PC_USER_REJECTION: "user rejection",
    P.PC_NO_REASON: "no reason",
    P.PC_ABSTRACT_SYNTAX_NOT_SUPPORTED: "abstract syntax not supported",
    P.PC_TRANSFER_SYNTAXES_NOT_SUPPORTED: "transfer syntaxes not supported",
}


def uid_name(uid: str) -> str:
    """'Verification SOP Class' for 1.2.840.10008.1.1; the UID itself when pydicom does not know it."""
    from pydicom.uid import UID

    try:
        return str(UID(uid).name)
    except Exception:  # a malformed UID from a peer: show it as it is
        return uid


def describe_associate(pdu: P.AAssociateRQ | P.AAssociateAC) -> str:
    """Calling/called AE, application context, contexts, maximum length, implementation, roles."""
    parts = [
        f"calling {pdu.calling_ae}, called {pdu.called_ae}",
        f"application context {pdu.application_context}",
        f"max PDU {pdu.max_length if pdu.max_length is not None else 'not given'}",
        f"implementation {pdu.implementation_class_uid or '?'} {pdu.implementation_version_name or ''}".rstrip(),
    ]
    for pc in pdu.presentation_contexts:
        if isinstance(pc, P.PresentationContextRQ):
            syntaxes = ", ".join(uid_name(ts) for ts in pc.transfer_syntaxes)
            parts.append(f"context {pc.id}: {uid_name(pc.abstract_syntax)} ({pc.abstract_syntax}) [{syntaxes}]")
        else:
            result = _PC_RESULTS.get(pc.result, f"result {pc.result}")
            chosen = f" {uid_name(pc.transfer_syntax)}" if pc.result == P.PC_ACCEPTANCE else ""
            parts.append(f"context {pc.id}: {result}{chosen}")
    for role in pdu.role_selections.values():
        parts.append(f"role {uid_name(role.sop_class_uid)}: SCU {int(role.scu_role)} SCP {int(role.scp_role)}")
    if not pdu.presentation_contexts:
        parts.append("no presentation context")
    for item in pdu.user_information:
        if isinstance(item, (P.UserIdentityRQ, P.UserIdentityAC)):
            parts.append(describe_identity(item))
    return "; ".join(parts)


_IDENTITY_TYPES = {1: "username", 2: "username and passcode", 3: "Kerberos ticket", 4: "SAML assertion", 5: "JWT"}


def describe_identity(item: P.UserIdentityRQ | P.UserIdentityAC) -> str:
    """A User Identity sub-item without its secrets."""
    if isinstance(item, P.UserIdentityAC):
        return f"user identity response ({len(item.server_response)} bytes, not shown)"
    kind = _IDENTITY_TYPES.get(item.identity_type, f"type {item.identity_type}")
    asked = ", positive response requested" if item.positive_response_requested else ""
    if item.identity_type in (1, 2):
        user = item.primary.decode("utf-8", "replace")
        secret = ", passcode not shown" if item.identity_type == 2 else ""
        return f"user identity {kind}: {user!r}{secret}{asked}"
    return f"user identity {kind} ({len(item.primary)} bytes, not shown){asked}"


def describe_pdata(body: bytes | memoryview) -> str:
    """The PDV headers of a P-DATA-TF's variable field: context, command/data set, last, size."""
    out = []
    offset = 0
    while offset + 6 <= len(body):
        length, context_id, mch = struct.unpack_from(">IBB", body, offset)
        kind = "command" if mch & 1 else "data set"
        last = ", last" if mch & 2 else ""
        out.append(f"PDV context {context_id} {kind}{last} {length - 2} bytes")
        offset += 4 + length
    return "; ".join(out)


def describe_encoded(data: bytes | memoryview) -> list[str]:
    """One description per whole PDU in `data` (outgoing bytes always hold whole PDUs)."""
    view = memoryview(data)
    out = []
    offset = 0
    while offset + 6 <= len(view):
        pdu_type, _reserved, length = struct.unpack_from(">BBI", view, offset)
        body = view[offset + 6 : offset + 6 + length]
        name = PDU_NAMES.get(pdu_type, f"PDU type {pdu_type:02X}H")
        if pdu_type == P.P_DATA_TF:
            detail = describe_pdata(body)
        elif pdu_type in (P.A_ASSOCIATE_RQ, P.A_ASSOCIATE_AC):
            decoded = P.decode_pdu(view[offset : offset + 6 + length])
            detail = describe_associate(decoded)  # type: ignore[arg-type]
        elif pdu_type == P.A_ASSOCIATE_RJ and length == 4:
            detail = P.describe_rejection(body[1], body[2], body[3])
        elif pdu_type == P.A_ABORT and length == 4:
            detail = f"source {body[2]}, reason {body[3]}"
        else:
            detail = ""
        out.append(f"{name} length {length}" + (f": {detail}" if detail else ""))
        offset += 6 + length
    return out


__all__ = ["PDU_NAMES", "describe_associate", "describe_encoded", "describe_identity", "describe_pdata", "uid_name"]
