"""The tlsrpt part: what other MTAs' TLS reports say about the domain, as status and condition.

It reads the collector's evaluation (see adapters/tlsrpt_collector.py for why over its API),
writes `status.tlsRpt`, and sets `TLSReportsHealthy`: False when the share of failed sessions
passes `spec.tlsRpt.failureThresholdPercent`, naming the dominant failure type. A failure type
that was not in the previous status posts a Warning Event, once. Reports arrive all day, so the
part relies on the handler's periodic resync to pick new ones up; only when the collector
cannot be asked does it ask for an earlier retry.

Without a configured collector the part says nothing (no condition, no status): a cluster that
collects its reports elsewhere is not penalised for it.

Shares through `ctx.facts`: `tlsrpt.rua` (the effective report URIs, for whoever publishes
`_smtp._tls`).
"""

from __future__ import annotations

from mailward.adapters.tlsrpt_collector import CollectorUnavailable, ReportSummarySource
from mailward.api.tlsrpt_status import TLSRPTStatus
from mailward.conditions import Verdict
from mailward.parts import Event, PartResult, ReconcileContext
from mailward.tlsrpt.evaluate import DomainSummary
from mailward.tlsrpt.rua import effective_rua

TLS_REPORTS_HEALTHY = "TLSReportsHealthy"


def status_from_summary(summary: DomainSummary) -> TLSRPTStatus:
    return TLSRPTStatus.model_validate(
        {
            "reports7d": summary.reports_7d,
            "last24h": summary.last_24h.model_dump(),
            "last7d": summary.last_7d.model_dump(),
            "policies": [
                {
                    "policyType": p.policy_type,
                    "last24h": p.last_24h.model_dump(),
                    "last7d": p.last_7d.model_dump(),
                }
                for p in summary.policies
            ],
            "topFailures": [
                {"resultType": f.result_type, "sessions": f.sessions} for f in summary.top_failures
            ],
            "failureTypes": summary.failure_types[:32],
            "organisations": [o.name for o in summary.organisations][:16],
        }
    )


def reports_verdict(status: TLSRPTStatus, threshold_percent: int) -> Verdict:
    """Healthy unless the failed share of reported sessions passes the threshold."""
    window, counts = "24 hours", status.last24h
    if counts.successful + counts.failed == 0:
        window, counts = "7 days", status.last7d
    total = counts.successful + counts.failed
    if total == 0:
        return Verdict(
            TLS_REPORTS_HEALTHY,
            "True",
            "NoSessionsReported",
            "no TLS report covered the last 7 days; nothing reported failing",
        )
    percent = 100.0 * counts.failed / total
    summary = f"{counts.failed} of {total} sessions failed in the last {window} ({percent:.2f}%)"
    if percent > threshold_percent:
        dominant = status.top_failures[0] if status.top_failures else None
        cause = (
            f"; mostly {dominant.result_type} ({dominant.sessions} sessions)" if dominant else ""
        )
        return Verdict(
            TLS_REPORTS_HEALTHY,
            "False",
            "FailureRatioExceeded",
            f"{summary}, above {threshold_percent}%{cause}",
        )
    return Verdict(
        TLS_REPORTS_HEALTHY,
        "True",
        "FailureRatioWithinLimit",
        f"{summary}, within {threshold_percent}%",
    )


def new_failure_types(previous: TLSRPTStatus | None, current: TLSRPTStatus) -> list[str]:
    seen = set(previous.failure_types) if previous else set()
    return [t for t in current.failure_types if t not in seen]


class TLSRptPart:
    name = "tlsrpt"

    def __init__(self, source: ReportSummarySource | None, retry_seconds: float) -> None:
        self._source = source
        self._retry_seconds = retry_seconds

    async def reconcile(self, ctx: ReconcileContext) -> PartResult:
        ctx.facts["tlsrpt.rua"] = effective_rua(ctx.spec)
        if self._source is None:
            return PartResult([])
        domain = ctx.spec.domain
        try:
            summary = await self._source.summary(domain)
        except CollectorUnavailable as error:
            verdict = Verdict(
                TLS_REPORTS_HEALTHY,
                "Unknown",
                "CollectorUnavailable",
                f"the TLSRPT collector could not be asked: {error}",
            )
            return PartResult([verdict], retry_after=self._retry_seconds)
        if summary is None:
            verdict = Verdict(
                TLS_REPORTS_HEALTHY,
                "Unknown",
                "DomainNotCollected",
                f"the TLSRPT collector does not collect reports for {domain} yet",
            )
            return PartResult([verdict], retry_after=self._retry_seconds)
        status = status_from_summary(summary)
        verdict = reports_verdict(status, ctx.spec.tls_rpt.failure_threshold_percent)
        events = [
            Event(
                "Warning",
                "NewTLSFailureType",
                f"TLS reports for {domain} name a new failure type: {result_type}",
            )
            for result_type in new_failure_types(ctx.status.tls_rpt, status)
        ]
        # No retry_after: new reports are picked up by the handler's periodic resync.
        return PartResult(
            [verdict],
            status={"tlsRpt": status.model_dump(mode="json", by_alias=True)},
            events=events,
        )

    async def release(self, ctx: ReconcileContext) -> None:
        """Stored reports stay until the collector's retention removes them: they are evidence."""


def tlsrpt_part_from_env() -> TLSRptPart:
    """The part as the operator runs it: the collector's API URL from the environment
    (`MAILWARD_TLSRPT_COLLECTOR_URL`, e.g. http://mailward-tlsrpt.mailward-system:9108)."""
    import os

    from mailward.adapters.tlsrpt_collector import CollectorAPI

    url = os.environ.get("MAILWARD_TLSRPT_COLLECTOR_URL", "").strip()
    return TLSRptPart(
        CollectorAPI(url) if url else None,
        retry_seconds=float(os.environ.get("MAILWARD_TLSRPT_RETRY_SECONDS", "60")),
    )
