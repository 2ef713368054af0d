"""`dicom-agent conformance`: print the DICOM Conformance Statement of the agent a profile configures.

The statement is generated from the services the profile builds (agent.conformance), never written by
hand; nothing is listened on and the profile's data folder is not touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("conformance", help="print the DICOM Conformance Statement (PS3.2 Annex N) of a profile")
    p.add_argument("--profile", help="profile file (TOML); default: the embedded default profile")
    p.add_argument("--format", choices=("markdown", "html"), default="markdown",
                   help="markdown (renders on GitHub) or html (one self-contained file) [markdown]")
    p.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")


def run_conformance(args: argparse.Namespace, profile: object) -> int:
    from agent.conformance import render_html, render_markdown, statement

    doc = statement(profile)  # type: ignore[arg-type]
    text = render_html(doc) if args.format == "html" else render_markdown(doc)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    target = Path(args.output)
    try:
        _write(target, text)
    except OSError as exc:
        print(f"dicom-agent: cannot write {target}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _write(target: Path, text: str) -> None:
    """Written beside the target and renamed: a reader never sees half a statement."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # a document to share, not patient data
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["add_parsers", "run_conformance"]
