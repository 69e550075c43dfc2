"""`mailward.io/v1alpha1`: the MailDomain resource.

Every rule here exists twice on purpose: once in the generated CRD (pattern, bounds, CEL), so that
`kubectl apply` refuses bad input with a message naming the field, and once as pydantic validation,
so that the operator refuses an object that reached the cluster through an older or looser CRD.
A few rules are only here (the full grammar of report URIs): a CRD pattern can only approximate
them, and the operator reports the difference as `Ready=False`, reason `InvalidSpec`.

The shared types live in base.py, `spec.mta` in mta.py and the status in status.py; the status
models are re-exported here, where the rest of the operator imports them from.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from mailward.api.base import (
    _LIST_SET,
    HOSTNAME_MAX_LENGTH,
    HOSTNAME_PATTERN,
    Duration,
    Hostname,
    IPAddress,
    ObjectName,
    ReportURI,
    _Model,
    _unique,
    section,
)
from mailward.api.base import ProviderReference as ProviderReference
from mailward.api.base import parse_duration as parse_duration
from mailward.api.certificates import RolloverSpec, TLSSpec
from mailward.api.dkim import DKIMSpec
from mailward.api.mta import HOST_NETWORK_NEEDS_ADDRESSES, MTASpec
from mailward.api.status import Condition as Condition
from mailward.api.status import ConditionStatus as ConditionStatus
from mailward.api.status import DNSStatus as DNSStatus
from mailward.api.status import MailDomainStatus as MailDomainStatus
from mailward.api.status import MTASTSStatus as MTASTSStatus

API_GROUP = "mailward.io"
API_VERSION = "v1alpha1"
KIND = "MailDomain"
PLURAL = "maildomains"
SINGULAR = "maildomain"
SHORT_NAMES = ("md",)

ATTACHMENT_RULE = (
    "set either spec.mailServerRef (a MailServer serves the domain) or spec.mx and spec.tls "
    "(an MTA of its own); spec.mx must be empty with spec.mailServerRef"
)
# RFC 8461 §3.2: max_age is at most 31557600 seconds (about one year).
MTA_STS_MAX_AGE_LIMIT = 31557600


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


class MailServerReference(_Model):
    """The MailServer (MTA fleet) that serves the domain."""

    name: ObjectName = Field(description="Name of the MailServer.")
    namespace: ObjectName | None = Field(
        default=None,
        max_length=63,
        description=(
            "Namespace of the MailServer; the MailDomain's own when unset. The MailServer's "
            "`spec.allowedDomains` decides whether this namespace may attach."
        ),
    )


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
# A TLSA TTL of a few seconds makes a rollover test take seconds; real zones use minutes.
TLSA_TTL_MIN = 5
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
        ge=TLSA_TTL_MIN,
        le=DNS_TTL_MAX,
        description=(
            "TTL of the TLSA records. Short, so that a key rollover waits little (BSI TR-03108 "
            "§4.1.5 suggests 600 s; RFC 7671 §8.1 waits two TTLs). 5 to 86400 (below 60 only for "
            "test zones). Default 600."
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
    ttl: DNSTTLs = section(DNSTTLs)
    spf: SPFSpec = section(SPFSpec)
    dmarc: DMARCSpec = section(DMARCSpec)
    dkim: list[DKIMKey] = Field(
        default_factory=list,
        max_length=4,
        description="DKIM public keys to publish; none by default.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["selector"],
        },
    )
    srv: MUASRVSpec = section(MUASRVSpec)
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

    withdrawal_timeout: Duration = Field(
        default="10m",
        description=(
            "When the MailDomain is deleted, how long mailward keeps trying to withdraw its "
            "records (the server refuses or does not answer) before it lets the deletion finish "
            "and leaves them, saying which in a Warning Event `RecordsLeft`. 1m to 168h. "
            "Default `10m`. Records that were never published need no withdrawal."
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
    issuer_record: bool = Field(
        default=False,
        description=(
            "Also publish `2 1 1` for the key of the CA that issued the served certificate, "
            "beside the `3 1 1` records (BSI TR-03108 §4.1.5 recommends both). The served chain "
            "must then hold that CA's certificate (RFC 7671 §5.2.2), as cert-manager's chains "
            "and mailward's copy of them do. Default false."
        ),
    )
    rollover: RolloverSpec = section(RolloverSpec)


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
    aging_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MTA_STS_MAX_AGE_LIMIT,
        description=(
            "How long senders' cached copies of an earlier policy are waited for, at most, "
            "before a withdrawal (mode `none`, or the MailDomain deleted) removes the `_mta-sts` "
            "record and lets the deletion finish, or an MX change under `enforce` moves the MX "
            "records (and, after the move, before the old MX names leave the policy). Unset "
            "(default): the earlier policy's max_age, as RFC 8461 §8.3 asks; the time the MX "
            "records move waits for their TTL. A shorter value accepts that senders still holding "
            "the old policy may refuse a new MX host or miss the withdrawal. Seconds."
        ),
    )
    promote_after_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MTA_STS_MAX_AGE_LIMIT,
        description=(
            "With mode `testing`: serve `enforce` once the testing policy has been served this "
            "long and the TLS reports received for the domain in the last 7 days "
            "(`status.tlsRpt`, from the namespace's collector) count MTA-STS (`sts`) sessions "
            "and no failed one. The spec keeps saying `testing`; `status.mtaSts.promotedTime` "
            "says since when `enforce` is served (set `mode: enforce` to make it explicit). "
            "Unset (default): never. Seconds, e.g. 1209600 (two weeks)."
        ),
    )


def mx_pattern_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: `*.example.net` matches exactly one more label, not the bare name."""
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return host == pattern


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
                },
                {
                    "rule": (
                        "has(self.mailServerRef) ? !has(self.mx) || self.mx.size() == 0 : "
                        "has(self.mx) && self.mx.size() > 0 && has(self.tls)"
                    ),
                    "message": ATTACHMENT_RULE,
                },
                {
                    "rule": (
                        "!has(self.mta) || !has(self.mta.hostNetwork) || !self.mta.hostNetwork || "
                        "self.mx.exists(m, has(m.addresses) && m.addresses.size() > 0)"
                    ),
                    "message": HOST_NETWORK_NEEDS_ADDRESSES,
                    "fieldPath": ".mta.hostNetwork",
                },
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
        default_factory=list,
        max_length=10,
        description=(
            "The mail exchangers of the domain; each host appears once. Leave empty when "
            "`spec.mailServerRef` names a MailServer: the domain then uses the fleet's hosts."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["host"],
        },
    )
    tls: TLSSpec | None = Field(
        default=None,
        description=(
            "The certificate served on SMTP by the domain's own MTA and by the namespace's TLSRPT "
            "collector for `tlsrpt.<domain>`. Required with `spec.mx`; optional for a domain "
            "attached to a MailServer, whose MX hosts serve the fleet's certificate."
        ),
    )
    mail_server_ref: MailServerReference | None = Field(
        default=None,
        description=(
            "Attach the domain to a MailServer (an MTA fleet serving many domains) instead of "
            "running an MTA of its own: the MX records name the fleet's hosts, whose TLSA "
            "records the fleet publishes once. Set either this or `spec.mx`."
        ),
    )

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
    dane: DANESpec = section(DANESpec)
    mta_sts: MTASTSSpec = section(MTASTSSpec)
    tls_rpt: TLSRPTSpec = section(TLSRPTSpec)
    compliance: ComplianceSpec = section(ComplianceSpec)
    mta: MTASpec = section(MTASpec)
    dkim: DKIMSpec = section(DKIMSpec)

    def mx_addresses(self) -> list[str]:
        """Every address of `spec.mx`, in order, each once: what a host-network MTA binds."""
        return list(dict.fromkeys(a for entry in self.mx for a in entry.addresses))

    @model_validator(mode="after")
    def _own_mta_or_mail_server(self) -> MailDomainSpec:
        own = bool(self.mx) and self.tls is not None
        if self.mail_server_ref is not None and self.mx:
            raise ValueError(ATTACHMENT_RULE)
        if self.mail_server_ref is None and not own:
            raise ValueError(ATTACHMENT_RULE)
        return self

    @property
    def attached(self) -> bool:
        return self.mail_server_ref is not None

    @model_validator(mode="after")
    def _host_network_has_addresses(self) -> MailDomainSpec:
        if self.mta.host_network and self.mx and not self.mx_addresses():
            raise ValueError(HOST_NETWORK_NEEDS_ADDRESSES)
        return self

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
        {
            # When the served certificate expires: renewals and rollovers keep it in the future.
            "name": "Cert-Expires",
            "type": "string",
            "jsonPath": ".status.certificate.notAfter",
        },
        {"name": "DANE", "type": "boolean", "jsonPath": ".spec.dane.enabled"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {
            # The fleet serving the domain, if it is attached to one.
            "name": "MailServer",
            "type": "string",
            "priority": 1,
            "jsonPath": ".spec.mailServerRef.name",
        },
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
