"""The operator's one configuration model (settings.py): the chart's variables, validated."""

from __future__ import annotations

import pytest

from mailward.api.mta import DEFAULT_MTA_IMAGE
from mailward.settings import OperatorSettings, SettingsError, from_environment


def test_defaults_without_any_variable() -> None:
    settings = from_environment({"MAILWARD_COMPLIANCE_RESOLVER": "127.0.0.53"})
    assert settings.reconcile == OperatorSettings().reconcile
    assert settings.mta_image == DEFAULT_MTA_IMAGE
    assert settings.policy.endpoint_url is None
    assert not settings.policy.manage_objects
    assert not settings.tlsrpt.deploy
    assert settings.metrics_address is None


def test_every_section_from_the_chart_variables() -> None:
    settings = from_environment(
        {
            "MAILWARD_RESYNC_SECONDS": "20",
            "MAILWARD_DNS_RETRY_SECONDS": "0.5",
            "MAILWARD_MTA_IMAGE": "mailward/mta:test",
            "MAILWARD_POLICY_NAMESPACE": "mailward-system",
            "MAILWARD_POLICY_ENDPOINT_URL": "https://mailward-policy.mailward-system.svc:443",
            "MAILWARD_TLSRPT_DEPLOY": "true",
            "MAILWARD_TLSRPT_HOST_NETWORK": "yes",
            "MAILWARD_COMPLIANCE_RESOLVER": "127.0.0.54:5353",
            "MAILWARD_COMPLIANCE_CONCURRENCY": "3",
            "MAILWARD_METRICS_ADDRESS": "127.0.0.1:9102",
        }
    )
    assert settings.reconcile.resync_seconds == 20.0
    assert settings.reconcile.dns_retry_seconds == 0.5
    assert settings.mta_image == "mailward/mta:test"
    assert settings.policy.manage_objects
    assert settings.policy.endpoint.namespace == "mailward-system"
    assert settings.tlsrpt.deploy
    assert settings.tlsrpt.collector.host_network
    assert (settings.compliance.resolver, settings.compliance.resolver_port) == ("127.0.0.54", 5353)
    assert settings.compliance.concurrency == 3
    assert settings.metrics_address == "127.0.0.1:9102"


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("MAILWARD_RESYNC_SECONDS", "soon", "valid number"),
        ("MAILWARD_RESYNC_SECONDS", "0", "greater than 0"),
        ("MAILWARD_COMPLIANCE_CONCURRENCY", "0", "greater than or equal to 1"),
        ("MAILWARD_TLSRPT_DEPLOY", "maybe", "is not one of"),
        ("MAILWARD_TLSRPT_SERVICE_TYPE", "Ingress", "ClusterIP"),
        ("MAILWARD_METRICS_ADDRESS", "9102", "HOST:PORT"),
        (
            "MAILWARD_MTA_RESOLVER_FORWARDERS",
            "resolver.example",
            "MAILWARD_MTA_RESOLVER_FORWARDERS",
        ),
        ("MAILWARD_COMPLIANCE_RESOLVER", "127.0.0.1:dns", "ADDR[:PORT]"),
    ],
)
def test_a_wrong_variable_is_named_with_the_reason(variable: str, value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as raised:
        from_environment({"MAILWARD_COMPLIANCE_RESOLVER": "127.0.0.53", variable: value})
    assert variable in str(raised.value)
    assert reason in str(raised.value)


def test_an_empty_variable_means_the_default() -> None:
    # The chart renders unset values as "" (e.g. policyEndpoint.ingressClass).
    settings = from_environment(
        {"MAILWARD_POLICY_INGRESS_CLASS": "", "MAILWARD_RESYNC_SECONDS": ""}
    )
    assert settings.policy.endpoint.ingress_class is None
    assert settings.reconcile.resync_seconds == 300.0
