"""Helpers for the Storage Commitment tests: feed images to an agent, read its database, wait on it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from agent.net.client import associate
from agent.net.connection import Timeouts
from agent.services.storage_scu import proposals_for, scan, send_file

T = Timeouts(artim=5, dimse=10, idle=30, connect=5)


async def send_images(port: int, paths: Sequence[Path], *, called_ae: str = "AGENT", calling_ae: str = "MODALITY") -> None:
    """C-STORE `paths` to the agent on `port` with the agent's own Storage SCU; every status must be 0000."""
    items = scan(paths).items
    assert len(items) == len(paths)
    for group in proposals_for(items):
        sops = {p.abstract_syntax for p in group}
        async with associate("127.0.0.1", port, calling_ae=calling_ae, called_ae=called_ae, proposals=group,
                             timeouts=T) as conn:
            for item in [i for i in items if i.meta.sop_class_uid in sops]:
                reply = await send_file(conn, item)
                assert reply.status == 0, hex(reply.status)


def query(data_dir: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    conn = sqlite3.connect(data_dir / "agent.db", timeout=30)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def committed_uids(data_dir: Path) -> set[str]:
    return {r[0] for r in query(data_dir, "SELECT sop_instance_uid FROM instances WHERE committed_at IS NOT NULL")}


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
    """Poll `predicate` (every 50 ms) until it is truthy; fail after `timeout` seconds."""
    try:
        with trio.fail_after(timeout):
            while True:
                value = predicate()
                if value:
                    return value
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None
