"""The Helm chart as the tests see it: rendered by the pinned helm (tools/helm)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mailward_localstack.helm import helm_path

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "mailward"
RELEASE_NAMESPACE = "mailward-system"
OPERATOR_USER = f"system:serviceaccount:{RELEASE_NAMESPACE}:mailward"
OPERATOR_GROUPS = ("system:serviceaccounts", f"system:serviceaccounts:{RELEASE_NAMESPACE}")
KUBE_VERSION = "1.34.4"


def helm() -> str:
    return str(helm_path())


def render(*values: str, crds: bool = True) -> str:
    args = [helm(), "template", "mailward", str(CHART), "-n", RELEASE_NAMESPACE]
    args += ["--kube-version", KUBE_VERSION]
    if crds:
        args.append("--include-crds")
    for value in values:
        args += ["--set", value]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def rbac_documents() -> str:
    """The chart's ServiceAccounts, roles and bindings: what the operator runs with in tests."""
    return "\n---\n".join(
        doc
        for doc in render(crds=False).split("\n---\n")
        if any(f"kind: {kind}\n" in doc for kind in ("ServiceAccount", "ClusterRole", "Role"))
        or "kind: ClusterRoleBinding" in doc
        or "kind: RoleBinding" in doc
    )
