"""What one trio -> worker thread -> trio round trip costs, measured instead of guessed.

    .venv/bin/python -m tests.bench.thread_hop [-n 2000]   (as a module: tests/bench/queue.py would
    shadow the standard library queue module that trio imports)

Prints the median and 99th percentile of `trio.to_thread.run_sync(noop)` (with a CapacityLimiter),
of `Blocking.run(noop)` (the database thread) and of `Spool.run(noop)` (the Storage SCP's per-association
thread, woken back through its eventfd), in three conditions:
- idle: nothing else in the process;
- GIL busy: another Python thread spins (holds the GIL except at switch-interval boundaries), with
  the default switch interval (5 ms) and with 0.5 ms: a hop that needs the GIL twice waits up to one
  interval each time;
- loop busy: another trio task computes between awaits (the event loop itself is late to notice the
  worker's result).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

import trio

from agent.services.blocking import Blocking, Spool


def _noop() -> None:
    return None


async def _measure(n: int, blocking: Blocking, via: str) -> list[float]:
    limiter = trio.CapacityLimiter(4)
    spool = Spool("bench")
    out = []
    for _ in range(n):
        start = time.perf_counter()
        if via == "Blocking.run":
            await blocking.run(_noop)
        elif via == "Spool.run":
            await spool.run(_noop)
        else:
            await trio.to_thread.run_sync(_noop, limiter=limiter)
        out.append(time.perf_counter() - start)
    return out


def _spin(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        x += 1


async def _busy_loop(stop: trio.Event) -> None:
    while not stop.is_set():
        sum(range(20_000))  # ~0.3 ms of Python between checkpoints
        await trio.sleep(0)


def _report(label: str, samples: list[float]) -> None:
    samples = sorted(samples)
    p99 = samples[int(len(samples) * 0.99) - 1]
    print(f"{label:<48} median {1e6 * statistics.median(samples):8.1f} us   p99 {1e6 * p99:9.1f} us")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=2000)
    n = parser.parse_args().n

    async def run_all() -> None:
        blocking = Blocking()
        for via in ("to_thread.run_sync", "Blocking.run", "Spool.run"):
            name = via
            _report(f"{name}, idle", await _measure(n, blocking, via))
            for interval in (0.005, 0.0005):
                sys.setswitchinterval(interval)
                stop = threading.Event()
                spinner = threading.Thread(target=_spin, args=(stop,), daemon=True)
                spinner.start()
                try:
                    _report(f"{name}, GIL busy, switch {interval * 1000:g} ms",
                            await _measure(max(n // 10, 50), blocking, via))
                finally:
                    stop.set()
                    spinner.join()
            sys.setswitchinterval(0.005)
            done = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_busy_loop, done)
                _report(f"{name}, loop busy", await _measure(n // 4, blocking, via))
                done.set()

    trio.run(run_all)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
