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

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from mailward.api.compliance_status import ComplianceStatus
from mailward.api.tlsrpt_status import TLSRPTStatus

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


# RFC 7208 §4.5/§12: an SPF record; TR-03182 (TR-AUTH-01) wants it to end in `-all` or `~all`.
SPF_PATTERN = r"^v=spf1( [!-~]+)*? [-~]all$"
# RFC 6376 §3.1: a DKIM selector is one or more dot-separated labels.
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
DKIM_SELECTOR_PATTERN = rf"^{_DNS_LABEL}(?:\.{_DNS_LABEL})*$"
BASE64_PATTERN = r"^[A-Za-z0-9+/]+={0,2}$"
# TLSA: TR-03108 §4.1.5 suggests a short TTL (600 s) so that a key rollover is quick; the rest
# changes rarely. BIND's dnssec-policy caps zone TTLs at max-zone-ttl (one day by default).
DNS_TTL_MIN = 60
DNS_TTL_MAX = 86400
DEFAULT_RECORD_TTL = 3600
DEFAULT_TLSA_TTL = 600


class DNSTTLs(_Model):
    """TTLs of the published records, in seconds."""

    default: int = Field(
        default=DEFAULT_RECORD_TTL,
        ge=DNS_TTL_MIN,
        le=DNS_TTL_MAX,
        description=(
            "TTL of every record except TLSA: MX, A/AAAA, TXT (MTA-STS, TLSRPT, SPF, DMARC, "
            "DKIM) and SRV. 60 to 86400. Default 3600."
        ),
    )
    tlsa: int = Field(
        default=DEFAULT_TLSA_TTL,
        ge=DNS_TTL_MIN,
        le=DNS_TTL_MAX,
        description=(
            "TTL of the TLSA records. Short, so that a key rollover waits little (BSI TR-03108 "
            "§4.1.5 suggests 600 s; RFC 7671 §8.1 waits two TTLs). 60 to 86400. Default 600."
        ),
    )


class SPFSpec(_Model):
    """The SPF record of the domain (RFC 7208), a TXT record at `<domain>`."""

    enabled: bool = Field(default=True, description="Publish the SPF record. Default true.")
    record: str = Field(
        default="v=spf1 mx -all",
        min_length=11,
        max_length=450,
        pattern=SPF_PATTERN,
        description=(
            "The whole record, starting `v=spf1` and ending in `-all` or `~all` (BSI TR-03182 "
            "forbids `?all` and `+all`). Default `v=spf1 mx -all`: only the MX hosts send."
        ),
    )


class DMARCSpec(_Model):
    """The DMARC policy of the domain (RFC 7489), a TXT record at `_dmarc.<domain>`."""

    enabled: bool = Field(default=True, description="Publish the DMARC record. Default true.")
    policy: Literal["reject", "quarantine", "none"] = Field(
        default="reject",
        description=(
            "`p=`: what receivers do with mail failing DMARC. BSI TR-03182 wants `reject` "
            "(`quarantine` tolerated). Default `reject`."
        ),
    )
    rua: Annotated[list[ReportURI], AfterValidator(_unique)] = Field(
        default_factory=list,
        max_length=4,
        json_schema_extra=_LIST_SET,
        description=(
            "Aggregate report URIs (`rua=`). BSI TR-03182 makes them a MUST; commas and `!` "
            "must be percent-encoded."
        ),
    )


class DKIMKey(_Model):
    """One DKIM public key, published at `<selector>._domainkey.<domain>` (RFC 6376 §3.6)."""

    selector: str = Field(
        min_length=1,
        max_length=63,
        pattern=DKIM_SELECTOR_PATTERN,
        description="The selector (`s=` of the signatures), lower case.",
    )
    key_type: Literal["rsa", "ed25519"] = Field(
        default="rsa", description="`k=`: `rsa` or `ed25519` (RFC 8463). Default `rsa`."
    )
    public_key: str = Field(
        min_length=40,
        max_length=1024,
        pattern=BASE64_PATTERN,
        description="`p=`: the public key in base64 (RSA: DER SubjectPublicKeyInfo).",
    )


class SRVTarget(_Model):
    """Where a mail client finds a service (RFC 6186)."""

    target: Hostname = Field(description="Host name offering the service.")
    port: int = Field(ge=1, le=65535, description="TCP port of the service.")


class MUASRVSpec(_Model):
    """SRV records for mail clients (RFC 6186, RFC 8314); an omitted service is published with target `.`, "not offered here"."""  # noqa: E501

    submissions: SRVTarget | None = Field(
        default=None, description="`_submissions._tcp`: implicit-TLS submission, usually 465."
    )
    submission: SRVTarget | None = Field(
        default=None, description="`_submission._tcp`: STARTTLS submission, usually 587."
    )
    imaps: SRVTarget | None = Field(default=None, description="`_imaps._tcp`, usually 993.")
    pop3s: SRVTarget | None = Field(
        default=None, alias="pop3s", description="`_pop3s._tcp`, usually 995."
    )


class HostTarget(_Model):
    """Where one name of the domain points: its own A/AAAA records, or a CNAME."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.addresses) != has(self.cname)",
                    "message": "set exactly one of addresses or cname",
                }
            ]
        }
    )

    addresses: Annotated[list[IPAddress], AfterValidator(_unique)] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        json_schema_extra=_LIST_SET,
        description="A/AAAA records for the name.",
    )
    cname: Hostname | None = Field(
        default=None,
        description="A CNAME for the name, when the service has a name of its own elsewhere.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> HostTarget:
        if (self.addresses is None) == (self.cname is None):
            raise ValueError("set exactly one of addresses or cname")
        return self


class DNSSpec(_Model):
    """How the domain's records (MX, TLSA, MTA-STS, TLSRPT, SPF, DMARC, SRV) are published."""

    provider_ref: ProviderReference = Field(
        description="The DNS provider that owns the zone of `spec.domain`."
    )
    ttl: DNSTTLs = Field(
        default_factory=DNSTTLs, description=DNSTTLs.__doc__, json_schema_extra=_EMPTY_DEFAULT
    )
    spf: SPFSpec = Field(
        default_factory=SPFSpec, description=SPFSpec.__doc__, json_schema_extra=_EMPTY_DEFAULT
    )
    dmarc: DMARCSpec = Field(
        default_factory=DMARCSpec, description=DMARCSpec.__doc__, json_schema_extra=_EMPTY_DEFAULT
    )
    dkim: list[DKIMKey] = Field(
        default_factory=list,
        max_length=4,
        description="DKIM public keys to publish; none by default.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["selector"],
        },
    )
    srv: MUASRVSpec = Field(
        default_factory=MUASRVSpec,
        description=MUASRVSpec.__doc__,
        json_schema_extra=_EMPTY_DEFAULT,
    )
    mta_sts_endpoint: HostTarget | None = Field(
        default=None,
        description=(
            "Where `mta-sts.<domain>` and `autoconfig.<domain>` point (the policy endpoint, "
            "RFC 8461 §3.3 allows a CNAME). Without it, no record is published for those names."
        ),
    )
    tls_rpt_collector: HostTarget | None = Field(
        default=None,
        description=(
            "Where `tlsrpt.<domain>`, the host of the default TLSRPT mailbox "
            "(`mailto:tlsrpt@tlsrpt.<domain>`), points: the public address of the namespace's "
            "TLSRPT collector. With addresses, `tlsrpt.<domain>` gets A/AAAA records and an MX "
            "naming itself; with a CNAME, mail follows the alias (RFC 5321 §5.1). No TLSA is "
            "published there: the report mailbox should not enforce DANE (TR-03108-10-M). "
            "Without it, the address the collector's LoadBalancer Service was given is "
            "published, if the operator runs the collector with one; otherwise nothing."
        ),
    )

    @field_validator("dkim")
    @classmethod
    def _dkim_selectors_unique(cls, keys: list[DKIMKey]) -> list[DKIMKey]:
        _unique([key.selector for key in keys])
        return keys


class DANESpec(_Model):
    """DANE for SMTP (RFC 7672): TLSA records that pin the MTA's key, signed with DNSSEC."""

    enabled: bool = Field(
        default=True,
        description=(
            "Publish `3 1 1` TLSA records for every MX host. BSI TR-03108 makes DANE a MUST; "
            "disable only while the zone cannot be signed. Default true."
        ),
    )


# RFC 8461 §3.2 `mx` pattern: a host name, or `*.` and a host name (wildcard as a whole label).
MX_PATTERN_PATTERN = r"^(?:\*\.)?" + HOSTNAME_PATTERN[1:]
MXPattern = Annotated[
    str,
    Field(min_length=1, max_length=HOSTNAME_MAX_LENGTH, pattern=MX_PATTERN_PATTERN),
]


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
    mx_patterns: Annotated[list[MXPattern], AfterValidator(_unique)] = Field(
        default_factory=list,
        max_length=10,
        json_schema_extra=_LIST_SET,
        description=(
            "The policy's `mx:` lines (RFC 8461 §3.2): host names or `*.`-prefixed patterns "
            "(the wildcard only as the whole left-most label), lower case, A-labels. Empty "
            "(default): one line per host in `spec.mx`. Every host in `spec.mx` must match one."
        ),
    )


def mx_pattern_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: `*.example.net` matches exactly one more label, not the bare name."""
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return host == pattern


class MTASTSStatus(_Model):
    """What the MTA-STS policy endpoint serves for the domain (written by the mtasts part)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, strict=False
    )

    policy_id: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^[A-Za-z0-9]{1,32}$",
        description=(
            "The id of the policy the endpoint was last seen serving; the `_mta-sts` TXT record "
            "announces this id, never one that is not served yet."
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
            "§3). Empty (the default): the mailbox of the namespace's TLSRPT collector, "
            "`mailto:tlsrpt@tlsrpt.<domain>` (see `spec.dns.tlsRptCollector`). BSI TR-03108 "
            "requires a `mailto:` URI and no `https:` one. Commas, `!` and `;` must be "
            "percent-encoded."
        ),
    )
    failure_threshold_percent: int = Field(
        default=5,
        ge=0,
        le=100,
        description=(
            "`TLSReportsHealthy` turns False when more than this percentage of the reported TLS "
            "sessions failed (last 24 hours, or 7 days when no report covers the last day). "
            "Default 5."
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


# Kubernetes resource quantities (a subset: plain numbers, milli, binary and decimal suffixes).
QUANTITY_PATTERN = r"^[0-9]+(?:\.[0-9]+)?(?:m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
STORAGE_PATTERN = r"^[0-9]+(?:Mi|Gi|Ti)$"
# An OCI image reference: [registry[:port]/]path[:tag][@sha256:digest].
IMAGE_PATTERN = (
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
DEFAULT_MTA_IMAGE = "mailward/mta:0.1.0"


class MTAResources(_Model):
    """CPU and memory of each MTA pod (requests; memory is also the limit)."""

    cpu: str = Field(
        default="100m",
        max_length=16,
        pattern=QUANTITY_PATTERN,
        description="CPU request, a Kubernetes quantity such as `100m` or `1`. Default `100m`.",
    )
    memory: str = Field(
        default="256Mi",
        max_length=16,
        pattern=QUANTITY_PATTERN,
        description="Memory request and limit, e.g. `256Mi`. Default `256Mi`.",
    )


class MTAStorage(_Model):
    """The PersistentVolume of each MTA pod: its mail queue and mailboxes survive restarts."""

    size: str = Field(
        default="1Gi",
        max_length=16,
        pattern=STORAGE_PATTERN,
        description="Size of the queue volume, e.g. `1Gi` (Mi, Gi or Ti). Default `1Gi`.",
    )
    storage_class_name: ObjectName | None = Field(
        default=None, description="StorageClass of the volume; the cluster default when unset."
    )


class MTASpec(_Model):
    """The Postfix MTA that mailward runs for the domain (a StatefulSet)."""

    enabled: bool = Field(
        default=True,
        description="Run an MTA for the domain. Disable when the MX hosts are run elsewhere.",
    )
    replicas: int = Field(
        default=1, ge=1, le=10, description="Number of MTA pods, 1 to 10. Default 1."
    )
    image: str = Field(
        default=DEFAULT_MTA_IMAGE,
        min_length=1,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description=(
            "The MTA image, built from `images/mta/` (Debian's Postfix and the DANE-first "
            f"TLS policy sidecar). Default `{DEFAULT_MTA_IMAGE}`."
        ),
    )
    resources: MTAResources = Field(
        default_factory=MTAResources,
        description=MTAResources.__doc__,
        json_schema_extra=_EMPTY_DEFAULT,
    )
    storage: MTAStorage = Field(
        default_factory=MTAStorage,
        description=MTAStorage.__doc__,
        json_schema_extra=_EMPTY_DEFAULT,
    )
    accounts_secret_name: ObjectName | None = Field(
        default=None,
        description=(
            "A Secret in the MailDomain's namespace with one key per account: the key is the "
            "local part (`alice` for alice@<domain>), the value its password. Each account may "
            "submit mail on 465/587 as itself and has a mailbox. Without it only postmaster@ "
            "and abuse@ exist and nobody can submit."
        ),
    )
    message_size_limit: int = Field(
        default=25 * 1024 * 1024,
        ge=1024 * 1024,
        le=200 * 1024 * 1024,
        description="Largest message accepted, in bytes: 1 MiB to 200 MiB. Default 25 MiB.",
    )
    hide_submission_client: bool = Field(
        default=True,
        description=(
            "Drop the submitting client's address and reverse name from the Received header "
            "of submitted mail (RFC 5321 §7.6). Default true."
        ),
    )
    mta_sts_fallback: bool = Field(
        default=True,
        description=(
            "Authenticate outbound TLS by MTA-STS (RFC 8461) for destinations that have no "
            "DNSSEC-signed TLSA records; DANE always wins where it exists. Default true."
        ),
    )


class MailDomainSpec(_Model):
    """The desired state of a mail domain: its MX hosts, certificate, DNS provider and policies."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "!has(self.mtaSts) || !has(self.mtaSts.mxPatterns) || "
                        "self.mtaSts.mxPatterns.size() == 0 || self.mx.all(m, "
                        "self.mtaSts.mxPatterns.exists(p, p == m.host || (p.startsWith('*.') "
                        "&& m.host.indexOf('.') > 0 "
                        "&& m.host.substring(m.host.indexOf('.') + 1) == p.substring(2))))"
                    ),
                    "message": "every spec.mx host must match one of spec.mtaSts.mxPatterns",
                }
            ]
        }
    )

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
    mta: MTASpec = Field(
        default_factory=MTASpec, description=MTASpec.__doc__, json_schema_extra=_EMPTY_DEFAULT
    )

    @model_validator(mode="after")
    def _mx_covered_by_mta_sts_patterns(self) -> MailDomainSpec:
        # An enforced policy that names no pattern for one of the MX hosts makes senders refuse
        # to deliver to that host (RFC 8461 §4.1).
        patterns = self.mta_sts.mx_patterns
        for index, entry in enumerate(self.mx):
            if patterns and not any(mx_pattern_matches(p, entry.host) for p in patterns):
                raise ValueError(
                    f"spec.mx[{index}].host {entry.host!r} matches no spec.mtaSts.mxPatterns entry"
                )
        return self


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


class DNSStatus(_Model):
    """What the DNS part published for the domain, in short."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, strict=False
    )

    provider: str = Field(
        default="", max_length=300, description="The provider used, e.g. `DNSProvider/local-bind`."
    )
    zone: str = Field(default="", max_length=254, description="The zone the records live in.")
    record_sets: int = Field(
        default=0,
        ge=0,
        description="How many RRsets (name and type) mailward owns there.",
    )
    records: int = Field(default=0, ge=0, description="How many records those RRsets hold.")
    last_change_time: datetime | None = Field(
        default=None, description="When mailward last changed the zone for this domain."
    )
    conflicts: list[Annotated[str, Field(max_length=300)]] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "RRsets mailward wants but does not own (`<name> <type>`): they are left as they are."
        ),
    )
    unpublished: list[Annotated[str, Field(max_length=300)]] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Records that cannot be published with this provider or zone (`<name> <type>: why`)."
        ),
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
    dns: DNSStatus | None = Field(
        default=None, description="The domain's records in DNS (written by the DNS part)."
    )
    mta_sts: MTASTSStatus | None = Field(
        default=None, description="The MTA-STS policy being served (written by the mtasts part)."
    )
    tls_rpt: TLSRPTStatus | None = Field(
        default=None, description="What the received TLS reports say (written by the tlsrpt part)."
    )
    compliance: ComplianceStatus | None = Field(
        default=None, description="The last check from outside (written by the compliance part)."
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
            # What other MTAs report about TLS to the domain (RFC 8460), from the collector.
            "name": "TLS-Reports",
            "type": "string",
            "priority": 1,
            "jsonPath": '.status.conditions[?(@.type=="TLSReportsHealthy")].status',
        },
        {
            "name": "Message",
            "type": "string",
            "priority": 1,
            "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
        },
    ]
