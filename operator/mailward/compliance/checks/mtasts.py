"""MTA-STS (RFC 8461): the `_mta-sts` TXT record (TR-STS-01, a SHOULD in TR-03108), the policy
fetch (TR-STS-02), its syntax (TR-STS-03) and every MX matched and PKIX-valid (TR-STS-04). Once a
policy is published its RFC's MUSTs apply: a broken policy blocks mail from MTA-STS senders."""

from __future__ import annotations

from mailward.compliance.checks.findings import Findings
from mailward.compliance.observations import DomainObservations, MXAddress
from mailward.compliance.records import (
    mx_matches_pattern,
    parse_sts_policy,
    parse_sts_txt,
    txt_values,
)


def judge(f: Findings, obs: DomainObservations) -> None:
    sts_obs = obs.mta_sts
    txt = sts_obs.txt
    subject = f"_mta-sts.{obs.domain}"
    if f.answer_problem("TR-STS-01", txt, subject):
        return
    sts = txt_values(txt, "v=STSv1")
    if not sts:
        f.unmet("TR-STS-01", "no MTA-STS policy published (optional in TR-03108)", subject)
        return
    if len(sts) > 1:
        f.unmet("TR-STS-01", f"{len(sts)} v=STSv1 records (RFC 8461 §3.1: exactly one)", subject)
        return
    sts_id, error = parse_sts_txt(sts[0])
    if error:
        f.unmet("TR-STS-01", f"{sts[0]!r}: {error}", subject)
        return
    f.ok("TR-STS-01", f"id={sts_id}", subject)
    host = f"mta-sts.{obs.domain}"
    got = sts_obs.fetch
    if sts_obs.host is None or not sts_obs.host.records or got is None:
        desc = sts_obs.host.describe() if sts_obs.host else "not resolved"
        f.unmet("TR-STS-02", f"{host} has no address: {desc}", host)
        return
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
    policy = parse_sts_policy(got.body.decode("utf-8", "replace"))
    if policy.errors:
        f.unmet("TR-STS-03", "; ".join(policy.errors), got.url)
        return
    f.ok("TR-STS-03", f"mode {policy.mode}, max_age {policy.max_age}, mx {policy.mx}", got.url)
    if policy.mode == "none":
        f.skip("TR-STS-04", "mode none: no MX rules", got.url)
        return
    for mx in obs.mx:
        subject = f"{mx.name}:25"
        if not any(mx_matches_pattern(mx.name, p) for p in policy.mx):
            f.unmet("TR-STS-04", f"MX {mx.name} matches no mx: line of the policy {policy.mx}",
                    subject)  # fmt: skip
            continue
        if not mx.probes:
            f.error("TR-STS-04", "matched; no SMTP to test: no address", subject)
        for at in mx.probes:
            _judge_address(f, obs, mx.name, at)


def _judge_address(f: Findings, obs: DomainObservations, host: str, at: MXAddress) -> None:
    """An MTA-STS sender may pick any address of a matched MX: each must serve valid TLS."""
    subject = at.subject(host)
    tls = obs.tls_for(host, 25, at.address)
    if tls is None and at.smtp is None:
        f.error("TR-STS-04", f"matched; no SMTP to test: {at.smtp_error or 'no answer'}",
                subject)  # fmt: skip
    elif tls is None or tls.negotiated is None:
        f.unmet("TR-STS-04", "matched, but no TLS on port 25 (senders would not deliver)",
                subject)  # fmt: skip
    elif tls.pkix_error:
        f.unmet("TR-STS-04", f"matched, but certificate not PKIX-valid: {tls.pkix_error}",
                subject)  # fmt: skip
    else:
        f.ok("TR-STS-04", "matched by the policy, certificate PKIX-valid", subject)
