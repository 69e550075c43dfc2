"""A report for people (a grouped table, coloured on a terminal) and for machines (JSON)."""

from __future__ import annotations

import json
import textwrap

from mailward.compliance.catalog import GROUPS
from mailward.compliance.model import Report, Result

_COLOURS = {
    Result.PASS: "\033[32m",
    Result.FAIL: "\033[31m",
    Result.ERROR: "\033[35m",
    Result.WARN: "\033[33m",
    Result.SKIP: "\033[2m",
}
_RESET = "\033[0m"
_BOLD = "\033[1m"


def render_table(report: Report, *, colour: bool, verbose: bool = False) -> str:
    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if colour else text

    lines = [
        paint(f"mailward check {report.domain}", _BOLD)
        + f"  profile {report.profile}, resolver {report.resolver}, "
        f"{report.started:%Y-%m-%d %H:%M:%SZ}, {report.duration_seconds:.1f}s",
    ]
    if report.fatal:
        lines.append(paint(f"the check could not run: {report.fatal}", _COLOURS[Result.ERROR]))
        return "\n".join(lines) + "\n"
    for group in GROUPS:
        checks = [c for c in report.checks if c.group == group]
        if not checks:
            continue
        lines.append("")
        lines.append(paint(group, _BOLD))
        for c in checks:
            result = paint(f"{str(c.result).upper():5}", _COLOURS[c.result])
            head = f"  {result} {c.id:11} {c.level!s:6} "
            lines.append(head + c.title)
            indent = " " * 27
            if c.result is not Result.PASS or verbose:
                for text in textwrap.wrap(c.message, 100 - len(indent)):
                    lines.append(indent + text)
            if c.remedy and c.result in (Result.FAIL, Result.ERROR):
                for i, text in enumerate(textwrap.wrap("fix: " + c.remedy, 100 - len(indent))):
                    lines.append(indent + ("" if i == 0 else "     ") + text)
            if verbose:
                for item in c.evidence:
                    lines.append(indent + "- " + item)
    counts = ", ".join(
        f"{sum(1 for c in report.checks if c.result is r)} {r}"
        for r in (Result.PASS, Result.FAIL, Result.WARN, Result.ERROR, Result.SKIP)
    )
    lines.append("")
    if report.compliant:
        verdict = paint("COMPLIANT", _COLOURS[Result.PASS] + _BOLD)
        lines.append(f"{verdict}: every MUST check passed ({counts}; score {report.score})")
    else:
        verdict = paint("NOT COMPLIANT", _COLOURS[Result.FAIL] + _BOLD)
        lines.append(
            f"{verdict}: MUST checks not passed: {', '.join(report.failing_musts)} "
            f"({counts}; score {report.score})"
        )
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
