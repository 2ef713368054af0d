"""User Identity (PS3.7 D.3.3.7) and access control per peer, against real peers.

- DCMTK echoscu / storescu: an allowed and an unknown calling AE, a calling AE bound to another host,
  a service allowed and one refused (its context rejected), username/passcode right, wrong and absent
  where required, and the positive response asked for (`-rsp`).
- pynetdicom as SCU: username/passcode right (with the positive response), wrong, absent where required.
- The agent as SCU: to pynetdicom's SCP (its EVT_USER_ID handler sees what we sent; a positive response
  we asked for and did not get ends the association on our side), and, from a profile peer through the
  store-and-forward queue, to DCMTK storescp (which does not check identities: the agent must still work).
- The captured log at INFO holds neither a passcode nor a patient name.

Each test starts its own agent (a fraction of a second) and runs every case of its kind on it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from agent.errors import AssociationRejected
from agent.net.connection import Timeouts
from agent.security import ClientIdentity, IdentityNotConfirmed, hash_password
from agent.services.verification import VERIFICATION_SOP_CLASS, echo
from agent.store.queue import JobState
from tests.conftest import free_port, require_pynetdicom, require_tool, write_profile
from tests.interop.storage_helpers import index_count, make_image, run, start_peer, wait_files, wait_listening

pytestmark = pytest.mark.interop

FAST = Timeouts(artim=10, dimse=10, idle=20, connect=10)
PASSCODE = "Correct-Horse-7"
WRONG = "Wrong-Horse-7"
CT = "1.2.840.10008.5.1.4.1.1.2"
PATIENT = "MÜLLER^JÜRGEN"  # what storage_helpers.make_image writes


def security_profile(directory: Path) -> object:
    """Store needs an authenticated user; MODALITY (loopback only) may echo and store, ECHOONLY may
    only echo, ELSEWHERE is bound to another network, PYN may do everything."""
    return write_profile(directory, f"""
        [storage]
        accept = "all-storage"

        [security]
        users = {{ alice = "{hash_password(PASSCODE)}" }}
        require_identity = ["store"]

        [[security.access]]
        calling_ae = "MODALITY"
        services = ["verification", "store"]
        hosts = ["127.0.0.1"]

        [[security.access]]
        calling_ae = "ECHOONLY"
        services = ["verification"]

        [[security.access]]
        calling_ae = "ELSEWHERE"
        services = "all"
        hosts = ["192.0.2.0/24"]

        [[security.access]]
        calling_ae = "PYN"
        services = "all"
        """)


# ---------------------------------------------------------------- DCMTK -> agent


async def test_dcmtk_access_control_and_identity(tmp_path: Path, start_agent) -> None:
    echoscu, storescu = require_tool("echoscu"), require_tool("storescu")
    running = await start_agent(security_profile(tmp_path / "agent"))
    port = str(running.port)
    image = make_image(tmp_path / "ct.dcm")

    rc, out = await run([echoscu, "-aet", "MODALITY", "-aec", "AGENT", "127.0.0.1", port])
    assert rc == 0, out
    rc, out = await run([echoscu, "-aet", "ECHOONLY", "-aec", "AGENT", "127.0.0.1", port])
    assert rc == 0, out
    for stranger in ("STRANGER", "ELSEWHERE"):  # unknown; known but bound to another network
        rc, out = await run([echoscu, "-aet", stranger, "-aec", "AGENT", "127.0.0.1", port])
        assert rc != 0 and "Association Rejected" in out, out
        assert "Rejected Permanent, Source: Service User" in out and "Calling AE Title Not Recognized" in out, out

    # ECHOONLY may not store: its storage context is rejected, the association itself is accepted.
    rc, out = await run([storescu, "-d", "-R", "-aet", "ECHOONLY", "-aec", "AGENT",
                         "--user", "alice", "--password", PASSCODE, "127.0.0.1", port, str(image)])
    assert rc != 0 and "No Acceptable Presentation Contexts" in out, out
    assert "Context ID:        1 (User Rejection)" in out, out

    # MODALITY may store, with an authenticated user only (require_identity = ["store"]).
    rc, out = await run([storescu, "-aet", "MODALITY", "-aec", "AGENT", "127.0.0.1", port, str(image)])
    assert rc != 0 and "Rejected Permanent, Source: Service Provider (ACSE Related)" in out, out
    rc, out = await run([storescu, "-aet", "MODALITY", "-aec", "AGENT", "--user", "alice", "--password", WRONG,
                         "127.0.0.1", port, str(image)])
    assert rc != 0 and "Rejected Permanent, Source: Service Provider (ACSE Related)" in out, out
    assert index_count(running.data_dir) == 0
    # Right passcode, and the positive response asked for (-rsp): storescu checks it came back.
    rc, out = await run([storescu, "-v", "-aet", "MODALITY", "-aec", "AGENT", "--user", "alice",
                         "--password", PASSCODE, "-rsp", "127.0.0.1", port, str(image)])
    assert rc == 0 and "Received Store Response (Success)" in out, out
    assert index_count(running.data_dir) == 1


# ---------------------------------------------------------------- pynetdicom -> agent, and the logs


async def test_pynetdicom_identity_and_nothing_sensitive_in_logs(tmp_path: Path, start_agent, caplog) -> None:
    require_pynetdicom()
    from pydicom import dcmread
    from pynetdicom import AE
    from pynetdicom.pdu_primitives import UserIdentityNegotiation

    caplog.set_level(logging.DEBUG, logger="agent")  # the wire trace too: it must hide the passcode
    running = await start_agent(security_profile(tmp_path / "agent"))
    ds = dcmread(make_image(tmp_path / "ct.dcm"))

    def identity(passcode: str | None, response: bool = True) -> list[UserIdentityNegotiation]:
        if passcode is None:
            return []
        item = UserIdentityNegotiation()
        item.user_identity_type = 2
        item.primary_field = b"alice"
        item.secondary_field = passcode.encode()
        item.positive_response_requested = response
        return [item]

    def attempt(passcode: str | None, contexts: list[str]) -> tuple[bool, bytes | None, list[int]]:
        """(established, the server response if any, store statuses) for one association."""
        ae = AE(ae_title="PYN")
        for uid in contexts:
            ae.add_requested_context(uid)
        assoc = ae.associate("127.0.0.1", running.port, ae_title="AGENT", ext_neg=identity(passcode))
        if not assoc.is_established:
            return False, None, []
        response = assoc.acceptor.user_identity
        statuses = []
        if CT in contexts:
            statuses.append(int(assoc.send_c_store(ds).Status))
        assoc.release()
        return True, response.server_response if response is not None else None, statuses

    ok, response, statuses = await trio.to_thread.run_sync(attempt, PASSCODE, [CT])
    assert ok and response == b"" and statuses == [0x0000]  # PS3.7 D.3.3.7: empty response for type 2
    ok, _, _ = await trio.to_thread.run_sync(attempt, WRONG, [CT, VERIFICATION_SOP_CLASS])
    assert not ok
    ok, _, _ = await trio.to_thread.run_sync(attempt, None, [CT])  # absent where required
    assert not ok
    ok, response, _ = await trio.to_thread.run_sync(attempt, None, [VERIFICATION_SOP_CLASS])
    assert ok and response is None  # verification does not require an identity here
    assert index_count(running.data_dir) == 1

    messages = [r.getMessage() for r in caplog.records if r.name.startswith("agent")]
    assert any("authentication-failed" in m and "'alice'" in m for m in messages), messages
    assert any("passcode not shown" in m for m in messages)  # the debug trace described the item
    assert not any(PASSCODE in m or WRONG in m for m in messages)  # at any level
    at_info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert at_info and not any(PATIENT in m or "MÜLLER" in m for m in at_info), at_info


# ---------------------------------------------------------------- agent -> pynetdicom


async def test_agent_identity_to_pynetdicom_scp(tmp_path: Path) -> None:
    require_pynetdicom()
    from pynetdicom import AE, evt

    seen: list[tuple[int, bytes, bytes]] = []

    def on_user_id(event) -> tuple[bool, bytes | None]:  # pynetdicom's acceptor-side check
        seen.append((event.user_id_type, event.primary_field, event.secondary_field))
        if event.user_id_type == 5:
            return event.primary_field == b"header.payload.sig", b"server-token"
        return event.secondary_field == PASSCODE.encode(), None

    ae = AE(ae_title="PYNSCP")
    ae.add_supported_context(VERIFICATION_SOP_CLASS)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_USER_ID, on_user_id)])
    token = tmp_path / "token.jwt"
    token.write_text("header.payload.sig\n")

    async def echo_as(identity: ClientIdentity) -> int:
        result = await echo("127.0.0.1", port, calling_ae="AGENTSCU", called_ae="PYNSCP", timeouts=FAST,
                            user_identity=identity)
        return result.status

    try:
        # A JWT with the positive response asked for: pynetdicom answers it, the echo goes through.
        assert await echo_as(ClientIdentity("jwt", file=token, positive_response=True)) == 0
        assert seen[-1] == (5, b"header.payload.sig", b"")
        # Username and passcode without asking for a response.
        assert await echo_as(ClientIdentity("username-passcode", "alice", PASSCODE)) == 0
        assert seen[-1] == (2, b"alice", PASSCODE.encode())
        # Asked for, but pynetdicom sends no response for type 2: we refuse to go on, clearly.
        with pytest.raises(IdentityNotConfirmed, match="without confirming the user identity"):
            await echo_as(ClientIdentity("username-passcode", "alice", PASSCODE, positive_response=True))
        # A wrong passcode: pynetdicom rejects the association.
        with pytest.raises(AssociationRejected):
            await echo_as(ClientIdentity("username-passcode", "alice", WRONG))
        assert seen[-1] == (2, b"alice", WRONG.encode())
    finally:
        await trio.to_thread.run_sync(server.shutdown)


# ---------------------------------------------------------------- agent (profile peer) -> DCMTK storescp


async def test_forward_with_identity_to_dcmtk_storescp(tmp_path: Path, start_agent, nursery: trio.Nursery) -> None:
    """storescp (forking, so both destinations can be connected at once) does not check identities: the
    forward must work with the peer's identity configured, and storescp's own debug dump shows it received the username (not that we trust it to check).
    A second peer entry for the same storescp asks for a positive response, which storescp never sends:
    its job fails with that reason and stays queued for a retry (never delivered, never dead)."""
    storescp, storescu = require_tool("storescp"), require_tool("storescu")
    out_dir = tmp_path / "pacs"
    out_dir.mkdir()
    pacs_port = free_port()
    log = tmp_path / "storescp.log"
    proc = await start_peer(nursery, [storescp, "-d", "--fork", "-aet", "PACS", "-od", str(out_dir), str(pacs_port)], log)
    try:
        await wait_listening(pacs_port, proc)
        running = await start_agent(write_profile(tmp_path / "agent", f"""
            [peers.pacs]
            ae_title = "PACS"
            host = "127.0.0.1"
            port = {pacs_port}

            [peers.pacs.identity]
            type = "username-passcode"
            username = "agent-user"
            passcode = "{PASSCODE}"

            [peers.confirming]
            ae_title = "PACS"
            host = "127.0.0.1"
            port = {pacs_port}
            retry_base = "1h"
            retry_cap = "1h"

            [peers.confirming.identity]
            type = "username"
            username = "agent-user"
            positive_response = true

            [storage]
            forward_to = ["pacs", "confirming"]
            """, agent_extra='artim_timeout = "30s"'))
        rc, out = await run([storescu, "-aec", "AGENT", "127.0.0.1", str(running.port),
                             str(make_image(tmp_path / "ct.dcm"))])
        assert rc == 0, out
        await wait_files(out_dir, 1, timeout=30)
        dump = log.read_text(errors="replace")
        assert "agent-user" in dump, dump[-3000:]
        queue = running.agent.queue
        with trio.fail_after(30):
            while not (jobs := [j for j in queue.list(destination="confirming") if j.last_error]):
                await trio.sleep(0.05)
        assert jobs[0].state is JobState.PENDING, jobs
        assert "without confirming the user identity (username 'agent-user')" in jobs[0].last_error, jobs
    finally:
        proc.kill()



# ---------------------------------------------------------------- access bound to a TLS client certificate


async def test_dcmtk_access_bound_to_certificate_subject(tmp_path: Path, start_agent, tls_pki) -> None:
    """A rule with certificate_subject admits MOD1 only over TLS with modality1's certificate: not
    without a certificate (client certificates optional here), not on the plain port."""
    from tests.tls_certs import CLIENT_SUBJECT

    echoscu = require_tool("echoscu")
    tls_port = free_port()
    running = await start_agent(write_profile(tmp_path / "agent", f"""
        [tls]
        port = {tls_port}
        certificate = "{tls_pki.server_pem}"
        key = "{tls_pki.server_key}"
        ca = "{tls_pki.ca_pem}"
        client_certificates = "optional"

        [[security.access]]
        calling_ae = "MOD1"
        services = ["verification"]
        certificate_subject = "{CLIENT_SUBJECT}"
        """))
    with_cert = ["+tls", str(tls_pki.client_key), str(tls_pki.client_pem), "-pw", "+cf", str(tls_pki.ca_pem)]
    anonymous = ["+tla", "+cf", str(tls_pki.ca_pem)]
    rc, out = await run([echoscu, *with_cert, "-aet", "MOD1", "-aec", "AGENT", "127.0.0.1", str(tls_port)])
    assert rc == 0, out
    for how, port, title in ((anonymous, tls_port, "MOD1"), ([], running.port, "MOD1"),
                             (with_cert, tls_port, "OTHER")):
        rc, out = await run([echoscu, *how, "-aet", title, "-aec", "AGENT", "127.0.0.1", str(port)])
        assert rc != 0 and "Calling AE Title Not Recognized" in out, (how, title, out)
