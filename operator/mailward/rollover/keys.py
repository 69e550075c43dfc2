"""Private keys, their DANE digests and certificate signing requests (pure, no I/O)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

KeyAlgorithm = Literal["ECDSA", "RSA"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_key(algorithm: KeyAlgorithm) -> PrivateKey:
    """A new key: ECDSA P-256 or RSA-2048 (both allowed by BSI TR-03116-4 for TLS servers)."""
    if algorithm == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_from_pem(pem: bytes) -> PrivateKey:
    """The key of a PEM block; ValueError if it is not an ECDSA or RSA private key."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


def algorithm_of(key: PrivateKey) -> KeyAlgorithm:
    return "RSA" if isinstance(key, rsa.RSAPrivateKey) else "ECDSA"


def spki_digest(public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    """Data of a `3 1 1` (and `2 1 1`) TLSA record: SHA-256 of the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def key_digest(key: PrivateKey) -> str:
    return spki_digest(key.public_key())


def certificate_digest(certificate: x509.Certificate) -> str:
    public_key = certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError(f"unsupported public key type {type(public_key).__name__}")
    return spki_digest(public_key)


def csr_pem(key: PrivateKey, names: Sequence[str]) -> bytes:
    """A PKCS#10 request for `names` (the first also as CN, for old clients), signed by `key`."""
    if not names:
        raise ValueError("a certificate needs at least one DNS name")
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def chain_matches_key(chain: Sequence[x509.Certificate], key: PrivateKey) -> bool:
    return bool(chain) and certificate_digest(chain[0]) == key_digest(key)


def load_chain(pem: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM chain, leaf first; ValueError if there is none."""
    return x509.load_pem_x509_certificates(pem)


def names_of(certificate: x509.Certificate) -> frozenset[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(str(n).lower() for n in san.get_values_for_type(x509.DNSName))
