"""TLS against real peers: DCMTK's echoscu/storescu (`+tls`, profiles `+py` and `+px`) against the
agent's TLS listener; the agent's `echo`/`store` commands and its forwarding queue against DCMTK
`storescp +tls`; pynetdicom with an `ssl` context both ways; mutual authentication failing cleanly
(wrong CA, expired, no certificate, a certificate for another host); SIGHUP reloading the certificate
of a running `dicom-agent run` with an association open across it. Certificates: tests/tls_certs.py."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from agent.net.client import associate
from agent.net.connection import Timeouts
from agent.net.tls import PeerTls
from agent.services.verification import VERIFICATION_SOP_CLASS, echo
from agent.ul.negotiation import ProposedContext
from tests.conftest import free_port, require_pynetdicom, require_tool, wait_listening, write_profile
from tests.interop.storage_helpers import index_count, make_image, run, start_peer, wait_files
from tests.tls_certs import CLIENT_SUBJECT

pytestmark = pytest.mark.interop

FAST = Timeouts(artim=30, dimse=30, idle=30, connect=30)  # deadlines, not expectations


def tls_section(pki, port: int, *, certificate: Path | None = None, key: Path | None = None) -> str:
    return f"""
        [tls]
        port = {port}
        certificate = "{certificate or pki.server_pem}"
        key = "{key or pki.server_key}"
        ca = "{pki.ca_pem}"
        """


def dcmtk_tls(pki, who: str = "client", profile: str = "+py") -> list[str]:
    return ["+tls", str(getattr(pki, f"{who}_key")), str(getattr(pki, f"{who}_pem")), "-pw", "+cf", str(pki.ca_pem),
            profile]


async def wait_failure(caplog, fragment: str) -> list[str]:
    with trio.fail_after(30):
        while True:
            failures = [r.getMessage() for r in caplog.records if getattr(r, "tls_event", "") == "failed"]
            if any(fragment in f for f in failures):
                return failures
            await trio.sleep(0.01)


# ---------------------------------------------------------------- DCMTK against the agent


async def test_dcmtk_echoscu_storescu_tls_against_agent(tmp_path: Path, start_agent, tls_pki, caplog) -> None:
    echoscu, storescu = require_tool("echoscu"), require_tool("storescu")
    caplog.set_level(logging.INFO, logger="agent.net.tls")
    port = free_port()
    running = await start_agent(write_profile(tmp_path, tls_section(tls_pki, port) + "\n[storage]\n"))
    image = make_image(tmp_path / "in" / "ct.dcm")
    for profile in ("+py", "+px"):  # Non-downgrading BCP 195 and BCP 195, as DCMTK implements them
        rc, out = await run([echoscu, "-v", *dcmtk_tls(tls_pki, profile=profile), "-aet", "DCMTK", "-aec", "AGENT",
                             "127.0.0.1", str(port)])
        assert rc == 0 and "Received Echo Response (Success)" in out, out
        rc, out = await run([storescu, *dcmtk_tls(tls_pki, profile=profile), "-aet", "DCMTK", "-aec", "AGENT",
                             "127.0.0.1", str(port), str(image)])
        assert rc == 0, out
    assert index_count(running.data_dir) == 1  # the same instance twice: stored once

    # Mutual authentication failing cleanly: each refused with its reason, the listener unharmed.
    for who, reason in (("rogue", "certificate verify failed"),
                        ("expired", "certificate verify failed: certificate has expired")):
        rc, out = await run([echoscu, *dcmtk_tls(tls_pki, who), "-aec", "AGENT", "127.0.0.1", str(port)])
        assert rc != 0 and "Echo Response (Success)" not in out, out
        await wait_failure(caplog, reason)
    rc, out = await run([echoscu, "+tla", "+cf", str(tls_pki.ca_pem), "-aec", "AGENT", "127.0.0.1", str(port)])
    assert rc != 0, out
    await wait_failure(caplog, "peer did not return a certificate")
    # A plain-TCP caller on the TLS port gets nothing, and the listener still serves.
    rc, out = await run([echoscu, "-aec", "AGENT", "127.0.0.1", str(port)])
    assert rc != 0, out
    rc, out = await run([echoscu, *dcmtk_tls(tls_pki), "-aec", "AGENT", "127.0.0.1", str(port)])
    assert rc == 0, out


# ---------------------------------------------------------------- the agent against DCMTK storescp +tls


async def start_storescp(nursery: trio.Nursery, pki, folder: Path, who: str = "server") -> int:
    storescp = require_tool("storescp")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    proc = await start_peer(
        nursery,
        [storescp, *dcmtk_tls(pki, who), "-rc", "-aet", "STORESCP", "-od", str(folder), str(port)],
        folder.parent / f"storescp-{who}.log",
    )
    await wait_listening(port, proc)
    return port


def agent_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


async def test_agent_echo_store_and_forwarding_over_tls_to_dcmtk(
    tmp_path: Path, nursery: trio.Nursery, start_agent, tls_pki
) -> None:
    received = tmp_path / "received"
    port = await start_storescp(nursery, tls_pki, received)
    tls = ["--tls", "--tls-ca", str(tls_pki.ca_pem), "--tls-cert", str(tls_pki.client_pem),
           "--tls-key", str(tls_pki.client_key)]
    rc, out = await run(agent_cli("echo", *tls, "--aec", "STORESCP", "127.0.0.1", str(port)))
    assert rc == 0 and "0x0000 Success" in out, out
    image = make_image(tmp_path / "in" / "ct.dcm")
    rc, out = await run(agent_cli("store", *tls, "--aec", "STORESCP", "127.0.0.1", str(port), str(image)))
    assert rc == 0 and "sent 1" in out, out
    await wait_files(received, 1)
    # Without our client certificate storescp (-rc) refuses us: a clean failure, exit 69.
    rc, out = await run(agent_cli("echo", "--tls", "--tls-ca", str(tls_pki.ca_pem), "--aec", "STORESCP",
                                  "127.0.0.1", str(port)))
    assert rc == 69 and "Traceback" not in out, out
    # The queue (every SCU path goes through the same connect): a peer with `tls = true`.
    running = await start_agent(write_profile(tmp_path / "agent", f"""
        [peers.pacs]
        ae_title = "STORESCP"
        host = "127.0.0.1"
        port = {port}
        tls = true
        tls_ca = "{tls_pki.ca_pem}"
        tls_certificate = "{tls_pki.client_pem}"
        tls_key = "{tls_pki.client_key}"

        [storage]
        forward_to = ["pacs"]
        """))
    storescu = require_tool("storescu")
    second = make_image(tmp_path / "in" / "ct2.dcm", seed=2)
    rc, out = await run([storescu, "-aec", "AGENT", "127.0.0.1", str(running.port), str(second)])
    assert rc == 0, out
    await wait_files(received, 2, timeout=60)


async def test_agent_refuses_dcmtk_with_a_certificate_for_another_host(
    tmp_path: Path, nursery: trio.Nursery, tls_pki
) -> None:
    port = await start_storescp(nursery, tls_pki, tmp_path / "received", who="otherhost")
    tls = ["--tls", "--tls-ca", str(tls_pki.ca_pem), "--tls-cert", str(tls_pki.client_pem),
           "--tls-key", str(tls_pki.client_key)]
    rc, out = await run(agent_cli("echo", *tls, "--aec", "STORESCP", "127.0.0.1", str(port)))
    assert rc == 69 and "certificate verify failed: IP address mismatch" in out, out
    rc, out = await run(agent_cli("echo", *tls, "--tls-server-name", "otherhost.example", "--aec", "STORESCP",
                                  "127.0.0.1", str(port)))
    assert rc == 0, out


# ---------------------------------------------------------------- pynetdicom, both ways


def client_context(pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_pem))
    ctx.load_cert_chain(pki.client_pem, pki.client_key)
    return ctx


async def test_pynetdicom_with_ssl_context_both_ways(tmp_path: Path, start_agent, tls_pki) -> None:
    require_pynetdicom()
    from pynetdicom import AE, evt

    port = free_port()
    running = await start_agent(write_profile(tmp_path, tls_section(tls_pki, port)))
    seen = []
    running.agent.listener.on_association = seen.append
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(VERIFICATION_SOP_CLASS)

    def echo_over_tls() -> int:
        assoc = ae.associate("127.0.0.1", port, ae_title="AGENT", tls_args=(client_context(tls_pki), "localhost"))
        assert assoc.is_established
        status = assoc.send_c_echo()
        assoc.release()
        return int(status.Status)

    assert await trio.to_thread.run_sync(echo_over_tls) == 0
    assert seen[0].peer_certificate_subject == CLIENT_SUBJECT

    # pynetdicom's SCP with TLS, requiring our client certificate.
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls_pki.ca_pem))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_cert_chain(tls_pki.server_pem, tls_pki.server_key)
    callers: list[str] = []

    def on_echo(event) -> int:
        callers.append(event.assoc.requestor.ae_title)
        return 0x0000

    scp = AE(ae_title="PYNSCP")
    scp.add_supported_context(VERIFICATION_SOP_CLASS)
    scp_port = free_port()
    server = scp.start_server(("127.0.0.1", scp_port), block=False, ssl_context=server_ctx,
                              evt_handlers=[(evt.EVT_C_ECHO, on_echo)])
    try:
        peer = PeerTls(ca=tls_pki.ca_pem, certificate=tls_pki.client_pem, key=tls_pki.client_key)
        result = await echo("127.0.0.1", scp_port, calling_ae="AGENTSCU", called_ae="PYNSCP", timeouts=FAST, tls=peer)
        assert result.ok and callers == ["AGENTSCU"]
        # Against a server that only speaks TLS 1.1 the agent refuses to connect.
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        old.load_cert_chain(tls_pki.server_pem, tls_pki.server_key)
        old.set_ciphers("ALL:@SECLEVEL=0")
        with pytest.warns(DeprecationWarning):
            old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        old_port = free_port()
        old_server = scp.start_server(("127.0.0.1", old_port), block=False, ssl_context=old)
        try:
            from agent.net.tls import TlsHandshakeFailed

            with pytest.raises(TlsHandshakeFailed):
                await echo("127.0.0.1", old_port, calling_ae="AGENTSCU", called_ae="PYNSCP", timeouts=FAST, tls=peer)
        finally:
            await trio.to_thread.run_sync(old_server.shutdown)
    finally:
        await trio.to_thread.run_sync(server.shutdown)


# ---------------------------------------------------------------- SIGHUP on a running agent


async def test_sighup_reloads_the_certificate_without_dropping_an_association(tmp_path: Path, tls_pki) -> None:
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(tls_pki.server_pem, live / "cert.pem")
    shutil.copy(tls_pki.server_key, live / "key.pem")
    port, plain = free_port(), free_port()
    profile = write_profile(tmp_path, tls_section(tls_pki, port, certificate=live / "cert.pem", key=live / "key.pem"),
                            port=plain)
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--profile", profile.source], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        await wait_listening(port, timeout=60)
        peer = PeerTls(ca=tls_pki.ca_pem, certificate=tls_pki.client_pem, key=tls_pki.client_key)
        proposals = [ProposedContext(VERIFICATION_SOP_CLASS)]
        async with associate("127.0.0.1", port, calling_ae="BEFORE", called_ae="AGENT", proposals=proposals,
                             timeouts=FAST, tls=peer) as before:
            assert before.peer_certificate_subject == "CN=localhost,O=Test Hospital"
            shutil.copy(tls_pki.server2_pem, live / "cert.pem")
            shutil.copy(tls_pki.server2_key, live / "key.pem")
            proc.send_signal(signal.SIGHUP)
            with trio.fail_after(60):  # the reload is done when a new handshake shows the new certificate
                while True:
                    async with associate("127.0.0.1", port, calling_ae="AFTER", called_ae="AGENT",
                                         proposals=proposals, timeouts=FAST, tls=peer) as after:
                        if after.peer_certificate_subject == "CN=localhost-renewed,O=Test Hospital":
                            break
                    await trio.sleep(0.05)
            from agent.dimse import CEchoRQ
            from agent.net.requests import request

            ctx = before.context_for(VERIFICATION_SOP_CLASS)
            reply = await request(before, ctx.id, CEchoRQ(message_id=before.next_message_id(),
                                                          affected_sop_class_uid=VERIFICATION_SOP_CLASS))
            assert reply.status == 0  # the association opened before the reload still works
        assert proc.poll() is None  # SIGHUP did not stop the agent
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            log.close()
    text = (tmp_path / "agent.log").read_text()
    assert "TLS certificate, key and CA bundle reloaded" in text, text
    assert os.stat(profile.agent.data_dir / "agent.db").st_mode & 0o007 == 0
