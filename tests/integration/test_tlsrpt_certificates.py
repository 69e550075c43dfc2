"""The collector serves certificates that appear or are renewed after it started.

In a pod the certificate files come from optional Secret volumes that the kubelet fills and
swaps in place; the collector process must pick them up without a restart, and must keep taking
reports (in clear) while it has none to serve.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import ssl
import time
from pathlib import Path

from cryptography import x509

from mailward.render.dns_records import spki_sha256
from mailward_localstack.pki import IssuedCert, LocalCA
from tests.fixtures_tlsrpt import (
    DOMAIN,
    MAILBOX,
    MAILBOX_HOST,
    CollectorFactory,
    CollectorProcess,
)
from tests.tlsrpt_client import SMTPSender
from tests.tlsrpt_samples import corpus, report_mail


def _spki(der: bytes) -> str:
    return spki_sha256(x509.load_der_x509_certificate(der))


def _unverified() -> ssl.SSLContext:
    # As a report sender does: encrypt, do not insist on a verified certificate.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def smtp_certificate(collector: CollectorProcess) -> str | None:
    """SPKI digest of what STARTTLS serves for the mailbox host; None when TLS fails."""
    with smtplib.SMTP(collector.host, collector.smtp_port, timeout=10) as smtp:
        smtp.ehlo("sender.test")
        try:
            smtp.starttls(context=_unverified())
        except (ssl.SSLError, smtplib.SMTPException, OSError):
            return None
        assert isinstance(smtp.sock, ssl.SSLSocket)
        der = smtp.sock.getpeercert(binary_form=True)
        return _spki(der) if der else None


def https_certificate(collector: CollectorProcess) -> str:
    with (
        socket.create_connection((collector.host, collector.https_port), timeout=10) as raw,
        _unverified().wrap_socket(raw, server_hostname=MAILBOX_HOST) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return _spki(der)


def _install(cert: IssuedCert, target: Path) -> None:
    """Put the files in place the way the kubelet does: complete files, swapped atomically."""
    target.mkdir(parents=True, exist_ok=True)
    for source, name in ((cert.chain_file, "tls.crt"), (cert.key_file, "tls.key")):
        staged = target / f".{name}.new"
        shutil.copyfile(source, staged)
        os.replace(staged, target / name)


def _wait(what: str, probe: object, expected: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()  # type: ignore[operator]
        if last == expected:
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last {last!r}, expected {expected!r}")


def test_certificates_that_appear_or_are_renewed_are_served_without_a_restart(
    tlsrpt_collector_factory: CollectorFactory,
    local_ca: LocalCA,
    tmp_path: Path,
) -> None:
    secret_dir = tmp_path / "secret-volume"
    collector = tlsrpt_collector_factory(f"sqlite:///{tmp_path / 'reports.db'}", start=False)
    collector.config["certificates"] = [
        {"certFile": str(secret_dir / "tls.crt"), "keyFile": str(secret_dir / "tls.key")}
    ]
    collector.config["certificateReloadSeconds"] = 0.5
    collector.start()
    pid = collector.pid

    # No certificate yet: STARTTLS cannot complete, but a report in clear is still taken.
    assert smtp_certificate(collector) is None
    sample = corpus(DOMAIN, count=1)[0]
    sender = SMTPSender(
        collector.host,
        collector.smtp_port,
        server_name=MAILBOX_HOST,
        ca_file=str(local_ca.ca_file),
        starttls=False,
    )
    try:
        message = report_mail(sample, domain=DOMAIN, mailbox=MAILBOX)
        reply = sender.send(message, mail_from="reports@sender.example", rcpt=MAILBOX)
    finally:
        sender.close()
    assert reply.code == 250, reply
    assert "not serving" in collector.log()

    first = local_ca.issue_server_cert([MAILBOX_HOST], out_dir=tmp_path / "first")
    _install(first, secret_dir)
    _wait("the first certificate", lambda: smtp_certificate(collector), _spki_of(first))

    renewed = local_ca.issue_server_cert([MAILBOX_HOST], out_dir=tmp_path / "renewed")
    assert _spki_of(renewed) != _spki_of(first)
    _install(renewed, secret_dir)
    _wait("the renewed certificate", lambda: smtp_certificate(collector), _spki_of(renewed))
    assert https_certificate(collector) == _spki_of(renewed)
    assert collector.pid == pid
    assert collector.process is not None
    assert collector.process.poll() is None


def _spki_of(cert: IssuedCert) -> str:
    return spki_sha256(cert.cert)
