"""DNS through one given validating resolver, with the DNSSEC verdict of every answer.

The engine never trusts its own validation: it asks the resolver (the one the MTAs use) with the
DO bit and reads the AD bit, and a bogus answer shows up as SERVFAIL with an Extended DNS Error
(RFC 8914) that names the reason. Answers are cached for the duration of one domain's check, so
the many checks asking for the same MX or TLSA cost one query each.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from mailward.compliance.observations import Answer


class DNSClient(Protocol):
    async def query(self, name: str, rdtype: str) -> Answer: ...


@dataclass
class ValidatingResolverClient:
    """Queries one resolver (address, port); answers cached per instance."""

    address: str
    port: int = 53
    timeout: float = 3.0
    _cache: dict[tuple[str, str], asyncio.Future[Answer]] = field(default_factory=dict)

    async def query(self, name: str, rdtype: str) -> Answer:
        key = (name.lower().rstrip("."), rdtype.upper())
        if key not in self._cache:
            self._cache[key] = asyncio.ensure_future(self._query(*key))
        return await asyncio.shield(self._cache[key])

    async def _query(self, name: str, rdtype: str) -> Answer:
        qname = dns.name.from_text(name)
        request = dns.message.make_query(qname, rdtype, want_dnssec=True, use_edns=0, payload=1232)
        response: dns.message.Message | None = None
        for _ in range(2):
            try:
                response, _tcp = await dns.asyncquery.udp_with_fallback(
                    request, self.address, timeout=self.timeout, port=self.port
                )
                break
            except (dns.exception.Timeout, OSError):
                continue
        if response is None:
            return Answer(name, rdtype, "TIMEOUT", False)
        wanted = dns.rdatatype.from_text(rdtype)
        records: list[str] = []
        ttl = 0
        for rrset in response.answer:
            if rrset.rdtype == wanted:
                records.extend(r.to_text() for r in rrset)
                ttl = rrset.ttl
        # A resolver hands out what is left of its cached TTL (and may cap it); the zone's own
        # TTL is the signature's Original TTL field (RFC 4034 §3.1.4), when the answer is signed.
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.RRSIG and rrset.covers == wanted:
                ttl = max(int(getattr(sig, "original_ttl", ttl)) for sig in rrset)
        ede = tuple(
            f"{int(e.code)} {e.code.name if hasattr(e.code, 'name') else ''}"
            + (f": {e.text}" if e.text else "")
            for e in response.extended_errors()
        )
        return Answer(
            name=name,
            rdtype=rdtype,
            rcode=dns.rcode.to_text(response.rcode()),
            secure=bool(response.flags & dns.flags.AD),
            records=tuple(records),
            ttl=ttl,
            ede=ede,
        )

    async def reachable(self) -> bool:
        """Whether the resolver answers at all (any rcode) for the root SOA."""
        answer = await self._query(".", "SOA")
        return answer.rcode != "TIMEOUT"
