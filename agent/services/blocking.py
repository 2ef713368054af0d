"""The one bridge from trio to blocking persistence calls (sqlite3 commits, fsync).

Invariants: the agent process has one SQLite connection; every call that touches it goes through
`Blocking.run`, whose CapacityLimiter(1) guarantees one thread at a time on that connection (the
store's and the queue's own locks only guard themselves, not each other's transactions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")


class Blocking:
    def __init__(self) -> None:
        self.limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)
