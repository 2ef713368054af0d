"""Start-up of `dicom-agent store`: it imports what sending needs and nothing else.

Every module imported is paid for on every run of a command that may be called once per image by a
modality's scripts; the command groups' modules (the queue, the stores, SQLite, pydicom, numpy) are
not needed to parse `store` and send files in their own transfer syntax.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port

HEAVY = ("sqlite3", "pydicom", "numpy", "agent.cli.queue", "agent.store.queue", "agent.store.commitment",
         "agent.cli.printing", "agent.profile", "agent.net.server",
         # Entry-point scans (the drivers' registry) read every installed distribution's metadata.
         "importlib.metadata",
         # User Identity and access rules: only when --user/--kerberos/--saml/--jwt asks for them.
         "agent.security", "agent.security.identity", "agent.security.access")


def test_store_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    port = free_port()  # nothing listens: the command fails fast with 69 after all its imports
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\2\0\1\0UL\4\0\0\0\0\0")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "agent", "store", "--timeout", "30", "127.0.0.1",
         str(port), str(path)],
        capture_output=True, text=True, timeout=120,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "agent.cli.store" in imported, proc.stderr[-2000:]  # the measurement itself worked
    assert sorted(m for m in imported if m in HEAVY) == []


def test_the_full_parser_still_knows_every_command() -> None:
    from agent.cli import build_parser

    text = build_parser().format_help()
    for command in ("run", "store", "queue", "status", "print", "worklist", "find"):
        assert command in text


def test_the_protocol_dataclasses_carry_their_own_docstrings() -> None:
    # A dataclass without a docstring gets one built from inspect.signature when its module is
    # imported: ~0.2 ms a class, paid by every `store` run for the dozens of PDU and message classes.
    import dataclasses
    import importlib

    built = []
    for name in ("agent.ul.pdu", "agent.dimse.messages"):
        module = importlib.import_module(name)
        built += [f"{name}.{cls.__name__}" for cls in vars(module).values()
                  if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == name
                  and (cls.__doc__ or "").startswith(cls.__name__ + "(")]
    assert built == []
