"""HTTPS fetches as RFC 8461 prescribes them: one GET, redirects reported but never followed.

The host is resolved by the engine through the validating resolver and the connection goes to
that address with the name as SNI, so the fetch sees exactly what DNS publishes.
"""

from __future__ import annotations

import http.client
import socket
import ssl

from cryptography import x509

from mailward.compliance.observations import HTTPSResult

MAX_BODY = 64 * 1024


def fetch(
    host: str, address: str, path: str, cafile: str | None, timeout: float = 10.0
) -> HTTPSResult:
    url = f"https://{host}{path}"
    result = HTTPSResult(url)
    verify = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    try:
        with socket.create_connection((address, 443), timeout=timeout) as raw:
            try:
                with verify.wrap_socket(raw, server_hostname=host):
                    pass
            except ssl.SSLCertVerificationError as e:
                result.pkix_error = e.verify_message or str(e)
            except ssl.SSLError as e:
                result.pkix_error = f"handshake failed: {e.reason or e}"
        lax = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        lax.check_hostname = False
        lax.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection((address, 443), timeout=timeout) as raw,
            lax.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            if der:
                cert = x509.load_der_x509_certificate(der)
                try:
                    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                    result.leaf_names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
                except x509.ExtensionNotFound:
                    result.leaf_names = []
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mailward-compliance\r\n"
                "Accept: */*\r\nConnection: close\r\n\r\n"
            )
            tls.sendall(request.encode())
            response = http.client.HTTPResponse(tls)
            response.begin()
            result.status = response.status
            result.headers = {k.lower(): v for k, v in response.getheaders()}
            body = response.read(MAX_BODY + 1)
            result.truncated = len(body) > MAX_BODY
            result.body = body[:MAX_BODY]
    except (OSError, ssl.SSLError, http.client.HTTPException) as e:
        result.error = f"{type(e).__name__}: {e}"
    return result
