"""LocalCA: certificates that chain to the local root and follow TR-03116-4 unless told not to."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from mailward_localstack.pki import IssuedCert, LocalCA

_E = TypeVar("_E", bound=x509.ExtensionType)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA.create(tmp_path_factory.mktemp("ca"), name="mailward unit-test CA")


def _verify_server(
    ca: LocalCA, issued: IssuedCert, name: str, at: dt.datetime | None = None
) -> list[x509.Certificate]:
    """Full RFC 5280 / CA-B path validation of `issued` for `name` against the CA only."""
    builder = PolicyBuilder().store(Store([ca.cert]))
    if at is not None:
        builder = builder.time(at)
    verifier = builder.build_server_verifier(x509.DNSName(name))
    return verifier.verify(issued.cert, [])


def _ext(cert: x509.Certificate, kind: type[_E]) -> x509.Extension[_E]:
    return cert.extensions.get_extension_for_class(kind)


def test_root_is_a_constrained_p256_ca(ca: LocalCA) -> None:
    assert isinstance(ca.cert.public_key(), ec.EllipticCurvePublicKey)
    assert ca.key.curve.name == "secp256r1"
    bc = _ext(ca.cert, x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length in (0, 1)
    ku = _ext(ca.cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    ca.cert.verify_directly_issued_by(ca.cert)  # self-signed
    validity = ca.cert.not_valid_after_utc - ca.cert.not_valid_before_utc
    assert validity <= dt.timedelta(days=6 * 365)  # TR-03116-4: root at most 6 years
    assert ca.ca_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE(ca.key_file.stat().st_mode) == 0o600


def test_load_returns_the_same_ca(ca: LocalCA) -> None:
    again = LocalCA.load(ca.dir)
    assert again.cert == ca.cert
    assert again.ca_file == ca.ca_file
    issued = again.issue_server_cert(["reload.example.test"])
    issued.cert.verify_directly_issued_by(ca.cert)


def test_ec_server_cert_chains_and_has_the_required_extensions(ca: LocalCA) -> None:
    issued = ca.issue_server_cert(["mx.example.test", "mail.example.test", "127.88.0.25"])
    # Signature by the CA, and a full path validation for each DNS name.
    issued.cert.verify_directly_issued_by(ca.cert)
    chain = _verify_server(ca, issued, "mail.example.test")
    assert chain[0] == issued.cert
    assert chain[-1] == ca.cert

    san = _ext(issued.cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mx.example.test", "mail.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.88.0.25")]
    assert issued.names == ["mx.example.test", "mail.example.test", "127.88.0.25"]

    ku = _ext(issued.cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not ku.value.key_encipherment
    assert not ku.value.key_cert_sign
    assert not _ext(issued.cert, x509.BasicConstraints).value.ca
    assert ExtendedKeyUsageOID.SERVER_AUTH in _ext(issued.cert, x509.ExtendedKeyUsage).value
    crl_dp = _ext(issued.cert, x509.CRLDistributionPoints).value
    urls = [n.value for dp in crl_dp for n in (dp.full_name or [])]
    assert urls == [ca.crl_url]
    assert ca.crl_url.startswith("http://")

    assert isinstance(issued.key, ec.EllipticCurvePrivateKey)
    assert issued.key.curve.name == "secp256r1"
    assert issued.cert.signature_hash_algorithm is not None
    assert issued.cert.signature_hash_algorithm.name == "sha256"


def test_default_validity_is_current_and_at_most_90_days(ca: LocalCA) -> None:
    issued = ca.issue_server_cert(["valid.example.test"])
    now = dt.datetime.now(dt.UTC)
    assert issued.cert.not_valid_before_utc <= now <= issued.cert.not_valid_after_utc
    lifetime = issued.cert.not_valid_after_utc - issued.cert.not_valid_before_utc
    assert lifetime <= dt.timedelta(days=90)


def test_files_hold_cert_key_and_chain(ca: LocalCA, tmp_path: Path) -> None:
    issued = ca.issue_server_cert(["files.example.test"], out_dir=tmp_path, basename="mx")
    assert issued.cert_file == tmp_path / "mx.crt"
    assert issued.key_file == tmp_path / "mx.key"
    assert x509.load_pem_x509_certificate(issued.cert_file.read_bytes()) == issued.cert
    assert stat.S_IMODE(issued.key_file.stat().st_mode) == 0o600
    chain = x509.load_pem_x509_certificates(issued.chain_file.read_bytes())
    assert chain == [issued.cert, ca.cert]


def test_rsa_server_cert_is_3072_bit(ca: LocalCA, tmp_path: Path) -> None:
    issued = ca.issue_server_cert(["rsa.example.test"], key_type="rsa", out_dir=tmp_path)
    assert isinstance(issued.key, rsa.RSAPrivateKey)
    assert issued.key.key_size == 3072
    assert _ext(issued.cert, x509.KeyUsage).value.key_encipherment
    _verify_server(ca, issued, "rsa.example.test")


def test_wildcard_only_when_asked(ca: LocalCA, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wildcard"):
        ca.issue_server_cert(["*.example.test"], out_dir=tmp_path)
    issued = ca.issue_server_cert(["*.example.test"], allow_wildcard=True, out_dir=tmp_path)
    san = _ext(issued.cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["*.example.test"]
    assert issued.cert_file.name == "wildcard.example.test.crt"
    _verify_server(ca, issued, "anything.example.test")


def test_expired_only_when_asked(ca: LocalCA, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    # The test CA itself is only minutes old (backdated 5 minutes), hence the short window.
    issued = ca.issue_server_cert(
        ["old.example.test"],
        not_before=now - dt.timedelta(minutes=4),
        not_after=now - dt.timedelta(minutes=1),
        out_dir=tmp_path,
    )
    assert issued.cert.not_valid_after_utc < now
    with pytest.raises(VerificationError, match="not valid at validation time"):
        _verify_server(ca, issued, "old.example.test")
    # It did chain while it was valid.
    _verify_server(ca, issued, "old.example.test", at=now - dt.timedelta(minutes=2))
    long_expired = ca.issue_server_cert(
        ["older.example.test"],
        not_before=now - dt.timedelta(days=400),
        not_after=now - dt.timedelta(days=310),
        out_dir=tmp_path,
    )
    assert long_expired.cert.not_valid_after_utc < now - dt.timedelta(days=300)
    long_expired.cert.verify_directly_issued_by(ca.cert)


def test_bad_arguments_are_refused(ca: LocalCA, tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        ca.issue_server_cert("mx.example.test", out_dir=tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        ca.issue_server_cert([], out_dir=tmp_path)
    with pytest.raises(ValueError, match="timezone"):
        ca.issue_server_cert(
            ["naive.example.test"], not_before=dt.datetime(2030, 1, 1), out_dir=tmp_path
        )


def test_crl_is_signed_by_the_ca(ca: LocalCA) -> None:
    crl = x509.load_der_x509_crl(ca.crl_file.read_bytes())
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    issued = ca.issue_server_cert(["revoked.example.test"])
    ca.write_crl([issued.cert.serial_number])
    crl = x509.load_der_x509_crl(ca.crl_file.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(issued.cert.serial_number) is not None


def test_tlsa_digests(ca: LocalCA) -> None:
    issued = ca.issue_server_cert(["tlsa.example.test"])
    assert len(issued.spki_sha256()) == 64
    assert issued.spki_sha256() != ca.spki_sha256()
