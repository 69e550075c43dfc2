"""The Helm chart renders, installs into the real API server, and grants exactly what it says."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

import pytest

from mailward.api.crd import stale_crds
from tests.fixtures_operator import Kube

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mailward"
RELEASE_NAMESPACE = "mailward-system"
OPERATOR_USER = f"system:serviceaccount:{RELEASE_NAMESPACE}:mailward"
KUBE_VERSION = "1.34.4"


@cache
def helm() -> str:
    out = subprocess.run(
        [str(REPO / "tools" / "helm" / "build.sh")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return str(Path(out.strip()) / "helm")


def render(*values: str) -> str:
    args = [helm(), "template", "mailward", str(CHART), "-n", RELEASE_NAMESPACE]
    args += ["--kube-version", KUBE_VERSION, "--include-crds"]
    for value in values:
        args += ["--set", value]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def test_chart_lints() -> None:
    result = subprocess.run(
        [helm(), "lint", str(CHART), "--kube-version", KUBE_VERSION],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_crds_are_the_generated_ones() -> None:
    assert stale_crds(CHART / "crds") == [], "charts/mailward/crds drifted: run `make crds`"


def test_rendered_chart_is_accepted_by_the_api_server(kube: Kube) -> None:
    kube.kubectl("create", "namespace", RELEASE_NAMESPACE, check=False)
    manifests = render("watchNamespaces={mail,other}")
    result = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=manifests, check=False)
    assert result.returncode == 0, result.stderr
    for created in (
        "serviceaccount/mailward created",
        "clusterrole.rbac.authorization.k8s.io/mailward created",
        "clusterrolebinding.rbac.authorization.k8s.io/mailward created",
        "deployment.apps/mailward created",
        "customresourcedefinition.apiextensions.k8s.io/maildomains.mailward.io",
    ):
        assert created in result.stdout, result.stdout
    assert "--namespace=mail" in manifests
    assert "--all-namespaces" not in manifests


def test_operator_identity_gets_exactly_the_chart_rules(kube: Kube) -> None:
    kube.kubectl("create", "namespace", RELEASE_NAMESPACE, check=False)
    rbac = "\n---\n".join(
        doc
        for doc in render().split("\n---\n")
        if "kind: ClusterRole" in doc or "kind: ServiceAccount" in doc
    )
    kube.kubectl("apply", "-f", "-", input=rbac)

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
