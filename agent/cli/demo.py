"""`dicom-agent demo`: the whole modality loop on this machine (agent.demo), with progress and a summary.

- `demo [--dir DIR] [--procedures N] [--images M] [--timeout SECONDS]`: one line on stdout per step as
  it happens, then the summary. Exit 0 when every step completed; 1 when one failed for good (the demo
  stops at once) or did not complete within the timeout (the summary then lists what did not
  complete); 78 for a demo folder it may not use.
- Logs (warnings and errors of both agents) go to stderr; `-v` shows the agents' info lines too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EX_FAILED = 1
EX_CONFIG = 78


def _count(limit: int) -> Any:
    def convert(text: str) -> int:
        if not (text.isdigit() and 1 <= int(text) <= limit):
            raise argparse.ArgumentTypeError(f"a whole number from 1 to {limit}, got {text!r}")
        return int(text)

    return convert


def add_parsers(sub: Any) -> None:
    from agent.cli import _seconds

    demo = sub.add_parser(
        "demo", help="run the whole modality loop on this machine: simulated device, RIS, PACS, printer",
        description="Run a simulated modality and a simulated hospital (RIS, PACS, film printer) in this "
                    "process, over loopback, and show each step of the workflow.",
    )
    demo.add_argument("--dir", type=Path, default=Path("dicom-agent-demo"),
                      help="the demo's folder, emptied at each run [./dicom-agent-demo]")
    demo.add_argument("--procedures", type=_count(100), default=3, help="worklist items to perform [3]")
    demo.add_argument("--images", type=_count(50), default=4, help="images per procedure [4]")
    demo.add_argument("--timeout", type=_seconds, default=120.0,
                      help="seconds for the whole loop before it counts as not completed [120]")


def run_demo(args: argparse.Namespace) -> int:
    import trio

    from agent.demo import DemoFolderError, DemoOptions
    from agent.demo import run_demo as run

    options = DemoOptions(folder=args.dir, procedures=args.procedures, images=args.images, timeout=args.timeout)

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        report = trio.run(run, options, say)
    except DemoFolderError as exc:
        print(f"dicom-agent: {exc}", file=sys.stderr)
        return EX_CONFIG
    print(report.summary(), flush=True)
    if not report.complete:
        why = "a step failed" if report.failed else f"it did not complete within {args.timeout:g} s"
        print(f"dicom-agent: the demo did not complete: {why} (see 'Not completed' above)", file=sys.stderr)
        return EX_FAILED
    return 0
