"""The MTA as a pod: its own validating resolver, its queue on a volume, DANE from inside.

The example's MTA pod (tests/fixtures_cluster.py) sends through its submission port as an
account of the domain; the destinations are zones of the test BIND (`destination_zones`) whose
MX hosts this test starts and stops itself on loopback.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from mailward_localstack.controlplane import kubectl
from mailward_localstack.stack import Stack
from tests.fixtures_cluster import (
    MISMATCH_HOST,
    NAMESPACE,
    QUEUE_HOST,
    WORKLOADS,
    get_json,
    ready_pods,
    wait_for,
)

pytestmark = [pytest.mark.controlplane, pytest.mark.dnsstack, pytest.mark.node]

ACCOUNT, PASSWORD = "alice", "correct horse battery staple"
POSTFIX_CONFIG = "/etc/mailward/postfix"


class Collecting:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 2.0.0 Ok: kept"


def _mta_pod(stack: Stack) -> str:
    pods = ready_pods(stack, NAMESPACE, WORKLOADS["mta"][3])
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return str(pods[0]["metadata"]["name"])


def _exec(stack: Stack, container: str, *command: str) -> str:
    pod = _mta_pod(stack)
    return kubectl(stack.kubeconfig, "exec", "-n", NAMESPACE, pod, "-c", container, "--", *command)


def _queue(stack: Stack) -> list[dict[str, Any]]:
    text = _exec(stack, "postfix", "postqueue", "-c", POSTFIX_CONFIG, "-j")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _queued_to(stack: Stack, recipient: str) -> list[dict[str, Any]]:
    return [
        entry
        for entry in _queue(stack)
        if any(r["address"] == recipient for r in entry.get("recipients", []))
    ]


@pytest.fixture(scope="module")
def submitting(cluster: Stack, example: dict[str, Any]) -> Stack:
    """The example with one submission account (a Secret and `spec.mta.accountsSecretName`)."""
    kubectl(
        cluster.kubeconfig,
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "example-accounts", "namespace": NAMESPACE},
                "stringData": {ACCOUNT: PASSWORD},
            }
        ),
    )
    kubectl(
        cluster.kubeconfig,
        "patch", "maildomain", "example", "-n", NAMESPACE, "--type=merge",
        "-p", json.dumps({"spec": {"mta": {"accountsSecretName": "example-accounts"}}}),
    )  # fmt: skip

    def accounts_mounted() -> bool:
        pods = ready_pods(cluster, NAMESPACE, WORKLOADS["mta"][3])
        return len(pods) == 1 and any(
            v.get("secret", {}).get("secretName") == "example-accounts"
            for v in pods[0]["spec"]["volumes"]
        )

    wait_for("the MTA pod with the accounts Secret", accounts_mounted, timeout=180)
    return cluster


def _submit(stack: Stack, recipient: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = f"{ACCOUNT}@{stack.layout.domain}"
    message["To"] = recipient
    message["Subject"] = subject
    message.set_content("sent from the test through the MTA pod\n")
    context = ssl.create_default_context(cafile=str(stack.ca.ca_file))
    context.check_hostname = False  # we connect by address; the chain is still verified
    with smtplib.SMTP(stack.layout.mta, 587, timeout=30) as session:
        session.starttls(context=context)
        session.login(f"{ACCOUNT}@{stack.layout.domain}", PASSWORD)
        session.send_message(message)


@pytest.fixture
def receiver(cluster: Stack) -> Iterator[tuple[Collecting, Controller]]:
    handler = Collecting()
    controller = Controller(
        handler, hostname=cluster.layout.address(QUEUE_HOST), port=25, ready_timeout=10
    )
    yield handler, controller
    if getattr(controller, "_thread", None) is not None:
        controller.stop()


def test_queued_mail_survives_the_pod_and_is_delivered_later(
    submitting: Stack, receiver: tuple[Collecting, Controller]
) -> None:
    stack = submitting
    handler, controller = receiver
    recipient = "bob@queue.test"
    subject = f"queued {uuid.uuid4()}"
    _submit(stack, recipient, subject)
    # Nothing listens at mx.queue.test yet: the message waits in the queue (on the volume).
    queued = wait_for("the message deferred in the queue", lambda: _queued_to(stack, recipient))
    queue_id = queued[0]["queue_id"]
    old_pod = ready_pods(stack, NAMESPACE, WORKLOADS["mta"][3])[0]["metadata"]["uid"]

    kubectl(stack.kubeconfig, "delete", "pod", _mta_pod(stack), "-n", NAMESPACE, "--wait=true")

    def replaced() -> bool:
        pods = ready_pods(stack, NAMESPACE, WORKLOADS["mta"][3])
        return len(pods) == 1 and pods[0]["metadata"]["uid"] != old_pod

    wait_for("a new MTA pod Ready", replaced, timeout=180)
    after = _queued_to(stack, recipient)
    assert [entry["queue_id"] for entry in after] == [queue_id], after

    controller.start()
    _exec(stack, "postfix", "postqueue", "-c", POSTFIX_CONFIG, "-f")
    delivered = wait_for(
        "delivery to the receiver that came back",
        lambda: [m for m in handler.messages if subject.encode() in m],
        timeout=60,
    )
    assert len(delivered) == 1
    wait_for("an empty queue for bob", lambda: not _queued_to(stack, recipient), timeout=30)


def _resolve_in_pod(stack: Stack, name: str, rdtype: str) -> dict[str, Any]:
    """Ask the pod's own resolver (its /etc/resolv.conf), as Postfix does."""
    script = "\n".join(
        [
            "import json, dns.resolver, dns.flags, dns.rcode, dns.message, dns.query",
            "server = dns.resolver.Resolver().nameservers[0]",
            f"query = dns.message.make_query({name!r}, {rdtype!r}, want_dnssec=True)",
            "answer = dns.query.udp(query, server, timeout=10)",
            "print(json.dumps({'rcode': dns.rcode.to_text(answer.rcode()),",
            "    'ad': bool(answer.flags & dns.flags.AD), 'server': server,",
            "    'answer': [rrset.to_text() for rrset in answer.answer]}))",
        ]
    )
    return dict(json.loads(_exec(stack, "postfix", "python3", "-c", script)))


def test_the_pods_resolver_validates_dnssec(cluster: Stack, example: dict[str, Any]) -> None:
    good = _resolve_in_pod(cluster, "_25._tcp.mx1.example.test", "TLSA")
    assert good["rcode"] == "NOERROR", good
    assert good["ad"] is True, good
    assert any(" TLSA 3 1 1 " in line for line in good["answer"]), good
    # The pod asks its own resolver on its own address, not the host's or the cluster's.
    assert good["server"] == cluster.layout.mta, good
    bogus = _resolve_in_pod(cluster, "_25._tcp.mx.bogus.test", "TLSA")
    assert bogus["rcode"] == "SERVFAIL", bogus


def test_mail_to_a_destination_whose_tlsa_does_not_match_stays_deferred(
    submitting: Stack,
) -> None:
    stack = submitting
    cert = stack.ca.issue_server_cert(["mx.mismatch.test"], out_dir=stack.state_dir / "certs")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert.chain_file, cert.key_file)
    handler = Collecting()
    # The destination offers STARTTLS with a certificate the public CA system would accept;
    # only its TLSA record says otherwise.
    controller = Controller(
        handler,
        hostname=stack.layout.address(MISMATCH_HOST),
        port=25,
        tls_context=tls,
        ready_timeout=10,
    )
    controller.start()
    try:
        recipient = "carol@mismatch.test"
        _submit(stack, recipient, f"must not arrive {uuid.uuid4()}")

        def deferred_for_tls() -> list[dict[str, Any]]:
            entries = _queued_to(stack, recipient)
            reasons = [r.get("delay_reason", "") for e in entries for r in e.get("recipients", [])]
            return [e for e, reason in zip(entries, reasons, strict=True) if reason]

        entries = wait_for("the message deferred with a reason", deferred_for_tls, timeout=90)
        reason = entries[0]["recipients"][0]["delay_reason"]
        assert "TLS" in reason or "certificate" in reason.lower(), reason
        _exec(stack, "postfix", "postqueue", "-c", POSTFIX_CONFIG, "-f")
        time.sleep(5)
        assert handler.messages == []
        assert _queued_to(stack, recipient), "the message left the queue"
    finally:
        controller.stop()
        for entry in _queued_to(stack, "carol@mismatch.test"):
            _exec(stack, "postfix", "postsuper", "-c", POSTFIX_CONFIG, "-d", entry["queue_id"])


def test_the_mta_pod_holds_its_queue_on_a_bound_volume(
    cluster: Stack, example: dict[str, Any]
) -> None:
    claims = get_json(cluster, "pvc", "-n", NAMESPACE)["items"]
    queue = [c for c in claims if c["metadata"]["name"].startswith("queue-example-mta-")]
    assert len(queue) == 1, queue
    assert queue[0]["status"]["phase"] == "Bound", queue
    volume = get_json(cluster, "pv", queue[0]["spec"]["volumeName"])
    assert volume["spec"]["local"]["path"].startswith(str(cluster.state_dir)), volume["spec"]
