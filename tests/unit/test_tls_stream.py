"""agent.net.tls without sockets: a peer that stops reading cannot hold our close, and subjects compare
whatever their RDN order and spacing."""

from __future__ import annotations

import ssl

import trio
import trio.testing

from agent.net.tls import CLOSE_NOTIFY_GRACE, ListenerTls, PeerTls, TlsStream, client_context, server_context, subject_matches


async def test_close_does_not_wait_for_a_peer_that_stopped_reading(tls_pki, autojump_clock) -> None:
    # lockstep: every send waits until the other side reads it, like a TCP connection whose peer
    # stopped reading and whose buffers are full.
    server_raw, client_raw = trio.testing.lockstep_stream_pair()
    server = trio.SSLStream(server_raw, server_context(ListenerTls(port=0, certificate=tls_pki.server_pem,
                                                                    key=tls_pki.server_key, client_certificates="none")),
                            server_side=True)
    client = trio.SSLStream(client_raw, client_context(PeerTls(ca=tls_pki.ca_pem)), server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    # The client never reads again. An SSLStream's own aclose would wait forever to send close_notify.
    start = trio.current_time()
    with trio.fail_after(60):
        await TlsStream(server).aclose()
    assert trio.current_time() - start <= CLOSE_NOTIFY_GRACE + 0.1
    with trio.fail_after(60):  # the transport was closed: the peer, reading again, comes to its end
        while await client_raw.receive_some(65536):
            pass


def test_subjects_compare_by_their_attributes() -> None:
    assert subject_matches("CN=modality1,O=Test Hospital", "CN=modality1,O=Test Hospital")
    assert subject_matches("O = Test Hospital, CN = modality1", "CN=modality1,O=Test Hospital")
    assert subject_matches("/O=Test Hospital/CN=modality1", "CN=modality1,O=Test Hospital")
    assert subject_matches("cn=modality1,o=Test Hospital", "CN=modality1,O=Test Hospital")
    assert not subject_matches("CN=modality2,O=Test Hospital", "CN=modality1,O=Test Hospital")
    assert not subject_matches("CN=modality1", "CN=modality1,O=Test Hospital")
    assert not subject_matches("CN=modality1", None)


def test_no_profile_allows_tls_below_1_2(tls_pki) -> None:
    for profile in ("bcp195-nd", "bcp195", "bcp195-extended"):
        ctx = client_context(PeerTls(ca=tls_pki.ca_pem, profile=profile))  # type: ignore[arg-type]
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        names = {c["name"] for c in ctx.get_ciphers()}
        assert not any(weak in n for n in names for weak in ("3DES", "DES-CBC", "RC4", "NULL", "MD5", "EXP", "PSK"))
