"""Senders of TLS reports for tests and the benchmark: SMTP with STARTTLS, and HTTPS POST."""

from __future__ import annotations

import http.client
import smtplib
import socket
import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    text: str


def tls_client_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class SMTPSender:
    """One SMTP session; STARTTLS verified against the test CA, as a strict sender would."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        server_name: str,
        ca_file: str,
        source: str | None = None,
        starttls: bool = True,
    ) -> None:
        self._smtp = smtplib.SMTP(timeout=60, source_address=(source, 0) if source else None)
        self._smtp.connect(host, port)
        self._smtp._host = server_name  # SNI and certificate name check use this
        self._smtp.ehlo("sender.example")
        if starttls:
            self._smtp.starttls(context=tls_client_context(ca_file))
            self._smtp.ehlo("sender.example")

    def send(self, message: bytes, *, mail_from: str, rcpt: str) -> Reply:
        code, text = self._smtp.mail(mail_from)
        if code != 250:
            self._smtp.rset()
            return Reply(code, text.decode(errors="replace"))
        code, text = self._smtp.rcpt(rcpt)
        if code != 250:
            self._smtp.rset()
            return Reply(code, text.decode(errors="replace"))
        code, text = self._smtp.data(message)
        return Reply(code, text.decode(errors="replace"))

    def close(self) -> None:
        try:
            self._smtp.quit()
        except (smtplib.SMTPException, OSError):
            self._smtp.close()


def post_report(
    host: str,
    port: int,
    *,
    server_name: str,
    ca_file: str,
    body: bytes,
    content_type: str,
    source: str | None = None,
    path: str = "/v1/tlsrpt",
) -> Reply:
    """POST over TLS to `host:port`, verifying the certificate for `server_name` (SNI too)."""
    raw = socket.create_connection(
        (host, port), timeout=60, source_address=(source, 0) if source else None
    )
    with tls_client_context(ca_file).wrap_socket(raw, server_hostname=server_name) as tls:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {server_name}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        tls.sendall(head)
        try:
            view = memoryview(body)
            for offset in range(0, len(body), 1 << 20):
                tls.sendall(view[offset : offset + (1 << 20)])
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the server answered early (413) and closed; read its answer below
        response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        response.begin()
        return Reply(response.status, response.read().decode(errors="replace"))
