"""A local certificate authority for the "internet in a box".

Tests and the demo need server certificates that chain to a root only they trust: the MX
certificate that DANE TLSA records pin, the MTA-STS policy host's certificate, and deliberately
broken certificates (wildcards, expired) for the compliance checks. Everything is made with the
`cryptography` library; no openssl command line.

The defaults follow BSI TR-03116-4 §6.1 (see tr03108-requirements.md §4): ECDSA P-256 with
SHA-256, critical BasicConstraints with a path length on the CA, critical KeyUsage, EKU
serverAuth, a CRL distribution point, no wildcards, end-entity validity well under three years
(90 days here) and a root valid for five years. Anything that breaks these rules must be asked
for explicitly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailward_localstack._process import write_private

__all__ = ["DEFAULT_VALIDITY", "IssuedCert", "KeyType", "LocalCA", "PrivateKey", "spki_sha256"]

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

DEFAULT_VALIDITY = dt.timedelta(days=90)
CA_VALIDITY = dt.timedelta(days=5 * 365)
RSA_KEY_SIZE = 3072
# Leaves start a little in the past so that clocks a few seconds apart still accept them.
BACKDATE = dt.timedelta(minutes=5)

_CA_CERT = "ca.pem"
_CA_KEY = "ca.key"
_CA_CRL = "ca.crl"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def spki_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex: the data of a TLSA "x 1 1" record."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def _general_names(names: Sequence[str], allow_wildcard: bool) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for raw in names:
        name = raw.strip().rstrip(".")
        if not name:
            raise ValueError(f"empty subject alternative name in {list(names)!r}")
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        if "*" in name and not allow_wildcard:
            raise ValueError(
                f"wildcard name {name!r} refused (TR-03116-4 forbids wildcards); "
                "pass allow_wildcard=True to make a deliberately non-compliant certificate"
            )
        result.append(x509.DNSName(name.lower()))
    if not result:
        raise ValueError("a server certificate needs at least one name")
    return result


def _default_basename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", name.strip().rstrip(".").replace("*", "wildcard"))


@dataclass(frozen=True)
class IssuedCert:
    """A server certificate issued by a `LocalCA`, with its files."""

    cert_file: Path
    key_file: Path
    chain_file: Path
    """Leaf followed by the CA certificate (what a server sends; DANE-TA needs the CA in it)."""
    cert: x509.Certificate
    key: PrivateKey
    ca_cert: x509.Certificate

    @property
    def names(self) -> list[str]:
        try:
            san = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
            str(v) for v in san.get_values_for_type(x509.IPAddress)
        ]

    def spki_sha256(self) -> str:
        """Data of the DANE-EE TLSA record "3 1 1 <this>" for this certificate."""
        return spki_sha256(self.cert)


class LocalCA:
    """A root CA kept in a directory: `ca.pem` (certificate), `ca.key` (0600), `ca.crl`."""

    def __init__(
        self,
        directory: Path,
        cert: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
    ) -> None:
        self.dir = Path(directory)
        self.cert = cert
        self.key = key

    # -- creation and loading -------------------------------------------------------------

    @classmethod
    def create(
        cls,
        dir: Path,
        name: str = "mailward local CA",
        *,
        crl_url: str | None = None,
        path_length: int = 0,
        validity: dt.timedelta = CA_VALIDITY,
    ) -> LocalCA:
        """Make a new root in `dir` (overwriting one that is there).

        `crl_url` is written into every issued certificate's CRL distribution point; the default
        names a host under the local `test.` tree. The CRL itself (`crl_file`) is kept up to
        date here, so whoever serves that URL can serve the file.
        """
        directory = Path(dir)
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailward"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now - BACKDATE + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        write_private(directory / _CA_KEY, _key_pem(key))
        (directory / _CA_CERT).write_bytes(_cert_pem(cert))
        ca = cls(directory, cert, key)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "ca"
        ca._write_meta(crl_url or f"http://pki.test/{slug}.crl")
        ca.write_crl()
        return ca

    @classmethod
    def load(cls, dir: Path) -> LocalCA:
        directory = Path(dir)
        cert = x509.load_pem_x509_certificate((directory / _CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / _CA_KEY).read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / _CA_KEY} is not an EC private key")
        return cls(directory, cert, key)

    @classmethod
    def load_or_create(cls, dir: Path, name: str = "mailward local CA") -> LocalCA:
        directory = Path(dir)
        if (directory / _CA_CERT).exists() and (directory / _CA_KEY).exists():
            return cls.load(directory)
        return cls.create(directory, name)

    # -- accessors ------------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """PEM file of the root certificate: what clients put in their trust store."""
        return self.dir / _CA_CERT

    @property
    def key_file(self) -> Path:
        return self.dir / _CA_KEY

    @property
    def crl_file(self) -> Path:
        """DER CRL signed by the root (empty unless `write_crl` was given serials)."""
        return self.dir / _CA_CRL

    @property
    def crl_url(self) -> str:
        return (self.dir / "crl-url").read_text().strip()

    @property
    def name(self) -> str:
        attrs = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else self.cert.subject.rfc4514_string()

    def spki_sha256(self) -> str:
        """Data of the DANE-TA TLSA record "2 1 1 <this>" for this CA."""
        return spki_sha256(self.cert)

    def _write_meta(self, crl_url: str) -> None:
        (self.dir / "crl-url").write_text(crl_url + "\n")

    # -- issuing ----------------------------------------------------------------------------

    def issue_server_cert(
        self,
        names: Sequence[str],
        *,
        key_type: KeyType = "ec",
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        out_dir: Path | None = None,
        basename: str | None = None,
        allow_wildcard: bool = False,
    ) -> IssuedCert:
        """Issue a TLS server certificate for `names` (DNS names or IP addresses).

        The first name is also the subject CN. Validity is 90 days from now unless `not_before`
        / `not_after` are given; an explicit window may lie in the past (an expired certificate)
        or the future. Wildcard names are refused unless `allow_wildcard=True`.
        Files: `<out_dir>/<basename>.crt`, `.key` (0600) and `.chain.pem` (leaf + CA);
        `out_dir` defaults to `<ca dir>/issued`, `basename` to the first name.
        """
        if isinstance(names, str):
            raise TypeError("names must be a sequence of names, not a single string")
        general_names = _general_names(names, allow_wildcard)
        key: PrivateKey
        if key_type == "ec":
            key = ec.generate_private_key(ec.SECP256R1())
        elif key_type == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_SIZE)
        else:
            raise ValueError(f"key_type must be 'ec' or 'rsa', not {key_type!r}")

        now = _now()
        start = not_before if not_before is not None else now - BACKDATE
        if not_after is not None:
            end = not_after
        elif not_before is not None:
            end = not_before + DEFAULT_VALIDITY
        else:
            end = now - BACKDATE + DEFAULT_VALIDITY
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("not_before / not_after must be timezone-aware datetimes")
        if end <= start:
            raise ValueError(f"not_after ({end}) must lie after not_before ({start})")

        first = names[0].strip().rstrip(".")
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first[:64])])
        return self._issue_leaf(
            subject,
            general_names,
            ExtendedKeyUsageOID.SERVER_AUTH,
            key,
            start,
            end,
            Path(out_dir) if out_dir is not None else self.dir / "issued",
            basename or _default_basename(first),
        )

    def issue_client_cert(
        self,
        user: str,
        groups: Sequence[str] = (),
        *,
        out_dir: Path | None = None,
        basename: str | None = None,
    ) -> IssuedCert:
        """A TLS client certificate: CN is the user and O the groups, as Kubernetes reads them."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups),
                x509.NameAttribute(NameOID.COMMON_NAME, user),
            ]
        )
        start = _now() - BACKDATE
        return self._issue_leaf(
            subject,
            [],
            ExtendedKeyUsageOID.CLIENT_AUTH,
            key,
            start,
            start + DEFAULT_VALIDITY,
            Path(out_dir) if out_dir is not None else self.dir / "issued",
            basename or _default_basename(user),
        )

    def _issue_leaf(
        self,
        subject: x509.Name,
        general_names: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        key: PrivateKey,
        start: dt.datetime,
        end: dt.datetime,
        directory: Path,
        base: str,
    ) -> IssuedCert:
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    # RSA key transport (TLS 1.2 RSA suites) needs keyEncipherment; ECDSA does not.
                    key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            full_name=[x509.UniformResourceIdentifier(self.crl_url)],
                            relative_name=None,
                            reasons=None,
                            crl_issuer=None,
                        )
                    ]
                ),
                critical=False,
            )
        )
        if general_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(general_names), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())

        directory.mkdir(parents=True, exist_ok=True)
        cert_file = directory / f"{base}.crt"
        key_file = directory / f"{base}.key"
        chain_file = directory / f"{base}.chain.pem"
        write_private(key_file, _key_pem(key))
        cert_file.write_bytes(_cert_pem(cert))
        chain_file.write_bytes(_cert_pem(cert) + _cert_pem(self.cert))
        return IssuedCert(
            cert_file=cert_file,
            key_file=key_file,
            chain_file=chain_file,
            cert=cert,
            key=key,
            ca_cert=self.cert,
        )

    def write_crl(
        self,
        revoked_serials: Iterable[int] = (),
        *,
        next_update: dt.timedelta = dt.timedelta(days=7),
    ) -> Path:
        """(Re)write `crl_file`, revoking `revoked_serials`; returns its path."""
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - BACKDATE)
            .next_update(now + next_update)
        )
        for serial in revoked_serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - BACKDATE)
                .build()
            )
        crl = builder.sign(self.key, hashes.SHA256())
        self.crl_file.write_bytes(crl.public_bytes(serialization.Encoding.DER))
        return self.crl_file
