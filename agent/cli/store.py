"""`dicom-agent store`: send files over one association per group of presentation contexts,
with progress on stderr and a summary at the end.

- Exit status: 0 when every file given was sent; 1 when any was skipped (missing, unreadable, not
  DICOM) or failed; 69 when the peer cannot be reached.
- Progress: on a terminal one line rewritten in place (carriage return, erase to end of line); otherwise
  (a log, CI) a plain `progress: N/M files (P%), X MB/s` line every PROGRESS_FILES files or
  PROGRESS_SECONDS seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import sys
import time

import trio

from agent.errors import AssociationAborted, ConnectionFailed, TimeoutExpired
from agent.cli.identity_options import identity_from_args
from agent.cli.tls_options import tls_from_args
from agent.net.client import associate
from agent.net.connection import Timeouts
from agent.services.storage_scu import SendItem, StoreSummary, proposals_for, scan, send_files


PROGRESS_FILES = 100
PROGRESS_SECONDS = 10.0


class _Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stderr.isatty()
        self.start = self.last = time.monotonic()
        self.last_done = 0
        self.on_screen = False  # a rewritten line is showing and needs its newline

    def update(self, done: int, nbytes: int) -> None:
        now = time.monotonic()
        if self.tty:
            sys.stderr.write(f"\r  {self._text(done, nbytes, now)}\x1b[K")  # ESC [ K: erase what a longer line left
            self.on_screen = True
        elif done < self.total and (done - self.last_done >= PROGRESS_FILES or now - self.last >= PROGRESS_SECONDS):
            sys.stderr.write(f"progress: {self._text(done, nbytes, now)}\n")  # the last file's count is the summary's
            self.last, self.last_done = now, done
        else:
            return  # in a log, most files print nothing: nothing is formatted for them
        sys.stderr.flush()

    def _text(self, done: int, nbytes: int, now: float) -> str:
        return (f"{done}/{self.total} files ({100 * done // max(self.total, 1)}%), "
                f"{nbytes / 1e6 / max(now - self.start, 1e-6):.1f} MB/s")

    def end(self) -> None:
        if self.on_screen:  # end the rewritten line, also when the association broke mid-way
            sys.stderr.write("\n")
            sys.stderr.flush()


async def _send_all(args: argparse.Namespace, summary: StoreSummary, skipped: list[object]) -> None:
    found = scan(args.paths)
    for path, why in found.skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    skipped += found.skipped
    items = found.items
    if not items:
        return
    t = args.timeout
    timeouts = Timeouts(artim=t, dimse=t, idle=t, connect=t)
    start = time.monotonic()
    progress = _Progress(len(items))
    try:
        await _send_groups(args, items, timeouts, summary, progress)
    finally:
        progress.end()
    summary.seconds = time.monotonic() - start


async def _send_groups(
    args: argparse.Namespace, items: list[SendItem], timeouts: Timeouts, summary: StoreSummary, progress: _Progress
) -> None:
    t = args.timeout
    done = 0
    for group in proposals_for(items):
        sops = {p.abstract_syntax for p in group}
        batch = [i for i in items if i.meta.sop_class_uid in sops]
        items = [i for i in items if i.meta.sop_class_uid not in sops]
        # --timeout bounds connecting and associating together, then each response.
        async with associate(
            args.host, args.port, calling_ae=args.aet, called_ae=args.aec, proposals=group,
            timeouts=timeouts, max_pdu_receive=args.max_pdu, deadline=trio.current_time() + t,
            tls=tls_from_args(args),  # --tls* options (agent/cli/tls_options.py), checked in main
            user_identity=identity_from_args(args),  # agent/cli/identity_options.py, checked in main
        ) as conn:
            async for item, reply, error in send_files(conn, batch):
                summary.record(item, reply, error)
                done += 1
                progress.update(done, summary.bytes)


def run_store(args: argparse.Namespace) -> int:
    summary = StoreSummary()
    start = time.monotonic()
    error: Exception | None = None
    skipped: list[object] = []
    try:
        trio.run(_send_all, args, summary, skipped)
    except (ConnectionFailed, TimeoutExpired, AssociationAborted) as exc:
        error = exc
    summary.seconds = summary.seconds or time.monotonic() - start
    for path, why in summary.failures:
        print(f"failed {path}: {why}", file=sys.stderr)
    print(
        f"sent {summary.sent} ({summary.warnings} with warnings), failed {summary.failed}, skipped {len(skipped)}, "
        f"{summary.bytes / 1e6:.1f} MB in {summary.seconds:.2f} s ({summary.mb_per_s:.1f} MB/s)"
    )
    if error is not None:
        print(f"dicom-agent: {error}", file=sys.stderr)
        return 69 if isinstance(error, (ConnectionFailed, TimeoutExpired)) else 1
    return 1 if summary.failed or skipped else 0
