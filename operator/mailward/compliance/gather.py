"""Gathering: ask DNS (through the validating resolver), SMTP, TLS and HTTPS what they say about
one domain, and keep it as `DomainObservations`. No verdicts here (`checks/` judges).

Port 25 is probed at every address of every MX host, its A and its AAAA records (at most
`MAX_ADDRESSES_PER_HOST` per host): a sender may pick any of them.

The blocking network probes run in threads, bounded by a semaphore that a caller can share
between domains (the operator keeps one for the whole process), so a hundred domains never mean
a thousand simultaneous handshakes. Endpoint probes (the TLS enumeration, the STARTTLS injection
test) can be shared between the domains an MX serves (`endpoint_probes.EndpointProbes`): only
when a caller passes `shared` and a window (`shared_max_age`); without them (`mailward check`,
one domain) every probe is the domain's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TypeVar

from mailward.compliance import rptmailbox
from mailward.compliance.dnsprobe import DNSClient
from mailward.compliance.endpoint_probes import EndpointProbes, ProbeWindow
from mailward.compliance.httpsprobe import fetch
from mailward.compliance.observations import (
    CLIENT_PORTS,
    IMPLICIT_TLS_PORTS,
    MAX_ADDRESSES_PER_HOST,
    Answer,
    DomainObservations,
    Endpoint,
    HTTPSResult,
    InjectionObservation,
    Lookup,
    MTASTSObservation,
    MXAddress,
    MXHost,
    PortProbe,
    TLSObservation,
    ZoneAnswers,
)
from mailward.compliance.records import tlsrpt_rua, txt_values
from mailward.compliance.smtpprobe import ProbeError, reachable, smtp_dialogue, starttls_injection
from mailward.compliance.tlsprobe import observe_tls

T = TypeVar("T")

DKIM_SELECTORS = ("mailward", "default", "dkim", "mail", "selector1", "selector2", "s1", "s2",
                  "k1", "ed25519", "rsa", "tlsrpt")  # fmt: skip
# RFC 6186 / RFC 8314 services -> the port a client uses for them.
CLIENT_SRV = {"_submissions._tcp": 465, "_imaps._tcp": 993, "_pop3s._tcp": 995,
              "_submission._tcp": 587, "_imap._tcp": 143, "_pop3._tcp": 110}  # fmt: skip
# Client ports whose TLS is probed (143 and 110 only count as "client access offered").
TLS_CLIENT_PORTS = (*IMPLICIT_TLS_PORTS, 587)
DEFAULT_CONCURRENCY = 8


# The semaphore bounds the probes; the threads that run them must not bound them lower (the
# default executor has min(32, CPUs + 4) threads: 6 on two CPUs, whatever the concurrency).
PROBE_THREADS = 64
_EXECUTOR: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="mailward-probe")
    return _EXECUTOR


class Gatherer:
    def __init__(
        self,
        dns: DNSClient,
        *,
        cafile: str | None = None,
        limit: asyncio.Semaphore | None = None,
        shared: EndpointProbes | None = None,
        shared_max_age: float = 0.0,
    ) -> None:
        self.dns = dns
        self.cafile = cafile
        self.limit = limit or asyncio.Semaphore(DEFAULT_CONCURRENCY)
        # Endpoint observations shared with the other domains checked within `shared_max_age`.
        self.shared = shared
        self.shared_max_age = shared_max_age

    async def _blocking(self, fn: Callable[..., T], *args: object) -> T:
        async with self.limit:
            return await asyncio.get_running_loop().run_in_executor(_executor(), fn, *args)

    async def _endpoint(
        self,
        window: ProbeWindow[Endpoint, T] | None,
        ep: Endpoint,
        fn: Callable[[Endpoint], T],
        complete: Callable[[T], bool],
    ) -> T:
        """`fn(ep)`, or what it gave for another domain within `shared_max_age` if that probe
        was `complete` (or is still running: then its outcome, whatever it is)."""
        if window is None or self.shared_max_age <= 0:
            return await self._blocking(fn, ep)
        return await window.get(ep, self.shared_max_age, lambda: self._blocking(fn, ep), complete)

    async def _injection(self, ep: Endpoint) -> InjectionObservation:
        window = self.shared.injection if self.shared is not None else None
        return await self._endpoint(
            window, ep, starttls_injection, lambda f: f.vulnerable is not None
        )

    async def _tls(self, ep: Endpoint) -> TLSObservation:
        window = self.shared.tls if self.shared is not None else None
        return await self._endpoint(window, ep, self._observe_tls, _complete)

    async def _zone_of(self, name: str) -> str:
        labels = name.rstrip(".").split(".")
        for i in range(len(labels)):
            candidate = ".".join(labels[i:])
            soa = await self.dns.query(candidate, "SOA")
            if soa.records or soa.bogus:
                return candidate
        return labels[-1]

    async def _addresses(self, name: str) -> Answer:
        """The A answer of `name`, or its AAAA answer when it has no A record (IPv6 only)."""
        a = await self.dns.query(name, "A")
        if a.ok and a.records:
            return a
        aaaa = await self.dns.query(name, "AAAA")
        return aaaa if aaaa.ok and aaaa.records else a

    async def _fetch(self, host: str, address: str, path: str) -> HTTPSResult:
        return await self._blocking(fetch, host, address, path, self.cafile)

    async def gather(self, domain: str) -> DomainObservations:
        observed_at = datetime.now(UTC).replace(microsecond=0)
        q = self.dns.query
        mx_answer, sts_txt, tlsrpt, spf, dmarc, dnskey = await asyncio.gather(
            q(domain, "MX"), q(f"_mta-sts.{domain}", "TXT"), q(f"_smtp._tls.{domain}", "TXT"),
            q(domain, "TXT"), q(f"_dmarc.{domain}", "TXT"), q(domain, "DNSKEY"),
        )  # fmt: skip
        dkim = await asyncio.gather(*(q(f"{s}._domainkey.{domain}", "TXT") for s in DKIM_SELECTORS))
        srv = await asyncio.gather(*(q(f"{s}.{domain}", "SRV") for s in CLIENT_SRV))

        exchanges = []
        for record in mx_answer.records if mx_answer.ok else ():
            pref, _, host = record.partition(" ")
            if host.rstrip(".").lower():  # "0 ." is a null MX (RFC 7505)
                exchanges.append(MXHost(host.rstrip(".").lower(), int(pref)))
        exchanges.sort(key=lambda m: (m.preference, m.name))

        # The zone that holds the domain: a domain below its zone's apex (a subdomain published
        # in its parent's zone) has no DS of its own, and needs none.
        zone_names = {await self._zone_of(d) for d in (domain, *(m.name for m in exchanges))}
        zones = []
        for zone in sorted(zone_names):
            soa, ds = await asyncio.gather(q(zone, "SOA"), q(zone, "DS"))
            zones.append(ZoneAnswers(zone, soa, ds))

        async def resolve_mx(mx: MXHost) -> None:
            mx.a, mx.aaaa, mx.tlsa = await asyncio.gather(
                q(mx.name, "A"), q(mx.name, "AAAA"), q(f"_25._tcp.{mx.name}", "TLSA")
            )
            # Every address a sender may pick, IPv4 and IPv6, up to the bound.
            mx.probes = [MXAddress(a) for a in mx.published[:MAX_ADDRESSES_PER_HOST]]

        await asyncio.gather(*(resolve_mx(m) for m in exchanges))
        srv_lookups = [Lookup(s, a) for s, a in zip(CLIENT_SRV, srv, strict=True)]
        client_ports = await self._client_ports(srv_lookups, exchanges)

        tls: list[TLSObservation] = []
        mta_sts = MTASTSObservation(sts_txt)
        autoconfig: list[HTTPSResult] = []

        async def smtp(mx: MXHost, at: MXAddress) -> None:
            try:
                at.smtp = await self._blocking(smtp_dialogue, at.address, 25, domain)
            except (ProbeError, OSError) as e:
                at.smtp_error = str(e)
                return
            if at.smtp.starttls_offered:
                ep = Endpoint(mx.name, at.address, 25)
                try:
                    at.injection = await self._injection(ep)
                except (ProbeError, OSError) as e:
                    at.injection_error = str(e)
                # Port 25 TLS only where STARTTLS was offered.
                await observe(ep)

        async def observe(ep: Endpoint) -> None:
            tls.append(await self._tls(ep))

        async def sts() -> None:
            if not txt_values(sts_txt, "v=STSv1"):
                return
            host = f"mta-sts.{domain}"
            mta_sts.host = await self._addresses(host)
            if mta_sts.host.ok and mta_sts.host.records:
                mta_sts.fetch = await self._fetch(host, mta_sts.host.records[0],
                                                  "/.well-known/mta-sts.txt")  # fmt: skip

        async def fetch_autoconfig() -> None:
            host = f"autoconfig.{domain}"
            a = await self._addresses(host)
            if a.ok and a.records:
                path = f"/mail/config-v1.1.xml?emailaddress=postmaster%40{domain}"
                autoconfig.append(await self._fetch(host, a.records[0], path))

        def fetch_policy(host: str, address: str) -> Awaitable[HTTPSResult]:
            return self._fetch(host, address, "/.well-known/mta-sts.txt")

        mailboxes, _ = await asyncio.gather(
            rptmailbox.gather(q, fetch_policy, tlsrpt_rua(tlsrpt), domain),
            asyncio.gather(
                *(smtp(m, at) for m in exchanges for at in m.probes),
                *(observe(p.endpoint) for p in client_ports
                  if p.open and p.endpoint.port in TLS_CLIENT_PORTS),
                sts(),
                fetch_autoconfig(),
            ),
        )  # fmt: skip
        rptmailbox.share_policy(mailboxes, domain, mta_sts)
        tls.sort(key=lambda t: (t.endpoint.port != 25, t.endpoint.host, t.endpoint.port,
                                ":" in t.endpoint.address, t.endpoint.address))  # fmt: skip
        return DomainObservations(
            domain=domain,
            observed_at=observed_at,
            mx_answer=mx_answer,
            mx=exchanges,
            zones=zones,
            dnskey=dnskey,
            tls=tls,
            srv=srv_lookups,
            client_ports=client_ports,
            autoconfig=autoconfig[0] if autoconfig else None,
            mta_sts=mta_sts,
            tlsrpt=tlsrpt,
            rpt_mailboxes=mailboxes,
            spf=spf,
            dmarc=dmarc,
            dkim=[Lookup(s, a) for s, a in zip(DKIM_SELECTORS, dkim, strict=True)],
        )

    async def _client_ports(self, srv: list[Lookup], exchanges: list[MXHost]) -> list[PortProbe]:
        """Which client ports answer: the SRV targets, and the usual ports on every MX host (at
        its first address; port 25 is probed at every address)."""
        candidates: list[tuple[Endpoint, str]] = []
        for lookup in srv:
            for record in lookup.answer.records if lookup.answer.ok else ():
                _prio, _weight, port, target = record.split()
                target = target.rstrip(".").lower()
                if not target:
                    continue
                a = await self._addresses(target)
                if a.ok and a.records:
                    candidates.append((Endpoint(target, a.records[0], int(port)), lookup.label))
        for mx in exchanges:
            if mx.address is not None:
                candidates += [(Endpoint(mx.name, mx.address, p), "") for p in CLIENT_PORTS]
        unique: list[tuple[Endpoint, str]] = []
        seen: set[tuple[str, int]] = {(p.address, 25) for m in exchanges for p in m.probes}
        for ep, label in candidates:
            if (ep.address, ep.port) not in seen:
                seen.add((ep.address, ep.port))
                unique.append((ep, label))
        answers = await asyncio.gather(*(self._blocking(reachable, ep) for ep, _ in unique))
        return [PortProbe(ep, up, label) for (ep, label), up in zip(unique, answers, strict=True)]

    def _observe_tls(self, ep: Endpoint) -> TLSObservation:
        return observe_tls(ep, self.cafile)


def _complete(found: TLSObservation) -> bool:
    """A TLS observation worth sharing: the enumeration ran (not refused, not timed out)."""
    return found.reachable and not found.error and found.negotiated is not None
