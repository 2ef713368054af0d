"""Helpers of the conformance interop test: shipped profiles made safe for loopback, and pynetdicom
proposals in batches of at most 128 presentation contexts (PS3.8 9.3.2.2)."""

from __future__ import annotations

import importlib.resources
import logging
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import UID_dictionary

ROOT = Path(__file__).resolve().parents[2]

#: Every SOP class and transfer syntax of the standard, as pydicom's registry knows them.
ALL_SOP_CLASSES: tuple[str, ...] = tuple(
    uid for uid, entry in UID_dictionary.items() if "SOP Class" in entry[1] and "Instance" not in entry[1]
)
ALL_TRANSFER_SYNTAXES: tuple[str, ...] = tuple(dict.fromkeys(
    [uid for uid, entry in UID_dictionary.items() if entry[1] == "Transfer Syntax"]
    # the newest ones, whether or not pynetdicom has added them to pydicom's registry yet
    + ["1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112", "1.2.840.10008.1.2.8.1"]))


def shipped_profiles() -> list[tuple[str, str]]:
    """(name, TOML text) of the embedded default profile and of every profiles/*.toml."""
    out = [("embedded-default", importlib.resources.files("agent").joinpath("default_profile.toml").read_text())]
    out += [(p.stem, p.read_text()) for p in sorted((ROOT / "profiles").glob("*.toml"))]
    return out


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_toml(data: Mapping[str, object], prefix: str = "") -> str:
    """The little TOML writer the test needs: scalars and lists first, then tables."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    # A table's header is written even when it is empty: `[query]` alone turns a service on.
    text = (f"[{prefix}]\n" if prefix else "") + "\n".join(lines) + ("\n" if lines else "")
    for key, value in tables:
        text += "\n" + dump_toml(value, f"{prefix}.{key}" if prefix else key)
    return text


def loopback_profile(text: str, folder: Path, port: int, closed_port: int) -> Path:
    """The profile with everything on loopback: the listener on `port`, every peer at `closed_port`
    (nothing listens: outgoing jobs just wait), data and films under `folder`."""
    data = tomllib.loads(text)
    agent = data.setdefault("agent", {})
    agent.update(bind="127.0.0.1", port=port, data_dir=str(folder / "data"), log_level="warning")
    for peer in data.get("peers", {}).values():
        peer.update(host="127.0.0.1", port=closed_port)
    options = data.get("print", {}).get("options")
    if options is not None and "directory" in options:
        options["directory"] = str(folder / "films")
    path = folder / "profile.toml"
    path.write_text(dump_toml(data))
    return path


@dataclass
class Proposal:
    abstract_syntax: str
    transfer_syntaxes: Sequence[str]
    roles: tuple[bool, bool] | None = None  # (scu, scp) in a role selection item; None: no item
    extended: bytes | None = None  # a SOP Class Extended Negotiation item's information; None: no item


@dataclass
class Outcome:
    proposal: Proposal
    accepted: bool
    transfer_syntax: str | None = None
    as_scu: bool | None = None  # the requestor's (our) roles as agreed
    as_scp: bool | None = None
    extended_reply: bytes | None = None  # the acceptor's SOP Class Extended Negotiation reply, if any


def propose(port: int, called_ae: str, proposals: Sequence[Proposal]) -> Iterator[Outcome]:
    """Propose everything, 128 contexts per association (one abstract syntax appears once per
    association, since a role selection item is per SOP class); yield what the agent decided."""
    from pynetdicom import AE, build_context, build_role
    from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    batches: list[list[Proposal]] = []
    for p in proposals:
        for batch in batches:
            if len(batch) < 128 and all(q.abstract_syntax != p.abstract_syntax for q in batch):
                batch.append(p)
                break
        else:
            batches.append([p])
    for batch in batches:
        ae = AE(ae_title="CONFTEST")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        contexts = [build_context(p.abstract_syntax, list(p.transfer_syntaxes)) for p in batch]
        items: list[object] = [build_role(p.abstract_syntax, scu_role=p.roles[0], scp_role=p.roles[1])
                               for p in batch if p.roles is not None]
        for p in batch:
            if p.extended is not None:
                item = SOPClassExtendedNegotiation()
                item.sop_class_uid, item.service_class_application_information = p.abstract_syntax, p.extended
                items.append(item)
        assoc = ae.associate("127.0.0.1", port, contexts=contexts, ae_title=called_ae, ext_neg=items or None)
        if not assoc.is_established:
            # pynetdicom aborts an association on which the acceptor accepted nothing; that is an answer
            # (every context refused), as long as the acceptor did accept the association itself.
            assert not assoc.is_rejected, f"association rejected ({len(batch)} contexts)"
            assert len(assoc.rejected_contexts) == len(batch), f"association aborted ({len(batch)} contexts)"
            yield from (Outcome(p, False) for p in batch)
            continue
        try:
            by_syntax = {str(cx.abstract_syntax): cx for cx in assoc.accepted_contexts}
            replies = {str(uid): info for uid, info in assoc.acceptor.sop_class_extended.items()}
            for p in batch:
                cx = by_syntax.get(p.abstract_syntax)
                if cx is None:
                    yield Outcome(p, False)
                else:
                    yield Outcome(p, True, str(cx.transfer_syntax[0]), cx.as_scu, cx.as_scp,
                                  replies.get(p.abstract_syntax))
        finally:
            assoc.release()


__all__ = ["ALL_SOP_CLASSES", "ALL_TRANSFER_SYNTAXES", "Outcome", "Proposal", "dump_toml", "loopback_profile",
           "propose", "shipped_profiles"]
