"""The RFC 8460 §4 report document as pydantic models.

Strict where the RFC is strict: the required members, the three policy types, non-negative
counts, a date range that does not run backwards. Lenient where real reporters deviate: unknown
members are kept (`extra="allow"`), a missing `contact-info` or `policy-string` is tolerated,
counts sent as numeric strings are read as numbers, and a single `mx-host` string is read as a
one-element list. Result types outside the eleven of §4.3 are kept as reported, because the IANA
registry of result types may grow, but they must still look like a registry token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# RFC 8460 §4.3, in the RFC's order: negotiation, certificate, DANE, then MTA-STS failures.
RESULT_TYPES: tuple[str, ...] = (
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
    "tlsa-invalid",
    "dnssec-invalid",
    "dane-required",
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
)
POLICY_TYPES: tuple[str, ...] = ("tlsa", "sts", "no-policy-found")

PolicyType = Literal["tlsa", "sts", "no-policy-found"]

# A count in a report is a JSON number; a few reporters quote it. Beyond this it is garbage
# (and an attempt to overflow a BIGINT column).
MAX_SESSION_COUNT = 2**53


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


def _as_count(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, bool):
        raise ValueError("a session count is a number, not true/false")
    return value


class DateRange(_Lenient):
    start_datetime: datetime = Field(alias="start-datetime")
    end_datetime: datetime = Field(alias="end-datetime")

    @field_validator("start_datetime", "end_datetime")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # RFC 3339 times carry an offset; a reporter that leaves it off means UTC (§4.4).
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _ordered(self) -> DateRange:
        if self.end_datetime < self.start_datetime:
            raise ValueError("end-datetime lies before start-datetime")
        return self


class Policy(_Lenient):
    policy_type: PolicyType = Field(alias="policy-type")
    policy_string: list[str] = Field(default_factory=list, alias="policy-string", max_length=1000)
    policy_domain: str = Field(alias="policy-domain", min_length=1, max_length=253)
    mx_host: list[str] = Field(default_factory=list, alias="mx-host", max_length=1000)

    @field_validator("policy_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        # Domains compare case-insensitively; a trailing dot is the same domain.
        return value.strip().rstrip(".").lower()

    @field_validator("mx_host", "policy_string", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Summary(_Lenient):
    total_successful_session_count: int = Field(
        alias="total-successful-session-count", ge=0, le=MAX_SESSION_COUNT
    )
    total_failure_session_count: int = Field(
        alias="total-failure-session-count", ge=0, le=MAX_SESSION_COUNT
    )

    _counts = field_validator(
        "total_successful_session_count", "total_failure_session_count", mode="before"
    )(_as_count)


class FailureDetail(_Lenient):
    result_type: str = Field(alias="result-type", pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    sending_mta_ip: str | None = Field(default=None, alias="sending-mta-ip", max_length=64)
    receiving_mx_hostname: str | None = Field(
        default=None, alias="receiving-mx-hostname", max_length=255
    )
    receiving_mx_helo: str | None = Field(default=None, alias="receiving-mx-helo", max_length=255)
    receiving_ip: str | None = Field(default=None, alias="receiving-ip", max_length=64)
    failed_session_count: int = Field(alias="failed-session-count", ge=0, le=MAX_SESSION_COUNT)
    additional_information: str | None = Field(
        default=None, alias="additional-information", max_length=2048
    )
    failure_reason_code: str | None = Field(
        default=None, alias="failure-reason-code", max_length=1024
    )

    _count = field_validator("failed_session_count", mode="before")(_as_count)

    @field_validator("result_type", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class PolicyResult(_Lenient):
    policy: Policy
    summary: Summary
    failure_details: list[FailureDetail] = Field(
        default_factory=list, alias="failure-details", max_length=10000
    )


class Report(_Lenient):
    organization_name: str = Field(alias="organization-name", min_length=1, max_length=512)
    date_range: DateRange = Field(alias="date-range")
    contact_info: str = Field(default="", alias="contact-info", max_length=512)
    report_id: str = Field(alias="report-id", min_length=1, max_length=512)
    policies: list[PolicyResult] = Field(min_length=1, max_length=1000)

    def policy_domains(self) -> list[str]:
        return sorted({p.policy.policy_domain for p in self.policies})
