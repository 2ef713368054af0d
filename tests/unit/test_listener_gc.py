"""The listener's gc.freeze (agent/net/server.py) keeps only what is alive when it starts out of the
collector's reach: cyclic garbage made before (start-up's) is still freed, and whatever it holds (a
file, a socket) released, not kept for the life of the process."""

from __future__ import annotations

import gc
import weakref

import trio

from agent.net.server import AcceptorPolicy, Listener, ServiceRegistry


class _Holder:
    pass


async def test_garbage_made_before_the_listener_starts_is_still_freed() -> None:
    released: list[bool] = []
    gc.disable()  # the garbage stays uncollected until the listener starts (old garbage in a real start-up)
    cycle = _Holder()
    cycle.self = cycle  # type: ignore[attr-defined]  # freed only by the collector
    weakref.finalize(cycle, released.append, True)
    del cycle
    listener = Listener(AcceptorPolicy(ae_title="GC-TEST"), ServiceRegistry())
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve_tcp, "127.0.0.1", 0)
            gc.collect()
            nursery.cancel_scope.cancel()
        assert released == [True]
    finally:
        gc.enable()
        gc.unfreeze()  # the rest of the test process as it was


def test_refreeze_frees_what_died_after_the_freeze() -> None:
    """After a SIGHUP reload the replaced objects (alive, so frozen, at start) are garbage: refreeze()
    (called by Agent.reload) frees them; a plain collection cannot reach frozen objects."""
    from agent.net.server import refreeze

    released: list[bool] = []
    holder = {"old": _Holder()}
    holder["old"].self = holder["old"]  # type: ignore[attr-defined]  # a cycle: freed only by the collector
    weakref.finalize(holder["old"], released.append, True)
    try:
        gc.collect()
        gc.freeze()  # as the listener does at start, with the object alive
        del holder["old"]  # replaced by a reload
        gc.collect()
        assert released == []  # frozen: out of the collector's reach
        refreeze()
        assert released == [True]
    finally:
        gc.unfreeze()
