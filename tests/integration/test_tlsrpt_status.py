"""The operator shows what the collector received: `status.tlsRpt`, `TLSReportsHealthy` and a
Warning Event per new failure type, checked against counts computed from the reports sent."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailward_localstack.pki import LocalCA
from tests.fixtures_tlsrpt import DOMAIN, CollectorFactory, TLSRptCluster
from tests.integration.test_tlsrpt_collector import send_samples
from tests.manifests import tls_secret_manifest, valid_maildomain
from tests.net import addr
from tests.tlsrpt_samples import corpus, expected_counts


def _condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in body.get("status", {}).get("conditions", []):
        if condition["type"] == type_:
            return dict(condition)
    return None


def test_status_tlsrpt_matches_the_reports_received(
    tmp_path: Path,
    tlsrpt_collector_factory: CollectorFactory,
    tlsrpt_operator: Callable[[str], TLSRptCluster],
    local_ca: LocalCA,
) -> None:
    collector = tlsrpt_collector_factory(f"sqlite:///{tmp_path / 'reports.db'}")
    cluster = tlsrpt_operator(collector.api_url)
    kube = cluster.kube
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", namespace)
    cert = local_ca.issue_server_cert(["mx1.example.test", "mx2.example.test"])
    kube.apply(tls_secret_manifest(namespace, cert, "mx-example-test-tls"))
    body = valid_maildomain(namespace=namespace)
    del body["spec"]["dns"]
    body["spec"]["tlsRpt"] = {
        "rua": ["mailto:tlsrpt@tlsrpt.example.test"],
        "failureThresholdPercent": 0,
    }
    kube.apply(body)

    def condition() -> dict[str, Any] | None:
        return _condition(kube.get_maildomain(namespace, "example"), "TLSReportsHealthy")

    first = kube.wait_for("TLSReportsHealthy", condition, timeout=60)
    assert (first["status"], first["reason"]) == ("True", "NoSessionsReported"), first

    now = datetime.now(UTC).replace(microsecond=0)
    samples = corpus(DOMAIN, 36, now=now)
    replies = send_samples(collector, samples, local_ca, addr(67))
    assert all(r.code in (201, 250) for r in replies), replies
    expected = expected_counts(samples, DOMAIN, now)

    def counted() -> dict[str, Any] | None:
        status = kube.get_maildomain(namespace, "example").get("status", {})
        tls_rpt = status.get("tlsRpt")
        if tls_rpt and tls_rpt["reports7d"] == len(samples):
            return dict(status)
        return None

    status = kube.wait_for("status.tlsRpt to count every report", counted, timeout=60)
    tls_rpt = status["tlsRpt"]
    print(json.dumps(tls_rpt, indent=1))
    assert tls_rpt["last24h"] == dict(expected["totals"]["24h"])
    assert tls_rpt["last7d"] == dict(expected["totals"]["7d"])
    for policy in tls_rpt["policies"]:
        for window, key in (("24h", "last24h"), ("7d", "last7d")):
            counts = expected["per_type"].get((policy["policyType"], window), {})
            assert policy[key] == {
                "successful": counts.get("successful", 0),
                "failed": counts.get("failed", 0),
            }
    assert tls_rpt["failureTypes"] == sorted(expected["failures"])
    ranked = sorted(expected["failures"].items(), key=lambda kv: (-kv[1], kv[0]))
    assert [(f["resultType"], f["sessions"]) for f in tls_rpt["topFailures"]] == ranked[:5]
    assert set(tls_rpt["organisations"]) == expected["organisations"]

    day = expected["totals"]["24h"]
    ratio = 100 * day["failed"] / (day["failed"] + day["successful"])
    verdict = _condition({"status": status}, "TLSReportsHealthy")
    assert verdict is not None
    assert ratio > 0
    assert verdict["status"] == "False"
    assert verdict["reason"] == "FailureRatioExceeded"
    assert f"mostly {ranked[0][0]}" in verdict["message"], verdict

    def new_types() -> set[str]:
        events = json.loads(kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
        return {
            e["message"].rpartition(": ")[2]
            for e in events["items"]
            if e.get("reason") == "NewTLSFailureType" and e.get("type") == "Warning"
        }

    # kopf posts Events from a queue after the status write: the last may come a moment later.
    wanted = set(tls_rpt["failureTypes"])
    found = kube.wait_for("a NewTLSFailureType Event per type", lambda: new_types() >= wanted)
    assert found
    assert new_types() == wanted
