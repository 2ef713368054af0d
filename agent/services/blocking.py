"""The one bridge from trio to blocking persistence calls (sqlite3 commits, fsync).

Invariants: the agent process has one SQLite connection; every call that touches it runs either through
`Blocking.run` (from trio) or through `Blocking.call` (from a worker thread that is already off the
event loop). Both hold `Blocking`'s lock around the call, so one thread at a time uses that connection
(the store's and the queue's own locks only guard themselves, not each other's transactions).
`CapacityLimiter(1)` keeps `run` to one thread, so a burst of database calls does not park a thread each
on the lock.

Why `call` exists: a received instance is written, checked and flushed in an io worker thread; going
back to trio and out again to a database thread costs two more thread hops per instance (each a
futex wake-up and an epoll wake-up of the event loop: measured at 0.1-0.3 ms idle and several ms on a
loaded 2-core machine, tests/bench/thread_hop.py). The io thread takes the lock and commits instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")


class Blocking:
    def __init__(self) -> None:
        self.limiter = trio.CapacityLimiter(1)
        # Re-entrant: a function run through `run` may itself use `call`.
        self._lock = threading.RLock()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(*args)` in a worker thread with the database to itself."""
        return await trio.to_thread.run_sync(self.call, fn, *args, limiter=self.limiter)

    def call(self, fn: Callable[..., T], *args: object) -> T:
        """From a worker thread (never the event loop): run `fn(*args)` with the database to itself."""
        with self._lock:
            return fn(*args)
