"""The operator's replicas on the real node: which pods run, kopf's peering records, which
replica is the active one, and its process (to stop it the way a crash would).

Used by tests/integration/test_ha.py and bench-scale's `--disturb kill-active`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mailward_localstack.node import pod_processes
from mailward_localstack.stack import RELEASE_NAMESPACE, Stack
from tests.fixtures_cluster import get_json

PEERING = "mailward"  # the chart's ClusterKopfPeering
SELECTOR = "app.kubernetes.io/name=mailward"


def running_pods(stack: Stack) -> dict[str, dict[str, Any]]:
    """The operator pods that run and are not being deleted, by name."""
    pods = get_json(stack, "pods", "-n", RELEASE_NAMESPACE, "-l", SELECTOR)["items"]
    return {
        p["metadata"]["name"]: p
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    }


def peers(stack: Stack) -> dict[str, dict[str, Any]]:
    """kopf's records in the peering object: identity (the pod's name) -> priority etc."""
    body = get_json(stack, "clusterkopfpeering", PEERING)
    return dict(body.get("status") or {})


def active(stack: Stack, pods: set[str]) -> str:
    """The replica that runs: the highest priority among the records of pods that run."""
    records = {name: peer for name, peer in peers(stack).items() if name in pods}
    return max(records, key=lambda name: int(records[name]["priority"]))


def operator_process(stack: Stack, pod: dict[str, Any]) -> int:
    """The `mailward run` process of `pod`: in the node's cgroups, under the pod's uid."""
    uid = pod["metadata"]["uid"]
    marks = (f"pod{uid}", f"pod{uid.replace('-', '_')}")
    for pid in pod_processes(stack.state_dir / "node"):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if (
            any(arg.endswith(b"mailward") for arg in argv[:2])
            and b"run" in argv
            and any(mark in cgroups for mark in marks)
        ):
            return pid
    raise AssertionError(f"no `mailward run` process of pod {pod['metadata']['name']}")
