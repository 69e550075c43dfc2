"""`spec.tls`, `spec.dane.rollover` and `status.certificate` of a MailDomain: where its
certificates come from, how a key change is paced, and what the rollover is doing."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from mailward.api.base import ObjectName, _Model, bounded_duration, parse_duration, section

CERT_MANAGER_GROUP = "cert-manager.io"

# cert-manager refuses lifetimes under an hour.
CertificateLifetime = bounded_duration("1h", "8760h")
RenewBefore = bounded_duration("1m", "8760h")
RolloverDuration = bounded_duration("0s", "168h")
RolloverTimeout = bounded_duration("30s", "168h")


class IssuerReference(_Model):
    """A cert-manager issuer (https://cert-manager.io/docs/configuration/)."""

    name: ObjectName = Field(description="Name of the Issuer or ClusterIssuer.")
    kind: Literal["Issuer", "ClusterIssuer"] = Field(
        default="Issuer",
        description="`Issuer` (in the MailDomain's namespace) or `ClusterIssuer`. Default Issuer.",
    )
    group: Literal["cert-manager.io"] = Field(
        default="cert-manager.io",
        description=(
            "API group of the issuer. Only cert-manager's own issuers for now "
            "(`cert-manager.io`); external issuers take the same CertificateRequests."
        ),
    )


class PrivateKeySpec(_Model):
    """The MX hosts' keys, generated and held by mailward (only with `issuerRef`)."""

    algorithm: Literal["ECDSA", "RSA"] = Field(
        default="ECDSA",
        description=(
            "`ECDSA` (P-256) or `RSA` (2048 bits); both meet BSI TR-03116-4. Default ECDSA."
        ),
    )
    rotation_policy: Literal["Always", "Never"] = Field(
        default="Always",
        description=(
            "`Always`: every renewal moves to the next key, which was published in TLSA beside "
            "the current one since the last renewal, so no DANE client ever sees an unknown "
            "key (cert-manager's default policy, made safe). If the next key has not been "
            "published for long enough yet, the renewal keeps the current key. `Never`: "
            "renewals keep the key. Default Always."
        ),
    )


class TLSSpec(_Model):
    """Where the certificate served by the MTA comes from: a cert-manager issuer (`issuerRef`;
    mailward holds the keys and renews) or a Secret someone else keeps up to date
    (`secretName`). Either way the MTA serves a copy mailward controls, and a new key is served
    only after its TLSA record has been published long enough (RFC 7671 §8.1)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.secretName) != has(self.issuerRef)",
                    "message": "set exactly one of spec.tls.secretName and spec.tls.issuerRef",
                },
                {
                    "rule": "duration(self.renewBefore) < duration(self.duration)",
                    "message": "spec.tls.renewBefore must be shorter than spec.tls.duration",
                },
            ]
        },
    )

    secret_name: ObjectName | None = Field(
        default=None,
        description=(
            "Name of a Secret of type `kubernetes.io/tls` in the MailDomain's namespace with the "
            "certificate chain (`tls.crt`) and key (`tls.key`) for every MX host, kept up to "
            "date by someone else (a cert-manager Certificate, an external secret store, a "
            "person). A new key put there is published in TLSA first and served only two TTLs "
            "later; a renewal with the same key is served at once."
        ),
    )
    issuer_ref: IssuerReference | None = Field(
        default=None,
        description=(
            "A cert-manager issuer for the MX hosts' certificates (and the `mta-sts.` host's): "
            "mailward generates the keys, sends CertificateRequests and renews on its own "
            "schedule."
        ),
    )
    private_key: PrivateKeySpec = section(PrivateKeySpec)
    duration: CertificateLifetime = Field(  # type: ignore[valid-type]
        default="2160h",
        description="Lifetime asked of the issuer (`issuerRef` only). 1h to 8760h. Default 2160h.",
    )
    renew_before: RenewBefore = Field(  # type: ignore[valid-type]
        default="720h",
        description=(
            "Renew this long before the certificate expires (`issuerRef` only); must be shorter "
            "than `duration`. 1m to 8760h. Default 720h (30 days)."
        ),
    )

    @model_validator(mode="after")
    def _one_source(self) -> TLSSpec:
        if (self.secret_name is None) == (self.issuer_ref is None):
            raise ValueError("set exactly one of spec.tls.secretName and spec.tls.issuerRef")
        if parse_duration(self.renew_before) >= parse_duration(self.duration):
            raise ValueError(
                f"spec.tls.renewBefore {self.renew_before!r} must be shorter than "
                f"spec.tls.duration {self.duration!r}"
            )
        return self

    @property
    def source(self) -> Literal["Issuer", "Secret"]:
        return "Issuer" if self.issuer_ref is not None else "Secret"


class RolloverSpec(_Model):
    """How a key change is paced (RFC 7671 §8.1): the next key's TLSA record is published
    first, served after two TTLs and `margin`, and the old record goes after `retireAfter`."""

    margin: RolloverDuration = Field(  # type: ignore[valid-type]
        default="5m",
        description=(
            "Waited beyond two TTLs (of the TLSA RRset and its RRSIG, the largest seen) before a "
            "new key is served: for resolvers that cache a little longer than told. 0s to 168h. "
            "Default 5m."
        ),
    )
    propagation_timeout: RolloverTimeout = Field(  # type: ignore[valid-type]
        default="10m",
        description=(
            "How long every authoritative server may take to serve the published TLSA RRset "
            "before the rollover reports it (`PropagationTimeout`); it keeps waiting and never "
            "switches meanwhile. 30s to 168h. Default 10m."
        ),
    )
    verify_timeout: RolloverTimeout = Field(  # type: ignore[valid-type]
        default="5m",
        description=(
            "How long the MTA pods may take to present a new key after a switch before the old "
            "key is served again. 30s to 168h. Default 5m."
        ),
    )
    retire_after: RolloverDuration | None = Field(  # type: ignore[valid-type]
        default=None,
        description=(
            "How long the previous key's record stays after every endpoint presents the new "
            "key. 0s to 168h. Default: two TLSA TTLs."
        ),
    )


class KeyStatus(_Model):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, strict=False
    )

    role: Literal["current", "next", "previous"] = Field(
        description="`current` (served), `next` (published, served after the next switch) or "
        "`previous` (published until it is retired)."
    )
    spki_sha256: str = Field(
        max_length=64, description="SHA-256 of the key's SubjectPublicKeyInfo: the TLSA data."
    )
    published_since: datetime | None = Field(
        default=None, description="When every authoritative server first served its record."
    )
    served_since: datetime | None = Field(default=None, description="When it became current.")


class NameserverStatus(_Model):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, strict=False
    )

    name: str = Field(max_length=254, description="The NS name.")
    address: str = Field(max_length=45, description="The address asked.")
    serial: int | None = Field(
        default=None,
        ge=0,
        description="The zone's SOA serial there, while it does not serve what is desired.",
    )
    matches: bool = Field(description="It serves the desired TLSA RRsets, validly signed.")
    problem: str = Field(default="", max_length=1024, description="What it served instead.")


class CertificateStatus(_Model):
    """The served certificate and the key rollover (parts/certificate.py)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, strict=False
    )

    source: Literal["Issuer", "Secret"] = Field(description="Where the certificate comes from.")
    not_after: datetime | None = Field(default=None, description="When the served one expires.")
    renewal_time: datetime | None = Field(
        default=None, description="When mailward renews it (`issuerRef` only)."
    )
    phase: str = Field(
        default="",
        max_length=32,
        description=(
            "`Publishing`, `Aging`, `Issuing`, `Verifying`, `Retiring`, `RolledBack` or `Stable`."
        ),
    )
    next_transition_time: datetime | None = Field(
        default=None, description="When the rollover's next step is due by the clock."
    )
    keys: list[KeyStatus] = Field(
        default_factory=list,
        max_length=3,
        description="The keys in TLSA records: the served one, and those on either side.",
    )
    nameservers: list[NameserverStatus] = Field(
        default_factory=list,
        max_length=16,
        description="What every authoritative server of the zone serves for the TLSA records.",
    )
    last_rollback: str = Field(
        default="", max_length=1024, description="Why the last switch was rolled back, if it was."
    )
