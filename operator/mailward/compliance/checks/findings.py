"""What the check families write into: findings per check ID, turned into one result per check.

A family adds findings (`ok`, `unmet`, `add`) for the check IDs it owns, one per subject (a host,
a port, a record); `results()` folds them into one `CheckResult` per catalog entry, the worst
finding leading. A check nobody wrote to is `skip`: nothing of its kind to probe.
"""

from __future__ import annotations

from collections import defaultdict

from mailward.compliance.catalog import BY_ID, CATALOG
from mailward.compliance.model import CheckResult, Finding, Level, Result, unmet, worst
from mailward.compliance.observations import Answer

BOGUS_SKIP = "not evaluated: the answer is DNSSEC-bogus (SERVFAIL), see TR-DANE-01"


class Findings:
    def __init__(self, profile: str) -> None:
        self.profile = profile
        self.items: dict[str, list[Finding]] = defaultdict(list)

    def level(self, check_id: str) -> Level:
        return BY_ID[check_id].level(self.profile)

    def add(self, check_id: str, result: Result, message: str, subject: str = "") -> None:
        self.items[check_id].append(Finding(result, message, subject))

    def ok(self, check_id: str, message: str, subject: str = "") -> None:
        self.add(check_id, Result.PASS, message, subject)

    def unmet(self, check_id: str, message: str, subject: str = "") -> None:
        self.add(check_id, unmet(self.level(check_id)), message, subject)

    def warn(self, check_id: str, message: str, subject: str = "") -> None:
        self.add(check_id, Result.WARN, message, subject)

    def error(self, check_id: str, message: str, subject: str = "") -> None:
        self.add(check_id, Result.ERROR, message, subject)

    def skip(self, check_id: str, message: str, subject: str = "") -> None:
        self.add(check_id, Result.SKIP, message, subject)

    def answer_problem(self, check_id: str, answer: Answer, subject: str = "") -> bool:
        """Record a skip/error for an unusable answer; True when the caller should stop."""
        if answer.bogus:
            self.skip(check_id, f"{BOGUS_SKIP}: {answer.describe()}", subject)
            return True
        if answer.timed_out:
            self.error(check_id, f"no answer from the resolver: {answer.describe()}", subject)
            return True
        return False

    def results(self) -> list[CheckResult]:
        out = []
        for check in CATALOG:
            level = check.level(self.profile)
            findings = self.items.get(check.id, [])
            if not findings:
                findings = [Finding(Result.SKIP, "not applicable: nothing of this kind to probe")]
            result = worst([f.result for f in findings])
            if level is Level.INFO and result in (Result.FAIL, Result.WARN):
                result = Result.WARN
            lead = next(f for f in findings if f.result is worst([x.result for x in findings]))
            message = (f"{lead.subject}: " if lead.subject else "") + lead.message
            others = len([f for f in findings if f.result is lead.result]) - 1
            if others > 0:
                message += f" (+{others} more)"
            evidence = tuple(
                f"[{f.result}] " + (f"{f.subject}: " if f.subject else "") + f.message
                for f in findings
            )
            out.append(
                CheckResult(
                    id=check.id,
                    title=check.title,
                    group=check.group,
                    level=level,
                    result=result,
                    message=message[:300],
                    evidence=evidence,
                    remedy=check.remedy if result in (Result.FAIL, Result.WARN) else "",
                    reference=check.reference,
                )
            )
        return out
