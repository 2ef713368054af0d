"""Shared test fixtures: profiles in tmp_path, the agent running in-process, real peers on PATH.

Real peers (DCMTK tools, pynetdicom) are required: when CI is set a missing one fails the test
instead of skipping it, so a CI machine that lost its peers cannot turn green.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from agent.profile import Profile, load_profile

IN_CI = bool(os.environ.get("CI"))


def require_tool(name: str) -> str:
    """Path of a peer executable (e.g. 'storescp'); fail under CI, skip elsewhere, if absent."""
    path = shutil.which(name)
    if path is None:
        message = f"real peer {name!r} is not installed (apt-get install dcmtk)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_pynetdicom() -> None:
    try:
        import pynetdicom  # noqa: F401
    except ImportError:
        (pytest.fail if IN_CI else pytest.skip)("pynetdicom is not installed (pip install -e '.[test]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_listening(port: int, proc: trio.Process | None = None, timeout: float = 15) -> None:
    """Poll until something accepts on 127.0.0.1:`port` (a peer started as a subprocess); fail if
    `proc` exits first or `timeout` passes."""
    with trio.fail_after(timeout):
        while True:
            if proc is not None:
                assert proc.returncode is None, f"peer exited with {proc.returncode}"
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.02)
                continue
            await stream.aclose()
            return


def write_profile(
    directory: Path, body: str, *, port: int = 0, ae_title: str = "AGENT", agent_extra: str = ""
) -> Profile:
    """A profile file with an [agent] section bound to loopback, plus `body` (TOML) appended.

    `agent_extra` (TOML lines) goes inside [agent] and may override the short default timeouts.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "profile.toml"
    head = textwrap.dedent(
        f"""
        [agent]
        ae_title = "{ae_title}"
        bind = "127.0.0.1"
        port = {port}
        data_dir = "{directory / 'data'}"
        artim_timeout = "5s"
        dimse_timeout = "10s"
        idle_timeout = "30s"
        connect_timeout = "5s"
        """
    )
    extra = textwrap.dedent(agent_extra)
    overridden = {line.split("=", 1)[0].strip() for line in extra.splitlines() if "=" in line}
    head = "\n".join(
        line for line in head.splitlines() if line.split("=", 1)[0].strip() not in overridden
    )
    path.write_text(head + "\n" + extra + "\n" + textwrap.dedent(body))
    return load_profile(path)


@dataclass
class RunningAgent:
    agent: object
    port: int
    profile: Profile
    cancel_scope: trio.CancelScope

    @property
    def data_dir(self) -> Path:
        return self.profile.agent.data_dir


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture(autouse=True)
def _umask_restored() -> object:
    """`agent.cli.main()` sets the process umask (0027) as the real command does; tests that call it
    in-process would otherwise hand that umask to every later test (files another user cannot read)."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)


@pytest.fixture(scope="session")
def tls_pki(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A throw-away CA and certificates for the TLS tests (tests/tls_certs.py), made once per session."""
    if shutil.which("openssl") is None:
        (pytest.fail if IN_CI else pytest.skip)("the openssl command line is not installed (apt-get install openssl)")
    from tests.tls_certs import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def start_agent(nursery: trio.Nursery) -> AsyncIterator[object]:
    """`agent = await start_agent(profile)`: runs the agent in the test's nursery until the test ends."""
    from agent.app import Agent

    async def start(profile: Profile) -> RunningAgent:
        agent = Agent(profile)
        scope = trio.CancelScope()

        async def runner(task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await agent.run(task_status=task_status)

        ports = await nursery.start(runner)
        return RunningAgent(agent, ports[0], profile, scope)

    yield start
