"""`mailward.io/v1alpha1`: the MailDomain resource.

Every rule here exists twice on purpose: once in the generated CRD (pattern, bounds, CEL), so that
`kubectl apply` refuses bad input with a message naming the field, and once as pydantic validation,
so that the operator refuses an object that reached the cluster through an older or looser CRD.
A few rules are only here (the full grammar of report URIs): a CRD pattern can only approximate
them, and the operator reports the difference as `Ready=False`, reason `InvalidSpec`.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

API_GROUP = "mailward.io"
API_VERSION = "v1alpha1"
KIND = "MailDomain"
PLURAL = "maildomains"
SINGULAR = "maildomain"
SHORT_NAMES = ("md",)

# RFC 1035 §2.3.1 host names in A-label form (IDNs as xn--), lower case so that two spellings of
# one name cannot both be listed; the last label starts with a letter, so an IPv4 literal is not
# mistaken for a host name. Length limits: 63 per label here, 253 in total by maxLength.
HOSTNAME_PATTERN = r"^(?:[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$"
HOSTNAME_MAX_LENGTH = 253
# A Kubernetes object name (DNS-1123 subdomain), for references to Secrets and providers.
OBJECT_NAME_PATTERN = r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$"
# RFC 8460 §3: commas and exclamation marks separate URIs and must be percent-encoded inside one.
REPORT_URI_PATTERN = r"^(?:mailto:[^\s,!;@]+@[^\s,!;@]+|https://[^\s,!;]+)$"
DURATION_PATTERN = r"^(?:[0-9]+(?:ms|s|m|h))+$"
# RFC 8461 §3.2: max_age is at most 31557600 seconds (about one year).
MTA_STS_MAX_AGE_LIMIT = 31557600
COMPLIANCE_INTERVAL_MIN_SECONDS = 60
COMPLIANCE_INTERVAL_MAX_SECONDS = 7 * 24 * 3600

_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as `1h30m` (the form CEL's `duration()` reads)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m or 1h30m")
    return sum(int(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def _check_ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
    return value


def _check_report_uri(value: str) -> str:
    """The full RFC 8460 §3 `rua` grammar that the CRD pattern only approximates."""
    parts = urlsplit(value)
    if parts.scheme == "mailto":
        address = unquote(parts.path)
        local, _, domain = address.rpartition("@")
        if parts.query or parts.fragment:
            raise ValueError(f"{value!r}: a mailto: report URI takes no query or fragment")
        if not local or not re.fullmatch(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+", local):
            raise ValueError(f"{value!r}: the local part of the mailbox is not valid")
        if local.startswith(".") or local.endswith(".") or ".." in local:
            raise ValueError(f"{value!r}: the local part of the mailbox has misplaced dots")
        if not re.fullmatch(HOSTNAME_PATTERN, domain):
            raise ValueError(f"{value!r}: {domain!r} is not a lower-case host name")
        return value
    if parts.scheme == "https":
        host = parts.hostname or ""
        if not re.fullmatch(HOSTNAME_PATTERN, host):
            raise ValueError(f"{value!r}: {host!r} is not a lower-case host name")
        if parts.username or parts.password:
            raise ValueError(f"{value!r}: credentials in a report URI would be published in DNS")
        return value
    raise ValueError(f"{value!r}: only mailto: and https: report URIs exist (RFC 8460 §3)")


def _check_interval(value: str) -> str:
    seconds = parse_duration(value)
    if not COMPLIANCE_INTERVAL_MIN_SECONDS <= seconds <= COMPLIANCE_INTERVAL_MAX_SECONDS:
        raise ValueError(f"{value!r} must lie between 1m and 168h")
    return value


Hostname = Annotated[
    str,
    Field(min_length=1, max_length=HOSTNAME_MAX_LENGTH, pattern=HOSTNAME_PATTERN),
]
ObjectName = Annotated[
    str,
    Field(min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN),
]
IPAddress = Annotated[
    str,
    Field(
        min_length=2,
        max_length=45,
        description="An IPv4 or IPv6 address.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "isIP(self)", "message": "must be an IPv4 or IPv6 address"}
            ]
        },
    ),
    AfterValidator(_check_ip_address),
]
ReportURI = Annotated[
    str,
    Field(
        min_length=8,
        max_length=512,
        pattern=REPORT_URI_PATTERN,
        description="A report URI: `mailto:` with one mailbox, or `https:`.",
    ),
    AfterValidator(_check_report_uri),
]
Duration = Annotated[
    str,
    Field(
        min_length=2,
        max_length=32,
        pattern=DURATION_PATTERN,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "duration(self) >= duration('1m') && duration(self) <= duration('168h')"
                    ),
                    "message": "must lie between 1m and 168h",
                }
            ]
        },
    ),
    AfterValidator(_check_interval),
]


_EMPTY_DEFAULT: dict[str, Any] = {"default": {}}
_LIST_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}


def _unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.add(value)
    return values


class _Model(BaseModel):
    """Common configuration: camelCase on the wire, unknown fields refused, and no coercion
    (`"yes"` is not a boolean), as the API server's schema validation would not coerce either."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
    )


class MXHost(_Model):
    """One mail exchanger of the domain, published as an MX record."""

    host: Hostname = Field(
        description=(
            "Host name of the mail exchanger (RFC 1035, lower case, A-labels for IDNs). It must "
            "present a certificate for this name; DANE publishes a TLSA record at "
            "`_25._tcp.<host>`."
        )
    )
    priority: int = Field(
        default=10,
        ge=0,
        le=65535,
        description="MX preference (RFC 5321 §5.1): lower values are tried first. Default 10.",
    )
    addresses: Annotated[list[IPAddress], AfterValidator(_unique)] = Field(
        default_factory=list,
        max_length=8,
        json_schema_extra=_LIST_SET,
        description=(
            "Addresses of the host. When the host lies inside the domain's zone, A/AAAA records "
            "are published for them; leave empty when the addresses are managed elsewhere."
        ),
    )


class TLSSpec(_Model):
    """Where the certificate served by the MTA and the policy endpoint comes from."""

    secret_name: ObjectName = Field(
        description=(
            "Name of a Secret of type `kubernetes.io/tls` in the MailDomain's namespace with the "
            "certificate chain (`tls.crt`) and key (`tls.key`) for every MX host. Its public key "
            "is what the DANE TLSA records pin."
        )
    )


class ProviderReference(_Model):
    """A reference to the DNS provider configuration that publishes this domain's records."""

    kind: Literal["DNSProvider", "ClusterDNSProvider"] = Field(
        default="DNSProvider",
        description=(
            "`DNSProvider` (in the MailDomain's namespace) or `ClusterDNSProvider` "
            "(cluster-scoped). Default `DNSProvider`."
        ),
    )
    name: ObjectName = Field(description="Name of the provider object.")


class DNSSpec(_Model):
    """How the domain's records (MX, TLSA, MTA-STS, TLSRPT, SPF, DMARC, SRV) are published."""

    provider_ref: ProviderReference = Field(
        description="The DNS provider that owns the zone of `spec.domain`."
    )


class DANESpec(_Model):
    """DANE for SMTP (RFC 7672): TLSA records that pin the MTA's key, signed with DNSSEC."""

    enabled: bool = Field(
        default=True,
        description=(
            "Publish `3 1 1` TLSA records for every MX host. BSI TR-03108 makes DANE a MUST; "
            "disable only while the zone cannot be signed. Default true."
        ),
    )


class MTASTSSpec(_Model):
    """SMTP MTA Strict Transport Security (RFC 8461): the policy served to sending MTAs."""

    mode: Literal["enforce", "testing", "none"] = Field(
        default="enforce",
        description=(
            "Policy mode. `enforce`: senders refuse delivery over unauthenticated TLS. `testing`: "
            "senders deliver anyway and only report failures (TLSRPT). `none`: withdraws a "
            "published policy (RFC 8461 §8.3). Default `enforce`."
        ),
    )
    max_age: int = Field(
        default=604800,
        ge=0,
        le=MTA_STS_MAX_AGE_LIMIT,
        description=(
            "How long, in seconds, senders may cache the policy: 0 to 31557600 (RFC 8461 §3.2). "
            "Weeks are expected in production. Default 604800 (one week)."
        ),
    )


class TLSRPTSpec(_Model):
    """SMTP TLS Reporting (RFC 8460): where sending MTAs report failed TLS sessions."""

    rua: Annotated[list[ReportURI], AfterValidator(_unique)] = Field(
        default_factory=list,
        max_length=4,
        json_schema_extra=_LIST_SET,
        description=(
            "Report URIs published in `_smtp._tls.<domain>`, `mailto:` or `https:` (RFC 8460 "
            "§3). BSI TR-03108 requires a `mailto:` URI and no `https:` one. Commas, `!` and `;` "
            "must be percent-encoded."
        ),
    )


class ComplianceSpec(_Model):
    """Continuous checking of the domain from outside against a standard."""

    profile: Literal["tr-03108", "baseline"] = Field(
        default="tr-03108",
        description=(
            "`tr-03108`: BSI TR-03108 v2.0 with TR-03116-4 (DNSSEC, DANE, STARTTLS and TLSRPT "
            "are MUST). `baseline`: the RFC requirements only. Default `tr-03108`."
        ),
    )
    interval: Duration = Field(
        default="1h",
        description="How often the domain is probed, 1m to 168h, e.g. `30m`. Default `1h`.",
    )


class MailDomainSpec(_Model):
    """The desired state of a mail domain: its MX hosts, certificate, DNS provider and policies."""

    domain: Hostname = Field(
        description=(
            "The mail domain (the part after `@`), lower case, A-labels for IDNs. Immutable: "
            "records, policies and reports are keyed by it."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "spec.domain is immutable"}
            ]
        },
    )
    mx: list[MXHost] = Field(
        min_length=1,
        max_length=10,
        description="The mail exchangers of the domain; each host appears once.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["host"],
        },
    )
    tls: TLSSpec = Field(description="The certificate served on SMTP and the policy endpoint.")

    @field_validator("mx")
    @classmethod
    def _mx_hosts_unique(cls, mx: list[MXHost]) -> list[MXHost]:
        _unique([entry.host for entry in mx])
        return mx

    dns: DNSSpec | None = Field(
        default=None,
        description=(
            "The DNS provider that publishes the domain's records. Without it, the records are "
            "expected to be published by hand."
        ),
    )
    # `default: {}` in the CRD lets the API server fill the nested defaults when a section is
    # omitted, so `kubectl get -o yaml` shows the values the operator acts on.
    dane: DANESpec = Field(
        default_factory=DANESpec, description=DANESpec.__doc__, json_schema_extra=_EMPTY_DEFAULT
    )
    mta_sts: MTASTSSpec = Field(
        default_factory=MTASTSSpec, description=MTASTSSpec.__doc__, json_schema_extra=_EMPTY_DEFAULT
    )
    tls_rpt: TLSRPTSpec = Field(
        default_factory=TLSRPTSpec, description=TLSRPTSpec.__doc__, json_schema_extra=_EMPTY_DEFAULT
    )
    compliance: ComplianceSpec = Field(
        default_factory=ComplianceSpec,
        description=ComplianceSpec.__doc__,
        json_schema_extra=_EMPTY_DEFAULT,
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(_Model):
    """One aspect of the resource's state, by the Kubernetes API conventions."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, strict=False
    )

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Type of the condition, e.g. `Ready`.",
    )
    status: ConditionStatus = Field(description="`True`, `False` or `Unknown`.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="A CamelCase word that says why the condition has its status.",
    )
    message: str = Field(default="", max_length=32768, description="Details for a person.")
    observed_generation: int = Field(
        default=0, ge=0, description="The `.metadata.generation` the condition was computed for."
    )
    last_transition_time: datetime = Field(
        description="When `status` last changed.",
    )


class MailDomainStatus(_Model):
    """The observed state of the mail domain, written by the operator only."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, strict=False
    )

    observed_generation: int = Field(
        default=0, ge=0, description="The `.metadata.generation` last reconciled."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        description="`Ready` and the conditions of each part of the domain.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )


class MailDomainResource:
    """CRD metadata of MailDomain that is not part of the schema."""

    printer_columns: ClassVar[list[dict[str, Any]]] = [
        {"name": "Domain", "type": "string", "jsonPath": ".spec.domain"},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {
            "name": "Compliant",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Compliant")].status',
        },
        {"name": "MTA-STS", "type": "string", "jsonPath": ".spec.mtaSts.mode"},
        {"name": "DANE", "type": "boolean", "jsonPath": ".spec.dane.enabled"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {
            "name": "Message",
            "type": "string",
            "priority": 1,
            "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
        },
    ]
