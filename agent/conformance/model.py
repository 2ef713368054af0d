"""The conformance statement as a value: facts the agent was built with, and the document made of them.

Invariants:
- `Facts` holds only what was read from the running code (the service registry, the SCU proposals,
  the handlers' status constants, the profile); nothing in it is typed in by hand, so the statement
  cannot say more or less than the agent does.
- `Statement` is the document: numbered sections in the PS3.2 Annex N order, each a list of blocks.
  A section that does not apply keeps its place and says "N/A" (PS3.2 Annex N preamble).
- Renderers (Markdown, HTML) only lay out blocks; they add no facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Configurable = Literal["USER", "SERVICE", "FIXED"]


@dataclass(frozen=True, slots=True)
class AcceptedClass:
    """An abstract syntax the agent accepts as association acceptor.

    `transfer_syntaxes`: the ones it picks in this preference order when the requestor proposes them.
    `as_proposed`: further transfer syntaxes taken as proposed (compressed, stored unchanged) when the
    requestor lists one of them first in the context, or when none of `transfer_syntaxes` is proposed.
    `requestor_roles`: the roles a requestor may take with SCP/SCU Role Selection (PS3.7 D.3.3.4);
    without one the requestor is SCU and the agent SCP."""

    uid: str
    name: str
    service: str
    operations: tuple[str, ...]
    transfer_syntaxes: tuple[str, ...]
    as_proposed: tuple[str, ...] = ()
    accept_any_other: bool = False
    requestor_may_be_scu: bool = True
    requestor_may_be_scp: bool = False
    extended_negotiation: bool = False  # answers SOP Class Extended Negotiation (PS3.7 D.3.3.5)


@dataclass(frozen=True, slots=True)
class ProposedClass:
    """A presentation context the agent proposes as association requestor."""

    service: str
    uid: str
    name: str
    transfer_syntaxes: tuple[str, ...]
    peers: tuple[str, ...]
    scu_role: bool | None = None  # None: no role selection item
    scp_role: bool | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class StatusEntry:
    code: int
    category: str
    meaning: str


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of a configuration table (PS3.2 Table N.6-1): who may change it and its value."""

    parameter: str
    configurable: Configurable
    value: str
    comment: str = ""


@dataclass(frozen=True, slots=True)
class Facts:
    product: str
    version: str
    implementation_class_uid: str
    implementation_version_name: str
    ae_title: str
    port: int
    accepted: tuple[AcceptedClass, ...]
    proposed: tuple[ProposedClass, ...]
    statuses: dict[str, tuple[StatusEntry, ...]]  # "Storage SCP (C-STORE)" -> what it can answer
    timeouts: dict[str, float]  # artim, dimse, idle, connect (seconds)
    max_pdu_receive: int
    max_associations: int
    async_window: tuple[int, int]
    settings: tuple[Setting, ...]
    extras: dict[str, object] = field(default_factory=dict)  # service-specific facts (printer, worklist)


@dataclass(frozen=True, slots=True)
class Para:
    text: str


@dataclass(frozen=True, slots=True)
class Items:
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Table:
    caption: str
    head: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


Block = Para | Items | Table


@dataclass(frozen=True, slots=True)
class Section:
    number: str  # "N.5.2.1" style, without the "N." prefix: "5.2.1"
    title: str
    blocks: tuple[Block, ...] = ()
    not_applicable: bool = False

    @property
    def level(self) -> int:
        return self.number.count(".") + 1

    @property
    def anchor(self) -> str:
        return "s" + self.number.replace(".", "-")


@dataclass(frozen=True, slots=True)
class Statement:
    title: str
    subtitle: str
    facts: Facts
    sections: tuple[Section, ...]


def na(number: str, title: str, why: str = "") -> Section:
    """A section kept in its place that does not apply (PS3.2: "- N/A")."""
    blocks: tuple[Block, ...] = (Para(why),) if why else ()
    return Section(number, title, blocks, not_applicable=True)


__all__ = [
    "AcceptedClass", "Block", "Configurable", "Facts", "Items", "Para", "ProposedClass", "Section", "Setting",
    "Statement", "StatusEntry", "Table", "na",
]
