"""`mailward.io/v1alpha1`: DNSProvider and ClusterDNSProvider, where a MailDomain's records go.

Like cert-manager's Issuer and ClusterIssuer: the namespaced kind serves MailDomains of its own
namespace, the cluster-scoped one every namespace (its TSIG Secret then needs a namespace). The
TSIG key itself stays in a Secret, so that the provider object can be read by anyone who may see
how DNS is configured, without seeing the key.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, Literal

from pydantic import ConfigDict, Field, model_validator

from mailward.api.base import OBJECT_NAME_PATTERN, _Model
from mailward.api.status import Condition, conditions_field
from mailward.api.v1alpha1 import API_GROUP

DNS_PROVIDER_KIND: Final = "DNSProvider"
DNS_PROVIDER_PLURAL = "dnsproviders"
CLUSTER_DNS_PROVIDER_KIND: Final = "ClusterDNSProvider"
CLUSTER_DNS_PROVIDER_PLURAL = "clusterdnsproviders"

# A TSIG key name is a domain name (RFC 8945 §4.2), often a single label such as `mailward-update`.
_LABEL = r"[A-Za-z0-9](?:[-_A-Za-z0-9]{0,61}[A-Za-z0-9])?"
TSIG_KEY_NAME_PATTERN = rf"^{_LABEL}(?:\.{_LABEL})*\.?$"
# A host name or an IPv4/IPv6 literal.
NAMESERVER_HOST_PATTERN = rf"^(?:{_LABEL}(?:\.{_LABEL})*\.?|[0-9A-Fa-f:.]+)$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
NAMESPACE_PATTERN = r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$"
# RFC 8945 §6: HMAC-SHA256 is mandatory to implement; MD5 and SHA-1 are not offered.
TSIGAlgorithm = Literal["hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224"]


class Nameserver(_Model):
    """The primary server that accepts RFC 2136 UPDATEs and zone transfers for the zone."""

    host: str = Field(
        min_length=1,
        max_length=253,
        pattern=NAMESERVER_HOST_PATTERN,
        description="Address (IPv4 or IPv6) or host name of the primary server.",
    )
    port: int = Field(default=53, ge=1, le=65535, description="TCP/UDP port. Default 53.")


class TSIGSecretReference(_Model):
    """The key of a Secret that holds the TSIG secret (base64, as in BIND's `secret "..."`)."""

    name: str = Field(
        min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN, description="Secret name."
    )
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=SECRET_KEY_PATTERN,
        description="Key in the Secret's data, e.g. `secret`.",
    )


class ClusterTSIGSecretReference(TSIGSecretReference):
    """The key of a Secret, in a given namespace, that holds the TSIG secret (base64)."""

    namespace: str = Field(
        min_length=1,
        max_length=63,
        pattern=NAMESPACE_PATTERN,
        description="Namespace of the Secret (a cluster-scoped provider has none of its own).",
    )


class _RFC2136Base(_Model):
    nameserver: Nameserver = Field(description=Nameserver.__doc__)
    tsig_key_name: str = Field(
        min_length=1,
        max_length=253,
        pattern=TSIG_KEY_NAME_PATTERN,
        description="Name of the TSIG key as configured on the server, e.g. `mailward-update`.",
    )
    tsig_algorithm: TSIGAlgorithm = Field(
        default="hmac-sha256",
        description="TSIG algorithm (RFC 8945). Default `hmac-sha256`.",
    )


class RFC2136(_RFC2136Base):
    """Dynamic updates (RFC 2136) signed with TSIG; the zone is read back by AXFR."""

    tsig_secret_ref: TSIGSecretReference = Field(description=TSIGSecretReference.__doc__)


class ClusterRFC2136(_RFC2136Base):
    """Dynamic updates (RFC 2136) signed with TSIG; the zone is read back by AXFR."""

    tsig_secret_ref: ClusterTSIGSecretReference = Field(
        description=ClusterTSIGSecretReference.__doc__
    )


class ExternalDNS(_Model):
    """Hand the records to external-dns as `DNSEndpoint` objects; it has no TLSA (use rfc2136)."""


_EXACTLY_ONE: dict[str, Any] = {
    "x-kubernetes-validations": [
        {
            "rule": "has(self.rfc2136) != has(self.externalDNS)",
            "message": "set exactly one of rfc2136 or externalDNS",
        }
    ]
}


class _ProviderSpecBase(_Model):
    model_config = ConfigDict(json_schema_extra=_EXACTLY_ONE)

    external_dns: ExternalDNS | None = Field(
        default=None, alias="externalDNS", description=ExternalDNS.__doc__
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> _ProviderSpecBase:
        if (getattr(self, "rfc2136", None) is None) == (self.external_dns is None):
            raise ValueError("set exactly one of rfc2136 or externalDNS")
        return self


class DNSProviderSpec(_ProviderSpecBase):
    """How to publish records in DNS, for MailDomains of this namespace."""

    rfc2136: RFC2136 | None = Field(default=None, description=RFC2136.__doc__)


class ClusterDNSProviderSpec(_ProviderSpecBase):
    """How to publish records in DNS, for MailDomains of every namespace."""

    rfc2136: ClusterRFC2136 | None = Field(default=None, description=ClusterRFC2136.__doc__)


class ProviderStatus(_Model):
    """Whether the provider can be used, as the operator last verified it."""

    model_config = ConfigDict(extra="ignore", strict=False)

    observed_generation: int = Field(
        default=0, ge=0, description="The `.metadata.generation` last verified."
    )
    conditions: list[Condition] = conditions_field(
        "`Ready` (the server answers and accepts the key), `Reconciling`, `Stalled`.", max_length=8
    )


class ProviderResource:
    printer_columns: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {"name": "Server", "type": "string", "jsonPath": ".spec.rfc2136.nameserver.host"},
        {"name": "Key", "type": "string", "jsonPath": ".spec.rfc2136.tsigKeyName"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


__all__ = [
    "API_GROUP",
    "CLUSTER_DNS_PROVIDER_KIND",
    "CLUSTER_DNS_PROVIDER_PLURAL",
    "DNS_PROVIDER_KIND",
    "DNS_PROVIDER_PLURAL",
    "ClusterDNSProviderSpec",
    "DNSProviderSpec",
    "ProviderStatus",
]
