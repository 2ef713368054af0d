"""agent.ul.pdu: golden bytes typed from PS3.8 9.3 / Annex D and PS3.7 Annex D, interop with pynetdicom,
transactional reading, hypothesis round trips and robustness against garbage."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import strategies as S
from agent.errors import ProtocolError
from agent.ul import pdu as P

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def h(text: str) -> bytes:
    """Hex with spaces allowed."""
    return bytes.fromhex(text)


ECHO = b"1.2.840.10008.1.1"  # Verification SOP Class, 17 bytes
IMPLICIT = b"1.2.840.10008.1.2"  # Implicit VR Little Endian, 17 bytes
APP_CONTEXT = b"1.2.840.10008.3.1.1.1"  # DICOM Application Context Name, 21 bytes
STORAGE_COMMITMENT = b"1.2.840.10008.1.20.1"  # 20 bytes
CT_IMAGE = b"1.2.840.10008.5.1.4.1.1.2"  # 25 bytes
STORAGE_SERVICE = b"1.2.840.10008.4.2"  # 17 bytes
ENHANCED_SR = b"1.2.840.10008.5.1.4.1.1.88.22"  # 29 bytes

# ---------------------------------------------------------------- user information sub-items (golden)

MAX_LENGTH_ITEM = b"".join([
    h("51"),           # item type 51H, Maximum Length (PS3.8 D.1)
    h("00"),           # reserved
    h("0004"),         # item length 4
    h("00010000"),     # maximum length received 65536
])
IMPL_UID_ITEM = b"".join([
    h("52 00"),        # item type 52H, Implementation Class UID; reserved
    h("0007"),         # item length 7
    b"1.2.3.4",        # implementation class UID, unpadded
])
ASYNC_ITEM = b"".join([
    h("53 00"),        # item type 53H, Asynchronous Operations Window; reserved
    h("0004"),         # item length 4
    h("0001"),         # maximum number of operations invoked 1
    h("0002"),         # maximum number of operations performed 2
])
ROLE_ITEM = b"".join([
    h("54 00"),        # item type 54H, SCP/SCU Role Selection; reserved
    h("0018"),         # item length 24
    h("0014"),         # UID length 20
    STORAGE_COMMITMENT,  # SOP class UID
    h("00"),           # SCU role: 0 (non-support of the SCU role)
    h("01"),           # SCP role: 1 (support of the SCP role)
])
VERSION_ITEM = b"".join([
    h("55 00"),        # item type 55H, Implementation Version Name; reserved
    h("0007"),         # item length 7
    b"AGENT_1",        # version name
])
EXT_NEG_ITEM = b"".join([
    h("56 00"),        # item type 56H, SOP Class Extended Negotiation; reserved
    h("001f"),         # item length 31
    h("0019"),         # SOP class UID length 25
    CT_IMAGE,          # SOP class UID
    h("01000100"),     # service-class-application-information (opaque here)
])
COMMON_EXT_ITEM = b"".join([
    h("57"),           # item type 57H, SOP Class Common Extended Negotiation
    h("00"),           # sub-item version 0
    h("004f"),         # item length 79
    h("0019"),         # SOP class UID length 25
    CT_IMAGE,          # SOP class UID
    h("0011"),         # service class UID length 17
    STORAGE_SERVICE,   # service class UID
    h("001f"),         # related general SOP class identification length 31
    h("001d"),         #   related general SOP class UID length 29
    ENHANCED_SR,       #   related general SOP class UID
])
USER_ID_RQ_ITEM = b"".join([
    h("58 00"),        # item type 58H, User Identity Negotiation (RQ); reserved
    h("000e"),         # item length 14
    h("02"),           # user identity type 2: username and passcode
    h("01"),           # positive response requested
    h("0004"),         # primary field length 4
    b"user",           # primary field
    h("0004"),         # secondary field length 4
    b"pass",           # secondary field
])
USER_ID_AC_ITEM = b"".join([
    h("59 00"),        # item type 59H, User Identity Negotiation (AC); reserved
    h("0005"),         # item length 5
    h("0003"),         # server response length 3
    b"tok",            # server response
])
UNKNOWN_ITEM = b"".join([
    h("70 00"),        # item type 70H: not defined by PS3.7 Annex D
    h("0002"),         # item length 2
    h("dead"),         # whatever it carries
])

SUB_ITEMS = [
    (MAX_LENGTH_ITEM, P.MaximumLength(65536)),
    (IMPL_UID_ITEM, P.ImplementationClassUID("1.2.3.4")),
    (ASYNC_ITEM, P.AsyncOperationsWindow(1, 2)),
    (ROLE_ITEM, P.RoleSelection("1.2.840.10008.1.20.1", scu_role=False, scp_role=True)),
    (VERSION_ITEM, P.ImplementationVersionName("AGENT_1")),
    (EXT_NEG_ITEM, P.SOPClassExtendedNegotiation("1.2.840.10008.5.1.4.1.1.2", h("01000100"))),
    (
        COMMON_EXT_ITEM,
        P.SOPClassCommonExtendedNegotiation(
            "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.4.2", ("1.2.840.10008.5.1.4.1.1.88.22",)
        ),
    ),
    (USER_ID_RQ_ITEM, P.UserIdentityRQ(2, True, b"user", b"pass")),
    (USER_ID_AC_ITEM, P.UserIdentityAC(b"tok")),
    (UNKNOWN_ITEM, P.UnknownSubItem(0x70, h("dead"))),
]
SUB_ITEM_IDS = ["51H", "52H", "53H", "54H", "55H", "56H", "57H", "58H", "59H", "unknown-70H"]


@pytest.mark.parametrize(("raw", "item"), SUB_ITEMS, ids=SUB_ITEM_IDS)
def test_sub_item_golden_decode(raw: bytes, item: P.SubItem) -> None:
    item_type, reserved, length = struct.unpack(">BBH", raw[:4])
    assert length == len(raw) - 4  # the golden fixture is itself consistent
    assert P.decode_sub_item(item_type, reserved, memoryview(raw[4:])) == item


@pytest.mark.parametrize(("raw", "item"), SUB_ITEMS, ids=SUB_ITEM_IDS)
def test_sub_item_golden_encode(raw: bytes, item: P.SubItem) -> None:
    assert P.encode_sub_item(item) == raw


# ---------------------------------------------------------------- PDUs (golden)

ASSOCIATE_RQ = b"".join([
    h("01"),                 # PDU type 01H, A-ASSOCIATE-RQ
    h("00"),                 # reserved
    h("000000df"),           # PDU length 223 = 68 fixed + 25 + 50 + 80
    h("0001"),               # protocol version: bit 0 (version 1)
    h("0000"),               # reserved
    b"ANY-SCP         ",     # called AE title, space padded to 16
    b"ECHOSCU         ",     # calling AE title, space padded to 16
    bytes(32),               # reserved
    # Application Context Item (10H)
    h("10 00 0015"),         # type, reserved, length 21
    APP_CONTEXT,
    # Presentation Context Item (20H)
    h("20 00 002e"),         # type, reserved, length 46
    h("01 00 00 00"),        # context ID 1, reserved x3
    h("30 00 0011"),         #   Abstract Syntax sub-item, length 17
    ECHO,
    h("40 00 0011"),         #   Transfer Syntax sub-item, length 17
    IMPLICIT,
    # User Information Item (50H)
    h("50 00 004c"),         # type, reserved, length 76 = 8 + 11 + 11 + 28 + 18
    h("51 00 0004 00004000"),  # Maximum Length 16384
    h("52 00 0007"), b"1.2.3.4",  # Implementation Class UID
    h("55 00 0007"), b"AGENT_1",  # Implementation Version Name
    ROLE_ITEM,               # SCP/SCU Role Selection for Storage Commitment (SCU 0, SCP 1)
    USER_ID_RQ_ITEM,         # User Identity: username "user", passcode "pass"
])
ASSOCIATE_RQ_PDU = P.AAssociateRQ(
    called_ae="ANY-SCP",
    calling_ae="ECHOSCU",
    presentation_contexts=(P.PresentationContextRQ(1, ECHO.decode(), (IMPLICIT.decode(),)),),
    user_information=(
        P.MaximumLength(16384),
        P.ImplementationClassUID("1.2.3.4"),
        P.ImplementationVersionName("AGENT_1"),
        P.RoleSelection(STORAGE_COMMITMENT.decode(), False, True),
        P.UserIdentityRQ(2, True, b"user", b"pass"),
    ),
)

ASSOCIATE_AC = b"".join([
    h("02 00"),              # PDU type 02H, A-ASSOCIATE-AC; reserved
    h("0000009d"),           # PDU length 157 = 68 + 25 + 29 + 12 + 23
    h("0001 0000"),          # protocol version 1; reserved
    b"ANY-SCP         ",     # called AE title (returned, not tested, PS3.8 9.3.3)
    b"ECHOSCU         ",     # calling AE title
    bytes(32),               # reserved
    h("10 00 0015"), APP_CONTEXT,  # Application Context Item
    # Presentation Context Item (21H): ID 1 accepted with Implicit VR LE
    h("21 00 0019"),         # type, reserved, length 25
    h("01 00 00 00"),        # context ID 1, reserved, result 0 (acceptance), reserved
    h("40 00 0011"), IMPLICIT,  # Transfer Syntax sub-item
    # Presentation Context Item (21H): ID 3 rejected, abstract syntax not supported
    h("21 00 0008"),         # type, reserved, length 8
    h("03 00 03 00"),        # context ID 3, reserved, result 3, reserved
    h("40 00 0000"),         # Transfer Syntax sub-item, empty (not significant when rejected)
    # User Information Item (50H)
    h("50 00 0013"),         # length 19
    h("51 00 0004 00008000"),  # Maximum Length 32768
    h("52 00 0007"), b"1.2.3.4",  # Implementation Class UID
])
ASSOCIATE_AC_PDU = P.AAssociateAC(
    called_ae="ANY-SCP",
    calling_ae="ECHOSCU",
    presentation_contexts=(
        P.PresentationContextAC(1, P.PC_ACCEPTANCE, IMPLICIT.decode()),
        P.PresentationContextAC(3, P.PC_ABSTRACT_SYNTAX_NOT_SUPPORTED, ""),
    ),
    user_information=(P.MaximumLength(32768), P.ImplementationClassUID("1.2.3.4")),
)

ASSOCIATE_RJ = b"".join([
    h("03 00"),              # PDU type 03H, A-ASSOCIATE-RJ; reserved
    h("00000004"),           # PDU length 4
    h("00"),                 # reserved
    h("01"),                 # result 1: rejected-permanent
    h("01"),                 # source 1: DICOM UL service-user
    h("07"),                 # reason 7: called-AE-title-not-recognized
])

P_DATA_TF = b"".join([
    h("04 00"),              # PDU type 04H, P-DATA-TF; reserved
    h("00000015"),           # PDU length 21 = (4 + 8) + (4 + 5)
    h("00000008"),           # PDV item length 8 = 2 + 6
    h("01"),                 #   presentation context ID 1
    h("03"),                 #   message control header: command, last fragment
    h("0000 0200 0000"),     #   6 data bytes
    h("00000005"),           # PDV item length 5 = 2 + 3
    h("01"),                 #   presentation context ID 1
    h("00"),                 #   message control header: data set, not last
    h("aa bb cc"),           #   3 data bytes
])
P_DATA_TF_PDU = P.PDataTF((
    P.PDV(1, is_command=True, is_last=True, data=h("000002000000")),
    P.PDV(1, is_command=False, is_last=False, data=h("aabbcc")),
))

RELEASE_RQ = h("05 00 00000004 00000000")  # type 05H, reserved, length 4, 4 reserved bytes
RELEASE_RP = h("06 00 00000004 00000000")  # type 06H, reserved, length 4, 4 reserved bytes
ABORT = b"".join([
    h("07 00"),              # PDU type 07H, A-ABORT; reserved
    h("00000004"),           # PDU length 4
    h("00 00"),              # reserved x2
    h("02"),                 # source 2: DICOM UL service-provider
    h("06"),                 # reason 6: invalid-PDU-parameter-value
])

PDUS = [
    (ASSOCIATE_RQ, ASSOCIATE_RQ_PDU),
    (ASSOCIATE_AC, ASSOCIATE_AC_PDU),
    (ASSOCIATE_RJ, P.AAssociateRJ(P.RJ_PERMANENT, P.RJ_SOURCE_USER, P.RJ_USER_CALLED_AE_NOT_RECOGNIZED)),
    (P_DATA_TF, P_DATA_TF_PDU),
    (RELEASE_RQ, P.AReleaseRQ()),
    (RELEASE_RP, P.AReleaseRP()),
    (ABORT, P.AAbort(P.ABORT_SOURCE_PROVIDER, P.ABORT_INVALID_PARAMETER_VALUE)),
]
PDU_IDS = ["A-ASSOCIATE-RQ", "A-ASSOCIATE-AC", "A-ASSOCIATE-RJ", "P-DATA-TF", "A-RELEASE-RQ", "A-RELEASE-RP", "A-ABORT"]


@pytest.mark.parametrize(("raw", "pdu"), PDUS, ids=PDU_IDS)
def test_pdu_golden_decode(raw: bytes, pdu: P.PDU) -> None:
    assert struct.unpack(">I", raw[2:6])[0] == len(raw) - 6  # fixture self-check
    assert P.decode_pdu(raw) == pdu


@pytest.mark.parametrize(("raw", "pdu"), PDUS, ids=PDU_IDS)
def test_pdu_golden_encode(raw: bytes, pdu: P.PDU) -> None:
    assert P.encode_pdu(pdu) == raw


def test_associate_rq_accessors() -> None:
    rq = P.decode_pdu(ASSOCIATE_RQ)
    assert isinstance(rq, P.AAssociateRQ)
    assert rq.max_length == 16384
    assert rq.implementation_class_uid == "1.2.3.4"
    assert rq.implementation_version_name == "AGENT_1"
    assert rq.user_identity == P.UserIdentityRQ(2, True, b"user", b"pass")
    assert rq.role_selections == {"1.2.840.10008.1.20.1": P.RoleSelection("1.2.840.10008.1.20.1", False, True)}
    assert rq.async_window is None
    assert rq.protocol_version == 1
    assert rq.application_context == "1.2.840.10008.3.1.1.1"


def test_unknown_sub_item_is_kept_in_a_pdu_and_reencoded() -> None:
    # Insert the 70H item at the end of the user information of the golden RQ.
    body = bytearray(ASSOCIATE_RQ + UNKNOWN_ITEM)
    struct.pack_into(">I", body, 2, len(body) - 6)
    user_at = len(ASSOCIATE_RQ) - 80  # the 50H item is the last 80 bytes
    assert body[user_at] == 0x50
    struct.pack_into(">H", body, user_at + 2, 76 + len(UNKNOWN_ITEM))
    rq = P.decode_pdu(bytes(body))
    assert rq.user_information[-1] == P.UnknownSubItem(0x70, h("dead"))
    assert P.encode_pdu(rq) == bytes(body)


def test_padded_ae_titles_and_uids_are_stripped() -> None:
    # PS3.8 9.3.2: leading and trailing spaces of AE titles are not significant; UIDs may be NUL padded.
    raw = bytearray(ASSOCIATE_RQ)
    raw[10:26] = b"  ANY-SCP       "
    rq = P.decode_pdu(bytes(raw))
    assert rq.called_ae == "ANY-SCP"


def test_hot_path_pdata_header_matches_full_encoding() -> None:
    data = h("000002000000")
    assert P.encode_pdata_header(1, True, True, len(data)) + data == P.encode_pdu(
        P.PDataTF((P.PDV(1, True, True, data),))
    )


# ---------------------------------------------------------------- interop with pynetdicom


def _pynetdicom_rq_bytes() -> bytes:
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import (
        A_ASSOCIATE,
        AsynchronousOperationsWindowNegotiation,
        ImplementationClassUIDNotification,
        ImplementationVersionNameNotification,
        MaximumLengthNotification,
        SCP_SCU_RoleSelectionNegotiation,
        SOPClassCommonExtendedNegotiation,
        SOPClassExtendedNegotiation,
        UserIdentityNegotiation,
    )
    from pynetdicom.presentation import PresentationContext

    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title = "STORESCU"
    prim.called_ae_title = "ANY-SCP"
    cx = PresentationContext()
    cx.context_id = 1
    cx.abstract_syntax = "1.2.840.10008.5.1.4.1.1.2"
    cx.transfer_syntax = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
    cx3 = PresentationContext()
    cx3.context_id = 3
    cx3.abstract_syntax = "1.2.840.10008.1.20.1"
    cx3.transfer_syntax = ["1.2.840.10008.1.2"]
    prim.presentation_context_definition_list = [cx, cx3]
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16384
    ic = ImplementationClassUIDNotification()
    ic.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.3"
    iv = ImplementationVersionNameNotification()
    iv.implementation_version_name = "PYNETDICOM_304"
    rs = SCP_SCU_RoleSelectionNegotiation()
    rs.sop_class_uid = "1.2.840.10008.1.20.1"
    rs.scu_role = False
    rs.scp_role = True
    ui = UserIdentityNegotiation()
    ui.user_identity_type = 2
    ui.positive_response_requested = True
    ui.primary_field = b"user"
    ui.secondary_field = b"pass"
    aw = AsynchronousOperationsWindowNegotiation()
    aw.maximum_number_operations_invoked = 2
    aw.maximum_number_operations_performed = 3
    ext = SOPClassExtendedNegotiation()
    ext.sop_class_uid = "1.2.840.10008.5.1.4.1.1.2"
    ext.service_class_application_information = b"\x01\x00\x01\x00"
    cext = SOPClassCommonExtendedNegotiation()
    cext.sop_class_uid = "1.2.840.10008.5.1.4.1.1.2"
    cext.service_class_uid = "1.2.840.10008.4.2"
    cext.related_general_sop_class_identification = ["1.2.840.10008.5.1.4.1.1.88.22"]
    prim.user_information = [ml, ic, iv, rs, ui, aw, ext, cext]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(prim)
    return pdu.encode()


def test_pynetdicom_rq_decodes_with_ours_and_reencodes_identically() -> None:
    raw = _pynetdicom_rq_bytes()
    rq = P.decode_pdu(raw)
    assert isinstance(rq, P.AAssociateRQ)
    assert (rq.called_ae, rq.calling_ae) == ("ANY-SCP", "STORESCU")
    assert rq.presentation_contexts == (
        P.PresentationContextRQ(1, "1.2.840.10008.5.1.4.1.1.2", ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")),
        P.PresentationContextRQ(3, "1.2.840.10008.1.20.1", ("1.2.840.10008.1.2",)),
    )
    assert rq.user_information == (
        P.MaximumLength(16384),
        P.ImplementationClassUID("1.2.826.0.1.3680043.9.3811.3"),
        P.ImplementationVersionName("PYNETDICOM_304"),
        P.RoleSelection("1.2.840.10008.1.20.1", False, True),
        P.UserIdentityRQ(2, True, b"user", b"pass"),
        P.AsyncOperationsWindow(2, 3),
        P.SOPClassExtendedNegotiation("1.2.840.10008.5.1.4.1.1.2", b"\x01\x00\x01\x00"),
        P.SOPClassCommonExtendedNegotiation(
            "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.4.2", ("1.2.840.10008.5.1.4.1.1.88.22",)
        ),
    )
    assert P.encode_pdu(rq) == raw


def test_our_rq_decodes_with_pynetdicom() -> None:
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import (
        ImplementationVersionNameNotification,
        SCP_SCU_RoleSelectionNegotiation,
        UserIdentityNegotiation,
    )

    theirs = A_ASSOCIATE_RQ()
    theirs.decode(ASSOCIATE_RQ)
    prim = theirs.to_primitive()
    assert prim.called_ae_title == "ANY-SCP"
    assert prim.calling_ae_title == "ECHOSCU"
    assert prim.maximum_length_received == 16384
    assert prim.implementation_class_uid == "1.2.3.4"
    [version] = [i for i in prim.user_information if isinstance(i, ImplementationVersionNameNotification)]
    assert version.implementation_version_name == "AGENT_1"
    [cx] = prim.presentation_context_definition_list
    assert (cx.context_id, cx.abstract_syntax, cx.transfer_syntax) == (1, ECHO.decode(), [IMPLICIT.decode()])
    [role] = [i for i in prim.user_information if isinstance(i, SCP_SCU_RoleSelectionNegotiation)]
    assert (role.sop_class_uid, role.scu_role, role.scp_role) == ("1.2.840.10008.1.20.1", False, True)
    [uid] = [i for i in prim.user_information if isinstance(i, UserIdentityNegotiation)]
    assert (uid.user_identity_type, uid.positive_response_requested) == (2, True)
    assert (uid.primary_field, uid.secondary_field) == (b"user", b"pass")
    assert theirs.encode() == ASSOCIATE_RQ


def test_our_ac_decodes_with_pynetdicom() -> None:
    # pynetdicom cannot re-encode a rejected context whose transfer syntax is empty, so one way only.
    from pynetdicom.pdu import A_ASSOCIATE_AC

    theirs = A_ASSOCIATE_AC()
    theirs.decode(ASSOCIATE_AC)
    prim = theirs.to_primitive()
    assert prim.maximum_length_received == 32768
    assert prim.implementation_class_uid == "1.2.3.4"
    results = {cx.context_id: (cx.result, cx.transfer_syntax) for cx in prim.presentation_context_definition_results_list}
    assert results[1] == (0, [IMPLICIT.decode()])
    assert results[3][0] == 3


@pytest.mark.parametrize(("raw", "pdu"), PDUS[2:], ids=PDU_IDS[2:])
def test_other_pdus_agree_with_pynetdicom_both_ways(raw: bytes, pdu: P.PDU) -> None:
    from pynetdicom.pdu import PDU_TYPES

    cls = {code: kind for kind, code in PDU_TYPES.items()}[raw[0]]
    theirs = cls()
    theirs.decode(P.encode_pdu(pdu))  # ours → theirs
    assert theirs.encode() == raw  # theirs → bytes identical to our golden
    assert P.decode_pdu(theirs.encode()) == pdu  # theirs → ours


def test_pynetdicom_pdata_from_primitive_decodes_with_ours() -> None:
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_primitives import P_DATA

    prim = P_DATA()
    prim.presentation_data_value_list = [[1, b"\x03" + b"cmd!"], [3, b"\x00" + b"data"]]
    theirs = P_DATA_TF()
    theirs.from_primitive(prim)
    assert P.decode_pdu(theirs.encode()) == P.PDataTF(
        (P.PDV(1, True, True, b"cmd!"), P.PDV(3, False, False, b"data"))
    )


# ---------------------------------------------------------------- PDUReader: transactional and incremental

STREAM = ASSOCIATE_RQ + P_DATA_TF + RELEASE_RQ + ASSOCIATE_AC + ABORT
STREAM_PDUS = [ASSOCIATE_RQ_PDU, P_DATA_TF_PDU, P.AReleaseRQ(), ASSOCIATE_AC_PDU, P.AAbort(2, 6)]


def _drain(reader: P.PDUReader) -> list[P.PDU]:
    out = []
    while (pdu := reader.next_pdu()) is not None:
        out.append(pdu)
    return out


def test_reader_whole_stream() -> None:
    reader = P.PDUReader()
    reader.feed(STREAM)
    assert _drain(reader) == STREAM_PDUS
    assert reader.buffered == 0


def test_reader_byte_at_a_time_gives_the_same_pdus() -> None:
    reader = P.PDUReader()
    got: list[P.PDU] = []
    for i in range(len(STREAM)):
        reader.feed(STREAM[i : i + 1])
        got += _drain(reader)
    assert got == STREAM_PDUS
    assert reader.buffered == 0


@FAST
@given(st.lists(st.integers(1, len(STREAM)), max_size=20))
def test_reader_any_split_gives_the_same_pdus(cuts: list[int]) -> None:
    reader = P.PDUReader()
    got: list[P.PDU] = []
    bounds = sorted({0, len(STREAM), *cuts})
    for a, b in zip(bounds, bounds[1:]):
        reader.feed(STREAM[a:b])
        got += _drain(reader)
    assert got == STREAM_PDUS


def test_reader_waits_for_a_whole_pdu() -> None:
    reader = P.PDUReader()
    reader.feed(P_DATA_TF[:-1])
    assert reader.next_pdu() is None
    assert reader.buffered == len(P_DATA_TF) - 1  # nothing consumed
    reader.feed(P_DATA_TF[-1:])
    assert reader.next_pdu() == P_DATA_TF_PDU


# ---------------------------------------------------------------- PDUReader: receiving into a PDU's own buffer

BIG = bytes(range(256)) * 300  # 76,800 bytes: above DIRECT_RECEIVE_MIN
BIG_STREAM = (
    P.encode_pdu(P.PDataTF((P.PDV(1, False, False, BIG),)))
    + RELEASE_RQ
    + P.encode_pdu(P.PDataTF((P.PDV(3, False, True, BIG[::-1]),)))
    + P_DATA_TF
)
BIG_PDUS = [P.PDataTF((P.PDV(1, False, False, BIG),)), P.AReleaseRQ(),
            P.PDataTF((P.PDV(3, False, True, BIG[::-1]),)), P_DATA_TF_PDU]


def _read(stream: bytes, sizes: list[int], direct: list[bool]) -> tuple[list[P.PDU], int]:
    """Read `stream` as a transport would: `sizes` bytes at a time, into the reader's receive buffer
    when it offers one and `direct` says so, else through feed. Returns the PDUs and direct reads."""
    reader = P.PDUReader()
    got: list[P.PDU] = []
    pos = k = directs = 0
    while pos < len(stream):
        n = sizes[k % len(sizes)] if sizes else len(stream)
        target = reader.receive_buffer() if direct[k % len(direct)] else None
        if target is not None:
            n = min(n, len(target), len(stream) - pos)
            target[:n] = stream[pos : pos + n]
            reader.received_into(n)
            directs += 1
        else:
            reader.feed(stream[pos : pos + n])
        pos, k = pos + n, k + 1
        got += _drain(reader)
    assert reader.buffered == 0
    return got, directs


def test_reader_receive_buffer_takes_the_rest_of_a_large_pdu() -> None:
    got, directs = _read(BIG_STREAM, [1000], [True])
    assert got == BIG_PDUS
    assert directs >= 2 * (len(BIG) // 1000) - 4  # nearly all of both large PDUs went in directly


def test_reader_offers_no_buffer_for_small_or_complete_pdus() -> None:
    reader = P.PDUReader()
    reader.feed(P_DATA_TF[:8])
    assert reader.receive_buffer() is None  # a small PDU goes through feed
    reader = P.PDUReader()
    reader.feed(BIG_STREAM[:5])
    assert reader.receive_buffer() is None  # header not complete yet
    reader.feed(BIG_STREAM[5 : 6 + len(BIG) + 12])
    assert reader.receive_buffer() is None  # already whole: nothing to receive into
    with pytest.raises(ValueError):
        reader.received_into(1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(500, 70_000), min_size=1, max_size=8), st.lists(st.booleans(), min_size=1, max_size=8))
def test_reader_feed_and_receive_buffer_mixed_give_the_same_pdus(sizes: list[int], direct: list[bool]) -> None:
    got, _ = _read(BIG_STREAM, sizes, direct)
    assert got == BIG_PDUS


def test_pdv_values_stay_valid_after_more_input() -> None:
    """The hot path hands PDV values on without copying: later input must not overwrite them."""
    reader = P.PDUReader()
    reader.feed(BIG_STREAM)
    first = reader.next_pdu()
    rest = _drain(reader)
    reader.feed(BIG_STREAM)  # the same reader takes more bytes
    _drain(reader)
    assert isinstance(first, P.PDataTF) and first.pdvs[0].data == BIG and rest == BIG_PDUS[1:]
    assert first.pdvs[0].data.readonly  # a view, and not one a consumer could write through


def test_reads_sized_by_wanted_keep_large_bodies_out_of_feed() -> None:
    """A transport reading at most `wanted()` bytes (and at most CAP at a time) ends each read after a
    P-DATA-TF at the next header, so a large PDU's body goes into its own buffer: only what the read
    that found its header brought along is copied."""
    cap = 1000
    reader = P.PDUReader()
    pos = copied = 0
    got: list[P.PDU] = []
    while pos < len(BIG_STREAM):
        target = reader.receive_buffer()
        if target is not None:
            n = min(len(target), cap)
            target[:n] = BIG_STREAM[pos : pos + n]
            reader.received_into(n)
        else:
            n = min(reader.wanted(), cap, len(BIG_STREAM) - pos)
            reader.feed(BIG_STREAM[pos : pos + n])
            copied += n
        pos += n
        got += _drain(reader)
    assert got == BIG_PDUS
    assert copied <= 2 * cap + len(P_DATA_TF) + 12  # not 2 x 76,800


def test_control_pdus_read_together_as_they_arrived() -> None:
    """Outside P-DATA no limit: PDUs a peer sent together (say two A-RELEASE-RQ) are read together,
    so the association sees them in one go as before."""
    reader = P.PDUReader()
    assert reader.wanted() == P.WANT_ANY
    reader.feed(RELEASE_RQ[:6])
    assert reader.wanted() == P.WANT_ANY
    reader.feed(RELEASE_RQ[6:] + P_DATA_TF)
    assert _drain(reader) == [P.AReleaseRQ(), P_DATA_TF_PDU]
    assert reader.wanted() == 6  # after a P-DATA-TF: the next header alone


def test_a_huge_announced_pdu_is_not_allocated_up_front() -> None:
    """With no maximum negotiated a peer may announce a 4 GB PDU in six bytes: the reader must not
    allocate it before the bytes come (they go through feed, buffered as they arrive)."""
    reader = P.PDUReader(max_pdata_length=0)
    reader.feed(bytes([P.P_DATA_TF, 0]) + (0xFFFF_FFF0).to_bytes(4, "big"))
    assert reader.receive_buffer() is None
    assert reader.buffered == 6


def test_reader_bad_header_is_reported_by_next_pdu_not_receive_buffer() -> None:
    reader = P.PDUReader(max_pdata_length=1000)
    reader.feed(BIG_STREAM[:6])
    assert reader.receive_buffer() is None
    with pytest.raises(P.PDUDecodeError):
        reader.next_pdu()


# ---------------------------------------------------------------- decode errors


def _raises(data: bytes, reason: int) -> P.PDUDecodeError:
    with pytest.raises(P.PDUDecodeError) as info:
        P.decode_pdu(data)
    assert info.value.reason == reason
    assert isinstance(info.value, ProtocolError) and info.value.source == 2 and info.value.local
    return info.value


def test_truncated_header() -> None:
    _raises(RELEASE_RQ[:5], P.ABORT_INVALID_PARAMETER_VALUE)
    _raises(b"", P.ABORT_INVALID_PARAMETER_VALUE)


def test_length_mismatch() -> None:
    _raises(RELEASE_RQ + b"\x00", P.ABORT_INVALID_PARAMETER_VALUE)
    _raises(ASSOCIATE_RQ[:-1], P.ABORT_INVALID_PARAMETER_VALUE)
    # A-RELEASE-RP whose length field says 5 (and carries 5 bytes): fixed-length PDU of the wrong size.
    _raises(h("06 00 00000005 0000000000"), P.ABORT_INVALID_PARAMETER_VALUE)


def test_item_overrun() -> None:
    raw = bytearray(ASSOCIATE_RQ)
    user_at = len(raw) - 80
    struct.pack_into(">H", raw, user_at + 2, 77)  # one byte more than the PDU holds
    _raises(bytes(raw), P.ABORT_INVALID_PARAMETER_VALUE)


def test_sub_item_overrun() -> None:
    raw = bytearray(ASSOCIATE_RQ)
    role_at = ASSOCIATE_RQ.index(ROLE_ITEM)
    struct.pack_into(">H", raw, role_at + 4, 0x40)  # UID length past the end of the 54H item
    _raises(bytes(raw), P.ABORT_INVALID_PARAMETER_VALUE)


def test_unknown_pdu_type() -> None:
    _raises(h("08 00 00000004 00000000"), P.ABORT_UNRECOGNIZED_PDU)
    reader = P.PDUReader()
    reader.feed(h("ff 00 00000004"))  # known from the header alone
    with pytest.raises(P.PDUDecodeError) as info:
        reader.next_pdu()
    assert info.value.reason == P.ABORT_UNRECOGNIZED_PDU


def test_presentation_context_without_transfer_syntax() -> None:
    raw = b"".join([
        h("01 00 0000007e"),          # A-ASSOCIATE-RQ, length 126 = 68 + 25 + 29 + 4
        h("0001 0000"), b"ANY-SCP         ", b"ECHOSCU         ", bytes(32),
        h("10 00 0015"), APP_CONTEXT,
        h("20 00 0019"),              # Presentation Context, length 25
        h("01 00 00 00"),
        h("30 00 0011"), ECHO,        # abstract syntax, and no 40H sub-item
        h("50 00 0000"),              # empty user information
    ])
    _raises(raw, P.ABORT_INVALID_PARAMETER_VALUE)


def test_missing_user_information_and_application_context() -> None:
    no_user = bytearray(ASSOCIATE_RQ[:-80])
    struct.pack_into(">I", no_user, 2, len(no_user) - 6)
    _raises(bytes(no_user), P.ABORT_INVALID_PARAMETER_VALUE)


def test_pdata_over_our_maximum_length() -> None:
    reader = P.PDUReader(max_pdata_length=20)  # P_DATA_TF is 21 bytes long
    reader.feed(P_DATA_TF[:6])  # the header alone is enough to know
    with pytest.raises(P.PDUDecodeError) as info:
        reader.next_pdu()
    assert info.value.reason == P.ABORT_INVALID_PARAMETER_VALUE
    ok = P.PDUReader(max_pdata_length=21)
    ok.feed(P_DATA_TF)
    assert ok.next_pdu() == P_DATA_TF_PDU


def test_pdv_with_even_context_id() -> None:
    raw = bytearray(P_DATA_TF)
    raw[10] = 2
    _raises(bytes(raw), P.ABORT_INVALID_PARAMETER_VALUE)


def test_pdv_length_overruns_pdu() -> None:
    raw = bytearray(P_DATA_TF)
    struct.pack_into(">I", raw, 6, 100)
    _raises(bytes(raw), P.ABORT_INVALID_PARAMETER_VALUE)


def test_abort_with_invalid_source() -> None:
    _raises(h("07 00 00000004 00 00 03 00"), P.ABORT_INVALID_PARAMETER_VALUE)


def test_unexpected_item_type_in_associate() -> None:
    # A 21H (AC) presentation context inside an A-ASSOCIATE-RQ: unexpected PDU parameter.
    raw = bytearray(ASSOCIATE_RQ)
    raw[ASSOCIATE_RQ.index(h("20 00 002e"))] = 0x21
    _raises(bytes(raw), P.ABORT_UNEXPECTED_PARAMETER)


# ---------------------------------------------------------------- hypothesis: round trips


@FAST
@given(S.pdus)
def test_round_trip_every_pdu(pdu: P.PDU) -> None:
    raw = P.encode_pdu(pdu)
    assert P.decode_pdu(raw) == pdu
    assert P.encode_pdu(P.decode_pdu(raw)) == raw


@pytest.mark.parametrize(
    "strategy",
    [S.associate_rqs(), S.associate_acs(), S.associate_rjs, S.pdata_tfs, S.release_rqs, S.release_rps, S.aborts],
    ids=PDU_IDS,
)
@FAST
@given(data=st.data())
def test_round_trip_per_pdu_type(strategy: st.SearchStrategy[P.PDU], data: st.DataObject) -> None:
    pdu = data.draw(strategy)
    assert P.decode_pdu(P.encode_pdu(pdu)) == pdu


@pytest.mark.parametrize(
    "strategy",
    [
        S.maximum_lengths, S.implementation_class_uids, S.async_windows, S.role_selections,
        S.implementation_version_names, S.extended_negotiations, S.common_extended_negotiations,
        S.user_identities_rq, S.user_identities_ac, S.unknown_sub_items,
    ],
    ids=SUB_ITEM_IDS,
)
@FAST
@given(data=st.data())
def test_round_trip_per_sub_item_type(strategy: st.SearchStrategy[P.SubItem], data: st.DataObject) -> None:
    item = data.draw(strategy)
    raw = P.encode_sub_item(item)
    item_type, reserved, length = struct.unpack(">BBH", raw[:4])
    assert length == len(raw) - 4
    assert P.decode_sub_item(item_type, reserved, memoryview(raw[4:])) == item


@FAST
@given(st.lists(S.pdus, min_size=1, max_size=4), st.data())
def test_reader_round_trip_of_random_streams(pdus: list[P.PDU], data: st.DataObject) -> None:
    stream = b"".join(P.encode_pdu(p) for p in pdus)
    step = data.draw(st.integers(1, 64))
    reader = P.PDUReader()
    got: list[P.PDU] = []
    for i in range(0, len(stream), step):
        reader.feed(stream[i : i + step])
        got += _drain(reader)
    assert got == pdus


# ---------------------------------------------------------------- hypothesis: nothing but PDUDecodeError


def _only_decode_errors(data: bytes) -> None:
    try:
        P.decode_pdu(data)
    except P.PDUDecodeError:
        pass
    reader = P.PDUReader(max_pdata_length=1 << 16)
    reader.feed(data)
    try:
        _drain(reader)
    except P.PDUDecodeError:
        pass


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    _only_decode_errors(data)


@FAST
@given(st.sampled_from([1, 2, 3, 4, 5, 6, 7]), st.binary(max_size=200))
def test_random_bodies_behind_valid_headers_raise_only_decode_errors(pdu_type: int, body: bytes) -> None:
    _only_decode_errors(struct.pack(">BBI", pdu_type, 0, len(body)) + body)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.one_of(st.sampled_from([r for r, _ in PDUS]), S.pdus.map(P.encode_pdu))))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "flip" and raw:
            raw[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del raw[at : at + draw(st.integers(1, 8))]
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
    if draw(st.booleans()) and len(raw) >= 6:
        struct.pack_into(">I", raw, 2, len(raw) - 6)  # keep the PDU length consistent, go deeper
    return bytes(raw)


@FAST
@given(_mutated())
def test_mutated_pdus_raise_only_decode_errors(data: bytes) -> None:
    _only_decode_errors(data)


# ---------------------------------------------------------------- validation on construction (known gaps)


def test_non_ascii_uid_is_refused_on_construction() -> None:
    with pytest.raises(ValueError):
        P.PresentationContextRQ(1, "1.2.é", (IMPLICIT.decode(),))


def test_oversized_user_identity_is_refused_on_construction() -> None:
    with pytest.raises(ValueError):
        P.UserIdentityRQ(1, False, b"x" * 70000)


@pytest.mark.parametrize("name", [" X", "X ", "é", "", "A" * 17, "A\x00"])
def test_version_name_outside_ps37_is_refused(name: str) -> None:
    # PS3.7 D.3.3.2.3: 1 to 16 characters of the default repertoire; padding would not survive the trip.
    with pytest.raises(ValueError):
        P.ImplementationVersionName(name)


@pytest.mark.parametrize("name", ["X", "DICOM_AGENT_1.0", "A" * 16, "A B"])
def test_version_name_round_trips(name: str) -> None:
    item = P.ImplementationVersionName(name)
    raw = P.encode_sub_item(item)
    assert raw[0] == 0x55 and raw[4:] == name.encode("ascii")
    assert P.decode_sub_item(raw[0], raw[1], memoryview(raw[4:])) == item
