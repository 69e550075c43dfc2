"""The compliance engine: probe one domain from outside and judge it against a profile.

Gathering and judging are separate steps. `gather()` asks DNS (through the given validating
resolver), SMTP, TLS and HTTPS what they say and keeps the raw observations; `judge()` turns them
into one result per catalog check with the rules in `rules.py`. The blocking network probes run
in threads, bounded by a semaphore that a caller can share between domains (the operator keeps
one for the whole process), so a hundred domains never mean a thousand simultaneous handshakes.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from mailward.compliance import rptmailbox, rules
from mailward.compliance.catalog import BY_ID, CATALOG, DEFAULT_PROFILE, PROFILES
from mailward.compliance.dnsprobe import Answer, DNSClient, ValidatingResolverClient, txt_strings
from mailward.compliance.endpoint_probes import EndpointProbes
from mailward.compliance.httpsprobe import HTTPSResult, fetch
from mailward.compliance.model import CheckResult, Finding, Level, Report, Result, unmet, worst
from mailward.compliance.tlsprobe import (
    IMPLICIT_TLS_PORTS,
    Endpoint,
    InjectionObservation,
    ProbeError,
    SMTPObservation,
    TLSObservation,
    observe_tls,
    reachable,
    smtp_dialogue,
    starttls_injection,
)

T = TypeVar("T")

DKIM_SELECTORS = ("mailward", "default", "dkim", "mail", "selector1", "selector2", "s1", "s2",
                  "k1", "ed25519", "rsa", "tlsrpt")  # fmt: skip
CLIENT_SRV = {"_submissions._tcp": 465, "_imaps._tcp": 993, "_pop3s._tcp": 995}
EXTRA_MX_PORTS = (465, 587, 993, 995)
DEFAULT_CONCURRENCY = 8


@dataclass
class MXHost:
    name: str
    preference: int
    addresses: list[str] = field(default_factory=list)
    a_answer: Answer | None = None
    tlsa: Answer | None = None
    smtp: SMTPObservation | None = None
    smtp_error: str = ""
    injection: InjectionObservation | None = None
    injection_error: str = ""


@dataclass
class Observations:
    domain: str
    cafile: str | None
    mx_answer: Answer | None = None
    mx: list[MXHost] = field(default_factory=list)
    zone_answers: list[tuple[str, Answer, Answer]] = field(default_factory=list)  # zone, SOA, DS
    dnskey: Answer | None = None
    tls: dict[Endpoint, TLSObservation] = field(default_factory=dict)
    client_endpoints: list[Endpoint] = field(default_factory=list)
    srv: dict[str, Answer] = field(default_factory=dict)
    autoconfig: HTTPSResult | None = None
    sts_txt: Answer | None = None
    sts_host: Answer | None = None
    sts_fetch: HTTPSResult | None = None
    tlsrpt: Answer | None = None
    rpt_mailboxes: rptmailbox.ReportMailboxes | None = None
    spf: Answer | None = None
    dmarc: Answer | None = None
    dkim: dict[str, Answer] = field(default_factory=dict)


class Engine:
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

    async def _endpoint(
        self,
        kind: str,
        ep: Endpoint,
        fn: Callable[[Endpoint], T],
        complete: Callable[[T], bool],
    ) -> T:
        """`fn(ep)`, or what it gave for another domain within `shared_max_age` if that probe
        was `complete`."""
        if self.shared is None or self.shared_max_age <= 0:
            return await self._blocking(fn, ep)
        return await self.shared.get(
            kind, ep, self.shared_max_age, lambda: self._blocking(fn, ep), complete
        )

    async def _blocking(self, fn: Callable[..., T], *args: object) -> T:
        async with self.limit:
            return await asyncio.to_thread(fn, *args)

    # -- gathering ------------------------------------------------------------------------------

    async def _zone_of(self, name: str) -> str:
        labels = name.rstrip(".").split(".")
        for i in range(len(labels)):
            candidate = ".".join(labels[i:])
            soa = await self.dns.query(candidate, "SOA")
            if soa.records or soa.bogus:
                return candidate
        return labels[-1]

    async def gather(self, domain: str) -> Observations:
        obs = Observations(domain, self.cafile)
        q = self.dns.query
        (
            obs.mx_answer, obs.sts_txt, obs.tlsrpt, obs.spf, obs.dmarc, obs.dnskey,
        ) = await asyncio.gather(
            q(domain, "MX"), q(f"_mta-sts.{domain}", "TXT"), q(f"_smtp._tls.{domain}", "TXT"),
            q(domain, "TXT"), q(f"_dmarc.{domain}", "TXT"), q(domain, "DNSKEY"),
        )  # fmt: skip
        dkim = await asyncio.gather(*(q(f"{s}._domainkey.{domain}", "TXT") for s in DKIM_SELECTORS))
        obs.dkim = dict(zip(DKIM_SELECTORS, dkim, strict=True))
        srv = await asyncio.gather(*(q(f"{s}.{domain}", "SRV") for s in CLIENT_SRV))
        obs.srv = dict(zip(CLIENT_SRV, srv, strict=True))

        mx_answer = obs.mx_answer
        assert mx_answer is not None
        for record in mx_answer.records if mx_answer.ok else ():
            pref, _, host = record.partition(" ")
            host = host.rstrip(".").lower()
            if host:  # "0 ." is a null MX (RFC 7505)
                obs.mx.append(MXHost(host, int(pref)))
        obs.mx.sort(key=lambda m: (m.preference, m.name))

        # The zone that holds the domain: a domain below its zone's apex (a subdomain published
        # in its parent's zone) has no DS of its own, and needs none.
        zones = {await self._zone_of(domain)} | {await self._zone_of(m.name) for m in obs.mx}
        for zone in sorted(zones):
            soa, ds = await asyncio.gather(q(zone, "SOA"), q(zone, "DS"))
            obs.zone_answers.append((zone, soa, ds))

        async def resolve_mx(mx: MXHost) -> None:
            a_answer, mx.tlsa = await asyncio.gather(
                q(mx.name, "A"), q(f"_25._tcp.{mx.name}", "TLSA")
            )
            mx.a_answer = a_answer
            mx.addresses = list(a_answer.records[:2]) if a_answer.ok else []

        await asyncio.gather(*(resolve_mx(m) for m in obs.mx))

        endpoints: list[Endpoint] = []
        for mx in obs.mx:
            if mx.addresses:
                endpoints.append(Endpoint(mx.name, mx.addresses[0], 25))
        # Client ports: SRV targets, and the usual ports on the MX hosts where something listens.
        candidates: list[Endpoint] = []
        for answer in obs.srv.values():
            for record in answer.records if answer.ok else ():
                _prio, _weight, port, target = record.split()
                target = target.rstrip(".").lower()
                if not target:
                    continue
                a = await q(target, "A")
                if a.ok and a.records:
                    candidates.append(Endpoint(target, a.records[0], int(port)))
        for mx in obs.mx:
            if mx.addresses:
                candidates += [Endpoint(mx.name, mx.addresses[0], p) for p in EXTRA_MX_PORTS]
        seen: set[tuple[str, int]] = set()
        for ep in candidates:
            if (ep.address, ep.port) in seen or any(
                e.address == ep.address and e.port == ep.port for e in endpoints
            ):
                continue
            seen.add((ep.address, ep.port))
            if await self._blocking(reachable, ep):
                endpoints.append(ep)
                if ep.port in IMPLICIT_TLS_PORTS:
                    obs.client_endpoints.append(ep)

        async def smtp(mx: MXHost) -> None:
            if not mx.addresses:
                return
            try:
                mx.smtp = await self._blocking(smtp_dialogue, mx.addresses[0], 25, domain)
            except (ProbeError, OSError) as e:
                mx.smtp_error = str(e)
                return
            if mx.smtp.starttls_offered:
                try:
                    mx.injection = await self._endpoint(
                        "injection",
                        Endpoint(mx.name, mx.addresses[0], 25),
                        starttls_injection,
                        lambda found: found.vulnerable is not None,
                    )
                except (ProbeError, OSError) as e:
                    mx.injection_error = str(e)

        async def tls(ep: Endpoint) -> None:
            obs.tls[ep] = await self._endpoint(
                "tls",
                ep,
                lambda endpoint: observe_tls(endpoint, self.cafile),
                lambda found: found.reachable and not found.error and found.negotiated is not None,
            )

        async def sts() -> None:
            assert obs.sts_txt is not None
            if not any(txt_strings(r).startswith("v=STSv1") for r in obs.sts_txt.records):
                return
            host = f"mta-sts.{domain}"
            obs.sts_host = await q(host, "A")
            if obs.sts_host.ok and obs.sts_host.records:
                obs.sts_fetch = await self._blocking(
                    fetch, host, obs.sts_host.records[0], "/.well-known/mta-sts.txt", self.cafile
                )

        async def autoconfig() -> None:
            host = f"autoconfig.{domain}"
            a = await q(host, "A")
            if a.ok and a.records:
                obs.autoconfig = await self._blocking(
                    fetch, host, a.records[0],
                    f"/mail/config-v1.1.xml?emailaddress=postmaster%40{domain}", self.cafile,
                )  # fmt: skip

        async def report_mailboxes() -> None:
            def fetch_policy(host: str, address: str) -> Awaitable[HTTPSResult]:
                return self._blocking(fetch, host, address, "/.well-known/mta-sts.txt", self.cafile)

            obs.rpt_mailboxes = await rptmailbox.gather(
                q, fetch_policy, rptmailbox.tlsrpt_rua(obs.tlsrpt), domain
            )

        await asyncio.gather(
            *(smtp(m) for m in obs.mx),
            *(tls(e) for e in endpoints if e.port != 25),
            sts(),
            autoconfig(),
            report_mailboxes(),
        )
        assert obs.rpt_mailboxes is not None
        obs.rpt_mailboxes.share_policy(domain, obs.sts_txt, obs.sts_host, obs.sts_fetch)
        # Port 25 TLS only where STARTTLS was offered (known after the SMTP dialogue).
        await asyncio.gather(
            *(tls(e) for e in endpoints if e.port == 25 and _starttls_offered(obs, e))
        )
        return obs

    async def check(self, domain: str, profile: str = DEFAULT_PROFILE) -> Report:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
        domain = domain.lower().rstrip(".")
        started = datetime.now(UTC).replace(microsecond=0)
        t0 = time.monotonic()
        report = Report(domain, profile, getattr(self.dns, "address", "?"), started, 0.0)
        if isinstance(self.dns, ValidatingResolverClient) and not await self.dns.reachable():
            report.fatal = f"the resolver {self.dns.address} does not answer"
            report.duration_seconds = time.monotonic() - t0
            return report
        obs = await self.gather(domain)
        if obs.mx_answer is not None and obs.mx_answer.rcode == "NXDOMAIN":
            report.fatal = f"{domain} does not exist (NXDOMAIN)"
        elif obs.mx_answer is not None and obs.mx_answer.rcode == "TIMEOUT":
            report.fatal = f"no answer for the MX of {domain}"
        report.checks = judge(obs, profile)
        report.duration_seconds = time.monotonic() - t0
        return report


def _starttls_offered(obs: Observations, ep: Endpoint) -> bool:
    for mx in obs.mx:
        if mx.name == ep.host and mx.smtp is not None:
            return mx.smtp.starttls_offered
    return False


async def check_domain(
    domain: str,
    *,
    resolver: str,
    port: int = 53,
    profile: str = DEFAULT_PROFILE,
    cafile: str | None = None,
    limit: asyncio.Semaphore | None = None,
    shared: EndpointProbes | None = None,
    shared_max_age: float = 0.0,
) -> Report:
    """One domain, one fresh DNS cache; endpoint observations from `shared` when another
    domain served by the same endpoint was checked less than `shared_max_age` seconds ago."""
    engine = Engine(
        ValidatingResolverClient(resolver, port),
        cafile=cafile,
        limit=limit,
        shared=shared,
        shared_max_age=shared_max_age,
    )
    return await engine.check(domain, profile)


# -- judging ---------------------------------------------------------------------------------------


class _Findings:
    def __init__(self, profile: str) -> None:
        self.profile = profile
        self.items: dict[str, list[Finding]] = defaultdict(list)

    def level(self, check_id: str) -> Level:
        return BY_ID[check_id].level(self.profile)

    def add(self, check_id: str, result: Result, message: str, subject: str = "") -> None:
        self.items[check_id].append(Finding(result, message, subject))

    def ok(self, check_id: str, message: str, subject: str = "") -> None:
        self.add(check_id, Result.PASS, message, subject)

    def unmet(self, check_id: str, message: str, subject: str = "") -> None:
        self.add(check_id, unmet(self.level(check_id)), message, subject)

    def results(self) -> list[CheckResult]:
        out = []
        for check in CATALOG:
            level = check.level(self.profile)
            findings = self.items.get(check.id, [])
            if not findings:
                findings = [Finding(Result.SKIP, "not applicable: nothing of this kind to probe")]
            result = worst([f.result for f in findings])
            if level is Level.INFO and result in (Result.FAIL, Result.WARN):
                result = Result.WARN
            lead = next(f for f in findings if f.result is worst([x.result for x in findings]))
            message = (f"{lead.subject}: " if lead.subject else "") + lead.message
            others = len([f for f in findings if f.result is lead.result]) - 1
            if others > 0:
                message += f" (+{others} more)"
            evidence = tuple(
                f"[{f.result}] " + (f"{f.subject}: " if f.subject else "") + f.message
                for f in findings
            )
            out.append(
                CheckResult(
                    id=check.id,
                    title=check.title,
                    group=check.group,
                    level=level,
                    result=result,
                    message=message[:300],
                    evidence=evidence,
                    remedy=check.remedy if result in (Result.FAIL, Result.WARN) else "",
                    reference=check.reference,
                )
            )
        return out


BOGUS_SKIP = "not evaluated: the answer is DNSSEC-bogus (SERVFAIL), see TR-DANE-01"


def _answer_problem(f: _Findings, check_id: str, answer: Answer, subject: str = "") -> bool:
    """Record a skip/error for an unusable answer; True when the caller should stop."""
    if answer.bogus:
        f.add(check_id, Result.SKIP, f"{BOGUS_SKIP}: {answer.describe()}", subject)
        return True
    if answer.rcode == "TIMEOUT":
        f.add(check_id, Result.ERROR, f"no answer from the resolver: {answer.describe()}", subject)
        return True
    return False


def judge(obs: Observations, profile: str) -> list[CheckResult]:
    f = _Findings(profile)
    now = rules.now_utc()
    _judge_dnssec(f, obs)
    _judge_smtp(f, obs)
    for ep, tls in obs.tls.items():
        _judge_tls(f, ep, tls, now)
    _judge_dane(f, obs, now)
    _judge_sts(f, obs)
    _judge_tlsrpt(f, obs, profile)
    rptmailbox.judge(f, obs.rpt_mailboxes)
    _judge_auth(f, obs)
    _judge_clients(f, obs)
    return f.results()


def _judge_dnssec(f: _Findings, obs: Observations) -> None:
    assert obs.mx_answer is not None
    ans = obs.mx_answer
    if ans.bogus:
        f.unmet("TR-DANE-01", f"bogus: {ans.describe()}", obs.domain)
    for zone, soa, ds in obs.zone_answers:
        if soa.bogus or ds.bogus:
            bad = soa if soa.bogus else ds
            f.unmet("TR-DANE-01", f"zone {zone} is bogus: {bad.describe()}", zone)
        elif soa.rcode == "TIMEOUT" or ds.rcode == "TIMEOUT":
            f.add("TR-DANE-01", Result.ERROR, f"no answer: {soa.describe()}", zone)
        elif not soa.secure:
            f.unmet(
                "TR-DANE-01", f"zone {zone} is not validated (no AD bit): {soa.describe()}", zone
            )
        elif not ds.records:
            f.unmet("TR-DANE-01", f"no DS for {zone} in its parent", zone)
        else:
            f.ok("TR-DANE-01", f"zone {zone} validated (AD), DS present", zone)
    for mx in obs.mx:
        a = mx.a_answer
        if a is None:
            continue
        if a.bogus:
            f.unmet("TR-DANE-01", f"bogus: {a.describe()}", mx.name)
        elif a.ok and not a.secure:
            f.unmet("TR-DANE-01", f"address not validated: {a.describe()}", mx.name)
    key = obs.dnskey
    if key is not None and not _answer_problem(f, "TR-DANE-08", key) and key.records:
        algorithms = sorted({int(r.split()[2]) for r in key.records})
        weak = [a for a in algorithms if a not in rules.RFC8624_ALGORITHMS]
        names = ", ".join(rules.RFC8624_ALGORITHMS.get(a, str(a)) for a in algorithms)
        if weak:
            f.unmet("TR-DANE-08", f"algorithms {names}", obs.domain)
        else:
            f.ok("TR-DANE-08", f"algorithms {names}", obs.domain)


def _tls_for(obs: Observations, host: str, port: int) -> TLSObservation | None:
    for ep, tls in obs.tls.items():
        if ep.host == host and ep.port == port:
            return tls
    return None


def _judge_smtp(f: _Findings, obs: Observations) -> None:
    answer = obs.mx_answer
    if answer is not None and answer.ok and not obs.mx:
        if any(r.split()[-1] == "." for r in answer.records):
            f.add("TR-GEN-06", Result.SKIP, "null MX (RFC 7505): the domain receives no mail")
        else:
            why = f"no MX record: {answer.describe()}"
            f.unmet("TR-GEN-06", why, obs.domain)
            f.unmet("TR-DANE-02", f"{why}; no MX host to pin with TLSA", obs.domain)
    for mx in obs.mx:
        subject = f"{mx.name}:25"
        if not mx.addresses:
            a = mx.a_answer
            if a is not None and a.bogus:
                msg = BOGUS_SKIP
            else:
                msg = f"no address: {a.describe() if a else '?'}"
            for cid in ("TR-GEN-06", "TR-SMTP-02", "TR-SMTP-03", "TR-SMTP-04", "TR-SMTP-05"):
                f.add(cid, Result.SKIP if a is not None and a.bogus else Result.ERROR, msg, subject)
            continue
        if mx.smtp is None:
            for cid in ("TR-GEN-06", "TR-SMTP-02", "TR-SMTP-03", "TR-SMTP-04"):
                f.add(cid, Result.ERROR, f"SMTP probe failed: {mx.smtp_error}", subject)
            continue
        smtp = mx.smtp
        f.ok("TR-SMTP-05", f"banner {smtp.banner!r}", subject)
        tls = _tls_for(obs, mx.name, 25)
        if not smtp.starttls_offered:
            f.unmet("TR-GEN-06", "EHLO does not offer STARTTLS", subject)
            f.add("TR-SMTP-02", Result.SKIP, "no STARTTLS to test", subject)
        elif tls is None or tls.negotiated is None:
            err = tls.error if tls else "not probed"
            f.unmet("TR-GEN-06", f"STARTTLS offered but no TLS handshake succeeded: {err}", subject)
        elif not rules.is_pfs(tls.negotiated.cipher, tls.negotiated.version):
            f.unmet(
                "TR-GEN-06", f"negotiated a suite without PFS: {tls.negotiated.cipher}", subject
            )
        else:
            hs = tls.negotiated
            f.ok("TR-GEN-06", f"STARTTLS: {hs.version} {hs.cipher}", subject)
        if smtp.starttls_offered:
            inj = mx.injection
            if inj is None or inj.vulnerable is None:
                detail = inj.detail if inj else mx.injection_error
                f.add("TR-SMTP-02", Result.ERROR, f"injection test incomplete: {detail}", subject)
            elif inj.vulnerable or inj.readvertised:
                f.unmet("TR-SMTP-02", inj.detail, subject)
            else:
                f.ok("TR-SMTP-02", inj.detail, subject)
        if smtp.relay_accepted is None:
            f.add("TR-SMTP-03", Result.ERROR, f"relay test incomplete: {smtp.relay_reply}", subject)
        elif smtp.relay_accepted:
            f.unmet(
                "TR-SMTP-03",
                f"open relay: RCPT TO:<{smtp.relay_recipient}> answered {smtp.relay_reply}",
                subject,
            )
        else:
            f.ok("TR-SMTP-03", f"relay refused: {smtp.relay_reply}", subject)
        _judge_vrfy(f, obs.domain, smtp, subject)


def _judge_vrfy(f: _Findings, domain: str, smtp: SMTPObservation, subject: str) -> None:
    replies = list(smtp.vrfy.items())
    if len(replies) < 2:
        f.add("TR-SMTP-04", Result.ERROR, "VRFY not tested", subject)
        return
    (known, known_reply), (random_addr, random_reply) = replies
    seen = f"VRFY {known} -> {known_reply}; VRFY {random_addr} -> {random_reply}"
    if random_reply[:3] in ("250", "251"):
        f.unmet("TR-SMTP-04", f"false verification of a made-up address: {seen}", subject)
    elif known_reply[:3] in ("550", "551", "553"):
        f.unmet("TR-SMTP-04", f"postmaster (RFC 5321 §4.5.1) denied: {seen}", subject)
    elif any(reply[:3] in ("500", "502", "504") for reply in (known_reply, random_reply)):
        # RFC 5321 §7.3: "If a site disables these commands for security reasons, the SMTP
        # server MUST return a 252 response" (Postfix's disable_vrfy_command answers 502).
        f.unmet(
            "TR-SMTP-04",
            f"VRFY disabled without the 252 answer RFC 5321 §7.3 requires: {seen}",
            subject,
        )
    else:
        f.ok("TR-SMTP-04", seen, subject)


def _judge_tls(f: _Findings, ep: Endpoint, tls: TLSObservation, now: datetime) -> None:
    subject = str(ep)
    ids = ("TR-TLS-01", "TR-TLS-02", "TR-TLS-03", "TR-TLS-04", "TR-TLS-06", "TR-TLS-07",
           "TR-TLS-08", "TR-CERT-01", "TR-CERT-02", "TR-CERT-03", "TR-CERT-05")  # fmt: skip
    if not tls.reachable or tls.negotiated is None:
        for cid in ids:
            f.add(cid, Result.ERROR, f"TLS probe failed: {tls.error}", subject)
        return
    smtp25 = ep.port == 25
    v = tls.versions
    old = [name for name in ("TLSv1", "TLSv1.1") if v.get(name)]
    accepted = ", ".join(name for name, ok in v.items() if ok)
    if not v.get("TLSv1.2"):
        f.unmet("TR-TLS-01", f"TLS 1.2 not supported (accepted: {accepted or 'none'})", subject)
    elif old and not smtp25:
        f.unmet("TR-TLS-01", f"{' and '.join(old)} accepted ({accepted})", subject)
    elif old:
        tolerated = "tolerated on port 25 only (TR-03108 §4.3.2: used only by clients without 1.2)"
        f.add("TR-TLS-01", Result.WARN, f"{' and '.join(old)} accepted ({accepted}); {tolerated}",
              subject)  # fmt: skip
    elif not v.get("TLSv1.3"):
        f.add("TR-TLS-01", Result.WARN, f"TLS 1.3 not supported ({accepted})", subject)
    else:
        f.ok("TR-TLS-01", f"accepted: {accepted}", subject)

    chain = rules.load_chain(tls.negotiated.chain)
    if not chain:
        for cid in ids[1:]:
            f.add(cid, Result.ERROR, "no certificate presented", subject)
        return
    leaf = chain[0]
    kind = rules.key_type(leaf)
    mandatory = rules.MANDATORY_SUITE.get(kind)
    if not v.get("TLSv1.2"):
        f.add("TR-TLS-02", Result.SKIP, "no TLS 1.2", subject)
    elif mandatory in tls.suites:
        f.ok("TR-TLS-02", f"{mandatory} supported", subject)
    else:
        f.unmet("TR-TLS-02", f"{mandatory} not accepted ({kind} key)", subject)

    verdict = rules.judge_suites(tls.suites, tls.server_order, kind)
    if verdict.ok:
        f.ok("TR-TLS-03", verdict.message, subject)
    elif verdict.tolerated and smtp25:
        f.add("TR-TLS-03", Result.WARN, verdict.message + " (TR-03108 §4.3.2)", subject)
    else:
        f.unmet("TR-TLS-03", verdict.message, subject)

    if not v.get("TLSv1.2"):
        f.add("TR-TLS-04", Result.SKIP, "no TLS 1.2", subject)
    else:
        missing = [g for g, ok in tls.groups.items() if not ok]
        if missing:
            f.unmet("TR-TLS-04", f"groups not accepted: {', '.join(missing)}", subject)
        else:
            f.ok("TR-TLS-04", f"groups accepted: {', '.join(tls.groups)}", subject)

    if not v.get("TLSv1.3"):
        f.add("TR-TLS-06", Result.SKIP, "no TLS 1.3", subject)
    else:
        outside13 = [x for x in tls.tls13_suites if x not in rules.ALLOWED_TLS13_SUITES]
        listed = ", ".join(tls.tls13_suites) or "none of the five"
        if not outside13:
            f.ok("TR-TLS-06", f"TLS 1.3 suites: {listed}", subject)
        elif smtp25:
            f.add("TR-TLS-06", Result.WARN, f"not allow-listed: {', '.join(outside13)}; tolerated "
                  "on port 25 (TR-03108 §4.3.2)", subject)  # fmt: skip
        else:
            f.unmet("TR-TLS-06", f"not allow-listed: {', '.join(outside13)} (accepted: {listed})",
                    subject)  # fmt: skip

    if not v.get("TLSv1.2") and not old:
        f.ok("TR-TLS-07", "TLS 1.3 only: no compression, no renegotiation", subject)
    elif tls.hello_error:
        f.add("TR-TLS-07", Result.ERROR, f"ServerHello probe failed: {tls.hello_error}", subject)
    elif tls.compression not in (0, None):
        f.unmet("TR-TLS-07", f"server chose compression method {tls.compression}", subject)
    elif not tls.secure_renegotiation:
        f.unmet("TR-TLS-07", "no RFC 5746 renegotiation_info: insecure renegotiation", subject)
    else:
        f.ok("TR-TLS-07", "no compression; secure renegotiation (RFC 5746)", subject)

    problem = rules.key_size_problem(leaf)
    if problem:
        f.unmet("TR-TLS-08", problem, subject)
    else:
        f.ok("TR-TLS-08", f"{kind} key, {getattr(leaf.public_key(), 'key_size', '?')} bit", subject)

    wild = rules.wildcard_names(leaf)
    if wild:
        f.unmet("TR-CERT-01", f"wildcard names: {', '.join(wild)}", subject)
    else:
        f.ok("TR-CERT-01", f"names: {', '.join(rules.cert_names(leaf)[:4])}", subject)

    problems = rules.profile_problems(leaf)
    if problems:
        f.unmet("TR-CERT-02", "; ".join(problems), subject)
    else:
        f.ok("TR-CERT-02", "KeyUsage critical, revocation info, validity <= 3 years", subject)

    sig = [
        p for c in chain if not rules.is_self_signed(c) if (p := rules.signature_problem(c, now))
    ]
    if sig:
        f.unmet("TR-CERT-03", "; ".join(sig), subject)
    else:
        f.ok("TR-CERT-03", f"{leaf.signature_algorithm_oid._name}", subject)

    expires = leaf.not_valid_after_utc
    if tls.pkix_error is None:
        f.ok("TR-CERT-05", f"chain and name verified; valid until {expires:%Y-%m-%d}", subject)
    else:
        f.unmet("TR-CERT-05", f"{tls.pkix_error} (notAfter {expires:%Y-%m-%d})", subject)


def _judge_dane(f: _Findings, obs: Observations, now: datetime) -> None:
    for mx in obs.mx:
        subject = f"_25._tcp.{mx.name}"
        answer = mx.tlsa
        if answer is None:
            continue
        stop = False
        for cid in ("TR-DANE-02", "TR-DANE-03", "TR-DANE-04", "TR-DANE-05", "TR-DANE-06"):
            stop = _answer_problem(f, cid, answer, subject) or stop
        if stop:
            continue
        if not answer.records:
            f.unmet("TR-DANE-02", f"no TLSA record ({answer.rcode})", subject)
            continue
        records = [rules.TLSA.parse(r) for r in answer.records]
        listing = "; ".join(str(r) for r in records)
        pkix = [r for r in records if r.usage in (0, 1)]
        if pkix:
            f.unmet("TR-DANE-05", f"PKIX usages (ignored by SMTP clients): {listing}", subject)
        else:
            f.ok("TR-DANE-05", f"usages {sorted({r.usage for r in records})}", subject)
        if any((r.usage, r.selector, r.mtype) == (3, 1, 1) for r in records):
            f.ok("TR-DANE-03", "3 1 1 present", subject)
        else:
            f.unmet("TR-DANE-03", f"no 3 1 1 record: {listing}", subject)
        usable = [r for r in records if r.usage in (2, 3) and r.mtype in (0, 1, 2)]
        if len(usable) >= 2 and answer.ttl <= 3600:
            f.ok("TR-DANE-04", f"{len(usable)} usable records, TTL {answer.ttl}", subject)
        else:
            f.unmet("TR-DANE-04", f"{len(usable)} usable record(s), TTL {answer.ttl}", subject)
        if not answer.secure:
            f.unmet("TR-DANE-02", f"TLSA not DNSSEC-secure (senders ignore it): {listing}", subject)
            continue
        if not usable:
            f.unmet("TR-DANE-02", f"no DANE-TA(2)/DANE-EE(3) record: {listing}", subject)
            continue
        tls = _tls_for(obs, mx.name, 25)
        if tls is None or tls.negotiated is None:
            why = (
                "STARTTLS not offered"
                if mx.smtp is not None and not mx.smtp.starttls_offered
                else (tls.error if tls else mx.smtp_error or "no TLS")
            )
            result = Result.ERROR if mx.smtp is None else unmet(f.level("TR-DANE-02"))
            f.add("TR-DANE-02", result, f"no certificate to match ({why}); TLSA {listing}", subject)
            continue
        chain = rules.load_chain(tls.negotiated.chain)
        combos: dict[tuple[int, int, int], bool] = {}
        for r in usable:
            key = (r.usage, r.selector, r.mtype)
            combos[key] = combos.get(key, False) or rules.tlsa_matches(r, chain)
        missing = [f"{u} {s} {m}" for (u, s, m), ok in combos.items() if not ok]
        if missing:
            f.unmet("TR-DANE-02", f"no record of {', '.join(missing)} matches the served chain",
                    subject)  # fmt: skip
        else:
            f.ok("TR-DANE-02", f"secure, every parameter set matches: {listing}", subject)
        leaf = chain[0]
        spare = [r for r in usable if not rules.tlsa_matches(r, chain[:1]) or r.usage == 2]
        if leaf.not_valid_after_utc - now < timedelta(days=30) and not spare:
            f.unmet("TR-DANE-06", f"certificate expires {leaf.not_valid_after_utc:%Y-%m-%d} and "
                    "no record for a next key or the issuer is published", subject)  # fmt: skip
        else:
            f.ok("TR-DANE-06", f"certificate valid until {leaf.not_valid_after_utc:%Y-%m-%d}",
                 subject)  # fmt: skip


def _judge_sts(f: _Findings, obs: Observations) -> None:
    txt = obs.sts_txt
    assert txt is not None
    subject = f"_mta-sts.{obs.domain}"
    if _answer_problem(f, "TR-STS-01", txt, subject):
        return
    values = [txt_strings(r) for r in txt.records]
    sts = [v for v in values if v.startswith("v=STSv1")]
    if not sts:
        f.unmet("TR-STS-01", "no MTA-STS policy published (optional in TR-03108)", subject)
        return
    if len(sts) > 1:
        f.unmet("TR-STS-01", f"{len(sts)} v=STSv1 records (RFC 8461 §3.1: exactly one)", subject)
        return
    sts_id, error = rules.parse_sts_txt(sts[0])
    if error:
        f.unmet("TR-STS-01", f"{sts[0]!r}: {error}", subject)
        return
    f.ok("TR-STS-01", f"id={sts_id}", subject)
    host = f"mta-sts.{obs.domain}"
    if obs.sts_host is None or not obs.sts_host.records:
        desc = obs.sts_host.describe() if obs.sts_host else "not resolved"
        f.unmet("TR-STS-02", f"{host} has no address: {desc}", host)
        return
    got = obs.sts_fetch
    assert got is not None
    if got.error and got.status is None:
        f.unmet("TR-STS-02", f"fetch failed: {got.error}", got.url)
        return
    problems = []
    if got.status is not None and 300 <= got.status < 400:
        problems.append(f"redirect {got.status} to {got.headers.get('location', '?')} "
                        "(RFC 8461 §3.3: must not be followed)")  # fmt: skip
    elif got.status != 200:
        problems.append(f"HTTP {got.status}")
    ctype = got.headers.get("content-type", "")
    if got.status == 200 and not ctype.lower().startswith("text/plain"):
        problems.append(f"Content-Type {ctype!r}, not text/plain")
    if got.pkix_error:
        problems.append(f"certificate: {got.pkix_error}")
    wild = [n for n in got.leaf_names if "*" in n]
    if wild:
        problems.append(f"wildcard certificate {', '.join(wild)} (TR-03108-08-R)")
    if got.truncated:
        problems.append("policy larger than 64 KiB")
    if problems:
        f.unmet("TR-STS-02", "; ".join(problems), got.url)
        return
    f.ok("TR-STS-02", f"200, {ctype}, certificate valid", got.url)
    policy = rules.parse_sts_policy(got.body.decode("utf-8", "replace"))
    if policy.errors:
        f.unmet("TR-STS-03", "; ".join(policy.errors), got.url)
        return
    f.ok("TR-STS-03", f"mode {policy.mode}, max_age {policy.max_age}, mx {policy.mx}", got.url)
    if policy.mode == "none":
        f.add("TR-STS-04", Result.SKIP, "mode none: no MX rules", got.url)
        return
    for mx in obs.mx:
        subject = f"{mx.name}:25"
        if not any(rules.mx_matches_pattern(mx.name, p) for p in policy.mx):
            f.unmet("TR-STS-04", f"MX {mx.name} matches no mx: line of the policy {policy.mx}",
                    subject)  # fmt: skip
            continue
        tls = _tls_for(obs, mx.name, 25)
        if tls is None or tls.negotiated is None:
            f.unmet("TR-STS-04", "matched, but no TLS on port 25 (senders would not deliver)",
                    subject)  # fmt: skip
        elif tls.pkix_error:
            f.unmet("TR-STS-04", f"matched, but certificate not PKIX-valid: {tls.pkix_error}",
                    subject)  # fmt: skip
        else:
            f.ok("TR-STS-04", "matched by the policy, certificate PKIX-valid", subject)


def _judge_tlsrpt(f: _Findings, obs: Observations, profile: str) -> None:
    txt = obs.tlsrpt
    assert txt is not None
    subject = f"_smtp._tls.{obs.domain}"
    if _answer_problem(f, "TR-RPT-01", txt, subject):
        return
    values = [v for v in (txt_strings(r) for r in txt.records) if v.startswith("v=TLSRPTv1")]
    if not values:
        f.unmet("TR-RPT-01", "no v=TLSRPTv1 record", subject)
        return
    if len(values) > 1:
        f.unmet("TR-RPT-01", f"{len(values)} v=TLSRPTv1 records", subject)
        return
    rua, error = rules.parse_tlsrpt(values[0])
    if error:
        f.unmet("TR-RPT-01", f"{values[0]!r}: {error}", subject)
        return
    mailto = [u for u in rua if u.startswith("mailto:")]
    https = [u for u in rua if u.startswith("https:")]
    if profile == "tr-03108" and (https or not mailto):
        why = "https: report URIs are not allowed" if https else "no mailto: URI"
        f.unmet("TR-RPT-01", f"{why} (TR-03108-10-M): {values[0]}", subject)
    else:
        f.ok("TR-RPT-01", values[0], subject)


def _judge_auth(f: _Findings, obs: Observations) -> None:
    assert obs.spf is not None
    assert obs.dmarc is not None
    if not _answer_problem(f, "TR-AUTH-01", obs.spf, obs.domain):
        ok, message = rules.judge_spf([txt_strings(r) for r in obs.spf.records])
        (f.ok if ok else f.unmet)("TR-AUTH-01", message, obs.domain)
    subject = f"_dmarc.{obs.domain}"
    if not _answer_problem(f, "TR-AUTH-03", obs.dmarc, subject):
        ok, message = rules.judge_dmarc([txt_strings(r) for r in obs.dmarc.records])
        (f.ok if ok else f.unmet)("TR-AUTH-03", message, subject)
    kinds: dict[str, str] = {}
    for selector, answer in obs.dkim.items():
        if answer.bogus:
            f.add("TR-AUTH-02", Result.SKIP, BOGUS_SKIP, f"{selector}._domainkey")
            return
        for record in answer.records:
            kind = rules.dkim_key_kind(txt_strings(record))
            if kind:
                kinds.setdefault(kind, selector)
    found = ", ".join(f"{k} ({s})" for k, s in kinds.items())
    if {"rsa", "ed25519"} <= set(kinds):
        f.ok("TR-AUTH-02", f"keys: {found}", obs.domain)
    elif kinds:
        f.unmet("TR-AUTH-02", f"only {found}; TR-03182 wants rsa-sha256 and ed25519-sha256",
                obs.domain)  # fmt: skip
    else:
        f.unmet("TR-AUTH-02", f"no DKIM key at the selectors tried ({', '.join(DKIM_SELECTORS)})",
                obs.domain)  # fmt: skip


def _judge_clients(f: _Findings, obs: Observations) -> None:
    published = {s: a for s, a in obs.srv.items() if a.records}
    if any(a.bogus for a in obs.srv.values()):
        f.add("TR-GEN-02", Result.SKIP, BOGUS_SKIP, obs.domain)
        f.add("TR-GEN-01", Result.SKIP, BOGUS_SKIP, obs.domain)
        return
    auto = obs.autoconfig
    auto_ok = auto is not None and auto.status == 200 and b"SSL" in auto.body
    if published:
        listing = "; ".join(f"{s}: {', '.join(a.records)}" for s, a in published.items())
        f.ok("TR-GEN-02", f"SRV {listing}" + (", autoconfig" if auto_ok else ""), obs.domain)
    elif auto_ok:
        assert auto is not None
        f.ok("TR-GEN-02", f"autoconfig at {auto.url}", obs.domain)
    else:
        f.unmet("TR-GEN-02", "no _submissions/_imaps/_pop3s SRV record and no autoconfig",
                obs.domain)  # fmt: skip
    if not obs.client_endpoints:
        f.unmet("TR-GEN-01", "no implicit-TLS client service (465/993/995) found", obs.domain)
        return
    for ep in obs.client_endpoints:
        tls = obs.tls.get(ep)
        if tls is None or tls.negotiated is None:
            f.unmet("TR-GEN-01", f"no TLS handshake: {tls.error if tls else '?'}", str(ep))
        else:
            f.ok("TR-GEN-01", f"implicit TLS: {tls.negotiated.version}", str(ep))
