"""A report out of a mail message, the RFC's file name form, and the DKIM verdict."""

from __future__ import annotations

import dkim  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailward.tlsrpt.mail import dkim_verdict, extract
from mailward.tlsrpt.parse import ReportRejected
from tests.tlsrpt_samples import SUBMITTERS, corpus, report_mail


def _mail(gzipped: bool = True) -> bytes:
    sample = corpus("example.test", 2)[0 if gzipped else 1]
    return report_mail(sample, domain="example.test", mailbox="tlsrpt@tlsrpt.example.test")


@pytest.mark.parametrize("gzipped", [True, False])
def test_a_report_mail_gives_its_report_and_headers(gzipped: bool) -> None:
    mail = extract(_mail(gzipped))
    assert mail.gzipped is gzipped
    assert mail.report_domain == "example.test"
    submitter = SUBMITTERS[corpus("example.test", 2)[0 if gzipped else 1].shape][0]
    assert mail.submitter == submitter
    assert mail.file_name.startswith(f"{submitter}!example.test!")
    assert mail.notes == []


def test_deviations_are_accepted_and_noted() -> None:
    message = _mail().replace(b"TLS-Report-Submitter: company-x.example\r\n", b"")
    message = message.replace(b"application/tlsrpt+gzip", b"application/octet-stream")
    mail = extract(message)
    assert "TLS-Report-Submitter header missing" in mail.notes
    assert any("recognised by its file name" in note for note in mail.notes)
    assert mail.submitter == "company-x.example"  # from From:


def test_no_report_part_is_refused_naming_what_was_found() -> None:
    message = _mail().replace(b"application/tlsrpt+gzip", b"image/png")
    with pytest.raises(ReportRejected, match=r"content types found: image/png, text/plain"):
        extract(message)


def test_dkim_is_verified_and_recorded() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import base64

    record = b"v=DKIM1; k=rsa; s=tlsrpt; p=" + base64.b64encode(public)

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        wanted = b"tlsrpt._domainkey.company-x.example."
        return record if (name if isinstance(name, bytes) else name.encode()) == wanted else None

    message = _mail()
    signature = dkim.sign(
        message,
        b"tlsrpt",
        b"company-x.example",
        private,
        include_headers=[b"from", b"subject", b"tls-report-domain", b"tls-report-submitter"],
    )
    signed = signature + message
    assert dkim_verdict(signed, dnsfunc) == ("pass", "company-x.example")
    tampered = signed.replace(b"Report Domain:", b"Report Domain: x")
    assert dkim_verdict(tampered, dnsfunc)[0] == "fail"
    assert dkim_verdict(message, dnsfunc) == ("none", "")
