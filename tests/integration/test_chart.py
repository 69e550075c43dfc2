"""The Helm chart renders, installs into the real API server, and grants exactly what it says."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from mailward.api.crd import stale_crds
from tests.chart import (
    CHART,
    KUBE_VERSION,
    OPERATOR_USER,
    RELEASE_NAMESPACE,
    helm,
    rbac_documents,
    render,
)
from tests.fixtures_operator import Kube

pytestmark = pytest.mark.controlplane


def test_chart_lints() -> None:
    result = subprocess.run(
        [helm(), "lint", str(CHART), "--kube-version", KUBE_VERSION],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_crds_and_values_schema_are_the_generated_ones() -> None:
    assert stale_crds(CHART, chart=True) == [], "the chart drifted from the models: `make crds`"


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("reconcile.resyncSecond=30", "'/reconcile': additional properties 'resyncSecond'"),
        ("replicas=two", "'/replicas': got string, want integer"),
        ("tlsrptCollector.serviceType=Public", "'/tlsrptCollector/serviceType'"),
    ],
)
def test_a_wrong_value_is_refused_with_its_path(value: str, named: str) -> None:
    result = subprocess.run(
        [helm(), "lint", str(CHART), "--kube-version", KUBE_VERSION, "--set", value],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert named in result.stdout + result.stderr, result.stdout + result.stderr


def test_rendered_chart_is_accepted_by_the_api_server(kube: Kube) -> None:
    kube.kubectl("create", "namespace", RELEASE_NAMESPACE, check=False)
    manifests = render("watchNamespaces={mail,other}")
    result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=manifests, check=False)
    assert result.returncode == 0, result.stderr
    # "unchanged" when the operator fixture of this session applied the same RBAC for real.
    for applied in (
        "serviceaccount/mailward",
        "clusterrole.rbac.authorization.k8s.io/mailward",
        "clusterrolebinding.rbac.authorization.k8s.io/mailward",
        "deployment.apps/mailward",
        "customresourcedefinition.apiextensions.k8s.io/maildomains.mailward.io",
    ):
        pattern = rf"^{re.escape(applied)} (created|configured|unchanged) \(server dry run\)$"
        assert re.search(pattern, result.stdout, re.MULTILINE), result.stdout
    assert "--namespace=mail" in manifests
    assert "--all-namespaces" not in manifests


def _operator_env(manifests: str) -> dict[str, str]:
    deployment = next(doc for doc in manifests.split("\n---\n") if "kind: Deployment\n" in doc)
    container = yaml.safe_load(deployment)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_tlsrpt_collector_values_reach_the_operator() -> None:
    env = _operator_env(render(crds=False))
    assert env["MAILWARD_TLSRPT_DEPLOY"] == "true"
    assert env["MAILWARD_TLSRPT_COLLECTOR_URL"] == (
        "http://mailward-tlsrpt-api.{namespace}.svc:9108"
    )
    assert env["MAILWARD_TLSRPT_IMAGE"].startswith("ghcr.io/mailward/operator:")
    assert env["MAILWARD_TLSRPT_OPERATOR_NAMESPACE"] == RELEASE_NAMESPACE
    # Off: nothing deployed, and nothing asked of collectors that do not exist.
    off = _operator_env(render("tlsrptCollector.enabled=false", crds=False))
    assert not [name for name in off if name.startswith("MAILWARD_TLSRPT_")]
    # Collectors run elsewhere: only their URL.
    own = _operator_env(
        render("tlsrptCollector.enabled=false", "tlsrptCollector.url=http://c:9108", crds=False)
    )
    assert {k: v for k, v in own.items() if k.startswith("MAILWARD_TLSRPT_")} == {
        "MAILWARD_TLSRPT_COLLECTOR_URL": "http://c:9108",
        "MAILWARD_TLSRPT_RETRY_SECONDS": "60",
    }
    lb = _operator_env(render("tlsrptCollector.serviceType=LoadBalancer", crds=False))
    assert lb["MAILWARD_TLSRPT_SERVICE_TYPE"] == "LoadBalancer"


def test_operator_identity_gets_exactly_the_chart_rules(kube: Kube) -> None:
    kube.kubectl("create", "namespace", RELEASE_NAMESPACE, check=False)
    kube.kubectl("apply", "-f", "-", input=rbac_documents())

    def can(verb: str, resource: str) -> bool:
        result = kube.kubectl(
            "auth", "can-i", verb, resource, "-A", f"--as={OPERATOR_USER}", check=False
        )
        return result.stdout.strip() == "yes"

    assert can("watch", "maildomains.mailward.io")
    assert can("patch", "maildomains.mailward.io/status")
    assert can("get", "secrets")
    assert can("create", "events")
    assert not can("list", "secrets"), "the operator reads Secrets by name only"
    assert not can("delete", "maildomains.mailward.io")
    assert not can("create", "clusterrolebindings.rbac.authorization.k8s.io")


def test_the_optional_monitoring_and_gitops_objects_render() -> None:
    manifests = render(
        "metrics.serviceMonitor.enabled=true",
        "grafanaDashboard.enabled=true",
        "argocd.healthConfigMap=true",
        crds=False,
    )
    documents = [d for d in yaml.safe_load_all(manifests) if d]
    monitors = {
        d["metadata"]["name"]: d["spec"] for d in documents if d["kind"] == "ServiceMonitor"
    }
    assert {name: spec["endpoints"][0]["port"] for name, spec in monitors.items()} == {
        "mailward-operator": "metrics",
        "mailward-policy": "admin",
        "mailward-tlsrpt": "api",
    }
    assert monitors["mailward-tlsrpt"]["namespaceSelector"] == {"any": True}
    configmaps = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ConfigMap"}
    dashboard = configmaps["mailward-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["mailward.json"])["uid"] == "mailward"
    health = configmaps["mailward-argocd-health"]["data"]
    script = (CHART / "files" / "argocd-health.lua").read_text()
    assert sorted(health) == [
        f"resource.customizations.health.mailward.io_{kind}"
        for kind in ("ClusterDNSProvider", "DNSProvider", "MailDomain", "MailServer")
    ]
    assert all(text.strip() == script.strip() for text in health.values())
