"""The status of a MailDomain, written by the operator only (the parts' own status models are
compliance_status.py and tlsrpt_status.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from mailward.api.base import _Model
from mailward.api.certificates import CertificateStatus
from mailward.api.compliance_status import ComplianceStatus
from mailward.api.dkim import DKIMStatus
from mailward.api.tlsrpt_status import TLSRPTStatus


class PublishedMX(_Model):
    """One MX host as published: what an MX change keeps publishing until it may move."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, strict=False
    )

    host: str = Field(max_length=253, description="The MX host name.")
    priority: int = Field(default=10, ge=0, le=65535, description="The MX preference.")
    addresses: list[Annotated[str, Field(max_length=45)]] = Field(
        default_factory=list, max_length=8, description="Its A/AAAA addresses, if published."
    )


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
    mode: Literal["enforce", "testing", "none"] | None = Field(
        default=None, description="The mode of the policy last seen served."
    )
    max_age: int | None = Field(
        default=None, ge=0, description="The max_age of the policy last seen served, seconds."
    )
    served_since: datetime | None = Field(
        default=None, description="When the policy last seen served was first seen served."
    )
    earlier_policies_expire: datetime | None = Field(
        default=None,
        description=(
            "Until when senders may still hold a policy (enforce or testing) served before the "
            "current one: the time it was last seen served plus its max_age, the latest of "
            "them (RFC 8461 §8.3)."
        ),
    )
    earlier_enforce_expires: datetime | None = Field(
        default=None,
        description=(
            "The same for the earlier policies in mode enforce only: until then a sender may "
            "refuse an MX host they do not name, so the MX records wait."
        ),
    )
    mx_hosts: list[PublishedMX] | None = Field(
        default=None,
        max_length=10,
        description=(
            "The MX hosts the DNS part publishes: `spec.mx`, or during an MX change under an "
            "enforced policy the earlier ones, until the policy naming both has aged."
        ),
    )
    kept_mx: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=list,
        max_length=10,
        description=(
            "Names of MX hosts being replaced that the served policy keeps listing beside the "
            "spec's (the policy endpoint reads them here)."
        ),
    )
    mx_moved_time: datetime | None = Field(
        default=None,
        description="When the MX records were seen moved to `spec.mx` during an MX change.",
    )
    promoted_time: datetime | None = Field(
        default=None,
        description=(
            "Since when `enforce` is served although the spec says `testing` "
            "(`spec.mtaSts.promoteAfterSeconds`: the reports showed no MTA-STS failure)."
        ),
    )
    until: datetime | None = Field(
        default=None,
        description=(
            "When the running change ends: a withdrawal removes the `_mta-sts` record (or lets "
            "the deletion finish), an MX change moves the MX records or drops the old names."
        ),
    )


ConditionStatus = Literal["True", "False", "Unknown"]


def conditions_field(description: str, *, max_length: int) -> Any:
    """`status.conditions`: a list-map keyed by `type`, so that server-side apply merges the
    entries of different writers (the reconciler's and the compliance daemon's) instead of
    replacing the list."""
    return Field(
        default_factory=list,
        max_length=max_length,
        description=description,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )


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


class MailServerAttachment(_Model):
    """The MailServer serving the domain, as the MTA part last found it."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, strict=False
    )

    namespace: str = Field(max_length=63, description="Namespace of the MailServer.")
    name: str = Field(max_length=253, description="Name of the MailServer.")
    hosts: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=list,
        max_length=10,
        description=(
            "The fleet's MX hosts, which the domain's MX records and MTA-STS policy name (the "
            "policy endpoint reads them here)."
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
    conditions: list[Condition] = conditions_field(
        "`Ready` and the conditions of each part of the domain.", max_length=32
    )
    certificate: CertificateStatus | None = Field(
        default=None,
        description="The served certificate and its key rollover (the certificate part).",
    )
    dns: DNSStatus | None = Field(
        default=None, description="The domain's records in DNS (written by the DNS part)."
    )
    mail_server: MailServerAttachment | None = Field(
        default=None,
        description="The MailServer serving the domain, when attached (written by the MTA part).",
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
    dkim: DKIMStatus | None = Field(
        default=None, description="The managed DKIM keys and their phases (the dkim part)."
    )
