"""The real API server refuses invalid MailDomains at admission, naming the field.

Every manifest goes through `kubectl`, as a user or a GitOps pipeline would send it, against the
CRD generated from the models (CRD schema, CEL rules, strict field validation).
"""

from __future__ import annotations

import json

import pytest

from tests.fixtures_operator import Kube
from tests.manifests import INVALID_CASES, InvalidCase, minimal_maildomain, valid_maildomain

pytestmark = pytest.mark.controlplane

APISERVER_CASES = [c for c in INVALID_CASES if c.tier in ("both", "apiserver")]


def test_the_table_is_large_enough() -> None:
    assert len(APISERVER_CASES) >= 20


@pytest.mark.parametrize("case", APISERVER_CASES, ids=[c.id for c in APISERVER_CASES])
def test_invalid_manifest_is_rejected_naming_the_field(
    kube: Kube, namespace: str, case: InvalidCase
) -> None:
    result = kube.kubectl(
        "create", "-f", "-", input=json.dumps(case.manifest(namespace=namespace)), check=False
    )
    assert result.returncode != 0, f"{case.id} was accepted"
    assert case.field in result.stderr, result.stderr
    listed = kube.kubectl("get", "maildomains", "-n", namespace, "-o", "name").stdout
    assert listed.strip() == ""


def test_valid_examples_are_accepted_and_defaulted(kube: Kube, namespace: str) -> None:
    kube.kubectl("create", "-f", "-", input=json.dumps(valid_maildomain(namespace=namespace)))
    kube.kubectl("create", "-f", "-", input=json.dumps(minimal_maildomain(namespace=namespace)))
    minimal = kube.get_maildomain(namespace, "minimal")["spec"]
    assert minimal["mx"][0]["priority"] == 10
    assert minimal["dane"] == {
        "enabled": True,
        "issuerRecord": False,
        "rollover": {"margin": "5m", "propagationTimeout": "10m", "verifyTimeout": "5m"},
    }
    assert minimal["tls"]["duration"] == "2160h"
    assert minimal["tls"]["privateKey"] == {"algorithm": "ECDSA", "rotationPolicy": "Always"}
    assert minimal["mtaSts"] == {"mode": "enforce", "maxAge": 604800}
    assert minimal["compliance"] == {"profile": "tr-03108", "interval": "1h"}


def test_domain_is_immutable(kube: Kube, namespace: str) -> None:
    kube.kubectl("create", "-f", "-", input=json.dumps(valid_maildomain(namespace=namespace)))
    result = kube.kubectl(
        "patch",
        "maildomain",
        "example",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"domain":"other.test"}}',
        check=False,
    )
    assert result.returncode != 0
    assert "spec.domain" in result.stderr
    assert "immutable" in result.stderr
    # Other fields stay editable.
    kube.kubectl(
        "patch",
        "maildomain",
        "example",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"mtaSts":{"mode":"testing"}}}',
    )
    assert kube.get_maildomain(namespace, "example")["spec"]["mtaSts"]["mode"] == "testing"


def test_model_only_rule_passes_admission(kube: Kube, namespace: str) -> None:
    """The case the operator must catch itself (see test_operator): the CRD cannot tell."""
    (case,) = [c for c in INVALID_CASES if c.tier == "model"]
    kube.kubectl("create", "-f", "-", input=json.dumps(case.manifest(namespace=namespace)))


def test_explain_reads_well(kube: Kube) -> None:
    text = kube.kubectl("explain", "maildomain.spec.mtaSts").stdout
    assert "RFC 8461" in text
    assert "maxAge" in text
    assert "enforce" in text
    assert "31557600" in text


def test_printer_columns(kube: Kube, namespace: str) -> None:
    kube.kubectl("create", "-f", "-", input=json.dumps(valid_maildomain(namespace=namespace)))
    header = kube.kubectl("get", "maildomains", "-n", namespace, "-o", "wide").stdout.splitlines()[
        0
    ]
    assert header.split() == [
        "NAME",
        "DOMAIN",
        "READY",
        "COMPLIANT",
        "MTA-STS",
        "CERT-EXPIRES",
        "DANE",
        "AGE",
        "MAILSERVER",
        "TLS-REPORTS",
        "MESSAGE",
    ]
    short = kube.kubectl("get", "md", "-n", namespace).stdout.splitlines()[0]
    assert "MESSAGE" not in short
    assert "TLS-REPORTS" not in short


def _mail_server(namespace: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailServer",
        "metadata": {"name": "fleet", "namespace": namespace},
        "spec": {
            "hosts": [{"host": "mx1.fleet.test", "addresses": ["127.0.0.1"]}],
            "tls": {"secretName": "fleet-tls"},
            **spec,
        },
    }


def test_a_mailserver_is_defaulted_and_its_rules_name_the_field(kube: Kube, namespace: str) -> None:
    refused = kube.kubectl(
        "create", "-f", "-", check=False,
        input=json.dumps(
            _mail_server(namespace, allowedDomains={"namespaces": {"from": "Selector"}})
        ),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "spec.allowedDomains.namespaces" in refused.stderr, refused.stderr
    assert "selector is required" in refused.stderr
    no_addresses = _mail_server(namespace, hostNetwork=True, hosts=[{"host": "mx.fleet.test"}])
    refused = kube.kubectl("create", "-f", "-", check=False, input=json.dumps(no_addresses))
    assert refused.returncode != 0
    assert "spec.hostNetwork" in refused.stderr, refused.stderr
    kube.kubectl("create", "-f", "-", input=json.dumps(_mail_server(namespace)))
    created = json.loads(
        kube.kubectl("get", "mailserver", "fleet", "-n", namespace, "-o", "json").stdout
    )["spec"]
    assert created["allowedDomains"] == {"namespaces": {"from": "Same"}}
    assert created["replicas"] == 2


def test_a_maildomain_attaches_or_runs_its_own_mta_not_both(kube: Kube, namespace: str) -> None:
    both = valid_maildomain(namespace=namespace)
    both["spec"]["mailServerRef"] = {"name": "fleet"}
    refused = kube.kubectl("create", "-f", "-", check=False, input=json.dumps(both))
    assert refused.returncode != 0
    assert "spec.mailServerRef" in refused.stderr, refused.stderr
    attached = valid_maildomain(namespace=namespace)
    del attached["spec"]["mx"], attached["spec"]["tls"]
    attached["spec"]["mailServerRef"] = {"name": "fleet"}
    kube.kubectl("create", "-f", "-", input=json.dumps(attached))
