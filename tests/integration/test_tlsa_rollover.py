"""TLSA rollover end to end on the real node (issue #14): a DANE client that probes the MX once a
second sees no failure while the served key changes.

The MailDomain `rollover` (zone `rollover.test`, signed, in the cluster's BIND) has an MTA pod of
its own on `<net>.71`; its TLSA TTL is 5 s and the cluster's Unbound caches answers for 5 s (its
`cache-max-ttl`), so a key served before its record reached the resolver fails the probe.
The probe is Postfix's `posttls-finger -l dane` through that resolver (tests/dane_probe.py).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.query
import pytest
from cryptography import x509

from mailward.adapters.endpoint_keys import presented_key
from mailward.render.policy_objects import policy_hosts, tls_secret_name
from mailward.rollover.keys import certificate_digest
from mailward_localstack.controlplane import kubectl
from mailward_localstack.demo_dns import TSIG_SECRET_NAME, create_dns_provider
from mailward_localstack.dns import DNSStack, ensure_loopback_address, remove_loopback_address
from mailward_localstack.stack import RELEASE_NAMESPACE, Stack
from tests.dane_probe import DaneProbe, ProbeResult, probe_once_verified
from tests.fixtures_cluster import ROLLOVER_ZONE, condition, get_json, wait_for
from tests.fixtures_dnspublish import tls_secret_manifest
from tests.starttls_server import StartTLSServer

pytestmark = [pytest.mark.controlplane, pytest.mark.dnsstack, pytest.mark.node]

NAMESPACE = "rollover"
NAME = "rollover"
MX_HOST = f"mx.{ROLLOVER_ZONE}"
MX_HOST_NUMBER = 71
# The naive server of the negative test, in the same zone.
NAIVE_HOST = f"naive.{ROLLOVER_ZONE}"
NAIVE_HOST_NUMBER = 73
USER_SECRET = "rollover-tls"
TLSA_TTL = 5
MARGIN_SECONDS = 2


def _apply(stack: Stack, manifest: dict[str, Any]) -> None:
    kubectl(stack.kubeconfig, "apply", "-f", "-", input=json.dumps(manifest))


def _maildomain(stack: Stack) -> dict[str, Any]:
    layout = stack.layout
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "domain": ROLLOVER_ZONE,
            "mx": [{"host": MX_HOST, "priority": 10,
                    "addresses": [layout.address(MX_HOST_NUMBER)]}],
            "tls": {"secretName": USER_SECRET},
            "mta": {"hostNetwork": True},
            "dns": {
                "providerRef": {"kind": "DNSProvider", "name": "local-bind"},
                "ttl": {"tlsa": TLSA_TTL},
                "mtaStsEndpoint": {"addresses": [layout.policy_endpoint]},
                "dmarc": {"rua": [f"mailto:dmarc-reports@{ROLLOVER_ZONE}"]},
            },
            "dane": {
                "rollover": {"margin": f"{MARGIN_SECONDS}s", "retireAfter": "10s",
                             "verifyTimeout": "3m"},
            },
            "mtaSts": {"mode": "testing", "maxAge": 86400},
            "tlsRpt": {"rua": [f"mailto:tlsrpt@{layout.tlsrpt_host}"]},
            "compliance": {"interval": "168h"},
        },
    }  # fmt: skip


def _user_certificate(stack: Stack, label: str) -> dict[str, Any]:
    cert = stack.ca.issue_server_cert(
        [MX_HOST], out_dir=stack.state_dir / "certs" / "rollover" / label
    )
    return tls_secret_manifest(NAMESPACE, cert, USER_SECRET)


def _digest_of(secret: dict[str, Any]) -> str:
    pem = base64.b64decode(secret["data"]["tls.crt"])
    return certificate_digest(x509.load_pem_x509_certificate(pem))


def _certificate_status(stack: Stack) -> dict[str, Any]:
    body = get_json(stack, "maildomain", NAME, "-n", NAMESPACE)
    status: dict[str, Any] = body.get("status", {}).get("certificate") or {}
    return status


def _keys(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k["role"]: k for k in status.get("keys", [])}


@pytest.fixture(scope="module")
def rollover_domain(cluster: Stack, example: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The MailDomain Ready with its first key, served by its own MTA pod."""
    address = cluster.layout.address(MX_HOST_NUMBER)
    added = ensure_loopback_address(address)
    kubeconfig = cluster.kubeconfig
    kubectl(kubeconfig, "create", "namespace", NAMESPACE)
    create_dns_provider(kubeconfig, cluster.state_dir / "dns", NAMESPACE)
    policy = cluster.ca.issue_server_cert(
        policy_hosts(ROLLOVER_ZONE), out_dir=cluster.state_dir / "certs" / "rollover" / "policy"
    )
    _apply(cluster, tls_secret_manifest(RELEASE_NAMESPACE, policy, tls_secret_name(ROLLOVER_ZONE)))
    first = _user_certificate(cluster, "first")
    _apply(cluster, first)
    _apply(cluster, _maildomain(cluster))

    def ready() -> dict[str, Any] | None:
        body: dict[str, Any] = get_json(cluster, "maildomain", NAME, "-n", NAMESPACE)
        found = condition(body, "Ready")
        return body if found and found["status"] == "True" else None

    body = wait_for("MailDomain rollover Ready", ready, timeout=300)
    try:
        yield {"body": body, "first": first}
    finally:
        kubectl(kubeconfig, "delete", "namespace", NAMESPACE, "--wait=false")
        if added:
            remove_loopback_address(address)


def _current_key(stack: Stack) -> str:
    status = wait_for(
        "a current key, published",
        lambda: (
            (s := _certificate_status(stack))
            and _keys(s).get("current", {}).get("publishedSince")
            and s
        ),
        timeout=120,
    )
    return str(_keys(status)["current"]["spkiSha256"])


def _wait_rolled_to(stack: Stack, digest: str, timeout: float = 300) -> dict[str, Any]:
    def rolled_over() -> dict[str, Any] | None:
        s = _certificate_status(stack)
        keys = _keys(s)
        done = keys.get("current", {}).get("spkiSha256") == digest and "previous" not in keys
        return s if done and s.get("phase") == "Stable" else None

    status: dict[str, Any] = wait_for(f"key {digest[:16]} current, the old one retired",
                                      rolled_over, timeout=timeout)  # fmt: skip
    return status


def _replace_user_key(stack: Stack, label: str) -> str:
    secret = _user_certificate(stack, label)
    _apply(stack, secret)
    return _digest_of(secret)


def _condition_of(stack: Stack, kind: str) -> dict[str, Any]:
    return condition(get_json(stack, "maildomain", NAME, "-n", NAMESPACE), kind) or {}


def _served_key(stack: Stack) -> str | None:
    return presented_key(MX_HOST, stack.layout.address(MX_HOST_NUMBER)).spki_sha256


def _cached_ttl(stack: Stack, host: str) -> int:
    """The TTL the resolver gives for the host's TLSA RRset: what is left of its cache entry."""
    query = dns.message.make_query(f"_25._tcp.{host}.", "TLSA", want_dnssec=True)
    response = dns.query.tcp(query, stack.layout.resolver, timeout=2)
    return min((r.ttl for r in response.answer), default=0)


def _report(results: list[ProbeResult], since: float) -> str:
    return "\n".join(f"{r.at - since:+.1f} s: {r.summary}" for r in results)


@pytest.mark.timeout(900)
def test_a_new_key_in_the_users_secret_is_served_without_a_dane_failure(
    cluster: Stack, rollover_domain: dict[str, Any]
) -> None:
    first = _digest_of(rollover_domain["first"])
    assert _current_key(cluster) == first
    assert _certificate_status(cluster)["source"] == "Secret"
    probe = DaneProbe(cluster.layout.resolver, MX_HOST).start()
    try:
        wait_for("three DANE probes", lambda: len(probe.results) >= 3, timeout=30)
        assert not probe.failures(), f"the probe fails before any change: {probe.failures()}"
        replaced_at = time.time()
        second = _replace_user_key(cluster, "second")
        final = _wait_rolled_to(cluster, second)
        count = len(probe.results)
        wait_for("three more probes", lambda: len(probe.results) >= count + 3, timeout=30)
    finally:
        results = probe.stop()
    failures = [r for r in results if not r.verified]
    took = max(r.at for r in results) - replaced_at
    print(
        f"\n{len(results)} DANE probes, {len(failures)} failed; the rollover took {took:.0f} s "
        f"after the Secret changed"
    )
    assert len(results) >= 20
    assert not failures, "DANE failures during the rollover:\n" + _report(failures, replaced_at)
    current = _keys(final)["current"]
    print(f"new key published {current['publishedSince']}, served {current['servedSince']}")
    assert current["publishedSince"] < current["servedSince"]
    assert _served_key(cluster) == second


@pytest.mark.timeout(300)
def test_the_same_probe_fails_a_naive_switch(cluster: Stack) -> None:
    """A server that serves its new key the moment the TLSA record changes: validating senders
    still hold the old record for up to its TTL, and the probe must see them fail."""
    address = cluster.layout.address(NAIVE_HOST_NUMBER)
    added = ensure_loopback_address(address)
    dns_stack = DNSStack.attach(cluster.state_dir / "dns")
    certs = cluster.state_dir / "certs" / "naive"
    old = cluster.ca.issue_server_cert([NAIVE_HOST], out_dir=certs / "old")
    new = cluster.ca.issue_server_cert([NAIVE_HOST], out_dir=certs / "new")

    def publish(cert: Any) -> None:
        digest = certificate_digest(x509.load_pem_x509_certificate(cert.chain_file.read_bytes()))
        update = dns_stack.authoritative.new_update(ROLLOVER_ZONE)
        update.replace(NAIVE_HOST + ".", TLSA_TTL, "A", address)
        update.replace(f"_25._tcp.{NAIVE_HOST}.", TLSA_TTL, "TLSA", f"3 1 1 {digest}")
        dns_stack.authoritative.send_update(update)

    server = StartTLSServer(address, NAIVE_HOST)
    server.serve(old.chain_file, old.key_file)
    server.start()
    publish(old)
    probe = DaneProbe(cluster.layout.resolver, NAIVE_HOST)
    try:
        wait_for(
            "a verified probe of the old key",
            lambda: probe_once_verified(cluster.layout.resolver, NAIVE_HOST),
            timeout=60,
        )
        probe.start()
        wait_for("three DANE probes", lambda: len(probe.results) >= 3, timeout=30)
        assert not probe.failures(), f"the probe fails before the switch: {probe.failures()}"
        # Switch right after the resolver fetched the old record again: it then keeps it for
        # a whole TTL, and every sender asking it meanwhile meets the old record.
        wait_for("a fresh cached TLSA", lambda: _cached_ttl(cluster, NAIVE_HOST) >= TLSA_TTL,
                 timeout=30, interval=0.1)  # fmt: skip
        switched_at = time.time()
        publish(new)
        server.serve(new.chain_file, new.key_file)
        wait_for("probes for 3 TTLs", lambda: time.time() > switched_at + 3 * TLSA_TTL, 60)
    finally:
        results = probe.stop()
        server.stop()
        if added:
            remove_loopback_address(address)
    after = [r for r in results if r.at >= switched_at]
    failures = [r for r in after if not r.verified]
    print(f"\nnaive switch: {len(failures)} of {len(after)} probes failed after it")
    assert failures, "the naive switch went unnoticed:\n" + _report(after, switched_at)
    assert after[-1].verified, "the new record should validate once the old one expired"


@pytest.mark.timeout(600)
def test_a_secondary_held_back_blocks_the_switch_until_released(
    cluster: Stack, rollover_domain: dict[str, Any]
) -> None:
    before = _current_key(cluster)
    secondary = DNSStack.attach(cluster.state_dir / "dns").secondary
    assert secondary is not None
    probe = DaneProbe(cluster.layout.resolver, MX_HOST).start()
    try:
        held_serial = secondary.hold(ROLLOVER_ZONE)
        try:
            changed_at = time.time()
            new = _replace_user_key(cluster, "held")

            def lagging() -> dict[str, Any] | None:
                s = _certificate_status(cluster)
                ns2 = [
                    n for n in s.get("nameservers", []) if n["address"] == cluster.layout.secondary
                ]
                offered = _keys(s).get("next", {}).get("spkiSha256") == new
                return s if offered and ns2 and not ns2[0]["matches"] else None

            status = wait_for("ns2 reported lagging", lagging, timeout=120)
            ns2 = next(n for n in status["nameservers"] if n["address"] == cluster.layout.secondary)
            print(f"\nheld: ns2 serial {ns2['serial']} (held at {held_serial}): {ns2['problem']}")
            assert ns2["serial"] == held_serial
            # Far past two TTLs and the margin: still the old key, and the reason says why.
            time.sleep(2 * TLSA_TTL + MARGIN_SECONDS + 20)
            assert _keys(_certificate_status(cluster))["current"]["spkiSha256"] == before
            assert _served_key(cluster) == before
            safe = _condition_of(cluster, "RotationSafe")
            assert safe["status"] == "False"
            assert safe["reason"] in ("NotPropagated", "PropagationTimeout")
            assert "serial" in safe["message"]
        finally:
            secondary.release(ROLLOVER_ZONE)
        released_at = time.time()
        _wait_rolled_to(cluster, new)
        print(f"released: rolled over {time.time() - released_at:.0f} s later")
    finally:
        results = probe.stop()
    failures = [r for r in results if not r.verified]
    assert not failures, _report(failures, changed_at)
    assert _served_key(cluster) == new


@pytest.mark.timeout(600)
def test_a_refused_update_never_switches(cluster: Stack, rollover_domain: dict[str, Any]) -> None:
    before = _current_key(cluster)
    tsig = cluster.kubeconfig
    original = get_json(cluster, "secret", TSIG_SECRET_NAME, "-n", NAMESPACE)
    wrong = base64.b64encode(base64.b64encode(b"w" * 32)).decode()
    kubectl(tsig, "patch", "secret", TSIG_SECRET_NAME, "-n", NAMESPACE, "--type=merge",
            "-p", json.dumps({"data": {"secret": wrong}}))  # fmt: skip
    try:
        new = _replace_user_key(cluster, "refused")
        refused = wait_for(
            "DNSReady False, UpdateRefused",
            lambda: (
                (c := _condition_of(cluster, "DNSReady")).get("reason") == "UpdateRefused" and c
            ),
            timeout=120,
        )
        print(f"\nrefused: {refused['message'][:200]}")
        time.sleep(2 * TLSA_TTL + MARGIN_SECONDS + 20)
        status = _certificate_status(cluster)
        assert _keys(status)["current"]["spkiSha256"] == before
        assert _keys(status)["next"]["spkiSha256"] == new
        assert not _keys(status)["next"].get("publishedSince")
        assert _served_key(cluster) == before
        assert _condition_of(cluster, "CertificateReady")["status"] == "True"
    finally:
        kubectl(tsig, "patch", "secret", TSIG_SECRET_NAME, "-n", NAMESPACE, "--type=merge",
                "-p", json.dumps({"data": original["data"]}))  # fmt: skip
    _wait_rolled_to(cluster, new)
    assert _served_key(cluster) == new
