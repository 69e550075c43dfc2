"""The certificate an endpoint presents (TR-03116-4 §6.1): no wildcards (TR-CERT-01), profile
(TR-CERT-02), signature algorithms (TR-CERT-03), PKIX validity for the host name (TR-CERT-05);
and the key-size rule that TR-TLS-08 applies to it."""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from mailward.compliance.checks.findings import Findings

IDS = ("TR-CERT-01", "TR-CERT-02", "TR-CERT-03", "TR-CERT-05")


def load_chain(chain: tuple[bytes, ...]) -> list[x509.Certificate]:
    return [x509.load_der_x509_certificate(der) for der in chain]


def key_size_problem(cert: x509.Certificate) -> str | None:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return None if key.curve.key_size >= 250 else f"EC key of {key.curve.key_size} bit"
    if isinstance(key, rsa.RSAPublicKey):
        return None if key.key_size >= 3000 else f"RSA key of {key.key_size} bit (< 3000)"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    return f"unsupported key type {type(key).__name__}"


def cert_names(cert: x509.Certificate) -> list[str]:
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    names += [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    return names


def wildcard_names(cert: x509.Certificate) -> list[str]:
    return [n for n in cert_names(cert) if "*" in n]


def profile_problems(cert: x509.Certificate) -> list[str]:
    """TR-03116-4 §6.1.2 rules for an end-entity certificate."""
    problems = []
    try:
        ku = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE)
        if not ku.critical:
            problems.append("KeyUsage not critical")
    except x509.ExtensionNotFound:
        problems.append("no KeyUsage")
    has_crl = has_ocsp = False
    try:
        cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS)
        has_crl = True
    except x509.ExtensionNotFound:
        pass
    try:
        aia = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS)
        has_ocsp = any(
            d.access_method == AuthorityInformationAccessOID.OCSP
            for d in aia.value  # type: ignore[attr-defined]
        )
    except x509.ExtensionNotFound:
        pass
    if not (has_crl or has_ocsp):
        problems.append("neither a CRL distribution point nor an OCSP URL")
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    if lifetime > timedelta(days=3 * 366):
        problems.append(f"validity of {lifetime.days} days (> 3 years)")
    return problems


def signature_problem(cert: x509.Certificate, now: datetime) -> str | None:
    """TR-03116-4 §6.1.4: ECDSA or RSASSA-PSS with SHA-2; PKCS#1 v1.5 only until 2025."""
    oid_name = cert.signature_algorithm_oid._name
    digest = cert.signature_hash_algorithm
    digest_name = digest.name if digest else "none"
    if digest_name in ("md5", "sha1"):
        return f"{oid_name} uses {digest_name}"
    params = cert.signature_algorithm_parameters
    if isinstance(params, padding.PKCS1v15) and now.year > 2025:
        return f"{oid_name} (RSASSA-PKCS1-v1_5, allowed only until 2025)"
    return None


def judge(
    f: Findings, subject: str, chain: list[x509.Certificate], pkix_error: str | None, now: datetime
) -> None:
    """The certificate checks of one endpoint; `chain` as presented, leaf first."""
    leaf = chain[0]
    wild = wildcard_names(leaf)
    if wild:
        f.unmet("TR-CERT-01", f"wildcard names: {', '.join(wild)}", subject)
    else:
        f.ok("TR-CERT-01", f"names: {', '.join(cert_names(leaf)[:4])}", subject)

    problems = profile_problems(leaf)
    if problems:
        f.unmet("TR-CERT-02", "; ".join(problems), subject)
    else:
        f.ok("TR-CERT-02", "KeyUsage critical, revocation info, validity <= 3 years", subject)

    # A self-signed certificate in the chain is a trust anchor: its own signature is not used.
    sig = [p for c in chain if c.issuer != c.subject if (p := signature_problem(c, now))]
    if sig:
        f.unmet("TR-CERT-03", "; ".join(sig), subject)
    else:
        f.ok("TR-CERT-03", f"{leaf.signature_algorithm_oid._name}", subject)

    expires = leaf.not_valid_after_utc
    if pkix_error is None:
        f.ok("TR-CERT-05", f"chain and name verified; valid until {expires:%Y-%m-%d}", subject)
    else:
        f.unmet("TR-CERT-05", f"{pkix_error} (notAfter {expires:%Y-%m-%d})", subject)
