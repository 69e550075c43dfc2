"""TR-RPT-02: the TLSRPT report mailboxes receive mail, and without DANE/MTA-STS enforcement.

A TLS report exists to say that TLS to a domain failed. It travels as mail to the `mailto:`
addresses of the `_smtp._tls` record, so two things decide whether it arrives:

- a route: the mailbox domain has an MX that is not a null MX (RFC 7505) and whose host has an
  address, or, with no MX at all, an address of its own (implicit MX, RFC 5321 §5.1). Without
  one no report can arrive, which defeats TR-RPT-01 (a MUST): the check fails.
- no enforcement on that route: RFC 8460 §5.3 asks senders to deliver reports despite TLS
  failures, but a DANE sender that finds a DNSSEC-secure TLSA at `_25._tcp.<mx>`, or an MTA-STS
  sender that finds `mode: enforce` for the mailbox domain, drops the report exactly when the
  failure it describes also hits the report's own route. TR-03108-10-M says the receiving MX
  SHOULD NOT enforce: the check warns and names the host.

A TLSA RRset that is not DNSSEC-secure is not used by DANE senders (RFC 7672) and passes with
a note. The MTA-STS policy of the mailbox domain is fetched like the domain's own (one GET, no
redirects); when the mailbox domain is the policy domain itself the engine's own fetch is reused.
The probe is bounded: the first four `mailto:` URIs (the CRD bounds `rua` to four), at most
four mailbox domains and eight MX hosts per domain, every lookup through the engine's resolver
client with its timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from mailward.compliance import rules
from mailward.compliance.dnsprobe import Answer, txt_strings
from mailward.compliance.httpsprobe import HTTPSResult
from mailward.compliance.model import Result

CHECK_ID = "TR-RPT-02"
MAX_MAILTO = 4
MAX_DOMAINS = 4
MAX_HOSTS = 8

Query = Callable[[str, str], Awaitable[Answer]]
PolicyFetch = Callable[[str, str], Awaitable[HTTPSResult]]  # (host, address) -> result


class Findings(Protocol):
    def add(self, check_id: str, result: Result, message: str, subject: str = "") -> None: ...

    def ok(self, check_id: str, message: str, subject: str = "") -> None: ...

    def unmet(self, check_id: str, message: str, subject: str = "") -> None: ...


@dataclass
class RouteHost:
    """A host mail for the mailbox domain is handed to: an MX host, or the domain itself."""

    name: str
    a: Answer | None = None
    aaaa: Answer | None = None
    tlsa: Answer | None = None

    @property
    def addresses(self) -> list[str]:
        return [r for ans in (self.a, self.aaaa) if ans is not None and ans.ok for r in ans.records]


@dataclass
class ReportMailbox:
    """One mailbox domain of the rua, with what DNS and HTTPS say about it."""

    domain: str
    uris: list[str] = field(default_factory=list)
    mx: Answer | None = None
    exchanges: list[str] = field(default_factory=list)  # MX hosts by preference, bounded
    null_mx: bool = False
    hosts: list[RouteHost] = field(default_factory=list)
    sts_txt: Answer | None = None
    sts_host: Answer | None = None
    sts_fetch: HTTPSResult | None = None

    @property
    def literal(self) -> bool:
        return self.domain.startswith("[")


@dataclass
class ReportMailboxes:
    mailboxes: list[ReportMailbox] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (uri, why)
    unchecked: list[str] = field(default_factory=list)  # beyond the bounds

    def share_policy(
        self,
        domain: str,
        txt: Answer | None,
        host: Answer | None,
        fetched: HTTPSResult | None,
    ) -> None:
        """Hand the policy domain's own MTA-STS observations to a mailbox at that domain."""
        for mailbox in self.mailboxes:
            if mailbox.domain == domain:
                mailbox.sts_txt, mailbox.sts_host, mailbox.sts_fetch = txt, host, fetched


def tlsrpt_rua(answer: Answer | None) -> list[str]:
    """The rua URIs of the one valid `v=TLSRPTv1` record, or none (TR-RPT-01 judges the rest)."""
    if answer is None or not answer.ok:
        return []
    values = [v for v in (txt_strings(r) for r in answer.records) if v.startswith("v=TLSRPTv1")]
    if len(values) != 1:
        return []
    rua, error = rules.parse_tlsrpt(values[0])
    return [] if error else rua


def plan(rua: list[str]) -> ReportMailboxes:
    """The mailbox domains to probe, within the bounds, in the order of the record."""
    out = ReportMailboxes()
    mailto = [u for u in rua if u[:7].lower() == "mailto:"]
    out.unchecked = mailto[MAX_MAILTO:]
    by_domain: dict[str, ReportMailbox] = {}
    for uri in mailto[:MAX_MAILTO]:
        domains, error = rules.mailto_domains(uri)
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
        if not any(txt_strings(r).startswith("v=STSv1") for r in txt.records):
            return
        name = f"mta-sts.{mailbox.domain}"
        mailbox.sts_host = await query(name, "A")
        if mailbox.sts_host.ok and mailbox.sts_host.records:
            mailbox.sts_fetch = await fetch_policy(name, mailbox.sts_host.records[0])

    async def route(mailbox: ReportMailbox) -> None:
        mailbox.mx = await query(mailbox.domain, "MX")
        if not mailbox.mx.ok:
            return
        exchanges, mailbox.null_mx = rules.parse_mx(mailbox.mx.records)
        mailbox.exchanges = exchanges[:MAX_HOSTS]
        names = mailbox.exchanges or ([] if mailbox.null_mx else [mailbox.domain])
        mailbox.hosts = [RouteHost(n) for n in names]
        await asyncio.gather(*(host(h) for h in mailbox.hosts))

    probed = [m for m in planned.mailboxes if not m.literal]
    await asyncio.gather(*(route(m) for m in probed), *(sts(m) for m in probed))
    return planned


# -- judging ---------------------------------------------------------------------------------


def judge(f: Findings, observed: ReportMailboxes | None) -> None:
    if observed is None:
        return
    for uri, why in observed.invalid:
        f.unmet(CHECK_ID, f"{why}: reports cannot be delivered to it, which defeats TR-RPT-01 "
                "(MUST)", uri)  # fmt: skip
    for mailbox in observed.mailboxes:
        _judge_mailbox(f, mailbox)
    if not observed.mailboxes and not observed.invalid:
        f.add(CHECK_ID, Result.SKIP, "no mailto: URI in a valid v=TLSRPTv1 record (TR-RPT-01)")
    if observed.unchecked:
        f.add(CHECK_ID, Result.SKIP, f"not probed (bound of {MAX_MAILTO} mailto: URIs and "
              f"{MAX_DOMAINS} domains): {', '.join(observed.unchecked)}")  # fmt: skip


def _route_dns_problem(hosts: list[RouteHost]) -> Answer | None:
    for h in hosts:
        for answer in (h.a, h.aaaa):
            if answer is not None and answer.rcode in ("TIMEOUT", "SERVFAIL"):
                return answer
    return None


def _judge_mailbox(f: Findings, mailbox: ReportMailbox) -> None:
    subject = mailbox.domain
    lost = f"reports to {', '.join(mailbox.uris)} cannot arrive, which defeats TR-RPT-01 (MUST)"
    if mailbox.literal:
        f.add(CHECK_ID, Result.SKIP, "address literal: delivered without DNS, not judged", subject)
        return
    mx = mailbox.mx
    assert mx is not None
    if mx.rcode == "TIMEOUT":
        f.add(CHECK_ID, Result.ERROR, f"no answer from the resolver: {mx.describe()}", subject)
        return
    if mx.bogus:
        f.unmet(CHECK_ID, f"MX lookup fails (SERVFAIL, DNSSEC-bogus?): {mx.describe()}; "
                f"validating senders find no route, {lost}", subject)  # fmt: skip
        return
    if not mx.ok:
        f.unmet(CHECK_ID, f"{mailbox.domain} {mx.rcode}: no mail route; {lost}", subject)
        return
    addresses = {h.name: h.addresses for h in mailbox.hosts}
    route = rules.judge_mail_route(mailbox.domain, mailbox.exchanges, mailbox.null_mx, addresses)
    if not route.deliverable:
        problem = _route_dns_problem(mailbox.hosts)
        if problem is not None and problem.rcode == "TIMEOUT":
            f.add(CHECK_ID, Result.ERROR, f"no answer from the resolver: {problem.describe()}",
                  subject)  # fmt: skip
            return
        detail = f" ({problem.describe()})" if problem is not None else ""
        f.unmet(CHECK_ID, f"no mail route: {route.message}{detail}; {lost}", subject)
        return

    enforcing: list[str] = []
    notes: list[str] = []
    for h in mailbox.hosts:
        if h.name not in route.targets or h.tlsa is None:
            continue
        tlsa = h.tlsa
        where = f"_25._tcp.{h.name}"
        if tlsa.rcode == "TIMEOUT":
            f.add(CHECK_ID, Result.ERROR, f"no answer from the resolver: {tlsa.describe()}",
                  subject)  # fmt: skip
            return
        if tlsa.bogus:
            enforcing.append(f"bogus TLSA lookup at {where} (DANE senders defer)")
        elif tlsa.records and tlsa.secure:
            enforcing.append(f"DNSSEC-secure TLSA at {where} (DANE)")
        elif tlsa.records:
            notes.append(f"TLSA at {where} is not DNSSEC-secure, so not enforced")
    policy = _sts_mode(mailbox)
    if policy == "enforce":
        enforcing.append(f"MTA-STS policy mode: enforce at mta-sts.{mailbox.domain}")
    elif policy:
        notes.append(f"MTA-STS {policy}")
    if enforcing:
        f.add(CHECK_ID, Result.WARN, f"report route enforces TLS: {'; '.join(enforcing)}; "
              "TR-03108-10-M: SHOULD NOT, a report about a TLS failure may then not arrive",
              subject)  # fmt: skip
        return
    extra = f"; {'; '.join(notes)}" if notes else ""
    f.ok(CHECK_ID, f"deliverable via {route.message}; no DANE/MTA-STS enforcement{extra}", subject)


def _sts_mode(mailbox: ReportMailbox) -> str:
    """'enforce', a note on a policy that does not enforce, or '' when none is published."""
    txt = mailbox.sts_txt
    if txt is None or not any(txt_strings(r).startswith("v=STSv1") for r in txt.records):
        return ""
    got = mailbox.sts_fetch
    if got is None:
        return f"TXT published, but mta-sts.{mailbox.domain} has no address: no policy applies"
    if got.status != 200:
        why = got.error or f"HTTP {got.status}"
        return f"policy not fetchable ({why}): senders apply none"
    if got.pkix_error:
        return f"policy certificate not valid ({got.pkix_error}): senders apply none"
    policy = rules.parse_sts_policy(got.body.decode("utf-8", "replace"))
    if policy.errors:
        return f"policy invalid ({'; '.join(policy.errors)}): senders apply none"
    return "enforce" if policy.mode == "enforce" else f"policy in mode: {policy.mode}"
