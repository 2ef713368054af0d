"""TLS (PS3.15 Annex B) between the agent's listener and its own SCU, in one process: mutual
authentication and each way it fails, the peer certificate's subject on the association, protocol
versions and cipher suites refused, a silent TLS caller under ARTIM, and a certificate reload with an
association open across it. Real peers (DCMTK, pynetdicom) are in tests/interop/test_tls_interop.py."""

from __future__ import annotations

import logging
import shutil
import ssl
import warnings
from pathlib import Path

import pytest
import trio

from agent.errors import AgentError, ConnectionFailed
from agent.net.client import associate
from agent.net.connection import DicomConnection, Timeouts
from agent.net.tls import PeerTls, TlsHandshakeFailed
from agent.services.verification import VERIFICATION_SOP_CLASS, echo
from agent.ul.negotiation import ProposedContext
from tests.conftest import free_port, write_profile
from tests.tls_certs import CLIENT_SUBJECT

FAST = Timeouts(artim=30, dimse=30, idle=30, connect=30)  # deadlines, not expectations


def tls_section(pki, port: int, *, client_certificates: str = "required", extra: str = "",
                certificate: Path | None = None, key: Path | None = None) -> str:
    return f"""
        [tls]
        port = {port}
        certificate = "{certificate or pki.server_pem}"
        key = "{key or pki.server_key}"
        ca = "{pki.ca_pem}"
        client_certificates = "{client_certificates}"
        {extra}
        """


def client(pki, *, cert: str | None = "client", **kw) -> PeerTls:
    return PeerTls(ca=pki.ca_pem, certificate=getattr(pki, f"{cert}_pem") if cert else None,
                   key=getattr(pki, f"{cert}_key") if cert else None, **kw)


async def tls_agent(tmp_path: Path, start_agent, pki, **kw):
    port = free_port()
    running = await start_agent(write_profile(tmp_path, tls_section(pki, port, **kw)))
    seen: list[DicomConnection] = []
    running.agent.listener.on_association = seen.append
    return running, port, seen


async def test_mutual_tls_echo_and_the_callers_subject(tmp_path: Path, start_agent, tls_pki, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.net.tls")
    running, port, seen = await tls_agent(tmp_path, start_agent, tls_pki)
    assert running.agent.tls_ports == [port]
    result = await echo("127.0.0.1", port, calling_ae="MOD1", called_ae="AGENT", timeouts=FAST,
                        tls=client(tls_pki))
    assert result.ok
    # The listener knows who the caller proved to be (access control binds AE titles to it).
    assert [c.peer_certificate_subject for c in seen] == [CLIENT_SUBJECT]
    # And the plain port still serves plain TCP, with no certificate subject.
    assert (await echo("127.0.0.1", running.port, calling_ae="PLAIN", called_ae="AGENT", timeouts=FAST)).ok
    assert seen[1].peer_certificate_subject is None
    # Our client saw the listener's certificate, and the events were reported on both sides.
    events = [(r.tls_event, r.subject) for r in caplog.records if hasattr(r, "tls_event")]
    assert ("succeeded", CLIENT_SUBJECT) in events and ("succeeded", "CN=localhost,O=Test Hospital") in events


@pytest.mark.parametrize(
    ("cert", "server_reason"),
    [
        (None, "peer did not return a certificate"),
        ("rogue", "certificate verify failed"),  # issued by a CA the agent does not trust
        ("expired", "certificate verify failed: certificate has expired"),
    ],
)
async def test_bad_client_certificate_is_refused_cleanly(
    tmp_path: Path, start_agent, tls_pki, caplog, cert: str | None, server_reason: str
) -> None:
    caplog.set_level(logging.INFO, logger="agent.net.tls")
    running, port, seen = await tls_agent(tmp_path, start_agent, tls_pki)
    with pytest.raises(AgentError):
        await echo("127.0.0.1", port, calling_ae="MOD1", called_ae="AGENT", timeouts=FAST, tls=client(tls_pki, cert=cert))
    with trio.fail_after(30):  # TLS 1.3: the client may finish before the server has judged it
        while not any(getattr(r, "tls_event", "") == "failed" for r in caplog.records):
            await trio.sleep(0.01)
    failures = [r.getMessage() for r in caplog.records if getattr(r, "tls_event", "") == "failed"]
    assert any(server_reason in f and "127.0.0.1" in f for f in failures), failures
    assert seen == []  # no association was established
    # The listener is not stalled: a good caller is served at once.
    assert (await echo("127.0.0.1", port, calling_ae="MOD1", called_ae="AGENT", timeouts=FAST,
                       tls=client(tls_pki))).ok


async def test_optional_client_certificate(tmp_path: Path, start_agent, tls_pki) -> None:
    running, port, seen = await tls_agent(tmp_path, start_agent, tls_pki, client_certificates="optional")
    assert (await echo("127.0.0.1", port, calling_ae="ANON", called_ae="AGENT", timeouts=FAST,
                       tls=client(tls_pki, cert=None))).ok
    assert seen[0].peer_certificate_subject is None


async def test_our_client_refuses_a_certificate_for_another_host_or_subject(tmp_path: Path, start_agent, tls_pki) -> None:
    running, port, _ = await tls_agent(tmp_path, start_agent, tls_pki, certificate=tls_pki.otherhost_pem,
                                       key=tls_pki.otherhost_key)
    with pytest.raises(TlsHandshakeFailed, match="certificate verify failed: (Hostname|IP address) mismatch"):
        await echo("127.0.0.1", port, calling_ae="MOD1", called_ae="AGENT", timeouts=FAST, tls=client(tls_pki))
    # Named explicitly in the peer's entry, the same certificate is accepted...
    assert (await echo("127.0.0.1", port, calling_ae="MOD1", called_ae="AGENT", timeouts=FAST,
                       tls=client(tls_pki, server_name="otherhost.example"))).ok
    # ...unless the peer's entry also names a subject it does not have.
    with pytest.raises(TlsHandshakeFailed, match="is not the expected"):
        await echo("127.0.0.1", port, calling_ae="MOD1", called_ae="AGENT", timeouts=FAST,
                   tls=client(tls_pki, server_name="otherhost.example", subject="CN=pacs,O=Test Hospital"))
    assert (await echo("127.0.0.1", port, calling_ae="MOD1", called_ae="AGENT", timeouts=FAST,
                       tls=client(tls_pki, server_name="otherhost.example",
                                  subject="O = Test Hospital, CN = otherhost.example"))).ok


async def test_our_client_refuses_an_untrusted_server(tmp_path: Path, start_agent, tls_pki) -> None:
    running, port, _ = await tls_agent(tmp_path, start_agent, tls_pki)
    untrusting = PeerTls(ca=tls_pki.other_ca_pem, certificate=tls_pki.client_pem, key=tls_pki.client_key)
    with pytest.raises(TlsHandshakeFailed, match="certificate verify failed"):
        await echo("127.0.0.1", port, calling_ae="MOD1", called_ae="AGENT", timeouts=FAST, tls=untrusting)


def _python_client(pki, *, version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca_pem)
    ctx.load_cert_chain(pki.client_pem, pki.client_key)
    ctx.check_hostname = False
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point of the test
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = version
    # Lower OpenSSL's own floor so that the *agent* is what refuses.
    ctx.set_ciphers(f"{ciphers or 'ALL'}:@SECLEVEL=0")
    return ctx


@pytest.mark.parametrize(
    ("version", "ciphers"),
    [
        (ssl.TLSVersion.TLSv1, None),
        (ssl.TLSVersion.TLSv1_1, None),
        (ssl.TLSVersion.TLSv1_2, "AES128-SHA"),  # RSA key transport, CBC-SHA1: not in bcp195-nd
        (ssl.TLSVersion.TLSv1_2, "CAMELLIA128-SHA"),  # in no profile
        (ssl.TLSVersion.TLSv1_2, "AES256-SHA"),  # in no profile
        (ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-SHA"),  # CBC-SHA1: not in bcp195-nd
    ],
)
async def test_old_protocols_and_weak_ciphers_are_refused(
    tmp_path: Path, start_agent, tls_pki, caplog, version: ssl.TLSVersion, ciphers: str | None
) -> None:
    caplog.set_level(logging.INFO, logger="agent.net.tls")
    running, port, seen = await tls_agent(tmp_path, start_agent, tls_pki)
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, _python_client(tls_pki, version=version, ciphers=ciphers), server_hostname="localhost")
    with pytest.raises(trio.BrokenResourceError), trio.fail_after(30):
        await stream.do_handshake()
    await trio.aclose_forcefully(tcp)
    with trio.fail_after(30):
        while not any(getattr(r, "tls_event", "") == "failed" for r in caplog.records):
            await trio.sleep(0.01)
    reason = next(r.reason for r in caplog.records if getattr(r, "tls_event", "") == "failed")
    assert reason in ("unsupported protocol", "no shared cipher", "wrong version number"), reason
    # The same client with the defaults of the profile gets through.
    ok = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port),
                        _python_client(tls_pki, version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-RSA-AES128-GCM-SHA256"))
    with trio.fail_after(30):
        await ok.do_handshake()
    assert ok.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"
    await trio.aclose_forcefully(ok)


async def test_bcp195_profile_accepts_an_older_suite(tmp_path: Path, start_agent, tls_pki) -> None:
    running, port, seen = await tls_agent(tmp_path, start_agent, tls_pki, extra='profile = "bcp195"')
    ok = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port),
                        _python_client(tls_pki, version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-RSA-AES128-SHA256"))
    with trio.fail_after(30):
        await ok.do_handshake()
    assert ok.cipher()[0] == "ECDHE-RSA-AES128-SHA256"
    await trio.aclose_forcefully(ok)


async def test_silent_tls_caller_is_closed_within_artim_and_stalls_nobody(
    tmp_path: Path, start_agent, tls_pki, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="agent.net.tls")
    port = free_port()
    await start_agent(write_profile(tmp_path, tls_section(tls_pki, port), agent_extra='artim_timeout = "2s"'))
    silent = await trio.open_tcp_stream("127.0.0.1", port)  # never starts its handshake
    # Meanwhile a real caller is served (the handshake runs in the silent connection's own task).
    assert (await echo("127.0.0.1", port, calling_ae="MOD1", called_ae="AGENT", timeouts=FAST,
                       tls=client(tls_pki))).ok
    start = trio.current_time()
    with trio.fail_after(30):
        assert await silent.receive_some(1024) == b""  # closed, nothing sent (PS3.8 AA-2)
    with trio.fail_after(30):
        while not any("no TLS handshake within ARTIM" in getattr(r, "reason", "") for r in caplog.records):
            await trio.sleep(0.01)
    await silent.aclose()


async def test_reload_keeps_open_associations_and_new_ones_get_the_new_certificate(
    tmp_path: Path, start_agent, tls_pki
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(tls_pki.server_pem, live / "cert.pem")
    shutil.copy(tls_pki.server_key, live / "key.pem")
    running, port, seen = await tls_agent(tmp_path, start_agent, tls_pki, certificate=live / "cert.pem",
                                          key=live / "key.pem")
    proposals = [ProposedContext(VERIFICATION_SOP_CLASS)]
    async with associate("127.0.0.1", port, calling_ae="MOD1", called_ae="AGENT", proposals=proposals,
                         timeouts=FAST, tls=client(tls_pki)) as before:
        assert before.peer_certificate_subject == "CN=localhost,O=Test Hospital"
        shutil.copy(tls_pki.server2_pem, live / "cert.pem")
        shutil.copy(tls_pki.server2_key, live / "key.pem")
        running.agent.reload()  # what SIGHUP does (the signal itself: tests/interop/test_tls_interop.py)
        async with associate("127.0.0.1", port, calling_ae="MOD2", called_ae="AGENT", proposals=proposals,
                             timeouts=FAST, tls=client(tls_pki)) as after:
            assert after.peer_certificate_subject == "CN=localhost-renewed,O=Test Hospital"
        # The association opened before the reload still works.
        from agent.dimse import CEchoRQ
        from agent.net.requests import request

        ctx = before.context_for(VERIFICATION_SOP_CLASS)
        reply = await request(before, ctx.id, CEchoRQ(message_id=before.next_message_id(),
                                                      affected_sop_class_uid=VERIFICATION_SOP_CLASS))
        assert reply.status == 0
    # A broken file on reload keeps the previous certificate in service.
    (live / "cert.pem").write_text("not a certificate")
    running.agent.reload()
    assert (await echo("127.0.0.1", port, calling_ae="MOD3", called_ae="AGENT", timeouts=FAST,
                       tls=client(tls_pki))).ok


async def test_tls_only_listener(tmp_path: Path, start_agent, tls_pki) -> None:
    port, plain = free_port(), free_port()
    running = await start_agent(write_profile(tmp_path, tls_section(tls_pki, port, extra="plain_listener = false"),
                                              port=plain))
    assert running.agent.bound_ports == [port]
    with pytest.raises(ConnectionFailed):
        await echo("127.0.0.1", plain, calling_ae="PLAIN", called_ae="AGENT", timeouts=FAST)


async def test_waiting_handshakes_are_bounded_like_any_waiting_connection(
    tmp_path: Path, start_agent, tls_pki, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="agent.net.tls")
    port = free_port()
    await start_agent(write_profile(tmp_path, tls_section(tls_pki, port), agent_extra="max_pending_per_address = 1"))
    first = await trio.open_tcp_stream("127.0.0.1", port)  # never starts its handshake (ARTIM is 5 s)
    # A real caller from the same address takes its place: the silent one is closed at once, not at ARTIM.
    assert (await echo("127.0.0.1", port, calling_ae="MOD1", called_ae="AGENT", timeouts=FAST,
                       tls=client(tls_pki))).ok
    with trio.fail_after(30):
        assert await first.receive_some(1024) == b""
    reasons = [r.reason for r in caplog.records if getattr(r, "tls_event", "") == "failed"]
    assert "too many connections waiting to associate" in reasons, reasons
    await first.aclose()
