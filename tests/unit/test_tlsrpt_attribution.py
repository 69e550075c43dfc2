"""Which served domain a report's policy counts for (operator/mailward/tlsrpt/attribution.py).

The served names below: `own.test` with its own MX host, `apex.test` that is its own MX host,
and `a.test`, `b.test` sharing the fleet MX host `mx.fleet.test`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailward.parts.tlsrpt import served_domains
from mailward.render.tlsrpt_objects import CollectorSettings, collector_config, collector_listeners
from mailward.tlsrpt.attribution import (
    Attribution,
    ServedNames,
    attribute,
    report_domain_of_host,
)
from mailward.tlsrpt.config import CollectorConfig
from mailward.tlsrpt.server import Collector
from tests.manifests import valid_maildomain
from tests.tlsrpt_samples import make_report

SERVED = ServedNames.of(
    ["own.test", "apex.test", "a.test", "b.test"],
    {
        "own.test": ["mx.own.test"],
        "apex.test": ["apex.test"],
        "a.test": ["mx.fleet.test"],
        "b.test": ["MX.Fleet.test."],
        "gone.test": ["mx.gone.test"],  # not served: its MX host means nothing here
    },
)

CASES = [
    # (policy-domain, policy-type, report's own domain, expected attribution, why)
    ("own.test", "sts", None, Attribution("own.test"), "MTA-STS names the recipient domain"),
    ("own.test", "no-policy-found", "own.test", Attribution("own.test"), "no policy: the domain"),
    ("mx.own.test", "tlsa", None, Attribution("own.test"), "DANE: the MX host of one domain"),
    ("MX.OWN.TEST.", "tlsa", None, Attribution("own.test"), "names compare case-blind, no dot"),
    ("mx.own.test", "tlsa", "own.test", Attribution("own.test"), "the report agrees"),
    ("apex.test", "tlsa", None, Attribution("apex.test"), "a domain that is its own MX host"),
    ("mx.fleet.test", "tlsa", "a.test", Attribution("a.test"), "shared MX: the report's domain"),
    ("mx.fleet.test", "tlsa", "B.test", Attribution("b.test"), "shared MX: the other domain"),
    (
        "mx.fleet.test",
        "tlsa",
        None,
        Attribution(None, unattributed="mx.fleet.test"),
        "shared MX, no domain said: kept under the MX host, counted for neither",
    ),
    (
        "mx.fleet.test",
        "tlsa",
        "own.test",
        Attribution(None, unattributed="mx.fleet.test"),
        "the report's domain does not use this MX host: not a tie-breaker",
    ),
    ("mx.own.test", "sts", None, Attribution(None), "MTA-STS never names an MX host"),
    ("mx.own.test", "no-policy-found", None, Attribution(None), "nor does no-policy-found"),
    ("mx.gone.test", "tlsa", None, Attribution(None), "the MX host of a domain not served"),
    ("other.test", "tlsa", None, Attribution(None), "someone else's domain"),
]


@pytest.mark.parametrize(
    ("policy_domain", "policy_type", "report_domain", "expected", "why"),
    CASES,
    ids=[case[4] for case in CASES],
)
def test_attribution_rule(
    policy_domain: str,
    policy_type: str,
    report_domain: str | None,
    expected: Attribution,
    why: str,
) -> None:
    got = attribute(policy_domain, policy_type, report_domain, SERVED)
    assert got == expected, why
    assert got.accepted == (expected.domain is not None or expected.unattributed is not None)


def test_a_report_on_a_shared_mx_counts_for_one_domain_only() -> None:
    """Never for every domain on the fleet MX: the sessions are those of mail to one domain."""
    counted = [
        d
        for d in ("own.test", "apex.test", "a.test", "b.test")
        if attribute("mx.fleet.test", "tlsa", "a.test", SERVED).domain == d
    ]
    assert counted == ["a.test"]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("tlsrpt.a.test", "a.test"),
        ("tlsrpt.a.test:443", "a.test"),
        ("TLSRPT.A.TEST.", "a.test"),
        ("tlsrpt.other.test", None),
        ("a.test", None),
        ("[::1]:443", None),
    ],
)
def test_the_upload_host_names_the_report_domain(host: str, expected: str | None) -> None:
    assert report_domain_of_host(host, SERVED) == expected


def _dane_report(mx_host: str, index: int) -> bytes:
    document = make_report(
        "rfc8460",
        domain=mx_host,
        index=index,
        end=datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC),
        policy_type="tlsa",
        successful=7,
        failures=[("certificate-not-trusted", 2)],
    )
    return json.dumps(document).encode()


def test_the_collector_keeps_a_dane_report_under_the_domain_of_its_mx_host(
    tmp_path: Path,
) -> None:
    """The collector's intake (SQLite in a file): a report naming `mx.own.test` as its
    policy-domain is stored, and counted for `own.test`; one naming a shared MX host and
    uploaded to `tlsrpt.b.test` counts for `b.test` only."""
    config = CollectorConfig(
        hostname="tlsrpt.own.test",
        domains=sorted(SERVED.domains),
        mailbox_domains=["tlsrpt.own.test"],
        mx_hosts={
            "own.test": ["mx.own.test"],
            "a.test": ["mx.fleet.test"],
            "b.test": ["mx.fleet.test"],
        },
        database=f"sqlite:///{tmp_path / 'reports.db'}",
    )
    collector = Collector(config)
    try:
        own = collector._ingest_https(_dane_report("mx.own.test", 1), False, "192.0.2.1")
        shared = collector._ingest_https(
            _dane_report("mx.fleet.test", 2), False, "192.0.2.1", "tlsrpt.b.test:443"
        )
        stranger = collector._ingest_https(_dane_report("mx.other.test", 3), False, "192.0.2.1")
        rows = {d: collector.store.policy_rows(d, 0) for d in ("own.test", "a.test", "b.test")}
        failures = collector.store.failure_rows("own.test", 0)
    finally:
        collector.store.close()
    print(f"evidence: outcomes {own.status}, {shared.status}, {stranger.status}: {stranger.detail}")
    assert (own.status, shared.status, stranger.status) == ("stored", "stored", "rejected")
    assert [(r.policy_type, r.successful, r.failed) for r in rows["own.test"]] == [("tlsa", 7, 2)]
    assert [(f.result_type, f.sessions) for f in failures] == [("certificate-not-trusted", 2)]
    assert rows["a.test"] == []
    assert [(r.successful, r.failed) for r in rows["b.test"]] == [(7, 2)]


def test_the_collector_config_names_the_mx_hosts_of_own_and_attached_domains() -> None:
    """An own MTA's hosts come from spec.mx; an attached domain's from its fleet, as the MTA part
    wrote them into status.mailServer.hosts."""
    own = valid_maildomain()
    attached = {
        "metadata": {"name": "attached", "uid": "uid-attached"},
        "spec": {"domain": "attached.test", "mailServerRef": {"name": "fleet"}},
        "status": {
            "mailServer": {"namespace": "mail", "name": "fleet", "hosts": ["mx1.fleet.test"]}
        },
    }
    not_yet = {
        "metadata": {"name": "waiting", "uid": "uid-waiting"},
        "spec": {"domain": "waiting.test", "mailServerRef": {"name": "fleet"}},
    }
    served = served_domains([{**own, "metadata": {"name": "own", "uid": "u"}}, attached, not_yet])
    settings = CollectorSettings()
    specs = [d.spec for d in served]
    config = collector_config(served, settings, collector_listeners(specs, settings))
    assert config.mx_hosts == {
        "attached.test": ["mx1.fleet.test"],
        own["spec"]["domain"]: [m["host"] for m in own["spec"]["mx"]],
    }
    assert "waiting.test" in config.domains  # served; its DANE reports wait for the hosts
