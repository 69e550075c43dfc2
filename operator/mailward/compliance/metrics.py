"""Prometheus series of the compliance checks, one set per MailDomain.

`mailward_compliance_check_result{namespace,name,domain,check,level,result}` is 1 for the
current result of each check and absent for the others, so `sum by (check) (...{result="fail"})`
answers "which checks fail where" without decoding numbers.
"""

from __future__ import annotations

from prometheus_client import Gauge, start_http_server

from mailward.compliance.model import Report

_LABELS = ("namespace", "name", "domain")

CHECK_RESULT = Gauge(
    "mailward_compliance_check_result",
    "1 for the current result of a compliance check (labels: check, level, result).",
    (*_LABELS, "check", "level", "result"),
)
COMPLIANT = Gauge(
    "mailward_compliance_compliant", "1 when every MUST check passes, else 0.", _LABELS
)
SCORE = Gauge("mailward_compliance_score", "Compliance score 0-100.", _LABELS)
LAST_CHECK = Gauge(
    "mailward_compliance_last_check_timestamp_seconds", "When the domain was probed.", _LABELS
)
DURATION = Gauge(
    "mailward_compliance_check_duration_seconds", "How long the last check took.", _LABELS
)

_series: dict[tuple[str, str], list[tuple[str, ...]]] = {}
_server_started = False


def record(namespace: str, name: str, report: Report) -> None:
    forget(namespace, name)
    base = (namespace, name, report.domain)
    labels = [(*base, c.id, str(c.level), str(c.result)) for c in report.checks]
    for label in labels:
        CHECK_RESULT.labels(*label).set(1)
    _series[(namespace, name)] = [base, *labels]
    COMPLIANT.labels(*base).set(1 if report.compliant else 0)
    SCORE.labels(*base).set(report.score)
    LAST_CHECK.labels(*base).set(report.started.timestamp())
    DURATION.labels(*base).set(report.duration_seconds)


def forget(namespace: str, name: str) -> None:
    series = _series.pop((namespace, name), [])
    if not series:
        return
    base, *labels = series
    for label in labels:
        CHECK_RESULT.remove(*label)
    for gauge in (COMPLIANT, SCORE, LAST_CHECK, DURATION):
        gauge.remove(*base)


def serve(where: str) -> None:
    """Serve /metrics on `where` (host:port) once per process."""
    global _server_started
    if _server_started:
        return
    host, _, port = where.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0")
    _server_started = True
