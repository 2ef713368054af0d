"""The one bridge from trio to blocking persistence calls (sqlite3 commits, fsync).

Invariants: the agent process has one SQLite connection; every call that touches it runs either through
`Blocking.run` (from trio) or through `Blocking.call` (from a worker thread that is already off the
event loop), or, for a read that bounds its own time, `Blocking.try_now` (on the event loop, only when
the lock is free at once: it never waits). All hold `Blocking`'s lock around the call, so one thread at a time uses that connection
(the store's and the queue's own locks only guard themselves, not each other's transactions).
`CapacityLimiter(1)` keeps `run` to one thread, so a burst of database calls does not park a thread each
on the lock.

Why `call` exists: a received instance is written, checked and flushed in its association's spool
thread (`Spool`, below); going back to trio and out again to a database thread costs two more thread
hops per instance (each a futex wake-up and an epoll wake-up of the event loop: measured at 0.1-0.3 ms
idle and several ms on a loaded 2-core machine, tests/bench/thread_hop.py). The spool thread takes the
lock and commits instead.

`Spool` is the receive path's bridge: one thread per receiving association running its file jobs in
order, handed work with a queue put (no trio machinery) and waking the waiting task through its own
eventfd; a round trip costs ~40 us where `trio.to_thread.run_sync` with a limiter costs ~100.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

import outcome
import trio

T = TypeVar("T")

log = logging.getLogger("agent.storage")

_eventfd = getattr(os, "eventfd", None)  # Linux


#: What `Blocking.try_now` returns when another thread has the database.
BUSY = object()

#: The job `Spool.close` queues: its thread ends there.
def _STOP() -> None:  # noqa: N802
    return None


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

    def try_now(self, fn: Callable[..., T], *args: object) -> T | object:
        """From the event loop, for a read that bounds itself (a C-FIND look-up: SQLite progress
        handler, no busy wait): run `fn(*args)` at once if no thread has the database, else return
        BUSY without waiting, and the caller uses `run`. Saves the two thread hops (0.2-0.3 ms on a
        loaded 2-core machine) for a look-up that takes a tenth of that."""
        if not self._lock.acquire(blocking=False):
            return BUSY
        try:
            return fn(*args)
        finally:
            self._lock.release()


class Spool:
    """Jobs run in the order submitted, in one thread of their own, off the event loop.

    For work that should overlap what the event loop does next (an association's received data set
    written to its file while more of it arrives): `submit` queues a job and returns at once (no
    trio machinery, one queue put: a few microseconds); `run` queues one and waits for its result.
    Jobs never raise into the thread (a `submit`ted job keeps its own error for a later `run` to
    report; an exception escaping one is logged). The thread is started by the first job and ends
    after `idle` seconds without one, or at once by `close`, so an idle spool holds no thread.

    `run` never abandons its job: a cancelled caller still waits for the job (and every job before
    it) to finish, never leaving files half written, and gets its value or exception; the
    cancellation is raised at the caller's next checkpoint.
    """

    def __init__(self, name: str = "spool", *, idle: float = 5.0) -> None:
        self.name = name
        self.idle = idle
        self._jobs: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        # Re-entrant: `close` runs from a finalizer, which the collector may run in this spool's own
        # thread while it holds the lock (_work deciding to end).
        self._lock = threading.RLock()
        self._running = False
        self._efd: int | None = None  # made by the first `run`
        self._efd_waiting = False

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        """Queue `fn(*args)`; from any thread."""
        job = functools.partial(fn, *args) if args else fn
        with self._lock:  # against the thread deciding to end (_work) between the put and the check
            self._jobs.put(job)
            if not self._running:
                self._running = True
                threading.Thread(target=self._work, name=self.name, daemon=True).start()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """From trio: queue `fn(*args)` and wait for its result (or exception).

        The job wakes the waiting task through the spool's own eventfd, which the event loop polls
        with the sockets: the task is rescheduled straight from epoll, not through trio's
        `run_sync_soon` queue and its system task (a round trip of 40 us instead of 65-85 us,
        tests/bench/thread_hop.py's conditions). Without eventfd (or with two tasks waiting on one
        spool) `run_sync_soon` is used."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._efd is None and _eventfd is not None:
            self._efd = _eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            weakref.finalize(self, os.close, self._efd)
        efd = self._efd
        if efd is not None and not self._efd_waiting:
            done: list[outcome.Outcome[T]] = []

            def wake() -> None:
                done.append(outcome.capture(fn, *args))
                os.eventfd_write(efd, 1)

            self._efd_waiting = True
            try:
                self.submit(wake)
                try:
                    await self._wait(efd, done)
                except trio.Cancelled:
                    # The job is never abandoned: wait for it shielded. Its outcome is then returned,
                    # not dropped (a C-STORE committed by it must still be counted and audited); the
                    # cancellation, level-triggered, is raised again at the caller's next checkpoint,
                    # as after trio.to_thread.run_sync and this method's other path.
                    with trio.CancelScope(shield=True):
                        await self._wait(efd, done)
            finally:
                self._efd_waiting = False
            return done[0].unwrap()
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()

        def job() -> None:
            result = outcome.capture(fn, *args)
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        self.submit(job)
        # The job's outcome is unwrapped here: its value, or its exception raised.
        return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)  # type: ignore[no-any-return]

    @staticmethod
    async def _wait(efd: int, done: list[object]) -> None:
        while not done:
            await trio.lowlevel.wait_readable(efd)
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(efd)  # back to zero (a late write only wakes the next wait early)

    def close(self) -> None:
        """The thread ends once the jobs queued before have run, not `idle` seconds later (its owner,
        an association, is gone); a job submitted afterwards starts a thread again. From any thread."""
        with self._lock:
            if self._running:
                self._jobs.put(_STOP)

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            try:
                job = jobs.get(timeout=self.idle)
            except queue.Empty:
                job = _STOP
            if job is _STOP:
                with self._lock:
                    if jobs.empty():
                        self._running = False
                        return
                continue
            try:
                job()
            except BaseException:  # noqa: BLE001 - the thread outlives any job
                log.exception("%s: a job failed", self.name)
            del job
