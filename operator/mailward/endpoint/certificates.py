"""Server certificates chosen by SNI, from `kubernetes.io/tls` Secrets.

One TLS listener serves every domain: the SNI callback swaps in the context whose certificate
names the requested host exactly. Wildcard names are never used (BSI TR-03108 / TR-03116-4
§6.1.2 forbid them), and a client that names no host we hold a certificate for is refused in the
handshake with `unrecognized_name`, before any HTTP is spoken.

TLS settings follow BSI TR-03116-4 as far as Python's `ssl` lets them be set: TLS 1.2 or 1.3
only, TLS 1.2 suites ECDHE with AES-GCM only, server preference, no compression, no
renegotiation, no session tickets across contexts, ALPN `http/1.1`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

log = logging.getLogger(__name__)

TLS12_CIPHERS = "ECDHE+AESGCM"


def server_context() -> ssl.SSLContext:
    """A server context with the project's TLS settings and no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    )
    context.set_alpn_protocols(["http/1.1"])
    return context


@dataclass(frozen=True)
class ServerCertificate:
    source: str
    names: frozenset[str]
    not_after: datetime
    context: ssl.SSLContext


def load_pair(source: str, chain_pem: bytes, key_pem: bytes) -> ServerCertificate | None:
    """A context for one certificate chain and key; None (logged) if unusable."""
    try:
        leaf = x509.load_pem_x509_certificate(chain_pem)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound) as error:
        log.warning("certificate %s skipped: %s", source, error)
        return None
    dns_names = [str(n).lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]
    names = frozenset(n for n in dns_names if "*" not in n)
    if len(names) != len(dns_names):
        log.warning("certificate %s: wildcard names ignored (TR-03116-4 §6.1.2)", source)
    if not names:
        return None
    context = server_context()
    # load_cert_chain reads files only: the key touches the disk for a moment, mode 0600, in a
    # private directory, and is removed at once.
    with tempfile.TemporaryDirectory(prefix="mailward-tls-") as directory:
        chain_file, key_file = Path(directory) / "chain.pem", Path(directory) / "key.pem"
        for path, data in ((chain_file, chain_pem), (key_file, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            context.load_cert_chain(chain_file, key_file)
        except (ssl.SSLError, ValueError) as error:
            log.warning("certificate %s skipped: %s", source, error)
            return None
    return ServerCertificate(source, names, leaf.not_valid_after_utc, context)


def pair_from_secret(secret: Mapping[str, Any]) -> ServerCertificate | None:
    meta = secret.get("metadata") or {}
    source = f"Secret {meta.get('namespace')}/{meta.get('name')}"
    data = secret.get("data") or {}
    try:
        chain = base64.b64decode(data.get("tls.crt") or "", validate=True)
        key = base64.b64decode(data.get("tls.key") or "", validate=True)
    except (binascii.Error, ValueError):
        log.warning("%s: tls.crt or tls.key is not base64", source)
        return None
    if not chain or not key:
        return None
    return load_pair(source, chain, key)


@dataclass(frozen=True)
class CertificateIndex:
    """Server certificates by host name; the one valid longest wins a name held twice."""

    by_name: Mapping[str, ServerCertificate]
    names_by_context: Mapping[ssl.SSLContext, frozenset[str]]

    @classmethod
    def build(cls, certificates: Iterable[ServerCertificate]) -> CertificateIndex:
        by_name: dict[str, ServerCertificate] = {}
        for cert in sorted(certificates, key=lambda c: c.not_after):
            for name in cert.names:
                by_name[name] = cert
        return cls(by_name, {c.context: c.names for c in by_name.values()})

    def names_of(self, context: ssl.SSLContext) -> frozenset[str]:
        """The names of the certificate a connection was given (by its context)."""
        return self.names_by_context.get(context, frozenset())


class SNISelector:
    """The SNI callback of the listener; its index is swapped as certificates change."""

    def __init__(self, on_unknown: Any = None) -> None:
        self.index = CertificateIndex({}, {})
        self._on_unknown = on_unknown

    def callback(
        self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        cert = self.index.by_name.get((server_name or "").lower().rstrip("."))
        if cert is None:
            if self._on_unknown is not None:
                with contextlib.suppress(Exception):
                    self._on_unknown()
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        connection.context = cert.context
        return None

    def listener_context(self) -> ssl.SSLContext:
        context = server_context()
        context.sni_callback = self.callback
        return context
