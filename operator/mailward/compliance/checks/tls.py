"""TLS per TR-03116-4 on every endpoint probed (port 25 and the client ports): versions
(TR-TLS-01), the mandatory suite (TR-TLS-02), the TLS 1.2 allow-list (TR-TLS-03), the groups
(TR-TLS-04), TLS 1.3 suites (TR-TLS-06), compression and renegotiation (TR-TLS-07), key size
(TR-TLS-08); the certificate checks of the same endpoint follow in `certificate.py`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailward.compliance.checks import certificate
from mailward.compliance.checks.findings import Findings
from mailward.compliance.model import Result
from mailward.compliance.observations import DomainObservations, GroupOffer, TLSObservation

# TR-02102-2 Table 1 (as encoded in BSI TaSK), TLS 1.2, in OpenSSL names. CCM_8 is not listed.
ALLOWED_TLS12_SUITES = frozenset(
    {
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384",
        "ECDHE-ECDSA-AES128-CCM", "ECDHE-ECDSA-AES256-CCM",
        "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA384",
        "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-SHA256", "DHE-RSA-AES256-SHA256",
        "DHE-RSA-AES128-CCM", "DHE-RSA-AES256-CCM",
        "DHE-DSS-AES128-GCM-SHA256", "DHE-DSS-AES256-GCM-SHA384",
        "DHE-DSS-AES128-SHA256", "DHE-DSS-AES256-SHA256",
    }
)  # fmt: skip
# TR-03116-4 §2.2.1.2: CHACHA20 only at lower priority than the mandatory AES-128-GCM suite.
LOWER_PRIORITY_SUITES = frozenset({"ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"})
# TR-03116-4 §2.3: TLS 1.3 suites (CHACHA20 and CCM_8 are not listed).
ALLOWED_TLS13_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_AES_128_CCM_SHA256"}
)
MANDATORY_SUITE = {"ec": "ECDHE-ECDSA-AES128-GCM-SHA256", "rsa": "ECDHE-RSA-AES128-GCM-SHA256"}
# TR-03116-4 §2.2.2 (OpenSSL names): both MUST be supported, brainpool SHOULD come first.
P256, BRAINPOOL = "prime256v1", "brainpoolP256r1"
TLS_IDS = ("TR-TLS-01", "TR-TLS-02", "TR-TLS-03", "TR-TLS-04", "TR-TLS-06", "TR-TLS-07",
           "TR-TLS-08", *certificate.IDS)  # fmt: skip


@dataclass(frozen=True)
class SuiteVerdict:
    ok: bool
    tolerated: bool  # only acceptable under TR-03108 §4.3.2 (opportunistic SMTP)
    message: str


def judge_suites(suites: list[str], server_order: bool | None, key_type: str) -> SuiteVerdict:
    """TR-TLS-03: accepted TLS 1.2 suites against the allow-list and the server's order."""
    if not suites:
        return SuiteVerdict(True, False, "no TLS 1.2 suites accepted (TLS 1.3 only)")
    mandatory = MANDATORY_SUITE.get(key_type)
    outside = [
        s
        for s in suites
        if s not in ALLOWED_TLS12_SUITES
        and not (
            s in LOWER_PRIORITY_SUITES
            and mandatory in suites
            and suites.index(mandatory) < suites.index(s)
        )
    ]
    order = "server order" if server_order else "client order (server order not enforced)"
    if not outside:
        return SuiteVerdict(True, False, f"{len(suites)} suites, all allow-listed ({order})")
    first_outside = min(suites.index(s) for s in outside)
    allowed_positions = [i for i, s in enumerate(suites) if s not in outside]
    low_priority = (
        bool(server_order) and bool(allowed_positions) and max(allowed_positions) < first_outside
    )
    listed = ", ".join(outside[:6]) + (" ..." if len(outside) > 6 else "")
    if low_priority:
        return SuiteVerdict(False, True, f"not allow-listed, at lowest priority: {listed}")
    where = "preferred first" if first_outside == 0 else f"at position {first_outside + 1}"
    return SuiteVerdict(False, False, f"not allow-listed ({where}, {order}): {listed}")


def is_pfs(cipher: str, version: str) -> bool:
    return version == "TLSv1.3" or cipher.startswith(("ECDHE-", "DHE-"))


def key_type(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ec"
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa"
    return type(key).__name__


def _follows_client_order(offers: list[GroupOffer]) -> GroupOffer | None:
    """An offer proving that the server takes the client's first group (the same two groups,
    neither of them brainpool, each chosen when offered first), or None."""
    for o in offers:
        if BRAINPOOL in o.offered or len(o.offered) != 2 or o.chosen != o.offered[0]:
            continue
        for p in offers:
            if p.offered == (o.offered[1], o.offered[0]) and p.chosen == p.offered[0]:
                return o
    return None


def judge_groups(offers: list[GroupOffer]) -> tuple[Result, str]:
    """TR-TLS-04 from the TLS 1.2 ECDHE handshakes of `tlsprobe.probe_groups`.

    Support is the MUST, brainpool's first place a SHOULD. In TLS 1.2 an ECDSA certificate's
    curve must be in the client's groups too (RFC 8422 §5.1), so with a secp256r1 certificate
    brainpoolP256r1 can only be offered beside secp256r1: a server that enforces its own order
    and ranks secp256r1 first then chooses secp256r1 whether or not it supports brainpool. Only
    where the server is seen to follow the client's order does that choice mean "not supported";
    otherwise the check warns and says that the two cannot be told apart.
    """
    if not offers:
        return Result.ERROR, "groups not probed"
    chosen = {o.chosen for o in offers if o.chosen}
    seen = "; ".join(
        f"{'+'.join(map(_name, o.offered))} -> {_name(o.chosen or 'refused')}" for o in offers
    )
    p256 = (Result.PASS, "") if P256 in chosen else (Result.FAIL, "secp256r1 not accepted; ")
    brainpool = _judge_brainpool(offers, chosen)
    result = Result.FAIL if Result.FAIL in (p256[0], brainpool[0]) else brainpool[0]
    return result, f"{p256[1]}{brainpool[1]} (offers: {seen})"


def _judge_brainpool(offers: list[GroupOffer], chosen: set[str]) -> tuple[Result, str]:
    first = [o for o in offers if o.offered[0] == BRAINPOOL and len(o.offered) > 1]
    if BRAINPOOL in chosen:
        if any(o.chosen == BRAINPOOL and o.offered[0] != BRAINPOOL for o in offers):
            return Result.PASS, "brainpoolP256r1 supported and preferred"
        if any(o.chosen not in (None, BRAINPOOL) for o in first):
            why = "TR-03116-4 §2.2.2: brainpoolP256r1 SHOULD have the highest priority"
            return Result.WARN, f"brainpoolP256r1 supported, but another group preferred ({why})"
        return Result.PASS, "brainpoolP256r1 supported (the client's order decides)"
    if any(o.offered == (BRAINPOOL,) for o in offers):
        return Result.FAIL, "brainpoolP256r1 not accepted when offered alone"
    proof = _follows_client_order(offers)
    if proof is not None:
        order = f"{_name(proof.offered[0])} chosen when offered before {_name(proof.offered[1])}"
        return Result.FAIL, (
            f"brainpoolP256r1 not accepted: offered first, it was not chosen, although the "
            f"server takes the client's first group ({order})"
        )
    other = _name(next((o.chosen for o in first if o.chosen), P256))
    return Result.WARN, (
        f"cannot be told apart whether brainpoolP256r1 is supported (MUST) but ranked below "
        f"{other} (it SHOULD come first) or not supported: {other} is chosen when "
        f"brainpoolP256r1 is offered first, and with this certificate a TLS 1.2 client must "
        f"offer {other} too (RFC 8422 §5.1)"
    )


def _name(group: str) -> str:
    """The TR-03116-4 name of an OpenSSL group name."""
    return "secp256r1" if group == P256 else group


def judge(f: Findings, obs: DomainObservations) -> None:
    for tls in obs.tls:
        judge_endpoint(f, tls, obs.observed_at)


def judge_endpoint(f: Findings, tls: TLSObservation, now: datetime) -> None:
    subject = tls.endpoint.subject  # host:port [address]: every address is judged on its own
    if not tls.reachable or tls.negotiated is None:
        for cid in TLS_IDS:
            f.error(cid, f"TLS probe failed: {tls.error}", subject)
        return
    smtp25 = tls.endpoint.port == 25
    v = tls.versions
    old = [name for name in ("TLSv1", "TLSv1.1") if v.get(name)]
    accepted = ", ".join(name for name, ok in v.items() if ok)
    if not v.get("TLSv1.2"):
        f.unmet("TR-TLS-01", f"TLS 1.2 not supported (accepted: {accepted or 'none'})", subject)
    elif old and not smtp25:
        f.unmet("TR-TLS-01", f"{' and '.join(old)} accepted ({accepted})", subject)
    elif old:
        tolerated = "tolerated on port 25 only (TR-03108 §4.3.2: used only by clients without 1.2)"
        f.warn("TR-TLS-01", f"{' and '.join(old)} accepted ({accepted}); {tolerated}", subject)
    elif not v.get("TLSv1.3"):
        f.warn("TR-TLS-01", f"TLS 1.3 not supported ({accepted})", subject)
    else:
        f.ok("TR-TLS-01", f"accepted: {accepted}", subject)

    chain = certificate.load_chain(tls.negotiated.chain)
    if not chain:
        for cid in TLS_IDS[1:]:
            f.error(cid, "no certificate presented", subject)
        return
    leaf = chain[0]
    kind = key_type(leaf)
    mandatory = MANDATORY_SUITE.get(kind)
    if not v.get("TLSv1.2"):
        f.skip("TR-TLS-02", "no TLS 1.2", subject)
    elif mandatory in tls.suites:
        f.ok("TR-TLS-02", f"{mandatory} supported", subject)
    else:
        f.unmet("TR-TLS-02", f"{mandatory} not accepted ({kind} key)", subject)

    verdict = judge_suites(tls.suites, tls.server_order, kind)
    if verdict.ok:
        f.ok("TR-TLS-03", verdict.message, subject)
    elif verdict.tolerated and smtp25:
        f.warn("TR-TLS-03", verdict.message + " (TR-03108 §4.3.2)", subject)
    else:
        f.unmet("TR-TLS-03", verdict.message, subject)

    if not v.get("TLSv1.2"):
        f.skip("TR-TLS-04", "no TLS 1.2", subject)
    else:
        result, message = judge_groups(tls.group_offers)
        if result is Result.FAIL:
            f.unmet("TR-TLS-04", message, subject)
        else:
            f.add("TR-TLS-04", result, message, subject)

    if not v.get("TLSv1.3"):
        f.skip("TR-TLS-06", "no TLS 1.3", subject)
    else:
        outside13 = [x for x in tls.tls13_suites if x not in ALLOWED_TLS13_SUITES]
        listed = ", ".join(tls.tls13_suites) or "none of the five"
        if not outside13:
            f.ok("TR-TLS-06", f"TLS 1.3 suites: {listed}", subject)
        elif smtp25:
            f.warn("TR-TLS-06", f"not allow-listed: {', '.join(outside13)}; tolerated on port 25 "
                   "(TR-03108 §4.3.2)", subject)  # fmt: skip
        else:
            f.unmet("TR-TLS-06", f"not allow-listed: {', '.join(outside13)} (accepted: {listed})",
                    subject)  # fmt: skip

    if not v.get("TLSv1.2") and not old:
        f.ok("TR-TLS-07", "TLS 1.3 only: no compression, no renegotiation", subject)
    elif tls.hello_error:
        f.error("TR-TLS-07", f"ServerHello probe failed: {tls.hello_error}", subject)
    elif tls.compression not in (0, None):
        f.unmet("TR-TLS-07", f"server chose compression method {tls.compression}", subject)
    elif not tls.secure_renegotiation:
        f.unmet("TR-TLS-07", "no RFC 5746 renegotiation_info: insecure renegotiation", subject)
    else:
        f.ok("TR-TLS-07", "no compression; secure renegotiation (RFC 5746)", subject)

    problem = certificate.key_size_problem(leaf)
    if problem:
        f.unmet("TR-TLS-08", problem, subject)
    else:
        f.ok("TR-TLS-08", f"{kind} key, {getattr(leaf.public_key(), 'key_size', '?')} bit", subject)

    certificate.judge(f, subject, chain, tls.pkix_error, now)
