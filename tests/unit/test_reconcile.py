"""Verdicts of a reconcile, from plain observations."""

from __future__ import annotations

import pytest

from mailward.conditions import Verdict
from mailward.reconcile import (
    TLSSecretObservation,
    certificate_verdict,
    invalid_spec_verdicts,
    parse_spec,
    ready_verdict,
)
from tests.manifests import valid_maildomain

SPEC = parse_spec(valid_maildomain()["spec"])
NAME = "mx-example-test-tls"
TLS_KEYS = frozenset({"tls.crt", "tls.key"})


@pytest.mark.parametrize(
    ("observation", "status", "reason", "fragment"),
    [
        (TLSSecretObservation(NAME, found=False), "False", "TLSSecretNotFound", "does not exist"),
        (
            TLSSecretObservation(NAME, found=True, type="Opaque", keys=TLS_KEYS),
            "False",
            "TLSSecretInvalid",
            "'kubernetes.io/tls'",
        ),
        (
            TLSSecretObservation(NAME, True, "kubernetes.io/tls", frozenset({"tls.crt"})),
            "False",
            "TLSSecretInvalid",
            "lacks tls.key",
        ),
        (
            TLSSecretObservation(NAME, True, "kubernetes.io/tls", TLS_KEYS),
            "True",
            "SecretPresent",
            "is present",
        ),
    ],
)
def test_certificate_condition_follows_the_tls_secret(
    observation: TLSSecretObservation, status: str, reason: str, fragment: str
) -> None:
    verdict = certificate_verdict(observation)
    assert (verdict.type, verdict.status, verdict.reason) == ("CertificateReady", status, reason)
    assert fragment in verdict.message
    assert "spec.tls.secretName" in verdict.message


def test_ready_carries_the_first_failing_part() -> None:
    parts = [
        Verdict("CertificateReady", "True", "SecretPresent", "ok"),
        Verdict("DNSReady", "False", "UpdateRefused", "TSIG refused"),
        Verdict("MTAReady", "False", "Pending", "later"),
    ]
    ready = ready_verdict(SPEC, parts)
    assert (ready.status, ready.reason) == ("False", "UpdateRefused")
    assert ready.message == "DNSReady: TSIG refused"


def test_ready_unknown_when_a_part_is_unknown() -> None:
    parts = [Verdict("DNSReady", "Unknown", "Pending", "waiting for the provider")]
    assert ready_verdict(SPEC, parts).status == "Unknown"


def test_ready_true_names_the_domain_and_the_parts() -> None:
    ready = ready_verdict(SPEC, [Verdict("CertificateReady", "True", "SecretPresent", "ok")])
    assert (ready.status, ready.reason) == ("True", "Reconciled")
    assert "mx1.example.test, mx2.example.test" in ready.message
    assert "CertificateReady" in ready.message


def test_observations_of_the_outside_world_do_not_make_it_unready() -> None:
    parts = [
        Verdict("CertificateReady", "True", "SecretPresent", "ok"),
        Verdict("TLSReportsHealthy", "False", "FailureRatioExceeded", "senders fail"),
        Verdict("Compliant", "False", "MustChecksFailed", "TR-DANE-02"),
    ]
    ready = ready_verdict(SPEC, parts)
    assert (ready.status, ready.reason) == ("True", "Reconciled")
    assert "Compliant" not in ready.message


def test_an_invalid_spec_is_stalled_not_in_progress() -> None:
    found = {v.type: (v.status, v.reason) for v in invalid_spec_verdicts("spec.domain: bad")}
    assert found == {
        "Ready": ("False", "InvalidSpec"),
        "Reconciling": ("False", "InvalidSpec"),
        "Stalled": ("True", "InvalidSpec"),
    }
