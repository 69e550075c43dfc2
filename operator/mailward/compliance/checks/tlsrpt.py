"""TLSRPT: the `_smtp._tls` record with a `mailto:` and no `https:` URI (TR-RPT-01), and report
mailboxes that receive mail, without DANE/MTA-STS enforcement on their route (TR-RPT-02).

A TLS report exists to say that TLS to a domain failed, and travels as mail to the `mailto:`
addresses. Without a route (an MX that is not a null MX and has an address, or an implicit MX,
RFC 5321 §5.1) no report arrives, which defeats TR-RPT-01: the check fails. A DANE sender that
finds a DNSSEC-secure TLSA at `_25._tcp.<mx>`, or an MTA-STS sender that finds `mode: enforce`,
drops the report exactly when the failure it describes also hits the report's own route;
TR-03108-10-M says that MX SHOULD NOT enforce: the check warns and names the host. A TLSA RRset
that is not DNSSEC-secure is not used by DANE senders (RFC 7672) and passes with a note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mailward.compliance.checks.findings import Findings
from mailward.compliance.observations import (
    Answer,
    DomainObservations,
    ReportMailbox,
    ReportMailboxes,
    RouteHost,
)
from mailward.compliance.records import parse_sts_policy, parse_tlsrpt, txt_values
from mailward.compliance.rptmailbox import MAX_DOMAINS, MAX_MAILTO

CHECK_ID = "TR-RPT-02"


def judge(f: Findings, obs: DomainObservations) -> None:
    judge_record(f, obs)
    judge_mailboxes(f, obs.rpt_mailboxes)


def judge_record(f: Findings, obs: DomainObservations) -> None:
    txt = obs.tlsrpt
    subject = f"_smtp._tls.{obs.domain}"
    if f.answer_problem("TR-RPT-01", txt, subject):
        return
    values = txt_values(txt, "v=TLSRPTv1")
    if not values:
        f.unmet("TR-RPT-01", "no v=TLSRPTv1 record", subject)
        return
    if len(values) > 1:
        f.unmet("TR-RPT-01", f"{len(values)} v=TLSRPTv1 records", subject)
        return
    rua, error = parse_tlsrpt(values[0])
    if error:
        f.unmet("TR-RPT-01", f"{values[0]!r}: {error}", subject)
        return
    mailto = [u for u in rua if u.startswith("mailto:")]
    https = [u for u in rua if u.startswith("https:")]
    if f.profile == "tr-03108" and (https or not mailto):
        why = "https: report URIs are not allowed" if https else "no mailto: URI"
        f.unmet("TR-RPT-01", f"{why} (TR-03108-10-M): {values[0]}", subject)
    else:
        f.ok("TR-RPT-01", values[0], subject)


# -- TR-RPT-02 --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailRoute:
    deliverable: bool
    targets: tuple[str, ...]  # the hosts mail is handed to: MX hosts, or the domain itself
    message: str


def judge_mail_route(
    domain: str, exchanges: Sequence[str], null_mx: bool, addresses: Mapping[str, Sequence[str]]
) -> MailRoute:
    """Whether mail for `domain` has somewhere to go (RFC 5321 §5.1, RFC 7505).

    `exchanges` are the MX hosts (empty: no MX records), `addresses` the A/AAAA addresses of
    each host looked at (for an implicit MX: of the domain itself).
    """
    if null_mx:
        return MailRoute(False, (), "null MX `0 .` (RFC 7505): the domain accepts no mail")
    if exchanges:
        targets = tuple(h for h in exchanges if addresses.get(h))
        dead = [h for h in exchanges if not addresses.get(h)]
        if not targets:
            return MailRoute(False, (), f"MX {', '.join(dead)} without A/AAAA")
        listing = ", ".join(f"{h} ({addresses[h][0]})" for h in targets)
        unreachable = f"; without address: {', '.join(dead)}" if dead else ""
        return MailRoute(True, targets, f"MX {listing}{unreachable}")
    if addresses.get(domain):
        return MailRoute(
            True,
            (domain,),
            f"no MX, implicit MX (RFC 5321 §5.1) to {domain} ({addresses[domain][0]})",
        )
    return MailRoute(False, (), "no MX and no A/AAAA (RFC 5321 §5.1)")


def judge_mailboxes(f: Findings, observed: ReportMailboxes) -> None:
    for uri, why in observed.invalid:
        f.unmet(CHECK_ID, f"{why}: reports cannot be delivered to it, which defeats TR-RPT-01 "
                "(MUST)", uri)  # fmt: skip
    for mailbox in observed.mailboxes:
        _judge_mailbox(f, mailbox)
    if not observed.mailboxes and not observed.invalid:
        f.skip(CHECK_ID, "no mailto: URI in a valid v=TLSRPTv1 record (TR-RPT-01)")
    if observed.unchecked:
        f.skip(CHECK_ID, f"not probed (bound of {MAX_MAILTO} mailto: URIs and {MAX_DOMAINS} "
               f"domains): {', '.join(observed.unchecked)}")  # fmt: skip


def _route_dns_problem(hosts: list[RouteHost]) -> Answer | None:
    for h in hosts:
        for answer in (h.a, h.aaaa):
            if answer is not None and (answer.timed_out or answer.bogus):
                return answer
    return None


def _judge_mailbox(f: Findings, mailbox: ReportMailbox) -> None:
    subject = mailbox.domain
    lost = f"reports to {', '.join(mailbox.uris)} cannot arrive, which defeats TR-RPT-01 (MUST)"
    if mailbox.literal:
        f.skip(CHECK_ID, "address literal: delivered without DNS, not judged", subject)
        return
    mx = mailbox.mx
    if mx is None or mx.timed_out:
        f.error(CHECK_ID, f"no answer from the resolver: {mx.describe() if mx else '?'}", subject)
        return
    if mx.bogus:
        f.unmet(CHECK_ID, f"MX lookup fails (SERVFAIL, DNSSEC-bogus?): {mx.describe()}; "
                f"validating senders find no route, {lost}", subject)  # fmt: skip
        return
    if not mx.ok:
        f.unmet(CHECK_ID, f"{mailbox.domain} {mx.rcode}: no mail route; {lost}", subject)
        return
    addresses = {h.name: h.addresses for h in mailbox.hosts}
    route = judge_mail_route(mailbox.domain, mailbox.exchanges, mailbox.null_mx, addresses)
    if not route.deliverable:
        problem = _route_dns_problem(mailbox.hosts)
        if problem is not None and problem.timed_out:
            f.error(CHECK_ID, f"no answer from the resolver: {problem.describe()}", subject)
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
        if tlsa.timed_out:
            f.error(CHECK_ID, f"no answer from the resolver: {tlsa.describe()}", subject)
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
        f.warn(CHECK_ID, f"report route enforces TLS: {'; '.join(enforcing)}; TR-03108-10-M: "
               "SHOULD NOT, a report about a TLS failure may then not arrive", subject)  # fmt: skip
        return
    extra = f"; {'; '.join(notes)}" if notes else ""
    f.ok(CHECK_ID, f"deliverable via {route.message}; no DANE/MTA-STS enforcement{extra}", subject)


def _sts_mode(mailbox: ReportMailbox) -> str:
    """'enforce', a note on a policy that does not enforce, or '' when none is published."""
    if mailbox.sts_txt is None or not txt_values(mailbox.sts_txt, "v=STSv1"):
        return ""
    got = mailbox.sts_fetch
    if got is None:
        return f"TXT published, but mta-sts.{mailbox.domain} has no address: no policy applies"
    if got.status != 200:
        why = got.error or f"HTTP {got.status}"
        return f"policy not fetchable ({why}): senders apply none"
    if got.pkix_error:
        return f"policy certificate not valid ({got.pkix_error}): senders apply none"
    policy = parse_sts_policy(got.body.decode("utf-8", "replace"))
    if policy.errors:
        return f"policy invalid ({'; '.join(policy.errors)}): senders apply none"
    return "enforce" if policy.mode == "enforce" else f"policy in mode: {policy.mode}"
