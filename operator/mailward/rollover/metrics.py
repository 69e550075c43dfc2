"""Prometheus series of the served certificates and their rollover, one set per MailDomain.

`mailward_certificate_expiring_without_safe_rollover` is the one to alert on: 1 when the served
certificate expires within two weeks and no key change could be made safely now (the next key's
record is not on every authoritative server, or has not aged). The series are served by the
operator's metrics endpoint (compliance/metrics.py starts it).
"""

from __future__ import annotations

import contextlib

from prometheus_client import Gauge

_LABELS = ("namespace", "name", "domain")

NOT_AFTER = Gauge(
    "mailward_certificate_not_after_timestamp_seconds",
    "When the certificate the MTA serves expires.",
    _LABELS,
)
ROTATION_SAFE = Gauge(
    "mailward_certificate_rotation_safe",
    "1 when the next key's TLSA record is published everywhere and aged: a key change now "
    "would not break DANE.",
    _LABELS,
)
EXPIRING_UNSAFE = Gauge(
    "mailward_certificate_expiring_without_safe_rollover",
    "1 when the served certificate expires within two weeks and no safe key rollover is in reach.",
    _LABELS,
)
_GAUGES = (NOT_AFTER, ROTATION_SAFE, EXPIRING_UNSAFE)


def record(
    namespace: str, name: str, domain: str, *, not_after: float, safe: bool, expiring: bool
) -> None:
    labels = (namespace, name, domain)
    NOT_AFTER.labels(*labels).set(not_after)
    ROTATION_SAFE.labels(*labels).set(1 if safe else 0)
    EXPIRING_UNSAFE.labels(*labels).set(1 if expiring and not safe else 0)


def forget(namespace: str, name: str, domain: str) -> None:
    for gauge in _GAUGES:
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name, domain)
