"""The certificates the collector serves on STARTTLS and HTTPS, chosen by SNI, reloaded in place.

In a pod the files come from Secret volumes: cert-manager renews them every few weeks and the
kubelet swaps the files without restarting anything, and a MailDomain's Secret may appear only
after the collector started (its volume is optional, so that one missing Secret does not keep
every other domain's reports out). So the files are looked at again every so often, and a
certificate that cannot be loaded is left out with a warning instead of stopping the collector:
report senders encrypt opportunistically (RFC 8460 §5.3 wants reports delivered even when TLS
fails), and the other domains' certificates still serve.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

from cryptography import x509

from mailward.tlsrpt.config import Certificate

log = logging.getLogger(__name__)

# (mtime, size) of the certificate and the key file, None when a file is missing.
Stamp = tuple[tuple[int, int] | None, tuple[int, int] | None]


def _context() -> ssl.SSLContext:
    """TLS 1.2+ with ECDHE/AES-GCM first (TR-03116-4)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM")
    return context


def _stat(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)  # follows the kubelet's ..data symlinks to the current files
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size)


def _names(cert_file: str) -> set[str]:
    certificate = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return {name.lower() for name in san.value.get_values_for_type(x509.DNSName)}


class ServedCertificates:
    """`context` is what the listeners are given; its SNI callback hands each handshake the
    context of the certificate that names the requested host (the first one otherwise)."""

    def __init__(self, certificates: list[Certificate]) -> None:
        self._certificates = list(certificates)
        self._stamps: list[Stamp] | None = None
        self._loaded: list[tuple[set[str], ssl.SSLContext]] = []
        self.context = _context()
        self.context.sni_callback = self._choose
        self.reload()

    @property
    def names(self) -> list[set[str]]:
        """The DNS names of each certificate being served, in configuration order."""
        return [names for names, _ in self._loaded]

    def reload(self) -> bool:
        """Load the files again if any changed; True when that happened."""
        stamps = [(_stat(c.cert_file), _stat(c.key_file)) for c in self._certificates]
        if stamps == self._stamps:
            return False
        loaded: list[tuple[set[str], ssl.SSLContext]] = []
        for certificate in self._certificates:
            try:
                context = _context()
                context.load_cert_chain(certificate.cert_file, certificate.key_file)
                loaded.append((_names(certificate.cert_file), context))
            except (OSError, ssl.SSLError, ValueError) as error:
                log.warning("not serving %s: %s", certificate.cert_file, error)
        self._loaded, self._stamps = loaded, stamps
        log.info(
            "serving %d of %d certificates: %s",
            len(loaded),
            len(self._certificates),
            "; ".join(",".join(sorted(names)) for names, _ in loaded) or "none",
        )
        return True

    def _choose(self, sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        if not self._loaded:
            return  # the handshake fails for want of a certificate; the sender goes on in clear
        name = (server_name or "").lower()
        sock.context = next(
            (context for names, context in self._loaded if name in names), self._loaded[0][1]
        )
