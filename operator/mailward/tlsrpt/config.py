"""The collector's configuration: what the operator renders into its ConfigMap.

One collector serves every MailDomain: it accepts reports whose policy domain is one of
`domains` or, for DANE, an MX host of one of them (`mxHosts`, rules in tlsrpt/attribution.py),
by mail to any mailbox at one of `mailboxDomains`, and by HTTPS POST.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mailward.tlsrpt.parse import Limits


class _Config(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Listen(_Config):
    address: str = "0.0.0.0"
    # Further addresses the same port is bound on: a collector on the host network binds every
    # address its domains publish for tlsrpt.<domain> (a wildcard would collide with other pods).
    extra_addresses: list[str] = Field(default_factory=list)
    port: int = Field(ge=0, le=65535)

    def addresses(self) -> list[str]:
        return [self.address, *self.extra_addresses]


class Certificate(_Config):
    cert_file: str
    key_file: str


class IntakeLimits(_Config):
    # A day's report of a very large sender is a few hundred KiB gzipped; 10 MiB is ample.
    message_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    compressed_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    inflated_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    json_depth: int = Field(default=16, ge=5, le=64)
    json_elements: int = Field(default=200_000, ge=100)
    # Per sending address: a sender delivers one report per domain and day (RFC 8460 §4.1),
    # so even a large provider's MTA pool sends a handful per minute.
    reports_per_minute: float = Field(default=60.0, gt=0)
    burst: int = Field(default=120, ge=1)

    def parse_limits(self) -> Limits:
        return Limits(
            compressed_bytes=self.compressed_bytes,
            inflated_bytes=self.inflated_bytes,
            json_depth=self.json_depth,
            json_elements=self.json_elements,
        )


class CollectorConfig(_Config):
    hostname: str = Field(description="The name the collector greets with (the rua MX host).")
    domains: list[str] = Field(description="Policy domains whose reports are accepted.")
    mx_hosts: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "The MX host names of each served domain: a DANE report names the MX host (the TLSA "
            "base domain) as its policy-domain (RFC 8460 §1.1), and counts for the served domain."
        ),
    )
    mailbox_domains: list[str] = Field(
        description="Domains of the rua mailboxes; mail to other domains is refused at RCPT."
    )
    smtp: Listen = Listen(port=25)
    https: Listen = Listen(port=443)
    api: Listen = Listen(port=9108)
    certificates: list[Certificate] = Field(default_factory=list)
    certificate_reload_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="How often the certificate files are looked at for a renewal.",
    )
    database: str = "sqlite:////var/lib/mailward-tlsrpt/reports.db"
    retention_days: int = Field(default=400, ge=1, le=3650)
    limits: IntakeLimits = IntakeLimits()
    dkim_resolver: str | None = Field(
        default=None, description="Resolver for DKIM key lookups; the system's when unset."
    )

    @classmethod
    def load(cls, path: Path) -> CollectorConfig:
        return cls.model_validate_json(path.read_text())
