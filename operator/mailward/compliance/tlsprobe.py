"""TLS probes: what an endpoint offers, seen from outside.

The handshakes are made by OpenSSL 3 through Python's `ssl` module (one handshake per question,
on a fresh connection, exactly as a sending MTA would make it), plus `openssl s_client` where
`ssl` has no knob (the key-exchange groups and the TLS 1.3 suites a client offers); compression
and renegotiation come from `helloprobe`.

Suites are enumerated the way sslyze and testssl.sh do it: offer everything still unknown, note
what the server picked, remove it, repeat. With a server that enforces its own order this yields
the accepted suites in the server's order; one extra handshake with the top two swapped tells
whether the server enforces its order at all.

All functions here are blocking and bounded by socket timeouts; the engine runs them in threads.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import subprocess
import warnings
from collections.abc import Iterator
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from mailward.compliance.helloprobe import hello_probe
from mailward.compliance.observations import Endpoint, GroupOffer, Handshake, TLSObservation
from mailward.compliance.smtpprobe import (
    FIRST_REPLY_TIMEOUT,
    PROBE_HELO,
    TIMEOUT,
    ProbeError,
    connect,
    retry_on_timeout,
    starttls_preamble,
)

_DER: int = getattr(ssl, "_ssl").ENCODING_DER  # noqa: B009 (private module, no stub)
TLS13_SUITES = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
)
P256, P384, BRAINPOOL = "prime256v1", "secp384r1", "brainpoolP256r1"
# The curve of an ECDSA certificate (cryptography's name) as OpenSSL names the group.
_OPENSSL_GROUP = {"secp256r1": P256, "secp384r1": P384, "secp521r1": "secp521r1",
                  "brainpoolP256r1": BRAINPOOL, "brainpoolP384r1": "brainpoolP384r1",
                  "brainpoolP512r1": "brainpoolP512r1"}  # fmt: skip

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    VERSIONS = {
        "TLSv1": ssl.TLSVersion.TLSv1,
        "TLSv1.1": ssl.TLSVersion.TLSv1_1,
        "TLSv1.2": ssl.TLSVersion.TLSv1_2,
        "TLSv1.3": ssl.TLSVersion.TLSv1_3,
    }


def client_context(
    *,
    version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
    verify: bool = False,
    cafile: str | None = None,
) -> ssl.SSLContext:
    """A probing context; with `verify`, PKIX against `cafile` or else the system's store."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        if cafile:
            ctx.load_verify_locations(cafile)
        else:
            ctx.load_default_certs()
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    # Level 0: the probe must be able to *offer* what a compliant server has to refuse.
    ctx.set_ciphers((ciphers or "ALL:COMPLEMENTOFALL") + ":@SECLEVEL=0")
    with warnings.catch_warnings():
        # Offering TLS 1.0/1.1 is deprecated for clients; a probe has to offer them.
        warnings.simplefilter("ignore", DeprecationWarning)
        if version is not None:
            ctx.minimum_version = version
            ctx.maximum_version = version
        else:
            ctx.minimum_version = ssl.TLSVersion.TLSv1
    return ctx


@contextlib.contextmanager
def _tls(ep: Endpoint, ctx: ssl.SSLContext) -> Iterator[ssl.SSLSocket]:
    sock = connect(ep.address, ep.port)
    try:
        starttls_preamble(ep, sock)
        tls = ctx.wrap_socket(sock, server_hostname=ep.host)
    except BaseException:
        sock.close()
        raise
    try:
        tls.settimeout(TIMEOUT)
        yield tls
    finally:
        tls.close()


def handshake(ep: Endpoint, ctx: ssl.SSLContext) -> Handshake:
    """One handshake; raises ssl.SSLError (refused) or ProbeError (could not get there)."""
    with _tls(ep, ctx) as tls:
        # Python 3.13 makes this public (SSLSocket.get_unverified_chain); 3.11 has it on _sslobj.
        sslobj: Any = getattr(tls, "_sslobj", None)
        chain_obj = sslobj.get_unverified_chain() if sslobj is not None else None
        chain = tuple(c.public_bytes(_DER) for c in chain_obj or [])
        cipher = tls.cipher()
        return Handshake(str(tls.version()), cipher[0] if cipher else "", chain)


def try_handshake(ep: Endpoint, ctx: ssl.SSLContext) -> Handshake | None:
    """A handshake, or None when the server refused it (alert, reset, closed) or timed out
    twice."""
    try:
        return retry_on_timeout(handshake, ep, ctx)
    except (ssl.SSLError, ConnectionError, TimeoutError):
        return None


def tls12_suites() -> list[str]:
    """Every TLS <= 1.2 suite this OpenSSL can offer (at security level 0)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    return [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]


def enumerate_suites(ep: Endpoint, limit: int = 40) -> tuple[list[str], bool | None]:
    remaining = tls12_suites()
    accepted: list[str] = []
    for _ in range(limit):
        if not remaining:
            break
        ctx = client_context(version=ssl.TLSVersion.TLSv1_2, ciphers=":".join(remaining))
        hs = try_handshake(ep, ctx)
        if hs is None or hs.cipher not in remaining:
            break
        accepted.append(hs.cipher)
        remaining.remove(hs.cipher)
    order: bool | None = None
    if len(accepted) >= 2:
        swapped = f"{accepted[1]}:{accepted[0]}"
        hs = try_handshake(ep, client_context(version=ssl.TLSVersion.TLSv1_2, ciphers=swapped))
        order = hs is not None and hs.cipher == accepted[0]
    return accepted, order


def _s_client(ep: Endpoint, options: list[str]) -> str:
    argv = ["openssl", "s_client", "-connect", ep.connect, "-servername", ep.host,
            "-brief", *options]  # fmt: skip
    if ep.starttls:
        argv += ["-starttls", "smtp", "-name", PROBE_HELO]
    try:
        out = subprocess.run(
            argv,
            input="",
            capture_output=True,
            text=True,
            timeout=FIRST_REPLY_TIMEOUT + 2 * TIMEOUT,
            check=False,
            env={**os.environ, "OPENSSL_CONF": "/dev/null"},
        )
    except subprocess.TimeoutExpired:
        raise ProbeError(f"openssl s_client timed out on {ep}") from None
    return out.stdout + out.stderr


def probe_tls13_suites(ep: Endpoint, suites: tuple[str, ...]) -> list[str]:
    """The TLS 1.3 suites the server accepts, each offered alone (`ssl` cannot restrict them)."""
    accepted = []
    for suite in suites:
        text = _s_client(ep, ["-tls1_3", "-ciphersuites", suite])
        match = re.search(r"Ciphersuite: (\S+)", text)
        if match and match.group(1) == suite:
            accepted.append(suite)
    return accepted


def offer_groups(ep: Endpoint, groups: tuple[str, ...]) -> GroupOffer:
    """One TLS 1.2 ECDHE handshake offering `groups` in this order: the group the server chose."""
    text = _s_client(ep, ["-tls1_2", "-groups", ":".join(groups), "-cipher", "ECDHE:@SECLEVEL=0"])
    match = re.search(r"(?:Server Temp Key|Peer Temp Key): ECDH, ([\w-]+)", text)
    return GroupOffer(groups, match.group(1) if match else None)


def probe_groups(ep: Endpoint, cert_curve: str | None) -> list[GroupOffer]:
    """The TLS 1.2 handshakes TR-TLS-04 is judged on (`checks.tls.judge_groups`).

    In TLS 1.2 the client's groups also limit the curve of an ECDSA certificate (RFC 8422 §5.1),
    so the certificate's curve is offered in every handshake (last, unless it is one of the
    groups asked about). Offered: secp256r1; brainpoolP256r1 before and after secp256r1; and
    brainpoolP256r1 alone where the certificate allows it (RSA, or a brainpool curve). When
    neither shows brainpool, two more handshakes tell whether the server takes the client's first
    group (then brainpool's absence is certain) or enforces its own order (then it is not).
    """
    companion = _OPENSSL_GROUP.get(cert_curve or "", cert_curve)

    def offer(*groups: str) -> GroupOffer:
        wanted = groups if companion is None or companion in groups else (*groups, companion)
        return offer_groups(ep, wanted)

    offers = [offer(P256), offer(BRAINPOOL, P256), offer(P256, BRAINPOOL)]
    if companion in (None, BRAINPOOL):
        offers.append(offer(BRAINPOOL))
    elif not any(o.chosen == BRAINPOOL for o in offers):
        other = P384 if companion != P384 else P256
        offers += [offer(other, companion), offer(companion, other)]
    return offers


def observe_tls(ep: Endpoint, cafile: str | None) -> TLSObservation:
    """Everything the TLS checks need about one endpoint."""
    obs = TLSObservation(ep)
    try:
        obs.negotiated = try_handshake(ep, client_context())
        if obs.negotiated is None:
            obs.reachable = False
            obs.error = "no TLS handshake succeeded with any version or suite"
            return obs
        for name, version in VERSIONS.items():
            obs.versions[name] = try_handshake(ep, client_context(version=version)) is not None
        obs.suites, obs.server_order = enumerate_suites(ep)
        chain = obs.negotiated.chain
        key = x509.load_der_x509_certificate(chain[0]).public_key() if chain else None
        curve = key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else None
        if obs.versions.get("TLSv1.2"):
            obs.group_offers = probe_groups(ep, curve)
        if obs.versions.get("TLSv1.3"):
            obs.tls13_suites = probe_tls13_suites(ep, TLS13_SUITES)
        obs.compression, obs.secure_renegotiation, obs.hello_error = hello_probe(ep)
        try:
            retry_on_timeout(handshake, ep, client_context(verify=True, cafile=cafile,
                                                           ciphers="ALL"))  # fmt: skip
        except ssl.SSLCertVerificationError as e:
            obs.pkix_error = e.verify_message or str(e)
        except ssl.SSLError as e:
            obs.pkix_error = f"handshake failed: {e.reason or e}"
    except (ProbeError, OSError) as e:
        obs.reachable = False
        obs.error = str(e)
    return obs
