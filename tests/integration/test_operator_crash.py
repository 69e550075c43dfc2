"""20 MailDomains converging on the real node while something breaks under the operator: its
pod killed with SIGKILL, the DNS server stopped for a minute, the API server restarted.

Each time all of them must converge: every DNS record exactly as desired (none duplicated, none
lost, nothing else under the domains), every shared object present, every status current. The
domains run no MTA of their own (`mta.enabled: false`): 20 Postfix pods would measure the
machine, not the operator.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from mailward.parts import Findings, ServedPolicy
from mailward.parts.certificate import parse_chain
from mailward.reconcile import parse_spec
from mailward.render.policy_objects import ingress_name, policy_hosts, tls_secret_name
from mailward_localstack.controlplane import kubectl
from mailward_localstack.demo_dns import create_dns_provider
from mailward_localstack.node import pod_processes
from mailward_localstack.pki import IssuedCert
from mailward_localstack.stack import RELEASE_NAMESPACE, Stack
from tests.fixtures_cluster import get_json, wait_for
from tests.fixtures_dnspublish import tls_secret_manifest
from tests.zones import served_policy_id, zone_differences

pytestmark = [pytest.mark.controlplane, pytest.mark.dnsstack, pytest.mark.node]

NAMESPACE = "crash"
COUNT = 20
ZONE = "example.test"
DNS_DOWN_SECONDS = 60


def _domains(prefix: str = "d") -> list[str]:
    return [f"{prefix}{index:02d}.{ZONE}" for index in range(COUNT)]


def _maildomain(stack: Stack, domain: str, namespace: str) -> dict[str, Any]:
    label = domain.split(".")[0]
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": label, "namespace": namespace},
        "spec": {
            "domain": domain,
            "mx": [
                {"host": f"mx.{domain}", "priority": 10, "addresses": [stack.layout.address(70)]}
            ],
            "tls": {"secretName": "crash-mx-tls"},
            "mta": {"enabled": False},
            "dns": {
                "providerRef": {"kind": "DNSProvider", "name": "local-bind"},
                "mtaStsEndpoint": {"addresses": [stack.layout.policy_endpoint]},
                "tlsRptCollector": {"addresses": [stack.layout.address(27)]},
            },
            "mtaSts": {"mode": "enforce", "maxAge": 86400},
        },
    }


def _operator_pid(stack: Stack) -> int:
    """The `mailward run` process of the operator pod, as the node's cgroups hold it."""
    for pid in pod_processes(stack.state_dir / "node"):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.endswith(b"mailward") for arg in argv[:2]) and b"run" in argv:
            return pid
    raise AssertionError("no `mailward run` process in the node's cgroups")


def _ready(body: dict[str, Any]) -> bool:
    status = body.get("status", {})
    return status.get("observedGeneration") == body["metadata"]["generation"] and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
    )


def _apply_domains(cluster: Stack, namespace: str, prefix: str) -> IssuedCert:
    """The MailDomains and their Secrets, applied at once; the MX certificate they serve."""
    kubeconfig = cluster.kubeconfig
    kubectl(kubeconfig, "create", "namespace", namespace)
    create_dns_provider(kubeconfig, cluster.state_dir / "dns", namespace)
    certs = cluster.state_dir / "certs" / namespace
    domains = _domains(prefix)
    mx = cluster.ca.issue_server_cert([f"mx.{d}" for d in domains], out_dir=certs)
    secrets = [tls_secret_manifest(namespace, mx, "crash-mx-tls")]
    for domain in domains:
        policy = cluster.ca.issue_server_cert(policy_hosts(domain), out_dir=certs / domain)
        secrets.append(tls_secret_manifest(RELEASE_NAMESPACE, policy, tls_secret_name(domain)))
    items = [_maildomain(cluster, d, namespace) for d in domains]
    for documents in (secrets, items):
        listing = {"kind": "List", "apiVersion": "v1", "items": documents}
        kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(listing))
    return mx


def _wait_midway(cluster: Stack, namespace: str) -> int:
    """Once some domains have a status and not all are Ready; how many are."""

    def midway() -> bool:
        bodies = get_json(cluster, "maildomains", "-n", namespace)["items"]
        started = sum(1 for b in bodies if b.get("status", {}).get("conditions"))
        ready = sum(1 for b in bodies if _ready(b))
        return started >= 1 and ready < COUNT

    wait_for(f"the operator midway through {COUNT} MailDomains", midway, timeout=60, interval=0.2)
    return sum(1 for b in get_json(cluster, "maildomains", "-n", namespace)["items"] if _ready(b))


def _wait_all_ready(cluster: Stack, namespace: str, what: str) -> None:
    def all_ready() -> bool:
        bodies = get_json(cluster, "maildomains", "-n", namespace)["items"]
        return len(bodies) == COUNT and all(_ready(b) for b in bodies)

    wait_for(f"all {COUNT} MailDomains Ready {what}", all_ready, timeout=240, interval=2)


def _assert_zone_as_desired(cluster: Stack, namespace: str, mx: IssuedCert) -> None:
    zone = cluster.dns.authoritative.axfr(ZONE)
    chain = parse_chain(mx.chain_file.read_bytes())
    for body in get_json(cluster, "maildomains", "-n", namespace)["items"]:
        spec = parse_spec(body["spec"])
        served = ServedPolicy(served_policy_id(zone, spec.domain))
        found = Findings(certificate_chain=tuple(chain), served_policy=served)
        assert zone_differences(zone, spec, found) == []
        # The per-domain object of the shared policy endpoint exists too.
        kubeconfig = cluster.kubeconfig
        kubectl(kubeconfig, "get", "ingress", ingress_name(spec.domain), "-n", RELEASE_NAMESPACE)


def test_a_killed_operator_pod_converges_20_domains_without_duplicates(cluster: Stack) -> None:
    killed = _operator_pid(cluster)
    restarts_before = _operator_restarts(cluster)
    mx = _apply_domains(cluster, NAMESPACE, "d")
    ready_at_kill = _wait_midway(cluster, NAMESPACE)
    os.kill(killed, signal.SIGKILL)
    began = time.monotonic()
    wait_for(
        "kubelet to restart the operator", lambda: _operator_restarts(cluster) > restarts_before
    )
    _wait_all_ready(cluster, NAMESPACE, "after the restart")
    converged = time.monotonic() - began
    print(f"\nSIGKILL with {ready_at_kill}/{COUNT} Ready; all Ready {converged:.1f}s later")
    _assert_zone_as_desired(cluster, NAMESPACE, mx)


def test_the_dns_server_stopped_for_a_minute_loses_and_duplicates_nothing(cluster: Stack) -> None:
    namespace = "dnsdown"
    mx = _apply_domains(cluster, namespace, "b")
    ready_at_stop = _wait_midway(cluster, namespace)
    server = cluster.dns.authoritative
    server.interrupt()
    try:
        # The operator says why while the server is away.
        wait_for(
            "a domain reporting its DNS provider unreachable",
            lambda: any(
                c["type"] == "DNSReady" and c["reason"] == "ProviderUnreachable"
                for b in get_json(cluster, "maildomains", "-n", namespace)["items"]
                for c in b.get("status", {}).get("conditions", [])
            ),
            timeout=55,
        )
        time.sleep(max(0.0, DNS_DOWN_SECONDS - 5))
    finally:
        server.resume()
    began = time.monotonic()
    _wait_all_ready(cluster, namespace, "after BIND came back")
    converged = time.monotonic() - began
    print(
        f"\nBIND stopped for {DNS_DOWN_SECONDS}s with {ready_at_stop}/{COUNT} Ready; "
        f"all Ready {converged:.1f}s after it came back"
    )
    _assert_zone_as_desired(cluster, namespace, mx)


def test_the_api_server_restarted_loses_and_duplicates_nothing(cluster: Stack) -> None:
    namespace = "apidown"
    mx = _apply_domains(cluster, namespace, "a")
    ready_at_stop = _wait_midway(cluster, namespace)
    down = cluster.plane.restart_apiserver(down_seconds=10)
    began = time.monotonic()
    _wait_all_ready(cluster, namespace, "after the API server restarted")
    converged = time.monotonic() - began
    print(
        f"\nAPI server away {down:.1f}s with {ready_at_stop}/{COUNT} Ready; "
        f"all Ready {converged:.1f}s after it answered again"
    )
    _assert_zone_as_desired(cluster, namespace, mx)


def _operator_restarts(stack: Stack) -> int:
    pods = get_json(stack, "pods", "-n", RELEASE_NAMESPACE, "-l", "app.kubernetes.io/name=mailward")
    return sum(
        status["restartCount"]
        for pod in pods["items"]
        for status in pod["status"].get("containerStatuses", [])
    )
