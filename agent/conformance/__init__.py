"""The DICOM Conformance Statement (PS3.2 Annex N) the agent generates from a profile.

`statement(profile)` builds the agent's services as the profile configures them (no network, a
throwaway data folder) and reads from them what is accepted and proposed; `render_markdown` and
`render_html` lay it out. Nothing in this package is a hand-written list of capabilities.
"""

from agent.conformance.collect import collect, statement
from agent.conformance.model import Facts, Statement
from agent.conformance.render_html import render_html
from agent.conformance.render_markdown import render_markdown

__all__ = ["Facts", "Statement", "collect", "render_html", "render_markdown", "statement"]
