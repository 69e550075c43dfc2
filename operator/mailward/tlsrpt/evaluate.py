"""What the stored reports say about one domain: pure functions over rows from the store.

Reports are placed in time by the end of the period they cover (`date-range.end-datetime`),
not by when they arrived, so a report that a sender delivers late still counts for the day
its sessions happened.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from mailward.tlsrpt.store import FailureRow, PolicyRow, Store

DAY = 24 * 3600
WEEK = 7 * DAY
TOP_FAILURES = 5
TOP_ORGANISATIONS = 10


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class Sessions(_Wire):
    successful: int = 0
    failed: int = 0

    def ratio(self) -> float:
        total = self.successful + self.failed
        return self.failed / total if total else 0.0


class FailureCount(_Wire):
    result_type: str = Field(alias="resultType")
    sessions: int


class OrganisationCount(_Wire):
    name: str
    reports: int


class PolicySummary(_Wire):
    policy_type: str = Field(alias="policyType")
    last_24h: Sessions = Field(alias="last24h")
    last_7d: Sessions = Field(alias="last7d")
    top_failures: list[FailureCount] = Field(alias="topFailures")


class DomainSummary(_Wire):
    domain: str
    evaluated_at: int = Field(alias="evaluatedAt")
    reports_7d: int = Field(alias="reports7d")
    last_24h: Sessions = Field(alias="last24h")
    last_7d: Sessions = Field(alias="last7d")
    policies: list[PolicySummary]
    top_failures: list[FailureCount] = Field(alias="topFailures")
    failure_types: list[str] = Field(alias="failureTypes")
    organisations: list[OrganisationCount]


def _top(counter: Counter[str], limit: int) -> list[FailureCount]:
    ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
    return [FailureCount(result_type=k, sessions=v) for k, v in ranked[:limit] if v > 0]


def summarise(
    domain: str,
    policies: Iterable[PolicyRow],
    failures: Iterable[FailureRow],
    *,
    now: int,
) -> DomainSummary:
    """Counts over the last 24 h and 7 days, overall and per policy type (rows from 7 days)."""
    day_start, week_start = now - DAY, now - WEEK
    per_type: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"24h": [0, 0], "7d": [0, 0]})
    organisations: Counter[str] = Counter()
    for row in policies:
        if row.end_ts <= week_start:
            continue
        windows = ("24h", "7d") if row.end_ts > day_start else ("7d",)
        for window in windows:
            per_type[row.policy_type][window][0] += row.successful
            per_type[row.policy_type][window][1] += row.failed
        organisations[row.organization] += 1
    failure_types: dict[str, Counter[str]] = defaultdict(Counter)
    all_failures: Counter[str] = Counter()
    for failure in failures:
        if failure.end_ts <= week_start:
            continue
        failure_types[failure.policy_type][failure.result_type] += failure.sessions
        all_failures[failure.result_type] += failure.sessions
    summaries = [
        PolicySummary(
            policy_type=policy_type,
            last_24h=Sessions(successful=c["24h"][0], failed=c["24h"][1]),
            last_7d=Sessions(successful=c["7d"][0], failed=c["7d"][1]),
            top_failures=_top(failure_types[policy_type], TOP_FAILURES),
        )
        for policy_type, c in sorted(per_type.items())
    ]
    ranked_orgs = sorted(organisations.items(), key=lambda item: (-item[1], item[0]))
    return DomainSummary(
        domain=domain,
        evaluated_at=now,
        reports_7d=sum(organisations.values()),
        last_24h=Sessions(
            successful=sum(p.last_24h.successful for p in summaries),
            failed=sum(p.last_24h.failed for p in summaries),
        ),
        last_7d=Sessions(
            successful=sum(p.last_7d.successful for p in summaries),
            failed=sum(p.last_7d.failed for p in summaries),
        ),
        policies=summaries,
        top_failures=_top(all_failures, TOP_FAILURES),
        failure_types=sorted(t for t, n in all_failures.items() if n > 0),
        organisations=[
            OrganisationCount(name=n, reports=c) for n, c in ranked_orgs[:TOP_ORGANISATIONS]
        ],
    )


def summary_for(store: Store, domain: str, now: int) -> DomainSummary:
    """Read the last 7 days of `domain` from a store and summarise them."""
    since = now - WEEK
    return summarise(
        domain, store.policy_rows(domain, since), store.failure_rows(domain, since), now=now
    )


def format_table(summary: DomainSummary) -> str:
    """The summary as the `mailward reports DOMAIN` table."""
    lines = [
        f"TLS reports for {summary.domain}: {summary.reports_7d} policy reports in the last 7 days",
        "",
        f"{'POLICY':<16}{'OK 24H':>12}{'FAIL 24H':>12}{'OK 7D':>12}{'FAIL 7D':>12}{'FAIL %':>9}",
    ]
    rows = [
        *((p.policy_type, p.last_24h, p.last_7d) for p in summary.policies),
        ("total", summary.last_24h, summary.last_7d),
    ]
    for name, day, week in rows:
        lines.append(
            f"{name:<16}{day.successful:>12}{day.failed:>12}{week.successful:>12}"
            f"{week.failed:>12}{100 * week.ratio():>8.2f}%"
        )
    lines += ["", "TOP FAILURE TYPES (7 days)"]
    lines += [f"  {f.result_type:<28}{f.sessions:>12}" for f in summary.top_failures] or ["  none"]
    lines += ["", "REPORTING ORGANISATIONS (7 days)"]
    lines += [f"  {o.name:<40}{o.reports:>8}" for o in summary.organisations] or ["  none"]
    return "\n".join(lines)
