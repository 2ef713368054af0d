"""`dicom-agent store`: send files over one association per group of presentation contexts,
with a progress line on a terminal and a summary at the end."""

from __future__ import annotations

import argparse
import sys
import time

import trio

from agent.errors import AssociationAborted, ConnectionFailed, TimeoutExpired
from agent.net.client import associate
from agent.net.connection import Timeouts
from agent.services.storage_scu import StoreFailed, StoreSummary, proposals_for, scan, send_file


def _progress(done: int, total: int, nbytes: int, start: float) -> None:
    if not sys.stderr.isatty():
        return
    elapsed = max(time.monotonic() - start, 1e-6)
    sys.stderr.write(
        f"\\r  {done}/{total} files ({100 * done // max(total, 1)}%)  {nbytes / 1e6 / elapsed:.1f} MB/s "
    )
    sys.stderr.flush()


async def _send_all(args: argparse.Namespace, summary: StoreSummary) -> None:
    found = scan(args.paths)
    for path, why in found.skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    items = found.items
    if not items:
        return
    t = args.timeout
    timeouts = Timeouts(artim=t, dimse=t, idle=t, connect=t)
    start = time.monotonic()
    done = 0
    for group in proposals_for(items):
        sops = {p.abstract_syntax for p in group}
        batch = [i for i in items if i.meta.sop_class_uid in sops]
        items = [i for i in items if i.meta.sop_class_uid not in sops]
        # --timeout bounds connecting and associating together, then each response.
        async with associate(
            args.host, args.port, calling_ae=args.aet, called_ae=args.aec, proposals=group,
            timeouts=timeouts, max_pdu_receive=args.max_pdu, deadline=trio.current_time() + t,
        ) as conn:
            for item in batch:
                try:
                    reply = await send_file(conn, item)
                    summary.record(item, reply)
                except StoreFailed as exc:
                    summary.record(item, None, str(exc))
                done += 1
                _progress(done, len(found.items), summary.bytes, start)
    summary.seconds = time.monotonic() - start
    if sys.stderr.isatty():
        sys.stderr.write("\\n")


def run_store(args: argparse.Namespace) -> int:
    summary = StoreSummary()
    start = time.monotonic()
    error: Exception | None = None
    try:
        trio.run(_send_all, args, summary)
    except (ConnectionFailed, TimeoutExpired, AssociationAborted) as exc:
        error = exc
    summary.seconds = summary.seconds or time.monotonic() - start
    for path, why in summary.failures:
        print(f"failed {path}: {why}", file=sys.stderr)
    print(
        f"sent {summary.sent} ({summary.warnings} with warnings), failed {summary.failed}, "
        f"{summary.bytes / 1e6:.1f} MB in {summary.seconds:.2f} s ({summary.mb_per_s:.1f} MB/s)"
    )
    if error is not None:
        print(f"dicom-agent: {error}", file=sys.stderr)
        return 69 if isinstance(error, (ConnectionFailed, TimeoutExpired)) else 1
    return 1 if summary.failed else 0
