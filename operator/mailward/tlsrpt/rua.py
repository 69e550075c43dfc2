"""The report address of a domain when `spec.tlsRpt.rua` names none: the collector's mailbox.

The mailbox lives on its own host name, `tlsrpt.<domain>`, whose MX points at the collector,
not at the domain's MTA: TR-03108 (TR-RPT-02) wants the report-receiving MX to not enforce
DANE/MTA-STS, and a report about a broken MTA must not depend on that MTA to arrive.
"""

from __future__ import annotations

from mailward.api.v1alpha1 import MailDomainSpec

MAILBOX_LOCAL_PART = "tlsrpt"


def collector_host(domain: str) -> str:
    return f"tlsrpt.{domain}"


def collector_mailbox(domain: str) -> str:
    return f"mailto:{MAILBOX_LOCAL_PART}@{collector_host(domain)}"


def effective_rua(spec: MailDomainSpec) -> list[str]:
    """`spec.tlsRpt.rua`, or the collector's mailbox for the domain when it is empty."""
    return list(spec.tls_rpt.rua) or [collector_mailbox(spec.domain)]
