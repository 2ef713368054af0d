"""The statement as one self-contained HTML file: inline CSS, a table of contents, no script, no
external resource (it opens from a USB stick on a machine with no network)."""

from __future__ import annotations

import re
from html import escape

from agent.conformance.model import Items, Para, Statement, Table

_CSS = """
:root { --ink: #1d2433; --muted: #5b6475; --line: #d8dde6; --band: #f4f6fa; --accent: #1f5fa8; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", sans-serif;
       color: var(--ink); background: #fff; }
header { background: var(--accent); color: #fff; padding: 28px 40px 22px; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 600; }
header p { margin: 0; opacity: .9; }
.layout { display: flex; align-items: flex-start; }
nav { position: sticky; top: 0; flex: 0 0 300px; max-height: 100vh; overflow-y: auto; padding: 20px 16px 40px 24px;
      border-right: 1px solid var(--line); background: var(--band); font-size: 13px; }
nav h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); margin: 0 0 8px; }
nav ol { list-style: none; margin: 0; padding: 0; }
nav li { margin: 2px 0; }
nav a { color: var(--ink); text-decoration: none; }
nav a:hover { color: var(--accent); text-decoration: underline; }
nav .na a { color: var(--muted); }
nav .l2 { padding-left: 12px; } nav .l3 { padding-left: 24px; } nav .l4 { padding-left: 36px; }
nav .l1 { margin-top: 8px; font-weight: 600; }
main { flex: 1 1 auto; min-width: 0; max-width: 1100px; padding: 8px 40px 60px; }
h2, h3, h4, h5 { margin: 28px 0 8px; line-height: 1.25; }
h2 { font-size: 22px; border-bottom: 2px solid var(--accent); padding-bottom: 4px; }
h3 { font-size: 18px; } h4 { font-size: 16px; } h5 { font-size: 15px; color: #2b3447; }
.num { color: var(--accent); margin-right: 8px; font-variant-numeric: tabular-nums; }
.na-tag { display: inline-block; margin-left: 8px; padding: 0 6px; border-radius: 3px; font-size: 12px;
          background: #e7e9ee; color: var(--muted); vertical-align: middle; }
p.na { color: var(--muted); }
table { border-collapse: collapse; margin: 6px 0 16px; width: 100%; font-size: 13.5px; }
caption { text-align: left; font-weight: 600; color: var(--muted); padding: 4px 0; caption-side: top; }
th, td { border: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: var(--band); font-weight: 600; }
tbody tr:nth-child(even) td { background: #fafbfd; }
td { overflow-wrap: break-word; }
th:first-child, td:first-child { min-width: 9em; }
code { font: 13px ui-monospace, "DejaVu Sans Mono", monospace; background: var(--band); padding: 0 3px; }
ul { margin: 4px 0 12px; padding-left: 22px; }
@media print { nav { display: none; } header { background: none; color: var(--ink); } }
@media (max-width: 800px) { .layout { display: block; } nav { position: static; max-height: none; } }
"""


_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code> (the only markup the blocks use); a UID may break
    after any dot, so narrow columns wrap it there rather than inside a word."""
    parts = escape(text).split("`")
    html = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    return _UID.sub(lambda m: m.group(0).replace(".", ".<wbr>"), html)


def render_html(statement: Statement) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(statement.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>{escape(statement.title)}</h1><p>{escape(statement.subtitle)}</p></header>",
        '<div class="layout"><nav aria-label="Table of contents"><h2>N.2 Table of Contents</h2><ol>',
    ]
    for s in statement.sections:
        cls = f"l{min(s.level, 4)}" + (" na" if s.not_applicable else "")
        tag = " - N/A" if s.not_applicable else ""
        out.append(f'<li class="{cls}"><a href="#{s.anchor}">N.{escape(s.number)} {escape(s.title)}{tag}</a></li>')
    out.append("</ol></nav><main>")
    for s in statement.sections:
        level = min(s.level + 1, 5)
        na = '<span class="na-tag">N/A</span>' if s.not_applicable else ""
        out.append(f'<h{level} id="{s.anchor}"><span class="num">N.{escape(s.number)}</span>'
                   f"{escape(s.title)}{na}</h{level}>")
        if s.not_applicable:
            out.append('<p class="na">- N/A</p>')
        for block in s.blocks:
            if isinstance(block, Para):
                out.append(f"<p>{_inline(block.text)}</p>")
            elif isinstance(block, Items):
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items) + "</ul>")
            elif isinstance(block, Table):
                out.append(f"<table><caption>{_inline(block.caption)}</caption><thead><tr>"
                           + "".join(f"<th>{_inline(h)}</th>" for h in block.head) + "</tr></thead><tbody>")
                for row in block.rows:
                    out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>")
                out.append("</tbody></table>")
    out.append("</main></div></body></html>")
    return "\n".join(out) + "\n"


__all__ = ["render_html"]
