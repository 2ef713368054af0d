"""`dicom-agent echo|store --user/--passcode-file/--jwt/--identity-response` against an agent that
requires an authenticated user for verification and storage, and `dicom-agent passwd` making the
hash it checks. What a user sees: the exit status and the one line on stderr or stdout."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from tests.conftest import write_profile
from tests.interop.storage_helpers import index_count, make_image

AGENT = [sys.executable, "-m", "agent"]


async def cli(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    with trio.fail_after(60):
        proc = await trio.run_process([*AGENT, *args], stdin=stdin, capture_stdout=True, capture_stderr=True,
                                      check=False)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


async def test_cli_identity_options_against_the_agent(tmp_path: Path, start_agent) -> None:
    rc, line, err = await cli("passwd", "alice", stdin=b"right passcode\n")
    assert rc == 0, err
    (tmp_path / "users").write_text(line)
    running = await start_agent(write_profile(tmp_path / "agent", f"""
        [storage]

        [security]
        password_file = "{tmp_path / 'users'}"
        require_identity = "all"
        """))
    port = str(running.port)
    right, wrong = tmp_path / "right.txt", tmp_path / "wrong.txt"
    right.write_text("right passcode\n")
    wrong.write_text("wrong passcode\n")
    image = make_image(tmp_path / "ct.dcm")

    rc, out, err = await cli("echo", "--aec", "AGENT", "--user", "alice", "--passcode-file", str(right),
                             "--identity-response", "127.0.0.1", port)
    assert rc == 0 and "Success" in out, (out, err)
    rc, out, err = await cli("echo", "--aec", "AGENT", "--user", "alice", "--passcode-file", str(wrong),
                             "127.0.0.1", port)
    assert rc == 1 and "association rejected (permanent) by the service provider (ACSE)" in err, (out, err)
    assert "wrong passcode" not in out + err
    # A username alone is not authenticated (and cannot be confirmed): refused, as no identity is.
    rc, out, err = await cli("echo", "--aec", "AGENT", "--user", "alice", "127.0.0.1", port)
    assert rc == 1 and "association rejected (permanent)" in err, (out, err)
    token = tmp_path / "t.jwt"
    token.write_text("a.b.c")
    rc, out, err = await cli("echo", "--aec", "AGENT", "--jwt", str(token), "127.0.0.1", port)
    assert rc == 1 and "association rejected (permanent)" in err, (out, err)

    rc, out, err = await cli("store", "--aec", "AGENT", "--user", "alice", "--passcode-file", str(right),
                             "127.0.0.1", port, str(image))
    assert rc == 0, (out, err)
    assert index_count(running.data_dir) == 1

    # Inconsistent options are usage errors before anything is sent.
    for args, message in (
        (["--passcode-file", str(right)], "--passcode-file needs --user"),
        (["--identity-response"], "--identity-response needs"),
        (["--user", "alice", "--jwt", str(token)], "not allowed with argument"),
    ):
        rc, out, err = await cli("echo", *args, "127.0.0.1", port)
        assert rc == 2 and message in err, (args, err)
