"""Certificates from a real cert-manager issuer, renewed by mailward (issue #14).

The MailDomain `issued` (domain `issued.rollover.test`, its own MTA pod on `<net>.72`) names the
ClusterIssuer `mailward-local-ca` and nothing else: no Secret is made by hand. Its certificates
live one hour and are renewed 45 s after issuance (`renewBefore: 59m15s`), so a test sees
renewals within a minute; its TLSA TTL is 5 s. A DANE probe (tests/dane_probe.py) runs across
the key rotation that such a renewal starts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509

from mailward.adapters.endpoint_keys import presented_key
from mailward.rollover.keys import certificate_digest
from mailward_localstack.certmanager import CLUSTER_ISSUER, CertManager
from mailward_localstack.controlplane import kubectl
from mailward_localstack.demo_dns import create_dns_provider
from mailward_localstack.demo_policy import fetch
from mailward_localstack.dns import ensure_loopback_address, remove_loopback_address
from mailward_localstack.stack import Stack
from tests.dane_probe import DaneProbe
from tests.fixtures_cluster import (
    ROLLOVER_ZONE,
    condition,
    example_maildomain,
    get_json,
    wait_for,
)

pytestmark = [pytest.mark.controlplane, pytest.mark.dnsstack, pytest.mark.node]

NAMESPACE = "issued"
NAME = "issued"
DOMAIN = f"issued.{ROLLOVER_ZONE}"
MX_HOST = f"mx.{DOMAIN}"
MX_HOST_NUMBER = 72
TLSA_TTL = 5


def _maildomain(stack: Stack) -> dict[str, Any]:
    layout = stack.layout
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "domain": DOMAIN,
            "mx": [{"host": MX_HOST, "priority": 10,
                    "addresses": [layout.address(MX_HOST_NUMBER)]}],
            "tls": {
                "issuerRef": {"name": CLUSTER_ISSUER, "kind": "ClusterIssuer"},
                "duration": "1h",
                "renewBefore": "59m15s",
            },
            "mta": {"hostNetwork": True},
            "dns": {
                "providerRef": {"kind": "DNSProvider", "name": "local-bind"},
                "ttl": {"tlsa": TLSA_TTL},
                "mtaStsEndpoint": {"addresses": [layout.policy_endpoint]},
                "dmarc": {"rua": [f"mailto:dmarc-reports@{DOMAIN}"]},
            },
            "dane": {"rollover": {"margin": "2s", "retireAfter": "10s", "verifyTimeout": "3m"}},
            "mtaSts": {"mode": "enforce", "maxAge": 86400},
            "tlsRpt": {"rua": [f"mailto:tlsrpt@{layout.tlsrpt_host}"]},
            "compliance": {"interval": "168h"},
        },
    }  # fmt: skip


def _status(stack: Stack) -> dict[str, Any]:
    body = get_json(stack, "maildomain", NAME, "-n", NAMESPACE)
    found: dict[str, Any] = body.get("status", {}).get("certificate") or {}
    return found


def _keys(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k["role"]: k for k in status.get("keys", [])}


def _served(stack: Stack) -> x509.Certificate:
    """The leaf the MTA pod presents after STARTTLS."""
    import ssl

    from mailward.compliance.observations import Endpoint
    from mailward.compliance.tlsprobe import handshake

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    result = handshake(Endpoint(MX_HOST, stack.layout.address(MX_HOST_NUMBER), 25), context)
    return x509.load_der_x509_certificate(result.chain[0])


class Timeline:
    """status.certificate's phase and keys, each time they change (read every second), so that
    a failed probe can be placed in the rollover."""

    def __init__(self, stack: Stack) -> None:
        self.entries: list[tuple[float, str]] = []
        self._stack = stack
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        last = ""
        while not self._stop.wait(1.0):
            try:
                status = _status(self._stack)
            except Exception:
                continue
            keys = " ".join(f"{k['role']}={k['spkiSha256'][:8]}" for k in status.get("keys", []))
            now = f"{status.get('phase')} {keys}"
            if now != last:
                self.entries.append((time.time(), now))
                last = now

    def since(self, began: float) -> str:
        return "\n".join(f"{at - began:+.1f} s: {entry}" for at, entry in self.entries)


@pytest.fixture(scope="module")
def issued_domain(
    cluster: Stack, example: dict[str, Any], cert_manager: CertManager
) -> Iterator[dict[str, Any]]:
    address = cluster.layout.address(MX_HOST_NUMBER)
    added = ensure_loopback_address(address)
    kubeconfig = cluster.kubeconfig
    kubectl(kubeconfig, "create", "namespace", NAMESPACE)
    create_dns_provider(kubeconfig, cluster.state_dir / "dns", NAMESPACE)
    began = time.monotonic()
    kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(_maildomain(cluster)))

    def ready() -> dict[str, Any] | None:
        body: dict[str, Any] = get_json(cluster, "maildomain", NAME, "-n", NAMESPACE)
        found = condition(body, "Ready")
        return body if found and found["status"] == "True" else None

    body = wait_for("MailDomain issued Ready", ready, timeout=300)
    print(f"\nMailDomain {NAME} Ready {time.monotonic() - began:.0f} s after apply")
    try:
        yield body
    finally:
        kubectl(kubeconfig, "delete", "namespace", NAMESPACE, "--wait=false")
        if added:
            remove_loopback_address(address)


def test_a_domain_naming_only_an_issuer_becomes_ready_and_serves_its_certificates(
    cluster: Stack, issued_domain: dict[str, Any]
) -> None:
    status = _status(cluster)
    assert status["source"] == "Issuer"
    leaf = _served(cluster)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert MX_HOST in san.get_values_for_type(x509.DNSName)
    assert leaf.issuer == cluster.ca.cert.subject
    assert certificate_digest(leaf) == _keys(status)["current"]["spkiSha256"]
    # The next key is published beside the current one from the start (TR-DANE-04, -06).
    assert set(_keys(status)) >= {"current", "next"}
    code, _, body = fetch(
        cluster.layout.policy_endpoint,
        f"mta-sts.{DOMAIN}",
        "/.well-known/mta-sts.txt",
        str(cluster.ca.ca_file),
    )
    assert code == 200
    assert b"mode: enforce" in body
    policy = condition(issued_domain, "PolicyCertificateReady")
    assert policy is not None
    assert policy["status"] == "True"


@pytest.mark.timeout(600)
def test_a_renewal_moves_to_the_published_next_key_without_a_dane_failure(
    cluster: Stack, issued_domain: dict[str, Any]
) -> None:
    status = _status(cluster)
    first, upcoming = _keys(status)["current"], _keys(status)["next"]
    probe = DaneProbe(cluster.layout.resolver, MX_HOST).start()
    timeline = Timeline(cluster).__enter__()
    try:
        wait_for("three DANE probes", lambda: len(probe.results) >= 3, timeout=30)
        began = time.time()

        def rotated() -> dict[str, Any] | None:
            s = _status(cluster)
            keys = _keys(s)
            moved = keys.get("current", {}).get("spkiSha256") == upcoming["spkiSha256"]
            return (
                s
                if moved and "previous" not in keys and s.get("phase") in ("Stable", "Aging")
                else None
            )

        final = wait_for("the renewal's switch to the next key, the old one retired", rotated,
                         timeout=300)  # fmt: skip
        count = len(probe.results)
        wait_for("three more probes", lambda: len(probe.results) >= count + 3, timeout=30)
    finally:
        results = probe.stop()
        timeline.__exit__()
    failures = [r for r in results if not r.verified]
    print(f"\nthe rollover, as status.certificate showed it:\n{timeline.since(began)}")
    print(f"\n{len(results)} DANE probes across the rotation, {len(failures)} failed; "
          f"{time.time() - began:.0f} s")  # fmt: skip
    assert len(results) >= 20
    assert not failures, "\n".join(f"{r.at - began:+.1f} s: {r.summary}" for r in failures)
    assert first["spkiSha256"] != upcoming["spkiSha256"]
    keys = _keys(final)
    assert keys["current"]["publishedSince"] == upcoming["publishedSince"], "aged since the start"
    assert "next" in keys
    assert keys["next"]["spkiSha256"] != upcoming["spkiSha256"]
    assert certificate_digest(_served(cluster)) == upcoming["spkiSha256"]


@pytest.mark.timeout(600)
def test_a_renewal_without_a_due_rotation_keeps_the_key_and_writes_no_dns(
    cluster: Stack, issued_domain: dict[str, Any]
) -> None:
    never = {"spec": {"tls": {"privateKey": {"rotationPolicy": "Never"}}}}
    kubectl(cluster.kubeconfig, "patch", "maildomain", NAME, "-n", NAMESPACE, "--type=merge",
            "-p", json.dumps(never))  # fmt: skip
    settled = wait_for(
        "no switch in progress",
        lambda: (
            (s := _status(cluster)).get("phase") in ("Stable", "Aging")
            and "previous" not in _keys(s)
            and s
        ),
        timeout=300,
    )
    before = get_json(cluster, "maildomain", NAME, "-n", NAMESPACE)["status"]
    key = _keys(settled)["current"]["spkiSha256"]
    not_after = settled["notAfter"]
    serial = _served(cluster).serial_number

    def renewed() -> dict[str, Any] | None:
        s = _status(cluster)
        return s if s.get("notAfter") != not_after else None

    after = wait_for("a renewal", renewed, timeout=180)
    assert _keys(after)["current"]["spkiSha256"] == key
    wait_for("the MTA serving the renewed certificate",
             lambda: _served(cluster).serial_number != serial, timeout=120)  # fmt: skip
    assert certificate_digest(_served(cluster)) == key
    status = get_json(cluster, "maildomain", NAME, "-n", NAMESPACE)["status"]
    events = kubectl(
        cluster.kubeconfig, "get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp",
        "-o", "custom-columns=TIME:.lastTimestamp,REASON:.reason,MESSAGE:.message",
    )  # fmt: skip
    assert status["dns"].get("lastChangeTime") == before["dns"].get("lastChangeTime"), (
        f"a renewal with the same key changed DNS; keys before {_keys(settled)}, after "
        f"{_keys(status['certificate'])}; events:\n{events}"
    )
    print(
        f"\nrenewed: notAfter {not_after} -> {after['notAfter']}, key {key[:16]} kept, "
        "DNS untouched"
    )
    assert presented_key(MX_HOST, cluster.layout.address(MX_HOST_NUMBER)).spki_sha256 == key


SECOND_NAMESPACE = "second"
SECOND_DOMAIN = "second.example.test"


@pytest.mark.timeout(600)
def test_a_copy_of_the_example_in_another_namespace_becomes_ready_with_no_manual_step(
    cluster: Stack, example: dict[str, Any], cert_manager: CertManager
) -> None:
    """What a platform team does: copy examples/maildomain.yaml, change the domain, the
    namespace and the addresses its pods bind, apply. No Secret, no DNSProvider made by hand
    (today's copy published its DNS but never became Ready: no certificate for its policy
    host)."""
    layout = cluster.layout
    text = json.dumps(example_maildomain(layout))
    text = text.replace("example.test", SECOND_DOMAIN)
    text = text.replace(f'"{layout.mta}"', f'"{layout.address(74)}"')
    text = text.replace(f'"{layout.tlsrpt_collector}"', f'"{layout.address(75)}"')
    manifest = json.loads(text)
    manifest["metadata"] = {"name": "second", "namespace": SECOND_NAMESPACE}
    # The new addresses exist on the node, as a mail server's public addresses would (Postfix
    # binds only addresses of the machine's interfaces).
    added = [a for a in (layout.address(74), layout.address(75)) if ensure_loopback_address(a)]
    kubectl(cluster.kubeconfig, "create", "namespace", SECOND_NAMESPACE)
    try:
        began = time.monotonic()
        kubectl(cluster.kubeconfig, "apply", "-f", "-", input=json.dumps(manifest))

        def ready() -> dict[str, Any] | None:
            body: dict[str, Any] = get_json(cluster, "maildomain", "second", "-n", SECOND_NAMESPACE)
            found = condition(body, "Ready")
            return body if found and found["status"] == "True" else None

        try:
            body = wait_for("the copy Ready", ready, timeout=300)
        except AssertionError as error:
            shown = get_json(cluster, "maildomain", "second", "-n", SECOND_NAMESPACE)
            conditions = [
                f"{c['type']}={c['status']} {c['reason']}: {c['message'][:300]}"
                for c in shown.get("status", {}).get("conditions", [])
            ]
            pods = kubectl(cluster.kubeconfig, "describe", "pods", "-n", SECOND_NAMESPACE)
            logs = kubectl(
                cluster.kubeconfig, "logs", "-n", SECOND_NAMESPACE, "second-mta-0",
                "--all-containers", "--tail=30", check=False,
            )  # fmt: skip
            raise AssertionError(
                f"{error}\n" + "\n".join(conditions) + f"\n{pods[-3000:]}\n{logs[-3000:]}"
            ) from None
        took = time.monotonic() - began
        print(f"\nthe copy in namespace {SECOND_NAMESPACE} Ready {took:.0f} s after apply")
        assert body["status"]["certificate"]["source"] == "Issuer"
        code, _, policy = fetch(
            layout.policy_endpoint,
            f"mta-sts.{SECOND_DOMAIN}",
            "/.well-known/mta-sts.txt",
            str(cluster.ca.ca_file),
        )
        assert code == 200
        assert f"mx: mx1.{SECOND_DOMAIN}".encode() in policy
    finally:
        kubectl(cluster.kubeconfig, "delete", "namespace", SECOND_NAMESPACE, "--wait=false")
        for address in added:
            remove_loopback_address(address)
