"""Gathering for TR-RPT-02: the route and the enforcement of every TLSRPT report mailbox.

For each `mailto:` domain of the `_smtp._tls` record: its MX (or, with none, the domain itself
as implicit MX, RFC 5321 §5.1), the A/AAAA and `_25._tcp` TLSA of every host on that route, and
its MTA-STS policy. The judging is `checks/tlsrpt.py`.

The policy of the mailbox domain is fetched like the domain's own (one GET, no redirects); when
the mailbox domain is the policy domain itself the engine's own fetch is reused
(`share_policy`). The probe is bounded: the first four `mailto:` URIs (the CRD bounds `rua` to
four), at most four mailbox domains and eight MX hosts per domain, every lookup through the
engine's resolver client with its timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mailward.compliance.observations import (
    Answer,
    HTTPSResult,
    MTASTSObservation,
    ReportMailbox,
    ReportMailboxes,
    RouteHost,
)
from mailward.compliance.records import mailto_domains, parse_mx, txt_values

MAX_MAILTO = 4
MAX_DOMAINS = 4
MAX_HOSTS = 8

Query = Callable[[str, str], Awaitable[Answer]]
PolicyFetch = Callable[[str, str], Awaitable[HTTPSResult]]  # (host, address) -> result


def plan(rua: list[str]) -> ReportMailboxes:
    """The mailbox domains to probe, within the bounds, in the order of the record."""
    out = ReportMailboxes()
    mailto = [u for u in rua if u[:7].lower() == "mailto:"]
    out.unchecked = mailto[MAX_MAILTO:]
    by_domain: dict[str, ReportMailbox] = {}
    for uri in mailto[:MAX_MAILTO]:
        domains, error = mailto_domains(uri)
        if error:
            out.invalid.append((uri, error))
        for domain in domains:
            if domain not in by_domain:
                if len(by_domain) >= MAX_DOMAINS:
                    if uri not in out.unchecked:
                        out.unchecked.append(uri)
                    continue
                by_domain[domain] = ReportMailbox(domain)
            by_domain[domain].uris.append(uri)
    out.mailboxes = list(by_domain.values())
    return out


def share_policy(observed: ReportMailboxes, domain: str, own: MTASTSObservation) -> None:
    """Hand the policy domain's own MTA-STS observations to a mailbox at that domain."""
    for mailbox in observed.mailboxes:
        if mailbox.domain == domain:
            mailbox.sts_txt, mailbox.sts_host, mailbox.sts_fetch = own.txt, own.host, own.fetch


async def gather(
    query: Query, fetch_policy: PolicyFetch, rua: list[str], policy_domain: str
) -> ReportMailboxes:
    """Look up the route and the enforcement of every mailbox domain, all at once.

    The policy domain's own MTA-STS policy is not fetched again here: the engine fetches it for
    TR-STS-02 and hands it over with `share_policy()`.
    """
    planned = plan(rua)

    async def host(h: RouteHost) -> None:
        h.a, h.aaaa, h.tlsa = await asyncio.gather(
            query(h.name, "A"), query(h.name, "AAAA"), query(f"_25._tcp.{h.name}", "TLSA")
        )

    async def sts(mailbox: ReportMailbox) -> None:
        if mailbox.domain == policy_domain:
            return
        mailbox.sts_txt = txt = await query(f"_mta-sts.{mailbox.domain}", "TXT")
        if not txt_values(txt, "v=STSv1"):
            return
        name = f"mta-sts.{mailbox.domain}"
        mailbox.sts_host = await query(name, "A")
        if not (mailbox.sts_host.ok and mailbox.sts_host.records):  # an IPv6-only policy host
            aaaa = await query(name, "AAAA")
            mailbox.sts_host = aaaa if aaaa.ok and aaaa.records else mailbox.sts_host
        if mailbox.sts_host.ok and mailbox.sts_host.records:
            mailbox.sts_fetch = await fetch_policy(name, mailbox.sts_host.records[0])

    async def route(mailbox: ReportMailbox) -> None:
        mailbox.mx = await query(mailbox.domain, "MX")
        if not mailbox.mx.ok:
            return
        exchanges, mailbox.null_mx = parse_mx(mailbox.mx.records)
        mailbox.exchanges = exchanges[:MAX_HOSTS]
        names = mailbox.exchanges or ([] if mailbox.null_mx else [mailbox.domain])
        mailbox.hosts = [RouteHost(n) for n in names]
        await asyncio.gather(*(host(h) for h in mailbox.hosts))

    probed = [m for m in planned.mailboxes if not m.literal]
    await asyncio.gather(*(route(m) for m in probed), *(sts(m) for m in probed))
    return planned
