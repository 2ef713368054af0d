"""The statement as GitHub-flavoured Markdown: numbered headings, a table of contents, pipe tables."""

from __future__ import annotations

from agent.conformance.model import Items, Para, Section, Statement, Table


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _heading(section: Section) -> str:
    level = min(section.level + 1, 6)
    return f"{'#' * level} N.{section.number} {section.title}"


def _anchor(section: Section) -> str:
    # GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens.
    text = f"n{section.number} {section.title}".lower()
    kept = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def render_markdown(statement: Statement) -> str:
    lines = [f"# {statement.title}", "", f"**{statement.subtitle}**", "", "## N.2 Table of Contents", ""]
    for s in statement.sections:
        indent = "  " * (s.level - 1)
        suffix = " - N/A" if s.not_applicable else ""
        lines.append(f"{indent}- [N.{s.number} {s.title}{suffix}](#{_anchor(s)})")
    lines.append("")
    for s in statement.sections:
        lines += [_heading(s), ""]
        if s.not_applicable:
            lines += ["- N/A", ""]
        for block in s.blocks:
            if isinstance(block, Para):
                lines += [block.text, ""]
            elif isinstance(block, Items):
                lines += [f"- {item}" for item in block.items] + [""]
            elif isinstance(block, Table):
                lines += [f"*{block.caption}*", ""]
                lines.append("| " + " | ".join(_cell(h) for h in block.head) + " |")
                lines.append("|" + "|".join(" --- " for _ in block.head) + "|")
                for row in block.rows:
                    lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["render_markdown"]
