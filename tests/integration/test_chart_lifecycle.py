"""`helm upgrade` with a CRD change, `helm uninstall`, and installing again, on the real node.

The chart's CRDs are templates (charts/mailward/templates/crds), so an upgrade of the release
upgrades them, and `crds.keep` leaves them, and with them every MailDomain, on uninstall. The
test ends where it began (the chart installed with the cluster's values), so the other tests
of the session find the cluster as they expect it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailward_localstack.controlplane import kubectl
from mailward_localstack.helm import helm
from mailward_localstack.stack import RELEASE, RELEASE_NAMESPACE, Stack
from tests.chart import CHART
from tests.fixtures_cluster import NAMESPACE, WORKLOADS, condition, get_json, ready_pods, wait_for

pytestmark = [pytest.mark.controlplane, pytest.mark.dnsstack, pytest.mark.node]

UPGRADE_COLUMN = {"name": "Upgraded", "type": "string", "jsonPath": ".spec.domain"}
# What the chart creates (the CRDs aside, which it keeps).
CHART_KINDS = "deployment,service,serviceaccount,configmap,role,rolebinding,clusterrole," + (
    "clusterrolebinding"
)


def _release(stack: Stack, chart: Path) -> str:
    return helm(
        stack.kubeconfig,
        "upgrade", "--install", RELEASE, str(chart), "--namespace", RELEASE_NAMESPACE,
        "--values", str(stack.state_dir / "values.yaml"), "--wait", "--timeout", "180s",
    )  # fmt: skip


def _chart_with_a_crd_change(tmp_path: Path) -> Path:
    """The chart with one more printer column on MailDomain: a CRD change an upgrade carries."""
    chart = tmp_path / "mailward"
    shutil.copytree(CHART, chart)
    template = chart / "templates" / "crds" / "mailward.io_maildomains.yaml"
    text = template.read_text()
    columns = "    additionalPrinterColumns:\n"
    assert columns in text
    added = yaml.safe_dump([UPGRADE_COLUMN], default_flow_style=False).strip().splitlines()
    template.write_text(
        text.replace(columns, columns + "".join(f"    {line}\n" for line in added), 1)
    )
    return chart


def _operator_ready(stack: Stack) -> list[dict[str, Any]]:
    namespace, _, _, selector = WORKLOADS["operator"]
    return ready_pods(stack, namespace, selector)


def _columns(stack: Stack) -> list[str]:
    crd = get_json(stack, "crd", "maildomains.mailward.io")
    return [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]


def _chart_objects(stack: Stack) -> list[str]:
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/managed-by=Helm"
    found = kubectl(stack.kubeconfig, "get", CHART_KINDS, "-A", "-l", selector, "-o", "name")
    return found.split()


def test_upgrade_with_a_crd_change_uninstall_and_install_again(
    cluster: Stack, example: dict[str, Any], tmp_path: Path
) -> None:
    before = get_json(cluster, "maildomain", "example", "-n", NAMESPACE)
    assert "Upgraded" not in _columns(cluster)

    _release(cluster, _chart_with_a_crd_change(tmp_path))
    assert "Upgraded" in _columns(cluster)
    assert wait_for("the operator Ready after the upgrade", lambda: _operator_ready(cluster))
    after = get_json(cluster, "maildomain", "example", "-n", NAMESPACE)
    # Untouched: the same object, the same spec and generation, still Ready.
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
    assert (condition(after, "Ready") or {}).get("status") == "True"
    shown = kubectl(cluster.kubeconfig, "get", "maildomain", "example", "-n", NAMESPACE)
    assert "UPGRADED" in shown.splitlines()[0], shown

    # Back to the repository's chart: the column goes again.
    _release(cluster, CHART)
    assert "Upgraded" not in _columns(cluster)

    said = helm(
        cluster.kubeconfig, "uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait"
    )
    print(f"\nhelm uninstall said:\n{said}")
    assert "kept due to the resource policy" in said
    for crd in ("maildomains", "mailservers", "dnsproviders", "clusterdnsproviders"):
        assert f"[CustomResourceDefinition] {crd}.mailward.io" in said, said
    assert _chart_objects(cluster) == []
    namespace, kind, name, _ = WORKLOADS["operator"]
    assert not kubectl(
        cluster.kubeconfig, "get", kind, name, "-n", namespace, "--ignore-not-found", "-o", "name"
    )
    kept = get_json(cluster, "maildomain", "example", "-n", NAMESPACE)
    assert kept["metadata"]["uid"] == before["metadata"]["uid"]

    # Installed again with the same values: the operator takes the domain up where it was.
    _release(cluster, CHART)
    assert wait_for("the operator Ready again", lambda: _operator_ready(cluster))
    again = get_json(cluster, "maildomain", "example", "-n", NAMESPACE)
    assert again["metadata"]["uid"] == before["metadata"]["uid"]
    assert (condition(again, "Ready") or {}).get("status") == "True", json.dumps(again["status"])
