"""The vocabulary of a compliance report: levels, results, one check's outcome, the whole report.

A result says what was seen, never what was hoped: a probe that could not run is `error`, and an
`error` counts against the verdict exactly like a `fail` (an auditor cannot accept "we could not
look" as "it is fine").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Level(StrEnum):
    MUST = "MUST"
    SHOULD = "SHOULD"
    INFO = "INFO"


class Result(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"
    ERROR = "error"


# Worst first: a check run on several hosts reports the worst of them.
_SEVERITY = {Result.ERROR: 4, Result.FAIL: 3, Result.WARN: 2, Result.PASS: 1, Result.SKIP: 0}


def worst(results: list[Result]) -> Result:
    return max(results, key=_SEVERITY.__getitem__) if results else Result.SKIP


def unmet(level: Level) -> Result:
    """What an unmet requirement yields at `level`: only a MUST fails the domain."""
    return Result.FAIL if level is Level.MUST else Result.WARN


@dataclass(frozen=True)
class Finding:
    """One observation on one subject (a host, a port, a record) for one check."""

    result: Result
    message: str
    subject: str = ""


@dataclass(frozen=True)
class CheckResult:
    id: str
    title: str
    group: str
    level: Level
    result: Result
    message: str
    evidence: tuple[str, ...] = ()
    remedy: str = ""
    reference: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "group": self.group,
            "level": str(self.level),
            "result": str(self.result),
            "message": self.message,
            "evidence": list(self.evidence),
            "remedy": self.remedy,
            "reference": self.reference,
        }


@dataclass
class Report:
    domain: str
    profile: str
    resolver: str
    started: datetime
    duration_seconds: float
    checks: list[CheckResult] = field(default_factory=list)
    # Set when the check as a whole could not run (resolver unreachable, bad CA file): exit 2.
    fatal: str | None = None

    def by_id(self) -> dict[str, CheckResult]:
        return {c.id: c for c in self.checks}

    def ids(self, result: Result) -> list[str]:
        return sorted(c.id for c in self.checks if c.result is result)

    @property
    def failing_musts(self) -> list[str]:
        """MUST checks that did not pass: failed, or could not be evaluated (error)."""
        return sorted(
            c.id
            for c in self.checks
            if c.level is Level.MUST and c.result in (Result.FAIL, Result.ERROR)
        )

    @property
    def compliant(self) -> bool:
        return self.fatal is None and not self.failing_musts

    @property
    def score(self) -> int:
        """0-100: MUST weighs 3, SHOULD 1; pass counts 1, warn 1/2; skip and INFO not at all."""
        weights = {Level.MUST: 3, Level.SHOULD: 1, Level.INFO: 0}
        credit = {Result.PASS: 1.0, Result.WARN: 0.5, Result.FAIL: 0.0, Result.ERROR: 0.0}
        total = earned = 0.0
        for c in self.checks:
            if c.result is Result.SKIP or weights[c.level] == 0:
                continue
            total += weights[c.level]
            earned += weights[c.level] * credit[c.result]
        return round(100 * earned / total) if total else 0

    @property
    def exit_code(self) -> int:
        if self.fatal is not None:
            return 2
        return 0 if self.compliant else 1

    def to_dict(self) -> dict[str, Any]:
        counts = {str(r): sum(1 for c in self.checks if c.result is r) for r in Result}
        return {
            "schemaVersion": 1,
            "domain": self.domain,
            "profile": self.profile,
            "resolver": self.resolver,
            "started": self.started.isoformat().replace("+00:00", "Z"),
            "durationSeconds": round(self.duration_seconds, 3),
            "compliant": self.compliant,
            "score": self.score,
            "exitCode": self.exit_code,
            "fatal": self.fatal,
            "failingMust": self.failing_musts,
            "counts": counts,
            "checks": [c.to_dict() for c in self.checks],
        }
