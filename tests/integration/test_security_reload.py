"""SIGHUP (`Agent.reload`) reads `[security]` again: a user added to the password file and a calling AE
added to the access rules are admitted at once; a profile that no longer parses keeps the policy in use."""

from __future__ import annotations

import logging
from pathlib import Path

from agent.errors import AssociationRejected
from agent.net.connection import Timeouts
from agent.security import ClientIdentity, hash_password
from agent.services.verification import echo
from tests.conftest import write_profile

FAST = Timeouts(artim=30, dimse=30, idle=30, connect=30)  # deadlines, not expectations


async def test_sighup_reloads_users_and_access_rules(tmp_path: Path, start_agent, caplog) -> None:
    users = tmp_path / "users"
    users.write_text(f"alice:{hash_password('first')}\n")
    rules = """
        [security]
        password_file = "{users}"
        require_identity = ["verification"]
        [[security.access]]
        calling_ae = "MOD1"
        services = "all"
        """
    running = await start_agent(write_profile(tmp_path, rules.format(users=users)))

    async def echo_as(calling: str, user: str, passcode: str) -> bool:
        identity = ClientIdentity("username-passcode", user, passcode)
        try:
            return (await echo("127.0.0.1", running.port, calling_ae=calling, called_ae="AGENT", timeouts=FAST,
                               user_identity=identity)).ok
        except AssociationRejected:
            return False

    assert await echo_as("MOD1", "alice", "first")
    assert not await echo_as("MOD1", "bob", "second") and not await echo_as("MOD2", "alice", "first")

    users.write_text(f"alice:{hash_password('first')}\nbob:{hash_password('second')}\n")
    profile = Path(running.profile.source)
    profile.write_text(profile.read_text() + '\n[[security.access]]\ncalling_ae = "MOD2"\nservices = ["verification"]\n')
    running.agent.reload()
    assert await echo_as("MOD1", "bob", "second") and await echo_as("MOD2", "alice", "first")

    # A profile that no longer parses: logged, and the rules in use stay.
    caplog.set_level(logging.ERROR, logger="agent")
    profile.write_text(profile.read_text() + "\n[security.typo]\n")
    running.agent.reload()
    assert any("[security] not reloaded" in r.getMessage() for r in caplog.records)
    assert await echo_as("MOD2", "bob", "second")
