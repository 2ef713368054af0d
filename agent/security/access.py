"""Access control per peer: which calling AE (from which address, with which certificate, as which
user) may use which services.

Invariants:
- A policy is a value built from the profile: rules, each naming a calling AE title ("*" for any), the
  services it opens, and optional bindings (host addresses or networks, a TLS certificate subject, an
  authenticated username). A rule applies only when every binding it has matches; a caller may use the
  union of the services of the rules that apply to it.
- No rules at all is an open policy (every service to every caller): the agent's behaviour without a
  `[security]` access list, as before.
- The listener turns the answer into what the peer sees (PS3.8 9.3.4, 9.3.3.2): no service at all is an
  A-ASSOCIATE-RJ "calling AE title not recognized"; a presentation context for a service the caller may
  not use is rejected by the user (result 1), the others are negotiated as usual.
- Services are named as the profile names them (`SERVICES`); `service_of` says which one a SOP class
  belongs to. Anything not listed below is a storage class (private ones included): the registry of what
  the agent accepts decides separately whether it is served at all.
- Pure: no I/O, no clock; stdlib and pydicom's UID dictionary only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

SERVICES: tuple[str, ...] = ("verification", "store", "commitment", "worklist", "mpps", "query", "print")
ALL_SERVICES: frozenset[str] = frozenset(SERVICES)

_BY_UID = {
    "1.2.840.10008.1.1": "verification",  # PS3.4 Annex A
    "1.2.840.10008.1.20.1": "commitment",  # Storage Commitment Push Model, PS3.4 Annex J
    "1.2.840.10008.5.1.4.31": "worklist",  # Modality Worklist Information Model - FIND, PS3.4 K.6.1
    "1.2.840.10008.3.1.2.3.3": "mpps",  # Modality Performed Procedure Step, PS3.4 F.7
}
_PRINT_ROOT = "1.2.840.10008.5.1.1."  # Print Management SOP classes and meta classes, PS3.4 Annex H
_QUERY_NAME = re.compile(r"\b(FIND|MOVE|GET)\b")  # "... Information Model - FIND", PS3.4 Annex C


@lru_cache(maxsize=512)
def service_of(abstract_syntax: str) -> str:
    """The service (one of SERVICES) that a SOP class belongs to."""
    if abstract_syntax in _BY_UID:
        return _BY_UID[abstract_syntax]
    from pydicom.uid import UID_dictionary

    name = UID_dictionary.get(abstract_syntax, ("",))[0]
    if "Storage" in name:
        return "store"
    if _QUERY_NAME.search(name):
        return "query"
    if abstract_syntax.startswith(_PRINT_ROOT):
        return "print"
    return "store"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_hosts(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or networks ("192.0.2.7", "10.1.0.0/16", "::1"). Raises ValueError on a bad one."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)


@dataclass(frozen=True, slots=True)
class AccessRule:
    """`[[security.access]]`: a calling AE title and the services it may use, with optional bindings."""

    calling_ae: str  # "*": any calling AE title
    services: frozenset[str]
    hosts: tuple[Network, ...] = ()  # empty: from any address
    certificate_subject: str | None = None  # the peer's TLS client certificate subject (RFC 4514 string)
    user: str | None = None  # an authenticated username (User Identity type 2)

    def applies(self, calling_ae: str, address: str, cert_subject: str | None, user: str | None) -> bool:
        if self.calling_ae != "*" and self.calling_ae != calling_ae.strip():
            return False
        if self.hosts and not _address_in(address, self.hosts):
            return False
        if self.certificate_subject is not None and not _same_subject(self.certificate_subject, cert_subject):
            return False
        return self.user is None or self.user == user


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Which services each caller may use, and which services need an authenticated user."""

    rules: tuple[AccessRule, ...] = ()
    require_identity: frozenset[str] = frozenset()

    @property
    def is_open(self) -> bool:
        return not self.rules

    def services_for(
        self, calling_ae: str, address: str, cert_subject: str | None = None, user: str | None = None
    ) -> frozenset[str]:
        """The services this caller may use ("" address: unknown). Empty: the caller is not recognized."""
        if not self.rules:
            return ALL_SERVICES
        allowed: set[str] = set()
        for rule in self.rules:
            if rule.applies(calling_ae, address, cert_subject, user):
                allowed |= rule.services
        return frozenset(allowed)

    @classmethod
    def from_calling_aes(cls, titles: Iterable[str]) -> AccessPolicy:
        """The older `[agent] allowed_calling_aes` list: each title may use every service."""
        return cls(tuple(AccessRule(t, ALL_SERVICES) for t in titles))


def _address_in(address: str, networks: tuple[Network, ...]) -> bool:
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address  # "1.2.3.4:port" -> host
    host = host.strip("[]")
    if "%" in host:
        host = host.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 callers as ::ffff:a.b.c.d
    return any(ip.version == n.version and ip in n for n in networks)


def _same_subject(configured: str, presented: str | None) -> bool:
    """Subjects compared attribute by attribute, ignoring spaces around separators and the case of names."""
    if presented is None:
        return False
    return _normal_subject(configured) == _normal_subject(presented)


def _normal_subject(subject: str) -> tuple[tuple[str, str], ...]:
    parts = []
    for rdn in re.split(r"(?<!\\)[,/]", subject):
        if not rdn.strip():
            continue
        key, _, value = rdn.partition("=")
        parts.append((key.strip().upper(), value.strip()))
    return tuple(sorted(parts))


__all__ = ["ALL_SERVICES", "AccessPolicy", "AccessRule", "SERVICES", "parse_hosts", "service_of"]
