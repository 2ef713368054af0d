"""blocking.Spool: jobs run in submission order off the event loop; `run` returns the job's value or
raises its exception; a job submitted after the thread went idle still runs."""

from __future__ import annotations

import threading

import pytest
import trio

from agent.services.blocking import Spool


async def test_jobs_run_in_order_in_one_thread_that_is_not_the_event_loop() -> None:
    spool = Spool("test")
    seen: list[tuple[int, int]] = []
    for i in range(50):
        spool.submit(lambda i=i: seen.append((i, threading.get_ident())))
    last = await spool.run(lambda: threading.get_ident())
    assert [i for i, _ in seen] == list(range(50))
    assert {t for _, t in seen} == {last}
    assert last != threading.get_ident()


async def test_run_returns_the_value_or_raises_the_exception() -> None:
    spool = Spool("test")
    assert await spool.run(lambda a, b: a + b, 2, 3) == 5

    def fail() -> None:
        raise OSError("disk")

    with pytest.raises(OSError, match="disk"):
        await spool.run(fail)
    assert await spool.run(lambda: "still serving") == "still serving"


async def test_a_job_after_the_thread_ended_starts_another() -> None:
    spool = Spool("test", idle=0.01)
    first = await spool.run(threading.get_ident)
    while any(t.ident == first for t in threading.enumerate()):
        await trio.sleep(0.01)
    assert await spool.run(lambda: 42) == 42


async def test_a_cancelled_caller_waits_for_its_job_and_gets_its_result() -> None:
    # A job that completed (a C-STORE committed) is not lost to the caller's cancellation: the caller
    # gets its value (so the stored instance is counted and audited) and the cancellation comes at
    # its next checkpoint; the job ran once.
    spool = Spool("test")
    release = threading.Event()
    ran: list[bool] = []
    got: list[object] = []

    def job() -> str:
        release.wait(10)
        ran.append(True)
        return "committed"

    async def caller(scope: trio.CancelScope) -> None:
        with scope:
            got.append(await spool.run(job))
            await trio.lowlevel.checkpoint()  # the cancellation, still pending, is raised here
            got.append("not cancelled")

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, scope)
        await trio.sleep(0.05)
        scope.cancel()
        await trio.sleep(0.05)
        assert ran == [] and got == [] and not scope.cancelled_caught  # still waiting, not abandoned
        release.set()
    assert ran == [True] and got == ["committed"] and scope.cancelled_caught


async def test_a_cancelled_caller_gets_its_jobs_exception() -> None:
    spool = Spool("test")
    release = threading.Event()

    def job() -> None:
        release.wait(10)
        raise OSError("disk full")

    caught: list[BaseException] = []

    async def caller(scope: trio.CancelScope) -> None:
        with scope:
            try:
                await spool.run(job)
            except OSError as exc:
                caught.append(exc)

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, scope)
        await trio.sleep(0.05)
        scope.cancel()
        release.set()
    assert [str(e) for e in caught] == ["disk full"]


async def test_close_ends_the_thread_after_the_queued_jobs_not_idle_seconds_later() -> None:
    spool = Spool("test-close", idle=3600)
    seen: list[int] = []
    thread_id = await spool.run(threading.get_ident)
    thread = next(t for t in threading.enumerate() if t.ident == thread_id)
    for i in range(5):
        spool.submit(seen.append, i)
    spool.close()
    await trio.to_thread.run_sync(thread.join, 30)  # a safety net: without close it waits 30 s and fails
    assert not thread.is_alive() and seen == [0, 1, 2, 3, 4]
    assert await spool.run(lambda: "served again") == "served again"  # a later job starts a new thread
