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
