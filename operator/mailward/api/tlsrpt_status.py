"""`status.tlsRpt`: what the TLS reports received for the domain say (written by the tlsrpt part).

Kept in its own module so the collector's evaluation and the MailDomain API share one wire form
without the API module growing every part's detail.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Status(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True, strict=False
    )


class SessionCounts(_Status):
    """TLS sessions that sending MTAs reported, as the reports' summaries count them."""

    successful: int = Field(
        default=0, ge=0, description="Sessions that negotiated TLS as required."
    )
    failed: int = Field(default=0, ge=0, description="Sessions that failed (RFC 8460 §4.3 types).")


class FailureTypeCount(_Status):
    result_type: str = Field(
        max_length=64, description="An RFC 8460 §4.3 result type, e.g. `certificate-expired`."
    )
    sessions: int = Field(ge=0, description="Failed sessions of this type.")


class PolicyTypeCounts(_Status):
    policy_type: str = Field(
        max_length=32, description="`tlsa` (DANE), `sts` (MTA-STS) or `no-policy-found`."
    )
    last24h: SessionCounts = Field(
        alias="last24h", description="Sessions in reports that ended in the last 24 hours."
    )
    last7d: SessionCounts = Field(
        alias="last7d", description="Sessions in reports that ended in the last 7 days."
    )


class TLSRPTStatus(_Status):
    """What other operators' MTAs reported about TLS with this domain (RFC 8460 reports)."""

    reports7d: int = Field(
        default=0, ge=0, alias="reports7d", description="Policy reports received for 7 days."
    )
    last24h: SessionCounts = Field(
        default_factory=SessionCounts, alias="last24h", description="All policy types, 24 hours."
    )
    last7d: SessionCounts = Field(
        default_factory=SessionCounts, alias="last7d", description="All policy types, 7 days."
    )
    policies: list[PolicyTypeCounts] = Field(
        default_factory=list, max_length=8, description="The counts per policy type."
    )
    top_failures: list[FailureTypeCount] = Field(
        default_factory=list,
        max_length=16,
        description="The most frequent failure result types over 7 days, most frequent first.",
    )
    failure_types: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        max_length=32,
        description="Every failure result type reported in 7 days (a new one posts an Event).",
    )
    organisations: list[Annotated[str, Field(max_length=512)]] = Field(
        default_factory=list,
        max_length=16,
        description="The organisations that sent reports in 7 days, most reports first.",
    )
