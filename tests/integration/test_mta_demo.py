"""The demo's kubelet stand-in: Postfix started from the ConfigMap read back from the API
server, and the StatefulSet status written from that process's state, which `MTAReady` reads."""

from __future__ import annotations

import asyncio
import base64
import shutil
import smtplib
import tempfile
from pathlib import Path

import pytest
from kubernetes import client

from mailward.adapters.workloads import KubeWorkloadClient
from mailward.conditions import parse_status
from mailward.localstack._process import stop_all
from mailward.localstack.demo_mta import start_demo_mta
from mailward.localstack.dns import DNSStack, remove_loopback_address
from mailward.localstack.pki import LocalCA
from mailward.parts import ReconcileContext
from mailward.parts.mta import MTAPart
from mailward.reconcile import parse_spec
from tests.fixtures_operator import Kube
from tests.manifests import valid_maildomain
from tests.net import addr

pytestmark = [pytest.mark.controlplane, pytest.mark.dnsstack]


def _reconcile(kube: Kube, namespace: str) -> object:
    body = kube.get_maildomain(namespace, "example")
    ctx = ReconcileContext(
        name="example",
        namespace=namespace,
        uid=body["metadata"]["uid"],
        generation=body["metadata"]["generation"],
        spec=parse_spec(body["spec"]),
        status=parse_status(body.get("status")),
    )
    return asyncio.run(MTAPart(KubeWorkloadClient(kube.api), retry_seconds=1).reconcile(ctx))


def test_demo_runs_the_configmap_and_reports_the_real_state(
    kube: Kube, namespace: str, local_ca: LocalCA, dns_stack: DNSStack
) -> None:
    cert = local_ca.issue_server_cert(["mx1.example.test"])
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "mx-example-test-tls", "namespace": namespace},
            "data": {
                "tls.crt": base64.b64encode(cert.chain_file.read_bytes()).decode(),
                "tls.key": base64.b64encode(cert.key_file.read_bytes()).decode(),
            },
        }
    )
    kube.apply(valid_maildomain(namespace=namespace))
    first = _reconcile(kube, namespace)
    assert first.verdicts[0].reason == "MTAPending"  # type: ignore[attr-defined]

    state = Path(tempfile.mkdtemp(prefix="mailward-demo-mta-"))
    state.chmod(0o711)
    address = addr(27)
    try:
        summary = start_demo_mta(
            state,
            kube.kubeconfig,
            namespace=namespace,
            address=address,
            resolver=dns_stack.resolver.address,
        )
        assert "banner '220 mx1.example.test ESMTP'" in summary
        with smtplib.SMTP(address, 25, local_hostname="client.example.test", timeout=20) as c:
            c.ehlo()
            assert c.has_extn("starttls")
            c.mail("sender@client.example.test")
            assert c.rcpt("postmaster@example.test")[0] == 250
        sts = client.AppsV1Api(kube.api).read_namespaced_stateful_set("example-mta", namespace)
        assert sts.status.ready_replicas == 1
        assert sts.status.current_revision == sts.status.update_revision
        result = _reconcile(kube, namespace)
        verdict = result.verdicts[0]  # type: ignore[attr-defined]
        assert (verdict.status, verdict.reason) == ("True", "MTARunning")
    finally:
        stopped = stop_all(state)
        remove_loopback_address(address)
        shutil.rmtree(state, ignore_errors=True)
    assert any("master" in name for name in stopped), stopped
