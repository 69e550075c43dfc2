"""DANE for SMTP (RFC 7672): a secure TLSA RRset at `_25._tcp` of every MX matching the served
chain (TR-DANE-02), 3 1 1 used (TR-DANE-03), two records and a short TTL (TR-DANE-04), no PKIX
usages (TR-DANE-05), a next key before the certificate expires (TR-DANE-06)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailward.compliance.checks.certificate import load_chain
from mailward.compliance.checks.findings import Findings
from mailward.compliance.observations import DomainObservations, MXAddress, MXHost
from mailward.compliance.records import TLSA

IDS = ("TR-DANE-02", "TR-DANE-03", "TR-DANE-04", "TR-DANE-05", "TR-DANE-06")


def _tlsa_digest(cert: x509.Certificate, selector: int, mtype: int) -> str:
    if selector == 0:
        blob = cert.public_bytes(serialization.Encoding.DER)
    else:
        blob = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    if mtype == 1:
        return hashlib.sha256(blob).hexdigest()
    if mtype == 2:
        return hashlib.sha512(blob).hexdigest()
    return blob.hex()


def tlsa_matches(record: TLSA, chain: list[x509.Certificate]) -> bool:
    """RFC 7672 semantics: DANE-EE(3) against the leaf, DANE-TA(2) against a chain element."""
    if not chain:
        return False
    if record.usage == 3:
        candidates = chain[:1]
    elif record.usage == 2:
        candidates = chain[1:]
    else:
        return False
    return any(_tlsa_digest(c, record.selector, record.mtype) == record.data for c in candidates)


def judge(f: Findings, obs: DomainObservations) -> None:
    for mx in obs.mx:
        _judge_mx(f, obs, mx)


def _judge_mx(f: Findings, obs: DomainObservations, mx: MXHost) -> None:
    subject = f"_25._tcp.{mx.name}"
    answer = mx.tlsa
    if answer is None:
        return
    stop = False
    for cid in IDS:
        stop = f.answer_problem(cid, answer, subject) or stop
    if stop:
        return
    if not answer.records:
        f.unmet("TR-DANE-02", f"no TLSA record ({answer.rcode})", subject)
        return
    records = [TLSA.parse(r) for r in answer.records]
    listing = "; ".join(str(r) for r in records)
    if any(r.usage in (0, 1) for r in records):
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
        return
    if not usable:
        f.unmet("TR-DANE-02", f"no DANE-TA(2)/DANE-EE(3) record: {listing}", subject)
        return
    if not mx.probes:
        f.error("TR-DANE-02", f"no certificate to match (no address); TLSA {listing}", subject)
        return
    for at in mx.probes:
        _judge_address(f, obs, mx.name, at, usable, listing)


def _judge_address(
    f: Findings,
    obs: DomainObservations,
    host: str,
    at: MXAddress,
    usable: list[TLSA],
    listing: str,
) -> None:
    """The chain served at one address of the MX host against its TLSA RRset: a DANE sender
    may pick any address, so each must match."""
    subject = f"_25._tcp.{host} [{at.address}]"
    tls = obs.tls_for(host, 25, at.address)
    if tls is None or tls.negotiated is None:
        if at.smtp is None:
            f.error("TR-DANE-02", f"no certificate to match ({at.smtp_error or 'no SMTP'}); "
                    f"TLSA {listing}", subject)  # fmt: skip
            return
        why = "STARTTLS not offered" if not at.smtp.starttls_offered else (
            tls.error if tls else "no TLS")  # fmt: skip
        f.unmet("TR-DANE-02", f"no certificate to match ({why}); TLSA {listing}", subject)
        return
    chain = load_chain(tls.negotiated.chain)
    combos: dict[tuple[int, int, int], bool] = {}
    for r in usable:
        key = (r.usage, r.selector, r.mtype)
        combos[key] = combos.get(key, False) or tlsa_matches(r, chain)
    missing = [f"{u} {s} {m}" for (u, s, m), ok in combos.items() if not ok]
    if missing:
        f.unmet("TR-DANE-02", f"no record of {', '.join(missing)} matches the served chain",
                subject)  # fmt: skip
    else:
        f.ok("TR-DANE-02", f"secure, every parameter set matches: {listing}", subject)
    if not chain:
        return
    leaf = chain[0]
    spare = [r for r in usable if not tlsa_matches(r, chain[:1]) or r.usage == 2]
    if leaf.not_valid_after_utc - obs.observed_at < timedelta(days=30) and not spare:
        f.unmet("TR-DANE-06", f"certificate expires {leaf.not_valid_after_utc:%Y-%m-%d} and no "
                "record for a next key or the issuer is published", subject)  # fmt: skip
    else:
        f.ok("TR-DANE-06", f"certificate valid until {leaf.not_valid_after_utc:%Y-%m-%d}", subject)
