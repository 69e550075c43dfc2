"""The compliance loop in the operator, against the real API server and the compliance lab.

A MailDomain for the lab's zone `operated.test`, whose records the operator itself publishes
through the lab's BIND, turns `Compliant=True`. Deleting its TLSA record by hand in the zone
turns it `False` (naming TR-DANE-02) within one interval, with one Warning Event, and the
operator's DNS part repairs the record, after which it turns `True` again. A spec change is
checked at once.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from mailward_localstack.demo_dns import PROVIDER_NAME, TSIG_SECRET_NAME, provider_manifests
from tests.fixtures_compliance import (
    LAB_LABEL,
    OPERATED_ZONE,
    POLICY_ADDRESS,
    SHARED_MX_ADDRESS,
    ComplianceLab,
)
from tests.fixtures_operator import Kube, OperatorProcess
from tests.manifests import tls_secret_manifest

pytestmark = [pytest.mark.controlplane, pytest.mark.dnsstack]

INTERVAL_SECONDS = 60
# One interval with its +10 % jitter, plus the check itself and the first check's random delay.
WITHIN_ONE_INTERVAL = INTERVAL_SECONDS * 1.1 + 45


def _maildomain(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": "operated", "namespace": namespace, "labels": {LAB_LABEL: "true"}},
        "spec": {
            "domain": OPERATED_ZONE,
            "mx": [
                {"host": f"mx.{OPERATED_ZONE}", "priority": 10, "addresses": [SHARED_MX_ADDRESS]}
            ],
            "tls": {"secretName": "mx-operated-tls"},
            # The lab runs the MX and the policy server itself: no MTA from the operator here.
            "mta": {"enabled": False},
            "dns": {
                "providerRef": {"kind": "DNSProvider", "name": PROVIDER_NAME},
                "mtaStsEndpoint": {"addresses": [POLICY_ADDRESS]},
                "srv": {"submissions": {"target": f"mx.{OPERATED_ZONE}", "port": 465}},
                "dmarc": {"rua": [f"mailto:dmarc@{OPERATED_ZONE}"]},
                # No rua: the collector's mailbox tlsrpt@tlsrpt.<zone>, whose MX and A the
                # operator publishes here (nothing listens there; TR-RPT-02 judges DNS only).
                "tlsRptCollector": {"addresses": [SHARED_MX_ADDRESS]},
            },
            "compliance": {"profile": "tr-03108", "interval": f"{INTERVAL_SECONDS}s"},
        },
    }


def _provider(kube: Kube, namespace: str, lab: ComplianceLab) -> None:
    for manifest in provider_manifests(lab.dns, namespace):
        kube.apply(dict(manifest))


def _dns_reason(kube: Kube, namespace: str) -> str | None:
    body = kube.get_maildomain(namespace, "operated")
    for condition in body.get("status", {}).get("conditions", []):
        if condition["type"] == "DNSReady":
            return str(condition["reason"])
    return None


def _release(kube: Kube, namespace: str) -> None:
    """Delete the MailDomain: its finalizer removes the records it published in the lab zone,
    so the next test starts from the same empty zone."""
    kube.kubectl(
        "delete", "maildomain", "operated", "-n", namespace, "--wait=true", "--timeout=60s"
    )


def _secret(namespace: str, lab: ComplianceLab) -> dict[str, Any]:
    return tls_secret_manifest(namespace, lab.certs[OPERATED_ZONE], "mx-operated-tls")


def _compliant(body: dict[str, Any]) -> dict[str, Any] | None:
    for condition in body.get("status", {}).get("conditions", []):
        if condition["type"] == "Compliant":
            return dict(condition)
    return None


def _wait_compliant(kube: Kube, namespace: str, status: str, timeout: float) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = kube.get_maildomain(namespace, "operated")
        condition = _compliant(body)
        return body if condition and condition["status"] == status else None

    body: dict[str, Any] = kube.wait_for(f"Compliant={status}", probe, timeout=timeout, interval=1)
    return body


def _warnings(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    events = kube.core.list_namespaced_event(namespace).items
    return [
        {"reason": e.reason, "message": e.message}
        for e in events
        if e.type == "Warning" and e.reason == "NonCompliant"
    ]


def test_tlsa_deleted_by_hand_turns_compliant_false_and_back(
    kube: Kube, namespace: str, operator: OperatorProcess, compliance_lab: ComplianceLab
) -> None:
    _provider(kube, namespace, compliance_lab)
    kube.apply(_secret(namespace, compliance_lab))
    kube.apply(_maildomain(namespace))
    body = _wait_compliant(kube, namespace, "True", timeout=120)
    compliance = body["status"]["compliance"]
    assert compliance["failingMust"] == []
    assert compliance["profile"] == "tr-03108"
    assert {c["id"] for c in compliance["checks"]} >= {"TR-DANE-02", "TR-TLS-01", "TR-SMTP-03"}
    results = {c["id"]: c["result"] for c in compliance["checks"]}
    # The default rua and its operator-published host satisfy both TLSRPT checks.
    assert (results["TR-RPT-01"], results["TR-RPT-02"]) == ("pass", "pass")
    assert 0 < compliance["score"] <= 100
    assert _dns_reason(kube, namespace) == "Published"
    wide = kube.kubectl("get", "maildomains", "-n", namespace, "-o", "wide").stdout
    header, row = wide.splitlines()[:2]
    assert "COMPLIANT" in header
    assert row.split()[header.split().index("COMPLIANT")] == "True"
    assert _warnings(kube, namespace) == []

    # The test operator repairs drift every 10 s, far faster than the shortest compliance
    # interval (1 min), so a deleted record would be back before any check could see it gone.
    # Hold the repair back as a broken credential would: a wrong TSIG secret in the Secret.
    good_secret = json.loads(
        kube.kubectl("get", "secret", TSIG_SECRET_NAME, "-n", namespace, "-o", "json").stdout
    )["data"]["secret"]
    kube.kubectl(
        "patch", "secret", TSIG_SECRET_NAME, "-n", namespace, "--type=merge",
        "-p", '{"data": {"secret": "' + base64.b64encode(b"not-the-key-" * 3).decode() + '"}}',
    )  # fmt: skip
    kube.wait_for(
        "DNSReady=UpdateRefused", lambda: _dns_reason(kube, namespace) == "UpdateRefused",
        timeout=60,
    )  # fmt: skip

    # Break it by hand: the TLSA RRset of the MX disappears from the signed zone.
    auth = compliance_lab.dns.authoritative
    tlsa_name = f"_25._tcp.mx.{OPERATED_ZONE}."
    update = auth.new_update(OPERATED_ZONE)
    update.delete(tlsa_name, "TLSA")
    auth.send_update(update)
    broken_at = time.monotonic()
    body = _wait_compliant(kube, namespace, "False", timeout=WITHIN_ONE_INTERVAL)
    took = time.monotonic() - broken_at
    print(f"Compliant=False {took:.0f}s after the TLSA deletion (interval {INTERVAL_SECONDS}s)")
    condition = _compliant(body)
    assert condition is not None
    assert condition["reason"] == "MustChecksFailing"
    assert "TR-DANE-02" in condition["message"]
    assert body["status"]["compliance"]["failingMust"] == ["TR-DANE-02"]
    assert took <= WITHIN_ONE_INTERVAL
    warnings = kube.wait_for("the NonCompliant event", lambda: _warnings(kube, namespace))
    assert len(warnings) == 1
    assert "TR-DANE-02" in warnings[0]["message"]

    # The credential is fixed; the operator's DNS part puts the TLSA back (drift repair) and
    # the write triggers a check at once, not only at the next interval.
    kube.kubectl(
        "patch", "secret", TSIG_SECRET_NAME, "-n", namespace, "--type=merge",
        "-p", json.dumps({"data": {"secret": good_secret}}),
    )  # fmt: skip
    repaired_at = time.monotonic()
    kube.wait_for(
        "the operator to publish the TLSA again",
        lambda: bool(auth.query(tlsa_name, "TLSA", tcp=True).answer),
        timeout=60,
    )
    body = _wait_compliant(kube, namespace, "True", timeout=WITHIN_ONE_INTERVAL)
    print(f"Compliant=True {time.monotonic() - repaired_at:.0f}s after the Secret was fixed")
    assert body["status"]["compliance"]["failingMust"] == []
    assert _dns_reason(kube, namespace) == "Published"
    # Still one warning: events are posted on the transition to non-compliant only.
    assert len(_warnings(kube, namespace)) == 1
    _release(kube, namespace)


def test_spec_change_is_checked_at_once(
    kube: Kube, namespace: str, operator: OperatorProcess, compliance_lab: ComplianceLab
) -> None:
    _provider(kube, namespace, compliance_lab)
    kube.apply(_secret(namespace, compliance_lab))
    manifest = _maildomain(namespace)
    manifest["spec"]["compliance"]["interval"] = "168h"
    kube.apply(manifest)
    _wait_compliant(kube, namespace, "True", timeout=120)
    manifest["spec"]["compliance"]["profile"] = "baseline"
    kube.apply(manifest)

    def baseline() -> bool:
        body = kube.get_maildomain(namespace, "operated")
        return body["status"].get("compliance", {}).get("profile") == "baseline"

    # Far less than the interval (a week): the edit itself triggered the check.
    kube.wait_for("a check with the new profile", baseline, timeout=90, interval=1)
    _release(kube, namespace)
