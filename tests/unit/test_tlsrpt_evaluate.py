"""Evaluation of stored rows, and the tlsrpt part's verdicts and events, with plain values."""

from __future__ import annotations

from mailward.api.tlsrpt_status import TLSRPTStatus
from mailward.parts.tlsrpt import new_failure_types, reports_verdict, status_from_summary
from mailward.tlsrpt.evaluate import DAY, format_table, summarise
from mailward.tlsrpt.store import FailureRow, PolicyRow

NOW = 1_800_000_000


def _summary():  # type: ignore[no-untyped-def]
    policies = [
        PolicyRow("sts", "Google Inc.", 1000, 10, NOW - 3600),
        PolicyRow("tlsa", "Microsoft Corporation", 500, 40, NOW - 3600),
        PolicyRow("tlsa", "Microsoft Corporation", 700, 0, NOW - 3 * DAY),
        PolicyRow("sts", "Old Org", 9999, 9999, NOW - 8 * DAY),  # outside 7 days
    ]
    failures = [
        FailureRow("sts", "sts-policy-fetch-error", 10, NOW - 3600),
        FailureRow("tlsa", "tlsa-invalid", 30, NOW - 3600),
        FailureRow("tlsa", "dnssec-invalid", 10, NOW - 3600),
        FailureRow("sts", "certificate-expired", 9999, NOW - 8 * DAY),
    ]
    return summarise("example.test", policies, failures, now=NOW)


def test_windows_policy_types_top_failures_and_organisations() -> None:
    summary = _summary()
    assert summary.last_24h.model_dump() == {"successful": 1500, "failed": 50}
    assert summary.last_7d.model_dump() == {"successful": 2200, "failed": 50}
    by_type = {p.policy_type: p for p in summary.policies}
    assert by_type["tlsa"].last_7d.successful == 1200
    assert [(f.result_type, f.sessions) for f in summary.top_failures] == [
        ("tlsa-invalid", 30),
        ("dnssec-invalid", 10),
        ("sts-policy-fetch-error", 10),
    ]
    assert summary.failure_types == ["dnssec-invalid", "sts-policy-fetch-error", "tlsa-invalid"]
    assert [(o.name, o.reports) for o in summary.organisations] == [
        ("Microsoft Corporation", 2),
        ("Google Inc.", 1),
    ]
    assert "total" in format_table(summary)


def test_verdict_names_the_dominant_failure_type() -> None:
    status = status_from_summary(_summary())
    verdict = reports_verdict(status, threshold_percent=3)
    assert (verdict.status, verdict.reason) == ("False", "FailureRatioExceeded")
    assert "50 of 1550 sessions failed in the last 24 hours (3.23%)" in verdict.message
    assert "mostly tlsa-invalid (30 sessions)" in verdict.message
    healthy = reports_verdict(status, threshold_percent=5)
    assert (healthy.status, healthy.reason) == ("True", "FailureRatioWithinLimit")


def test_no_sessions_is_healthy_and_says_so() -> None:
    verdict = reports_verdict(TLSRPTStatus(), threshold_percent=5)
    assert (verdict.status, verdict.reason) == ("True", "NoSessionsReported")


def test_only_new_failure_types_are_announced() -> None:
    current = status_from_summary(_summary())
    assert new_failure_types(None, current) == current.failure_types
    previous = current.model_copy(update={"failure_types": ["tlsa-invalid"]})
    assert new_failure_types(previous, current) == ["dnssec-invalid", "sts-policy-fetch-error"]
    assert new_failure_types(current, current) == []
