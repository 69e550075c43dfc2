"""The mtasts part in the real operator: the endpoint's objects are applied, `MTASTSReady` and
`status.mtaSts.policyId` say what is served, and a new policy id never shows before its text.

It runs on a control plane, a policy endpoint and an operator of its own (module scope): the
session's operator is configured without a policy endpoint, and two operators must never
reconcile the same MailDomains.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from mailward.reconcile import parse_spec
from mailward.render.mta_sts import policy_for, policy_id
from mailward.render.policy_objects import (
    NAME,
    ingress_name,
    tls_secret_name,
)
from mailward_localstack._process import free_port, start_watchdog
from mailward_localstack.controlplane import ControlPlane, wait_established
from mailward_localstack.pki import LocalCA
from tests.fixtures_mta import set_statefulset_ready
from tests.fixtures_operator import REPO, Kube
from tests.fixtures_policy import POLICY_NAMESPACE, PolicyEndpoint, running_policy_endpoint
from tests.manifests import tls_secret_manifest
from tests.net import addr
from tests.processes import mailward_process

pytestmark = pytest.mark.controlplane

ENDPOINT_ADDRESS = addr(45)
APISERVER_ADDRESS = addr(46)
INGRESS_CLASS = "test-ingress"


@dataclass
class PolicyCluster:
    kube: Kube
    endpoint: PolicyEndpoint
    operator_log: Path


@pytest.fixture(scope="module")
def policy_cluster(
    tmp_path_factory: pytest.TempPathFactory, local_ca: LocalCA
) -> Iterator[PolicyCluster]:
    if os.geteuid() != 0:
        pytest.skip("the policy endpoint listens on port 443 (root)")
    state = tmp_path_factory.mktemp("mtasts-cluster")
    plane = ControlPlane(state / "controlplane", host=APISERVER_ADDRESS)
    watchdog = start_watchdog(plane.state_dir)
    try:
        plane.start()
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        kube = Kube(plane.kubeconfig, api)
        kube.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        wait_established(plane.kubeconfig, "maildomains.mailward.io")
        liveness = f"http://127.0.0.1:{free_port('127.0.0.1')}/healthz"
        operator_env = {
            **os.environ,
            "KUBECONFIG": str(plane.kubeconfig),
            "MAILWARD_TLS_SECRET_RETRY_SECONDS": "2",
            "MAILWARD_MTA_RETRY_SECONDS": "1",
            "MAILWARD_POLICY_ENDPOINT_URL": f"https://{ENDPOINT_ADDRESS}:443",
            "MAILWARD_POLICY_CA_FILE": str(local_ca.ca_file),
            "MAILWARD_POLICY_NAMESPACE": POLICY_NAMESPACE,
            "MAILWARD_POLICY_INGRESS_CLASS": INGRESS_CLASS,
            "MAILWARD_POLICY_RETRY_SECONDS": "1",
        }
        with (
            running_policy_endpoint(
                kube, local_ca, ENDPOINT_ADDRESS, state / "serve.log"
            ) as endpoint,
            mailward_process(
                ["run", "--all-namespaces", "--liveness", liveness],
                env=operator_env,
                log_file=state / "operator.log",
                ready_url=liveness,
                what="the operator",
            ),
        ):
            yield PolicyCluster(kube, endpoint, state / "operator.log")
    finally:
        plane.stop()
        watchdog.terminate()
        watchdog.wait()


def _condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in body.get("status", {}).get("conditions", []):
        if condition["type"] == type_:
            return dict(condition)
    return None


def _mx_secret(namespace: str, ca: LocalCA, host: str) -> dict[str, Any]:
    cert = ca.issue_server_cert([host], out_dir=ca.dir / "mx")
    return tls_secret_manifest(namespace, cert, "mx-tls")


def _wait_reason(
    cluster: PolicyCluster, namespace: str, reason: str, timeout: float = 30
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = cluster.kube.get_maildomain(namespace, "policy")
        condition = _condition(body, "MTASTSReady")
        return body if condition and condition["reason"] == reason else None

    try:
        body: dict[str, Any] = cluster.kube.wait_for(
            f"MTASTSReady {reason}", probe, timeout=timeout
        )
    except AssertionError as error:
        last = cluster.kube.get_maildomain(namespace, "policy").get("status")
        log = cluster.operator_log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"{error}\nstatus: {last}\noperator log:\n{log}") from None
    return body


def test_policy_is_served_then_announced(policy_cluster: PolicyCluster) -> None:
    kube, endpoint = policy_cluster.kube, policy_cluster.endpoint
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", namespace)
    domain = f"part-{uuid.uuid4().hex[:8]}.example.test"
    endpoint.add_certificate(domain)
    kube.apply(_mx_secret(namespace, endpoint.ca, f"mx1.{domain}"))
    body = {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": "policy", "namespace": namespace},
        "spec": {
            "domain": domain,
            "mx": [{"host": f"mx1.{domain}"}],
            "tls": {"secretName": "mx-tls"},
            "mtaSts": {"mode": "enforce", "maxAge": 86400},
        },
    }
    kube.apply(body)
    # No kubelet here: report the MTA StatefulSet ready, so that Ready can become True.
    kube.wait_for(
        "the MTA StatefulSet",
        lambda: "policy-mta" in kube.kubectl("get", "sts", "-n", namespace, "-o", "name").stdout,
    )
    set_statefulset_ready(kube.api, namespace, "policy-mta")
    served = _wait_reason(policy_cluster, namespace, "Serving")
    first = policy_for(parse_spec(body["spec"]))
    assert served["status"]["mtaSts"]["policyId"] == policy_id(first)
    assert _condition(served, "MTASTSReady")["status"] == "True"  # type: ignore[index]
    kube.wait_for(
        "Ready=True",
        lambda: (
            (_condition(kube.get_maildomain(namespace, "policy"), "Ready") or {}).get("status")
            == "True"
        ),
    )
    assert endpoint.fetch(f"mta-sts.{domain}")[2] == first.encode()

    # The objects the endpoint needs, in its namespace.
    apps = client.AppsV1Api(kube.api)
    deployment = apps.read_namespaced_deployment(NAME, POLICY_NAMESPACE)
    assert deployment.spec.replicas == 2
    container = deployment.spec.template.spec.containers[0]
    assert container.args[0] == "serve-policies"
    assert container.security_context.read_only_root_filesystem is True
    assert container.readiness_probe.http_get.path == "/readyz"
    pdb = client.PolicyV1Api(kube.api).read_namespaced_pod_disruption_budget(NAME, POLICY_NAMESPACE)
    assert pdb.spec.min_available == 1
    ingress = client.NetworkingV1Api(kube.api).read_namespaced_ingress(
        ingress_name(domain), POLICY_NAMESPACE
    )
    assert ingress.spec.ingress_class_name == INGRESS_CLASS
    assert ingress.spec.tls[0].hosts == [f"mta-sts.{domain}", f"autoconfig.{domain}"]
    assert ingress.spec.tls[0].secret_name == tls_secret_name(domain)
    assert client.CoreV1Api(kube.api).read_namespaced_service(NAME, POLICY_NAMESPACE)

    # The endpoint lags (stopped): the new spec's id must not appear before its text is served.
    endpoint.process.send_signal(signal.SIGSTOP)
    try:
        body["spec"]["mtaSts"] = {"mode": "testing", "maxAge": 3600}
        kube.kubectl(
            "patch",
            "maildomain",
            "policy",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"mtaSts": body["spec"]["mtaSts"]}}),
        )
        stalled = _wait_reason(policy_cluster, namespace, "EndpointUnreachable")
        assert stalled["status"]["mtaSts"]["policyId"] == policy_id(first)
        assert _condition(stalled, "Ready")["status"] == "False"  # type: ignore[index]
    finally:
        endpoint.process.send_signal(signal.SIGCONT)
    second = policy_for(parse_spec(body["spec"]))
    observed: list[tuple[str | None, bytes]] = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        current = kube.get_maildomain(namespace, "policy")
        shown = current["status"]["mtaSts"]["policyId"]
        observed.append((shown, endpoint.fetch(f"mta-sts.{domain}")[2]))
        if shown == policy_id(second):
            break
        time.sleep(0.2)
    # Every status read with the new id came after the endpoint served the new text.
    assert observed[-1] == (policy_id(second), second.encode()), observed[-3:]
    for shown, text in observed:
        if shown == policy_id(second):
            assert text == second.encode()
    final = _wait_reason(policy_cluster, namespace, "Serving")
    assert _condition(final, "Ready")["status"] == "True"  # type: ignore[index]
