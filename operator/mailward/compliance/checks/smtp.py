"""SMTP on port 25 of every MX: STARTTLS with a PFS suite (TR-GEN-06), pre-TLS input discarded
(TR-SMTP-02), no open relay (TR-SMTP-03), VRFY per RFC 5321 §7.3 (TR-SMTP-04), banner
(TR-SMTP-05, information only)."""

from __future__ import annotations

from mailward.compliance.checks.findings import BOGUS_SKIP, Findings
from mailward.compliance.checks.tls import is_pfs
from mailward.compliance.observations import (
    MAX_ADDRESSES_PER_HOST,
    DomainObservations,
    MXAddress,
    MXHost,
    SMTPObservation,
)
from mailward.compliance.records import parse_mx

PROBED = ("TR-GEN-06", "TR-SMTP-02", "TR-SMTP-03", "TR-SMTP-04")


def judge(f: Findings, obs: DomainObservations) -> None:
    answer = obs.mx_answer
    if answer.ok and not obs.mx:
        if parse_mx(answer.records)[1]:
            f.skip("TR-GEN-06", "null MX (RFC 7505): the domain receives no mail")
        else:
            why = f"no MX record: {answer.describe()}"
            f.unmet("TR-GEN-06", why, obs.domain)
            f.unmet("TR-DANE-02", f"{why}; no MX host to pin with TLSA", obs.domain)
    for mx in obs.mx:
        _judge_mx(f, obs, mx)


def _judge_mx(f: Findings, obs: DomainObservations, mx: MXHost) -> None:
    if not mx.probes:
        subject = f"{mx.name}:25"
        answers = [a for a in (mx.a, mx.aaaa) if a is not None]
        bogus = any(a.bogus for a in answers)
        seen = "; ".join(a.describe() for a in answers) or "?"
        msg = BOGUS_SKIP if bogus else f"no address: {seen}"
        for cid in (*PROBED, "TR-SMTP-05"):
            (f.skip if bogus else f.error)(cid, msg, subject)
        return
    for at in mx.probes:
        _judge_address(f, obs, mx, at)
    if mx.unprobed:
        f.skip("TR-GEN-06", f"not probed (bound of {MAX_ADDRESSES_PER_HOST} addresses per "
               f"host): {', '.join(mx.unprobed)}", f"{mx.name}:25")  # fmt: skip


def _judge_address(f: Findings, obs: DomainObservations, mx: MXHost, at: MXAddress) -> None:
    """Port 25 at one address of the MX host: every address a sender may pick must comply."""
    subject = at.subject(mx.name)
    if at.smtp is None:
        for cid in PROBED:
            f.error(cid, f"SMTP probe failed: {at.smtp_error}", subject)
        return
    smtp = at.smtp
    f.ok("TR-SMTP-05", f"banner {smtp.banner!r}", subject)
    tls = obs.tls_for(mx.name, 25, at.address)
    if not smtp.starttls_offered:
        f.unmet("TR-GEN-06", "EHLO does not offer STARTTLS", subject)
        f.skip("TR-SMTP-02", "no STARTTLS to test", subject)
    elif tls is None or tls.negotiated is None:
        err = tls.error if tls else "not probed"
        f.unmet("TR-GEN-06", f"STARTTLS offered but no TLS handshake succeeded: {err}", subject)
    elif not is_pfs(tls.negotiated.cipher, tls.negotiated.version):
        f.unmet("TR-GEN-06", f"negotiated a suite without PFS: {tls.negotiated.cipher}", subject)
    else:
        hs = tls.negotiated
        f.ok("TR-GEN-06", f"STARTTLS: {hs.version} {hs.cipher}", subject)
    if smtp.starttls_offered:
        inj = at.injection
        if inj is None or inj.vulnerable is None:
            detail = inj.detail if inj else at.injection_error
            f.error("TR-SMTP-02", f"injection test incomplete: {detail}", subject)
        elif inj.vulnerable or inj.readvertised:
            f.unmet("TR-SMTP-02", inj.detail, subject)
        else:
            f.ok("TR-SMTP-02", inj.detail, subject)
    if smtp.relay_accepted is None:
        f.error("TR-SMTP-03", f"relay test incomplete: {smtp.relay_reply}", subject)
    elif smtp.relay_accepted:
        f.unmet("TR-SMTP-03", f"open relay: RCPT TO:<{smtp.relay_recipient}> answered "
                f"{smtp.relay_reply}", subject)  # fmt: skip
    else:
        f.ok("TR-SMTP-03", f"relay refused: {smtp.relay_reply}", subject)
    judge_vrfy(f, smtp, subject)


def judge_vrfy(f: Findings, smtp: SMTPObservation, subject: str) -> None:
    if len(smtp.vrfy) < 2:
        f.error("TR-SMTP-04", "VRFY not tested", subject)
        return
    (known, known_reply), (random_addr, random_reply) = smtp.vrfy[:2]
    seen = f"VRFY {known} -> {known_reply}; VRFY {random_addr} -> {random_reply}"
    if random_reply[:3] in ("250", "251"):
        f.unmet("TR-SMTP-04", f"false verification of a made-up address: {seen}", subject)
    elif known_reply[:3] in ("550", "551", "553"):
        f.unmet("TR-SMTP-04", f"postmaster (RFC 5321 §4.5.1) denied: {seen}", subject)
    elif any(reply[:3] in ("500", "502", "504") for reply in (known_reply, random_reply)):
        # RFC 5321 §7.3: "If a site disables these commands for security reasons, the SMTP
        # server MUST return a 252 response" (Postfix's disable_vrfy_command answers 502).
        f.unmet("TR-SMTP-04", f"VRFY disabled without the 252 answer RFC 5321 §7.3 requires: "
                f"{seen}", subject)  # fmt: skip
    else:
        f.ok("TR-SMTP-04", seen, subject)
