"""`dicom-agent echo` and `store` as a user runs them: usage errors and the --timeout promise.

Run in-process through `agent.cli.main` so that the measured time is the command's own, not a
subprocess's start-up (which may take seconds on a loaded machine).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main

EX_USAGE = 2
EX_UNAVAILABLE = 69


@pytest.fixture
def silent_peer() -> Iterator[int]:
    """A port whose listener never accepts or answers: the kernel completes the TCP handshake (the
    backlog) and then nothing ever comes back."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        yield srv.getsockname()[1]


@pytest.mark.parametrize("command", ["echo", "store"])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--aet", "A" * 17], "--aet: an AE title"),
        (["--aec", "B" * 17], "--aec: an AE title"),
        (["--aet", ""], "--aet: an AE title"),
        (["--aec", "   "], "--aec: an AE title"),
        (["--aec", "BACK\\SLASH"], "--aec: an AE title"),
        (["--timeout", "-1"], "--timeout: a positive number of seconds"),
        (["--timeout", "0"], "--timeout: a positive number of seconds"),
        (["--timeout", "nan"], "--timeout: a positive number of seconds"),
    ],
)
def test_bad_option_is_a_usage_error(
    command: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    extra = [str(tmp_path)] if command == "store" else []
    with pytest.raises(SystemExit) as exc:
        main([command, *args, "127.0.0.1", "104", *extra])
    assert exc.value.code == EX_USAGE
    err = capsys.readouterr().err
    assert "usage: dicom-agent" in err and message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("port", ["0", "65536", "-3"])
def test_bad_port_is_a_usage_error(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["echo", "127.0.0.1", port])
    assert exc.value.code == EX_USAGE
    assert "port: a TCP port from 1 to 65535" in capsys.readouterr().err


def test_echo_timeout_bounds_the_whole_operation(silent_peer: int, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    rc = main(["echo", "--timeout", "3", "127.0.0.1", str(silent_peer)])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert rc == EX_UNAVAILABLE, err
    assert "within 3 s" in err, err
    # Connect is instant, the association never answers: the command ends at its timeout, not
    # at timeout + ARTIM wait for the peer to close (6 s before).
    assert 2.9 <= elapsed < 4.5, elapsed


def test_store_timeout_bounds_connect_and_association(
    silent_peer: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(tmp_path / "sc.dcm", enforce_file_format=True)
    start = time.monotonic()
    rc = main(["store", "--timeout", "3", "127.0.0.1", str(silent_peer), str(tmp_path / "sc.dcm")])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert rc == EX_UNAVAILABLE, err
    assert 2.9 <= elapsed < 4.5, elapsed
