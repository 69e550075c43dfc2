"""Two operator replicas on the real node: one active, one on standby, and the handovers.

The chart runs two replicas by default, elected through kopf peering (docs/ha.md). The test
cluster has one node, on whose network both replicas would need the operator's health and
metrics ports, so this test upgrades the session's release to two replicas without them
(`healthEndpoint=false`, `metrics.enabled=false`) and puts the session's values back at the
end. It then stops the active replica three ways and times the takeover of the other one:

- SIGKILL of the container's process (`kill -9` of its pid, found in the pod's cgroup): no
  signal handler runs, kopf removes nothing; kubelet restarts the container in the same pod,
  and the new process, which has the pod's name as its kopf identity, replaces the dead record
  with its own (lower: it started later) priority, which lets the standby resume.
- SIGSTOP (a lost node, a partition): nothing restarts and nothing renews the record; the
  standby takes over when the record's lifetime (peering.lifetimeSeconds, 20 s) runs out.
- `kubectl delete pod` (SIGTERM, grace period 15 s): kopf removes its record as it exits and
  the standby resumes at once.

`kubectl delete pod --grace-period=0 --force` would not be a SIGKILL: kubelet still sends
SIGTERM first and gives the container a short grace period, in which kopf cleans up.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from mailward.render.policy_objects import policy_hosts, tls_secret_name
from mailward_localstack.controlplane import kubectl
from mailward_localstack.demo_dns import create_dns_provider
from mailward_localstack.helm import helm
from mailward_localstack.stack import RELEASE, RELEASE_NAMESPACE, Stack
from tests import replicas
from tests.chart import CHART, KUBE_VERSION, render
from tests.chart import helm as helm_binary
from tests.fixtures_cluster import get_json, wait_for
from tests.fixtures_dnspublish import tls_secret_manifest

pytestmark = [pytest.mark.controlplane, pytest.mark.dnsstack, pytest.mark.node]

NAMESPACE = "ha"
COUNT = 4
ZONE = "example.test"
LIFETIME = 20  # the chart's peering.lifetimeSeconds


def _documents(manifests: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(manifests) if d]


def test_the_chart_runs_two_peered_replicas() -> None:
    documents = _documents(render())
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    deployment = by_kind[("Deployment", "mailward")]["spec"]
    assert deployment["replicas"] == 2
    assert deployment["strategy"]["type"] == "RollingUpdate"
    pod = deployment["template"]["spec"]
    container = pod["containers"][0]
    assert "--peering=mailward" in container["args"]
    assert f"--peering-lifetime={LIFETIME}" in container["args"]
    assert {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
        container["env"]
    )
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert by_kind[("PodDisruptionBudget", "mailward")]["spec"]["maxUnavailable"] == 1
    crd = by_kind[("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev")]["spec"]
    assert crd["scope"] == "Cluster"
    # kopf writes `status` through the object: a status subresource would drop it.
    assert "subresources" not in crd["versions"][0]
    rules = by_kind[("ClusterRole", "mailward")]["rules"]
    assert {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["get", "list", "watch", "patch", "create"],
    } in rules

    # Some namespaces: a KopfPeering in each (the operator creates them), its CRD namespaced.
    documents = _documents(render("watchNamespaces={mail,other}"))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert ("CustomResourceDefinition", "kopfpeerings.kopf.dev") in kinds
    assert ("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev") not in kinds

    # Standalone: one replica, Recreate, no peering objects; two replicas are refused.
    documents = _documents(render("peering.enabled=false", "replicas=1"))
    deployment = next(d for d in documents if d["kind"] == "Deployment")["spec"]
    assert deployment["strategy"] == {"type": "Recreate"}
    assert "--standalone" in deployment["template"]["spec"]["containers"][0]["args"]
    assert not [d for d in documents if "kopf.dev" in json.dumps(d)]
    assert not [d for d in documents if d["kind"] == "PodDisruptionBudget"]
    refused = subprocess.run(
        [
            helm_binary(),
            "template",
            "mailward",
            str(CHART),
            "--kube-version",
            KUBE_VERSION,
            "--set",
            "peering.enabled=false",
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0
    assert "replicas > 1 needs peering.enabled" in refused.stderr, refused.stderr


def _maildomain(stack: Stack, index: int) -> dict[str, Any]:
    domain = f"ha{index}.{ZONE}"
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": f"ha{index}", "namespace": NAMESPACE},
        "spec": {
            "domain": domain,
            "mx": [
                {"host": f"mx.{domain}", "priority": 10, "addresses": [stack.layout.address(70)]}
            ],
            "tls": {"secretName": "ha-mx-tls"},
            "mta": {"enabled": False},
            "dns": {
                "providerRef": {"kind": "DNSProvider", "name": "local-bind"},
                "mtaStsEndpoint": {"addresses": [stack.layout.policy_endpoint]},
                "tlsRptCollector": {"addresses": [stack.layout.address(27)]},
            },
            "mtaSts": {"mode": "enforce", "maxAge": 86400},
            "compliance": {"interval": "168h"},
        },
    }


def _upgrade(stack: Stack, *sets: str) -> None:
    """The session's release with its own values file, and `sets` over it."""
    args = [
        "upgrade", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
        "--values", str(stack.state_dir / "values.yaml"),
    ]  # fmt: skip
    for value in sets:
        args += ["--set", value]
    helm(stack.kubeconfig, *args, "--wait", "--timeout", "180s")


def _log(stack: Stack, pod: str) -> str:
    return kubectl(stack.kubeconfig, "logs", "-n", RELEASE_NAMESPACE, pod, "-c", "operator")


def _object_lines(log: str) -> list[str]:
    """Lines of kopf's per-object logger and of mailward's parts (dns, mta, ...); not the
    replica's own standing (`mailward.peering`: "this replica is on standby")."""
    return [
        line
        for line in log.splitlines()
        if (" kopf.objects " in line or "] mailward." in line) and "] mailward.peering " not in line
    ]


def _ready(body: dict[str, Any]) -> bool:
    status = body.get("status", {})
    return status.get("observedGeneration") == body["metadata"]["generation"] and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
    )


def _all_ready(stack: Stack) -> bool:
    bodies = get_json(stack, "maildomains", "-n", NAMESPACE)["items"]
    return len(bodies) == COUNT and all(_ready(b) for b in bodies)


_interval = iter(f"{h}h" for h in range(167, 100, -1))


def _change_every_domain(stack: Stack) -> None:
    """A spec change (a new generation) of every domain, which only a running replica handles."""
    patch = json.dumps({"spec": {"compliance": {"interval": next(_interval)}}})
    for index in range(COUNT):
        kubectl(
            stack.kubeconfig, "patch", "maildomain", f"ha{index}", "-n", NAMESPACE,
            "--type=merge", "-p", patch,
        )  # fmt: skip


def _takeover(
    stack: Stack, active: str, standby: str, stop: Callable[[], None], what: str
) -> tuple[float, float]:
    """Stop the active replica with `stop`, change every domain, and time until the standby
    resumed and every change is reconciled. Returns the seconds to resuming, and to the
    moment the stopped replica's record was gone (or had a lower priority than the standby's:
    a restarted container replaces it)."""
    resumed_before = _log(stack, standby).count("Resuming operations")
    began = time.monotonic()
    stop()
    _change_every_domain(stack)
    resumed: float | None = None
    converged: float | None = None
    yielded: float | None = None
    deadline = began + LIFETIME + 120
    while time.monotonic() < deadline and None in (resumed, converged, yielded):
        if resumed is None and _log(stack, standby).count("Resuming operations") > resumed_before:
            resumed = time.monotonic() - began
        if yielded is None:
            peers = replicas.peers(stack)
            if active not in peers or int(peers[active]["priority"]) < int(
                peers[standby]["priority"]
            ):
                yielded = time.monotonic() - began
        if converged is None and _all_ready(stack):
            converged = time.monotonic() - began
        time.sleep(0.25)
    assert resumed is not None, f"{standby} did not resume after {what}:\n{_log(stack, standby)}"
    assert converged is not None, f"the domains did not converge after {what}"
    assert yielded is not None, f"{active}'s record stayed after {what}: {replicas.peers(stack)}"
    print(f"\n{what}: {active}'s record gone or lower after {yielded:.1f}s;", end=" ")
    print(f"{standby} resumed after {resumed:.1f}s;", end=" ")
    print(f"{COUNT} domains Ready (a spec change each) after {converged:.1f}s")
    return resumed, yielded


def _started_seconds_ago(pod: dict[str, Any]) -> float:
    statuses = pod["status"].get("containerStatuses") or [{}]
    started = statuses[0].get("state", {}).get("running", {}).get("startedAt")
    if not started:
        return 0.0
    then = datetime.datetime.fromisoformat(started.replace("Z", "+00:00"))
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds()


def _two_replicas_peered(stack: Stack, settled: float = 10) -> tuple[str, str]:
    """(active, standby) once two pods run, both have a record in the peering object, and both
    containers started `settled` seconds ago at least (a standby that is still starting up is
    not the standby of a handover in production)."""

    def both() -> tuple[str, str] | None:
        running = replicas.running_pods(stack)
        pods = set(running)
        if len(pods) != 2 or not pods <= set(replicas.peers(stack)):
            return None
        if min(_started_seconds_ago(pod) for pod in running.values()) < settled:
            return None
        active = replicas.active(stack, pods)
        (standby,) = pods - {active}
        return active, standby

    found: tuple[str, str] = wait_for("two operator pods in the peering", both, timeout=120)
    return found


@pytest.mark.timeout(900)
def test_the_standby_takes_over_after_sigkill_sigstop_and_a_graceful_stop(cluster: Stack) -> None:
    kubeconfig = cluster.kubeconfig
    kubectl(kubeconfig, "create", "namespace", NAMESPACE)
    create_dns_provider(kubeconfig, cluster.state_dir / "dns", NAMESPACE)
    certs = cluster.state_dir / "certs" / "ha"
    domains = [f"ha{index}.{ZONE}" for index in range(COUNT)]
    mx = cluster.ca.issue_server_cert([f"mx.{d}" for d in domains], out_dir=certs)
    secrets = [tls_secret_manifest(NAMESPACE, mx, "ha-mx-tls")]
    for domain in domains:
        policy = cluster.ca.issue_server_cert(policy_hosts(domain), out_dir=certs / domain)
        secrets.append(tls_secret_manifest(RELEASE_NAMESPACE, policy, tls_secret_name(domain)))
    kubectl(
        kubeconfig, "apply", "-f", "-",
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": secrets}),
    )  # fmt: skip

    _upgrade(cluster, "replicas=2", "healthEndpoint=false", "metrics.enabled=false")
    try:
        active, standby = _two_replicas_peered(cluster)
        items = [_maildomain(cluster, index) for index in range(COUNT)]
        kubectl(
            kubeconfig, "apply", "-f", "-",
            input=json.dumps({"kind": "List", "apiVersion": "v1", "items": items}),
        )  # fmt: skip
        wait_for(f"{COUNT} MailDomains Ready", lambda: _all_ready(cluster), timeout=180)

        # The active replica did the work; the standby never resumed, and logged nothing about
        # any object: no handler, timer or daemon ran (kopf.objects), no part wrote anything.
        assert _object_lines(_log(cluster, active))
        quiet = _log(cluster, standby)
        assert not _object_lines(quiet), quiet
        assert "Resuming operations" not in quiet, quiet

        # 1. SIGKILL of the active replica's process.
        pods = replicas.running_pods(cluster)
        pid = replicas.operator_process(cluster, pods[active])
        _takeover(cluster, active, standby, lambda: os.kill(pid, signal.SIGKILL), "SIGKILL")
        active, standby = _two_replicas_peered(cluster)

        # 2. SIGSTOP: no exit, no restart, no renewal: the record runs out.
        pid = replicas.operator_process(cluster, replicas.running_pods(cluster)[active])
        try:
            stopped = "SIGSTOP (a lost node)"
            resumed, _ = _takeover(
                cluster, active, standby, lambda: os.kill(pid, signal.SIGSTOP), stopped
            )
            # The record runs out `lifetime` after its last renewal, which was at most
            # lifetime - 5 s before the stop.
            assert LIFETIME - 15 <= resumed <= LIFETIME + 5
        finally:
            os.kill(pid, signal.SIGKILL)  # kubelet restarts it; it comes back on standby
        active, standby = _two_replicas_peered(cluster)

        # 3. A graceful stop: kopf removes its record on the way out.
        old = active

        def delete() -> None:
            kubectl(kubeconfig, "delete", "pod", old, "-n", RELEASE_NAMESPACE, "--wait=false")

        resumed, yielded = _takeover(cluster, old, standby, delete, "graceful stop (SIGTERM)")
        assert yielded < 15, "the record outlived the grace period"
        assert resumed < 10
    finally:
        _upgrade(cluster)
