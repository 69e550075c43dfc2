"""DKIM key pairs, their selectors and record text (pure apart from the randomness of keys).

The private keys are kept in the forms dkimpy-milter reads (render/dkim.py): RSA as a PKCS#1
PEM block (dkimpy parses RFC 8017 RSAPrivateKey), Ed25519 as the base64 of the 32-byte seed
(RFC 8463 §3, what `dknewkey` writes). The public halves go into the record's `p=`: the DER
SubjectPublicKeyInfo for RSA (RFC 6376 §3.6.1), the raw 32-byte key for Ed25519 (RFC 8463 §4).
"""

from __future__ import annotations

import base64
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailward.api.dkim import KeyType

RSA_BITS = 2048
SELECTOR_PREFIX = "mw"
_SUFFIX: dict[KeyType, str] = {"ed25519": "e", "rsa": "r"}


@dataclass(frozen=True)
class KeyPair:
    algorithm: KeyType
    # What the signer reads (keep secret).
    private: str
    # `p=` of the record, base64.
    public: str


def generate(algorithm: KeyType) -> KeyPair:
    if algorithm == "rsa":
        return _rsa_pair(rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS))
    return _ed25519_pair(ed25519.Ed25519PrivateKey.generate())


def _rsa_pair(key: rsa.RSAPrivateKey) -> KeyPair:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair("rsa", pem, base64.b64encode(spki).decode())


def _ed25519_pair(key: ed25519.Ed25519PrivateKey) -> KeyPair:
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KeyPair(
        "ed25519", base64.b64encode(seed).decode() + "\n", base64.b64encode(raw).decode()
    )


def public_of(algorithm: KeyType, private: str) -> str:
    """`p=` for a private key as kept (the Secret holds only the private halves)."""
    if algorithm == "rsa":
        key = serialization.load_pem_private_key(private.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("not an RSA private key")
        return _rsa_pair(key).public
    seed = base64.b64decode(private.strip(), validate=True)
    return _ed25519_pair(ed25519.Ed25519PrivateKey.from_private_bytes(seed)).public


def record_text(algorithm: KeyType, public: str) -> str:
    """The TXT record's text (RFC 6376 §3.6.1); the DNS rendering splits it into strings of at
    most 255 octets (a 2048-bit RSA key is about 400)."""
    return f"v=DKIM1; k={algorithm}; p={public}"


def new_selector(algorithm: KeyType, now: datetime, taken: Collection[str]) -> str:
    """`mw<UTC yyyymmddhhmmss><e|r>`: unique per key (a counter is added in the rare case of two
    keys of one type in one second), sortable by age, and says its type to a person."""
    base = f"{SELECTOR_PREFIX}{now.strftime('%Y%m%d%H%M%S')}{_SUFFIX[algorithm]}"
    selector, counter = base, 1
    while selector in taken:
        counter += 1
        selector = f"{base}{counter}"
    return selector
