"""`dicom-agent store` keeps one C-STORE outstanding, as DCMTK storescu does (PS3.7 D.3.3.3: without an
Asynchronous Operations Window the default is one operation invoked at a time).

The sender reads the next file ahead while it waits for a response; this checks on the wire that it
never *sends* the next request early. A pynetdicom SCP holds its answer to the first C-STORE; its
network thread goes on reading and records every PDU that arrives. `store --timeout 2` gives up on the
response and aborts: between the first request and the A-ABORT nothing else may have arrived.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import free_port, require_pynetdicom
from tests.interop.storage_helpers import make_images

pytestmark = pytest.mark.interop


def test_store_sends_the_next_request_only_after_the_response(tmp_path: Path) -> None:
    require_pynetdicom()
    from pynetdicom import AE, evt
    from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
    from pynetdicom.sop_class import CTImageStorage

    images = make_images(tmp_path / "images", 3)
    received: list[str] = []  # what arrived, in order: "command", "data", "abort"
    release = threading.Event()

    def on_pdu(event: evt.Event) -> None:  # the network thread: runs while the handler below waits
        pdu = event.pdu
        if isinstance(pdu, P_DATA_TF):
            for pdv in pdu.presentation_data_value_items:
                received.append("command" if pdv.data[0] & 0x01 else "data")  # message control header
        elif isinstance(pdu, A_ABORT_RQ):
            received.append("abort")

    def on_store(event: evt.Event) -> int:
        release.wait(30)  # the first request is never answered in time
        return 0x0000

    ae = AE(ae_title="HOLDSCP")
    ae.add_supported_context(CTImageStorage)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_PDU_RECV, on_pdu), (evt.EVT_C_STORE, on_store)])
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "agent", "store", "--aec", "HOLDSCP", "--timeout", "2", "127.0.0.1", str(port),
             str(tmp_path / "images")],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        release.set()
        server.shutdown()
    assert proc.returncode != 0, proc.stdout + proc.stderr  # no response: the files were not sent
    assert "sent 0" in proc.stdout, proc.stdout
    # One command (one fragment: it is small), its data set, then the abort; never a second command.
    assert received.count("command") == 1, received
    assert received[0] == "command" and received[-1] == "abort", received
    assert len(images) == 3, received
