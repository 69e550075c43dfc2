"""Which DKIM records the validating resolver returns: the gate of every rotation step.

A verifier finds a signature's key through its own resolver; mailward asks a validating one
(the resolver the compliance checks use) for `<selector>._domainkey.<domain>` TXT and counts a
selector as visible only if the answer is validated (AD) and holds exactly the key published
(`p=`), so a stale or forged record never lets a key sign.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

QUERY_TIMEOUT = 3.0


def record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}."


def public_key_in(texts: list[str]) -> str | None:
    """`p=` of a DKIM record (RFC 6376 §3.6.1 tag list, white space ignored inside values)."""
    for text in texts:
        tags = {}
        for part in text.split(";"):
            name, sep, value = part.partition("=")
            if sep:
                tags[name.strip()] = "".join(value.split())
        if tags.get("v", "DKIM1") == "DKIM1" and "p" in tags:
            return tags["p"]
    return None


class DKIMResolver:
    def __init__(self, address: str, *, port: int = 53, timeout: float = QUERY_TIMEOUT) -> None:
        self._address, self._port, self._timeout = address, port, timeout

    async def visible(
        self, domain: str, expected: Mapping[str, str | None]
    ) -> frozenset[str] | None:
        """The selectors (of `expected`: selector → `p=`, None for any key) whose record the
        resolver returns validated and with that key; None if it could not be asked."""
        return await asyncio.to_thread(self._visible, domain, expected)

    def _visible(self, domain: str, expected: Mapping[str, str | None]) -> frozenset[str] | None:
        seen = set()
        try:
            for selector, public in expected.items():
                found = self.lookup(selector, domain)
                if found is not None and public in (None, found):
                    seen.add(selector)
        except (dns.exception.DNSException, OSError):
            return None
        return frozenset(seen)

    def lookup(self, selector: str, domain: str) -> str | None:
        """`p=` of the validated record, None if there is none (or it is not validated)."""
        query = dns.message.make_query(record_name(selector, domain), "TXT", want_dnssec=True)
        answer = dns.query.udp(query, self._address, timeout=self._timeout, port=self._port)
        if answer.flags & dns.flags.TC:
            answer = dns.query.tcp(query, self._address, timeout=self._timeout, port=self._port)
        if answer.rcode() != dns.rcode.NOERROR or not answer.flags & dns.flags.AD:
            return None
        texts = [
            b"".join(r.strings).decode("ascii", "replace")
            for rrset in answer.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for r in rrset
        ]
        return public_key_in(texts)
