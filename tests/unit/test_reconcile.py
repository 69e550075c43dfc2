"""Verdicts of a reconcile, from plain observations."""

from __future__ import annotations

import pytest

from mailward.reconcile import TLSSecretObservation, parse_spec, readiness_verdicts
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
            "Reconciled",
            "mx1.example.test, mx2.example.test",
        ),
    ],
)
def test_ready_follows_the_tls_secret(
    observation: TLSSecretObservation, status: str, reason: str, fragment: str
) -> None:
    (ready,) = readiness_verdicts(SPEC, observation)
    assert (ready.type, ready.status, ready.reason) == ("Ready", status, reason)
    assert fragment in ready.message
    assert "spec.tls.secretName" in ready.message
