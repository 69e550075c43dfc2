"""Plan DNS changes in the manner of external-dns: current + desired + ownership → changes.

Ownership lives in the zone itself, next to the records: one TXT RRset per MailDomain at
`_mailward.<domain>` (the registry) names its owner (namespace, name, uid) and lists every
RRset (name and type) that mailward created for it. Only listed RRsets are ever changed or
deleted. An RRset that is wanted but exists without being listed belongs to someone else (a
person, another tool, another MailDomain): it is reported as a conflict and left alone.

The registry is rewritten in the same UPDATE as the records it lists, and every change carries a
prerequisite on the exact data it was planned from (RFC 2136 §2.4), so a concurrent edit makes
the server refuse the whole UPDATE rather than have it clobbered; the next pass plans again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import dns.rdata
import dns.rdataclass
import dns.rdatatype

from mailward.owner import Owner as Owner
from mailward.render.dns_records import RRset, absolute, make_rrset, txt_data

Key = tuple[str, str]

REGISTRY_LABEL = "_mailward"
REGISTRY_TTL = 300
_HERITAGE = "heritage=mailward"


@dataclass(frozen=True)
class Conflict:
    key: Key
    reason: str

    def describe(self) -> str:
        return f"{self.key[0].rstrip('.')} {self.key[1]}"


@dataclass(frozen=True)
class Plan:
    create: tuple[RRset, ...] = ()
    update: tuple[tuple[RRset, RRset], ...] = ()  # (current, desired)
    delete: tuple[RRset, ...] = ()
    registry_current: RRset | None = None
    registry_desired: RRset | None = None
    conflicts: tuple[Conflict, ...] = ()
    owned: frozenset[Key] = field(default_factory=frozenset)

    @property
    def registry_changes(self) -> bool:
        return self.registry_current != self.registry_desired

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.delete or self.registry_changes)

    @property
    def record_changes(self) -> int:
        return len(self.create) + len(self.update) + len(self.delete)


def registry_name(domain: str) -> str:
    return absolute(f"{REGISTRY_LABEL}.{domain}")


def _relative(name: str, domain: str) -> str:
    origin = absolute(domain)
    if name == origin:
        return "@"
    if name.endswith("." + origin):
        return name[: -len(origin) - 1]
    return name


def _absolute_from(relative: str, domain: str) -> str:
    if relative == "@":
        return absolute(domain)
    if relative.endswith("."):
        return relative
    return absolute(f"{relative}.{domain}")


def encode_registry(owner: Owner, domain: str, keys: Iterable[Key]) -> RRset:
    """The registry TXT RRset: one record, its first string the owner, then one per RRset."""
    strings = [f"{_HERITAGE},owner={owner.namespace}/{owner.name},uid={owner.uid}"]
    strings += [f"{_relative(name, domain)} {rdtype}" for name, rdtype in sorted(keys)]
    data = " ".join(txt_data(s) for s in strings)
    return make_rrset(registry_name(domain), "TXT", REGISTRY_TTL, [data])


@dataclass(frozen=True)
class RegistryContent:
    owner: Owner | None
    keys: frozenset[Key]


def decode_registry(rrset: RRset, domain: str) -> RegistryContent:
    """Owner and listed RRsets of a registry RRset; owner None when it is not mailward's."""
    for text in rrset.rdata:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, text)
        strings = [s.decode("ascii", "replace") for s in rdata.strings]  # type: ignore[attr-defined]
        if not strings or not strings[0].startswith(_HERITAGE + ","):
            continue
        fields = dict(part.split("=", 1) for part in strings[0].split(",") if "=" in part)
        namespace, _, name = fields.get("owner", "").partition("/")
        owner = Owner(namespace, name, fields.get("uid", ""))
        keys = set()
        for entry in strings[1:]:
            relative, _, rdtype = entry.rpartition(" ")
            if relative and rdtype:
                keys.add((_absolute_from(relative, domain), rdtype.upper()))
        return RegistryContent(owner, frozenset(keys))
    return RegistryContent(None, frozenset())


def _cname_clash(key: Key, current: Mapping[Key, RRset], owned: frozenset[Key]) -> Key | None:
    """RFC 1034 §3.6.2: a CNAME shares its name with no other data. The foreign RRset that a new
    RRset would clash with, if any."""
    name, rdtype = key
    for other in current:
        if other[0] != name or other == key or other in owned:
            continue
        if rdtype == "CNAME" or other[1] == "CNAME":
            return other
    return None


def calculate(
    *,
    owner: Owner,
    domain: str,
    current: Mapping[Key, RRset],
    desired: Sequence[RRset],
    keep_if_owned: frozenset[Key] = frozenset(),
) -> Plan:
    """The changes that bring the domain's records to `desired` without touching foreign data.

    `current` holds every RRset of the zone at the names involved (DNSSEC data left out).
    An RRset in `keep_if_owned` that mailward already publishes is left as it is, whatever
    `desired` says (the MTA-STS id while the endpoint does not serve the new policy yet).
    """
    registry_key = (registry_name(domain), "TXT")
    registry_current = current.get(registry_key)
    owned: frozenset[Key] = frozenset()
    if registry_current is not None:
        content = decode_registry(registry_current, domain)
        if content.owner is None or content.owner.uid != owner.uid:
            holder = (
                content.owner.describe() + f" (uid {content.owner.uid})"
                if content.owner
                else "someone else"
            )
            reason = f"the registry {registry_key[0].rstrip('.')} TXT belongs to {holder}"
            return Plan(
                registry_current=registry_current,
                registry_desired=registry_current,
                conflicts=tuple(Conflict(r.key, reason) for r in desired),
            )
        owned = content.keys

    create: list[RRset] = []
    update: list[tuple[RRset, RRset]] = []
    conflicts: list[Conflict] = []
    keep: set[Key] = set()
    for rrset in desired:
        existing = current.get(rrset.key)
        if rrset.key in owned:
            keep.add(rrset.key)
            if existing is None:
                create.append(rrset)
            elif existing != rrset and rrset.key not in keep_if_owned:
                update.append((existing, rrset))
            continue
        if existing is not None:
            conflicts.append(Conflict(rrset.key, "exists and is not mailward's"))
            continue
        clash = _cname_clash(rrset.key, current, owned)
        if clash is not None:
            conflicts.append(
                Conflict(rrset.key, f"a CNAME cannot share its name with {clash[1]} data")
            )
            continue
        keep.add(rrset.key)
        create.append(rrset)
    wanted = {r.key for r in desired}
    delete = [current[key] for key in sorted(owned - wanted) if key in current]
    registry_desired = encode_registry(owner, domain, keep) if keep else None
    return Plan(
        create=tuple(create),
        update=tuple(update),
        delete=tuple(delete),
        registry_current=registry_current,
        registry_desired=registry_desired,
        conflicts=tuple(conflicts),
        owned=frozenset(keep),
    )


def release(*, owner: Owner, domain: str, current: Mapping[Key, RRset]) -> Plan:
    """The changes that remove every RRset the registry lists for `owner`, and the registry."""
    return calculate(owner=owner, domain=domain, current=current, desired=())


def names_involved(domain: str, desired: Iterable[RRset]) -> set[str]:
    return {registry_name(domain), *(r.name for r in desired)}
