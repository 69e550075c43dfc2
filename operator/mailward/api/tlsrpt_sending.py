"""TLSRPT sending (RFC 8460) by an MTA: `spec.mta.tlsReports` of a MailDomain and
`spec.tlsReports` of a MailServer (render/tlsrpt_sending.py, docs/tlsrpt-sending.md)."""

from __future__ import annotations

from pydantic import Field

from mailward.api.base import _Model

# Free text on one line, without `%` (the reporter's configuration file would read it as an
# interpolation) and without control characters.
ORGANIZATION_PATTERN = r"^[^\x00-\x1f\x7f%]+$"
# RFC 8460 §4.4 contact-info: "an email address or website"; mailward also sends from it, so
# an address.
CONTACT_PATTERN = r"^[A-Za-z0-9.!#$&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$"


class TLSReportSending(_Model):
    """Daily TLSRPT reports (RFC 8460, TR-03108) on this MTA's outbound TLS, to each rua."""

    enabled: bool = Field(
        default=True,
        description=(
            "Report each outbound TLS session (DANE `tlsa`, MTA-STS `sts` or `no-policy-found`, "
            "success or the failure's result type) and send the day's reports after each UTC "
            "midnight: `mailto:` through this MTA, `https:` by POST. Default true."
        ),
    )
    organization_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=ORGANIZATION_PATTERN,
        description="`organization-name` of the reports. Unset: the MTA's domain.",
    )
    contact_info: str | None = Field(
        default=None,
        max_length=254,
        pattern=CONTACT_PATTERN,
        description=(
            "`contact-info` of the reports, also their sender (From and envelope sender, so a "
            "report that bounces reaches it). Unset: postmaster@ the MTA's domain."
        ),
    )
