"""The check families: pure functions from `DomainObservations` to findings, one module each.

`judge()` runs them all and folds the findings into one `CheckResult` per catalog entry. Dates
(certificate expiry, the end of RSASSA-PKCS1-v1_5) are judged as of `observed_at`, so recorded
observations are judged the same way on any later day.
"""

from __future__ import annotations

from mailward.compliance.checks import (
    clients,
    dane,
    dnssec,
    email_auth,
    mtasts,
    smtp,
    tls,
    tlsrpt,
)
from mailward.compliance.checks.findings import Findings
from mailward.compliance.model import CheckResult
from mailward.compliance.observations import DomainObservations


def judge(obs: DomainObservations, profile: str) -> list[CheckResult]:
    f = Findings(profile)
    dnssec.judge(f, obs)
    smtp.judge(f, obs)
    tls.judge(f, obs)
    dane.judge(f, obs)
    mtasts.judge(f, obs)
    tlsrpt.judge(f, obs)
    email_auth.judge(f, obs)
    clients.judge(f, obs)
    return f.results()


__all__ = ["Findings", "judge"]
