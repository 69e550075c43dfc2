"""DKIM on the real node: a MailDomain with `spec.dkim.managed` gets an MTA pod whose `dkim`
container (dkimpy-milter, as rendered by render/dkim.py, with the pod's security context and
volumes) signs mail submitted to it; a destination MX started by the test captures the message,
and dkimpy verifies both signatures with the keys the cluster's validating Unbound returns.

The MailDomain is `dkim.rollover.test` (the zone the cluster's BIND lets the DNS provider
update), in a namespace of its own, with its MTA on the host network at `<net>.77`; mail goes to
`bob@queue.test`, whose MX (`<net>.61`) only this test's receiver answers while it runs.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from mailward_localstack.controlplane import kubectl
from mailward_localstack.demo_dns import create_dns_provider
from mailward_localstack.dns import ensure_loopback_address, remove_loopback_address
from mailward_localstack.stack import Stack
from tests.dkim_support import verify_all
from tests.fixtures_cluster import QUEUE_HOST, ROLLOVER_ZONE, condition, get_json, wait_for
from tests.fixtures_dnspublish import tls_secret_manifest

pytestmark = [pytest.mark.controlplane, pytest.mark.dnsstack, pytest.mark.node]

NAMESPACE = "dkim"
NAME = "signer"
DOMAIN = f"dkim.{ROLLOVER_ZONE}"
MX_HOST = f"mx.{DOMAIN}"
MX_HOST_NUMBER = 77
ACCOUNT, PASSWORD = "alice", "correct horse battery staple"
SELECTOR = f"app.kubernetes.io/instance={NAME}-mta"


def _apply(stack: Stack, manifest: dict[str, Any]) -> None:
    kubectl(stack.kubeconfig, "apply", "-f", "-", input=json.dumps(manifest))


class Collecting:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 2.0.0 Ok: kept"


@pytest.fixture(scope="module")
def signing_domain(cluster: Stack, example: dict[str, Any]) -> Iterator[Stack]:
    """The MailDomain signing, its MTA pod Ready with the signer beside Postfix."""
    address = cluster.layout.address(MX_HOST_NUMBER)
    added = ensure_loopback_address(address)
    kubectl(cluster.kubeconfig, "create", "namespace", NAMESPACE)
    try:
        create_dns_provider(cluster.kubeconfig, cluster.state_dir / "dns", NAMESPACE)
        cert = cluster.ca.issue_server_cert([MX_HOST], out_dir=cluster.state_dir / "certs" / "dkim")
        _apply(cluster, tls_secret_manifest(NAMESPACE, cert, "signer-tls"))
        _apply(
            cluster,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "signer-accounts", "namespace": NAMESPACE},
                "stringData": {ACCOUNT: PASSWORD},
            },
        )
        _apply(
            cluster,
            {
                "apiVersion": "mailward.io/v1alpha1",
                "kind": "MailDomain",
                "metadata": {"name": NAME, "namespace": NAMESPACE},
                "spec": {
                    "domain": DOMAIN,
                    "mx": [{"host": MX_HOST, "priority": 10, "addresses": [address]}],
                    "tls": {"secretName": "signer-tls"},
                    "mta": {"hostNetwork": True, "accountsSecretName": "signer-accounts"},
                    "dns": {"providerRef": {"kind": "DNSProvider", "name": "local-bind"}},
                    "mtaSts": {"mode": "testing"},
                    "compliance": {"interval": "168h"},
                    "dkim": {"managed": True},
                },
            },
        )

        def signing() -> dict[str, Any] | None:
            body: dict[str, Any] = get_json(cluster, "maildomain", NAME, "-n", NAMESPACE)
            found = condition(body, "DKIMReady")
            return body if found and found["status"] == "True" else None

        body = wait_for("DKIMReady=True", signing, timeout=300)
        print(f"\nevidence: status.dkim = {json.dumps(body['status']['dkim'])}")
        wait_for("the MTA pod Ready with its signer", lambda: _signer_pod(cluster), timeout=300)
        yield cluster
    finally:
        kubectl(cluster.kubeconfig, "delete", "namespace", NAMESPACE, "--wait=false")
        if added:
            remove_loopback_address(address)


def _signer_pod(stack: Stack) -> str | None:
    """The Ready MTA pod whose `dkim` container is ready too."""
    for pod in get_json(stack, "pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]:
        status = pod.get("status", {})
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        signer = [s for s in status.get("initContainerStatuses", []) if s["name"] == "dkim"]
        if ready and signer and signer[0].get("ready"):
            return str(pod["metadata"]["name"])
    return None


def test_the_mta_pod_signs_with_both_keys_and_the_signatures_verify(
    signing_domain: Stack,
) -> None:
    stack = signing_domain
    handler = Collecting()
    controller = Controller(
        handler, hostname=stack.layout.address(QUEUE_HOST), port=25, ready_timeout=10
    )
    controller.start()
    try:
        subject = f"signed {uuid.uuid4()}"
        message = EmailMessage()
        message["From"] = f"{ACCOUNT}@{DOMAIN}"
        message["To"] = "bob@queue.test"
        message["Subject"] = subject
        message.set_content("sent through the MTA pod's signer\n")
        context = ssl.create_default_context(cafile=str(stack.ca.ca_file))
        context.check_hostname = False  # by address; the chain is still verified
        address = stack.layout.address(MX_HOST_NUMBER)
        with smtplib.SMTP(address, 587, timeout=30) as session:
            session.starttls(context=context)
            session.login(f"{ACCOUNT}@{DOMAIN}", PASSWORD)
            session.send_message(message)
        (received,) = wait_for(
            "the message at mx.queue.test",
            lambda: [m for m in handler.messages if subject.encode() in m],
            timeout=120,
        )
    finally:
        controller.stop()
    # Line ends as on the wire (CRLF), however the receiver handed the content over.
    raw = received.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    results = verify_all(raw, stack.layout.resolver)
    print(f"evidence: the pod's signatures, verified through {stack.layout.resolver}: {results}")
    assert {a for _, a, _ in results} == {"ed25519-sha256", "rsa-sha256"}, results
    assert all(ok for _, _, ok in results), results
    pod = _signer_pod(stack)
    assert pod is not None
    log = kubectl(stack.kubeconfig, "logs", "-n", NAMESPACE, pod, "-c", "dkim")
    added = [line for line in log.splitlines() if "DKIM signature added" in line]
    print("evidence: kubectl logs -c dkim:\n" + "\n".join(added))
    assert len(added) >= 2
