"""`mailward.io/v1alpha1` MailServer: one MTA fleet that serves many MailDomains.

The split is Gateway API's: a platform team owns the MailServer (its MX names, addresses,
certificate, pods) and says which namespaces may attach domains (`spec.allowedDomains`, like a
Gateway's `allowedRoutes`); domain owners attach a MailDomain by `spec.mailServerRef`. The fleet
serves every attached domain it allows, and a change of that set is reloaded, never rolled.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from mailward.api.base import (
    _LIST_SET,
    Hostname,
    IPAddress,
    ObjectName,
    ProviderReference,
    _Model,
    _unique,
    section,
)
from mailward.api.mta import IMAGE_PATTERN, MTAResources, MTAStorage
from mailward.api.status import Condition, conditions_field
from mailward.api.tlsrpt_sending import TLSReportSending

MAILSERVER_KIND = "MailServer"
MAILSERVER_PLURAL = "mailservers"
MAILSERVER_SINGULAR = "mailserver"
MAILSERVER_SHORT_NAMES = ("ms",)

# A label key (optional DNS prefix, then a name) and value, as metav1.LabelSelector takes them.
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
LabelKey = Annotated[str, Field(min_length=1, max_length=317, pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]


class FleetHost(_Model):
    """One MX name of the fleet: attached domains publish `MX <priority> <host>`."""

    host: Hostname = Field(
        description=(
            "Host name of the mail exchanger. The fleet's certificate must name it; DANE "
            "publishes its TLSA record once, at `_25._tcp.<host>`, for every domain it serves."
        )
    )
    priority: int = Field(
        default=10, ge=0, le=65535, description="MX preference (RFC 5321 §5.1). Default 10."
    )
    addresses: Annotated[list[IPAddress], AfterValidator(_unique)] = Field(
        default_factory=list,
        max_length=8,
        json_schema_extra=_LIST_SET,
        description=(
            "Addresses of the host, published as A/AAAA records with `spec.dns`. With "
            "`spec.hostNetwork` the pods of this host bind exactly these addresses."
        ),
    )


class LabelSelectorRequirement(_Model):
    """One `matchExpressions` entry of a label selector."""

    key: LabelKey = Field(description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="`In`, `NotIn`, `Exists` or `DoesNotExist`."
    )
    values: list[LabelValue] = Field(
        default_factory=list,
        max_length=64,
        description="Values for `In` and `NotIn`; empty for `Exists` and `DoesNotExist`.",
    )

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        needs_values = self.operator in ("In", "NotIn")
        if needs_values and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if not needs_values and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(_Model):
    """A Kubernetes label selector: every `matchLabels` pair and every expression must hold."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Labels the namespace must carry with these values.",
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=16, description="Set-based requirements."
    )

    @field_validator("match_labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            if len(key) > 317 or not re.fullmatch(LABEL_KEY_PATTERN, key):
                raise ValueError(f"{key!r} is not a label key")
        return labels

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        for requirement in self.match_expressions:
            present = requirement.key in labels
            value = labels.get(requirement.key)
            if requirement.operator == "Exists" and not present:
                return False
            if requirement.operator == "DoesNotExist" and present:
                return False
            if requirement.operator == "In" and value not in requirement.values:
                return False
            if requirement.operator == "NotIn" and present and value in requirement.values:
                return False
        return True

    def describe(self) -> str:
        terms = [f"{key}={value}" for key, value in sorted(self.match_labels.items())]
        for r in self.match_expressions:
            values = f" ({','.join(r.values)})" if r.values else ""
            terms.append(f"{r.key} {r.operator}{values}")
        return ", ".join(terms) or "(every namespace)"


class AllowedNamespaces(_Model):
    """Which namespaces may attach MailDomains, as Gateway API's `allowedRoutes.namespaces`."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.from) && self.from == 'Selector') == has(self.selector)",
                    "message": "selector is required with from: Selector and allowed only then",
                }
            ]
        }
    )

    from_: Literal["Same", "All", "Selector"] = Field(
        default="Same",
        alias="from",
        description=(
            "`Same`: only the MailServer's own namespace. `All`: every namespace. `Selector`: "
            "namespaces whose labels match `selector`. Default `Same`."
        ),
    )
    selector: LabelSelector | None = Field(
        default=None, description="The namespaces' label selector, with `from: Selector`."
    )

    @model_validator(mode="after")
    def _selector_with_from(self) -> AllowedNamespaces:
        if (self.from_ == "Selector") != (self.selector is not None):
            raise ValueError("selector is required with from: Selector and allowed only then")
        return self


class AllowedDomains(_Model):
    """Which MailDomains may attach to the fleet."""

    namespaces: AllowedNamespaces = section(AllowedNamespaces)


class FleetDNSSpec(_Model):
    """Where the fleet's own records (A/AAAA and TLSA of each host) are published."""

    provider_ref: ProviderReference = Field(
        description="The DNS provider owning the zone(s) of the host names."
    )
    ttl: int = Field(
        default=3600, ge=60, le=86400, description="TTL of the A/AAAA records. Default 3600."
    )
    tlsa_ttl: int = Field(
        default=600,
        ge=60,
        le=86400,
        description="TTL of the TLSA records (short: RFC 7671 §8.1 waits two). Default 600.",
    )


class FleetTLSSpec(_Model):
    """The certificate every pod of the fleet serves."""

    secret_name: ObjectName = Field(
        description=(
            "A `kubernetes.io/tls` Secret in the MailServer's namespace whose certificate names "
            "every host of `spec.hosts`. Its key is what the TLSA records pin (`3 1 1`)."
        )
    )


class MailServerSpec(_Model):
    """The fleet: MX names and addresses, pods, certificate and who may attach domains."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "!has(self.hostNetwork) || !self.hostNetwork || "
                        "self.hosts.all(h, has(h.addresses) && h.addresses.size() > 0)"
                    ),
                    "message": "spec.hostNetwork requires addresses for every spec.hosts[] entry",
                    "fieldPath": ".hostNetwork",
                }
            ]
        }
    )

    hosts: list[FleetHost] = Field(
        min_length=1,
        max_length=10,
        description="The fleet's MX names; each host appears once.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["host"],
        },
    )
    replicas: int = Field(
        default=2,
        ge=1,
        le=20,
        description=(
            "Pods per StatefulSet. Without `hostNetwork` one StatefulSet serves every host name "
            "behind one Service; with it, each host has a StatefulSet of its own whose pods "
            "bind that host's addresses, one pod per node. Default 2."
        ),
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=IMAGE_PATTERN,
        description="The MTA image; unset: the operator's own (the chart's `mta.image`).",
    )
    resources: MTAResources = section(MTAResources)
    storage: MTAStorage = section(MTAStorage)
    host_network: bool = Field(
        default=False,
        description=(
            "Expose the fleet on the nodes' network instead of a Service of type LoadBalancer "
            "with `externalTrafficPolicy: Local`: each host's pods bind its addresses, which "
            "must be configured on the node (protect the ports with the host's firewall, "
            "NetworkPolicies do not apply). Default false."
        ),
    )
    tls: FleetTLSSpec = Field(description=FleetTLSSpec.__doc__)
    dns: FleetDNSSpec | None = Field(
        default=None,
        description=(
            "Publish the hosts' A/AAAA and TLSA records through a DNS provider; without it they "
            "are published by hand."
        ),
    )
    dane: bool = Field(
        default=True,
        description="Publish `3 1 1` TLSA records for every host (BSI TR-03108: MUST).",
    )
    allowed_domains: AllowedDomains = section(AllowedDomains)
    message_size_limit: int = Field(
        default=25 * 1024 * 1024,
        ge=1024 * 1024,
        le=200 * 1024 * 1024,
        description="Largest message accepted, in bytes, for every domain. Default 25 MiB.",
    )
    hide_submission_client: bool = Field(
        default=True,
        description="Drop the submitting client's address from Received (RFC 5321 §7.6).",
    )
    mta_sts_fallback: bool = Field(
        default=True,
        description="MTA-STS (RFC 8461) for destinations without DANE. Default true.",
    )

    tls_reports: TLSReportSending = section(TLSReportSending)

    @field_validator("hosts")
    @classmethod
    def _hosts_unique(cls, hosts: list[FleetHost]) -> list[FleetHost]:
        _unique([entry.host for entry in hosts])
        return hosts

    @model_validator(mode="after")
    def _host_network_has_addresses(self) -> MailServerSpec:
        if self.host_network:
            for index, entry in enumerate(self.hosts):
                if not entry.addresses:
                    raise ValueError(
                        f"spec.hostNetwork requires addresses: spec.hosts[{index}] "
                        f"({entry.host}) has none"
                    )
        return self


class MailServerStatus(_Model):
    """The observed state of the fleet, written by the operator only."""

    model_config = ConfigDict(extra="ignore", strict=False)

    observed_generation: int = Field(
        default=0, ge=0, description="The `.metadata.generation` last reconciled."
    )
    conditions: list[Condition] = conditions_field(
        "`Ready` and the fleet's conditions.", max_length=16
    )
    attached_domains: int = Field(default=0, ge=0, description="MailDomains the fleet serves.")
    refused_domains: int = Field(
        default=0,
        ge=0,
        description="MailDomains that name this MailServer but may not attach.",
    )
    replicas: int = Field(default=0, ge=0, description="Pods of the fleet.")
    ready_replicas: int = Field(default=0, ge=0, description="Pods that are ready.")
    domains_digest: str = Field(
        default="",
        max_length=64,
        description="SHA-256 of the domain tables the fleet was last given.",
    )


class MailServerResource:
    """CRD metadata of MailServer that is not part of the schema."""

    printer_columns: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {"name": "Domains", "type": "integer", "jsonPath": ".status.attachedDomains"},
        {"name": "Refused", "type": "integer", "jsonPath": ".status.refusedDomains"},
        {"name": "Pods", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "Hosts", "type": "string", "jsonPath": ".spec.hosts[*].host"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {
            "name": "Message",
            "type": "string",
            "priority": 1,
            "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
        },
    ]
