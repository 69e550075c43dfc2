"""What each authoritative server of a zone serves for the MX hosts' TLSA records.

Before a served key changes, its record must be on every authoritative server with a valid
RRSIG (RFC 7671 §8.1; a secondary that never transferred the zone is the classic failure). The
zone's NS RRset is read from a server that knows it (the DNS provider's primary, or a resolver),
the NS names' addresses likewise, and then every address is asked directly: RD=0, DO=1, over
TCP (no truncation, and no unconnected UDP socket bound to the wildcard address). The RRSIG of
each TLSA RRset is checked against the DNSKEY RRset the same server serves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from mailward.rollover.machine import Propagation

log = logging.getLogger("mailward.nameservers")

QUERY_TIMEOUT = 3.0


@dataclass(frozen=True)
class NameserverView:
    """One authoritative server's answer for every TLSA owner name asked."""

    name: str
    address: str
    serial: int | None = None
    # TLSA owner name → the `3 1 1` digests served there (empty: no such RRset).
    digests: dict[str, frozenset[str]] = field(default_factory=dict)
    ttl_max: int = 0
    problem: str | None = None


def agreement(views: Sequence[NameserverView], owners: Sequence[str]) -> Propagation:
    """The digests every server serves for every owner name, if they all agree."""
    if not views:
        return Propagation(None, problem="no authoritative server found")
    ttl_max = max(v.ttl_max for v in views)
    failing = [v for v in views if v.problem]
    if failing:
        problem = "; ".join(f"{v.name} ({v.address}): {v.problem}" for v in failing)
        return Propagation(None, ttl_max, problem)
    sets = {v.digests.get(o, frozenset()) for v in views for o in owners}
    if len(sets) == 1:
        return Propagation(sets.pop(), ttl_max)
    serials = ", ".join(f"{v.name} ({v.address}) serial {v.serial}" for v in views)
    return Propagation(None, ttl_max, f"the servers disagree: {serials}")


class NameserverObserver:
    """Asks every authoritative server of a zone; `seed` is a server that answers for the zone
    (the provider's primary) or a recursive resolver, as `host` or `host:port`."""

    def __init__(self, seed: str, *, port: int = 53, timeout: float = QUERY_TIMEOUT) -> None:
        self._seed, self._port, self._timeout = seed, port, timeout

    async def observe(self, zone: str, owners: Sequence[str]) -> list[NameserverView]:
        return await asyncio.to_thread(self._observe, zone, owners)

    def _ask(
        self, address: str, name: str | dns.name.Name, rdtype: str, *, recurse: bool = False
    ) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, want_dnssec=True)
        if not recurse:
            query.flags &= ~dns.flags.RD
        return dns.query.tcp(query, address, timeout=self._timeout, port=self._port)

    def _observe(self, zone: str, owners: Sequence[str]) -> list[NameserverView]:
        origin = dns.name.from_text(zone)
        try:
            servers = self._servers(origin)
        except (dns.exception.DNSException, OSError, LookupError) as error:
            return [NameserverView(self._seed, self._seed, problem=f"NS lookup failed: {error}")]
        return [self._view(name, address, origin, owners) for name, address in servers]

    def _rrset(
        self, response: dns.message.Message, name: dns.name.Name, rdtype: str
    ) -> dns.rrset.RRset | None:
        try:
            return response.find_rrset(
                response.answer, name, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)
            )
        except KeyError:
            return None

    def _servers(self, origin: dns.name.Name) -> list[tuple[str, str]]:
        ns = self._rrset(self._ask(self._seed, origin, "NS", recurse=True), origin, "NS")
        if ns is None:
            raise LookupError(f"{self._seed} returned no NS RRset for {origin}")
        servers: list[tuple[str, str]] = []
        for rdata in sorted(ns, key=str):
            target: dns.name.Name = rdata.target
            for rdtype in ("A", "AAAA"):
                found = self._rrset(
                    self._ask(self._seed, target, rdtype, recurse=True), target, rdtype
                )
                servers += [(target.to_text(), str(r)) for r in found or ()]
        if not servers:
            raise LookupError(f"no address found for the NS of {origin}")
        return servers

    def _view(
        self, name: str, address: str, origin: dns.name.Name, owners: Sequence[str]
    ) -> NameserverView:
        try:
            soa = self._rrset(self._ask(address, origin, "SOA"), origin, "SOA")
            keys = self._rrset(self._ask(address, origin, "DNSKEY"), origin, "DNSKEY")
            serial = soa[0].serial if soa else None
            if keys is None:
                return NameserverView(name, address, serial, problem="serves no DNSKEY RRset")
            digests: dict[str, frozenset[str]] = {}
            ttl_max = 0
            for owner in owners:
                found, ttl = self._tlsa(address, dns.name.from_text(owner), origin, keys)
                digests[owner] = found
                ttl_max = max(ttl_max, ttl)
        except (dns.exception.DNSException, OSError, ValueError) as error:
            return NameserverView(name, address, problem=f"{type(error).__name__}: {error}")
        return NameserverView(name, address, serial, digests, ttl_max)

    def _tlsa(
        self,
        address: str,
        owner: dns.name.Name,
        origin: dns.name.Name,
        keys: dns.rrset.RRset,
    ) -> tuple[frozenset[str], int]:
        response = self._ask(address, owner, "TLSA")
        if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise ValueError(f"{owner} TLSA: {dns.rcode.to_text(response.rcode())}")
        if not response.flags & dns.flags.AA:
            raise ValueError(f"{owner} TLSA: the answer is not authoritative")
        tlsa = self._rrset(response, owner, "TLSA")
        if tlsa is None:
            return frozenset(), 0
        try:
            signatures = response.find_rrset(
                response.answer, owner, dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.TLSA
            )
        except KeyError:
            raise ValueError(f"{owner} TLSA has no RRSIG yet") from None
        try:
            dns.dnssec.validate(tlsa, signatures, {origin: keys})
        except dns.exception.ValidationFailure as error:
            raise ValueError(f"{owner} TLSA: RRSIG does not validate ({error})") from None
        original_ttl = max(s.original_ttl for s in signatures)
        found = frozenset(r.cert.hex() for r in tlsa if (r.usage, r.selector, r.mtype) == (3, 1, 1))
        return found, max(tlsa.ttl, original_ttl)
