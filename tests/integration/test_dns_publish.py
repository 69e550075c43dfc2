"""The DNS part against the real BIND + Unbound of the local stack and the real API server with
the operator running: records resolve validated, nothing is sent when nothing changed, foreign
records are left alone, failures are reported and recover by themselves, deletion is exact."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import dns.flags
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
import yaml

from mailward.api.v1alpha1 import MailDomainSpec
from mailward.parts import Findings
from mailward.parts.certificate import parse_chain
from mailward.parts.dns import desired_for
from mailward.plan.records import decode_registry, registry_name
from mailward.render.dns_records import RRset, spki_sha256
from mailward_localstack.controlplane import kubectl_path
from mailward_localstack.demo_dns import check, create_dns_provider
from mailward_localstack.dns import DNSStack
from mailward_localstack.pki import LocalCA
from tests.fixtures_dnspublish import (
    REPO,
    PublishSetup,
    bind_updates,
    dns_provider_manifest,
    tls_secret_manifest,
    tsig_secret_manifest,
    zone_rrsets,
)
from tests.fixtures_operator import Kube, OperatorProcess
from tests.net import addr

pytestmark = [pytest.mark.controlplane, pytest.mark.dnsstack]


def _condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in body.get("status", {}).get("conditions", []):
        if condition["type"] == type_:
            return dict(condition)
    return None


def _wait_dns(
    kube: Kube, namespace: str, status: str, reason: str, timeout: float = 60
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = kube.get_maildomain(namespace, "example")
        condition = _condition(body, "DNSReady")
        if condition and (condition["status"], condition["reason"]) == (status, reason):
            return body
        return None

    body: dict[str, Any] = kube.wait_for(f"DNSReady={status} {reason}", probe, timeout=timeout)
    return body


def _expected(setup: PublishSetup) -> list[RRset]:
    spec = MailDomainSpec.model_validate(setup.manifest["spec"])
    chain = parse_chain(setup.cert.chain_file.read_bytes())
    return desired_for(spec, Findings(certificate_chain=tuple(chain)))


def _resolves_with_ad(stack: DNSStack, rrset: RRset) -> bool:
    response = stack.resolver.query(rrset.name, rrset.type)
    if response.rcode() != dns.rcode.NOERROR or not response.flags & dns.flags.AD:
        return False
    rdtype = dns.rdatatype.from_text(rrset.type)
    answers = [a for a in response.answer if a.rdtype == rdtype and a.name.to_text() == rrset.name]
    return bool(answers) and tuple(sorted(r.to_text() for r in answers[0])) == rrset.rdata


def _mine(zone: dict[tuple[str, str], RRset], domain: str) -> dict[tuple[str, str], RRset]:
    return {k: v for k, v in zone.items() if k[0].endswith(f"{domain}.")}


def test_every_record_resolves_with_ad(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    setup = publish_setup()
    body = _wait_dns(kube, setup.namespace, "True", "Published")
    expected = _expected(setup)
    types = {r.type for r in expected}
    assert {"MX", "A", "AAAA", "TLSA", "TXT", "SRV"} <= types
    for rrset in expected:
        kube.wait_for(
            f"{rrset.describe()} to resolve with AD through Unbound",
            lambda rrset=rrset: _resolves_with_ad(dns_stack, rrset),
            timeout=20,
        )
    tlsa = next(r for r in expected if r.name == f"_25._tcp.mx1.{setup.domain}.")
    assert tlsa.rdata == (f"3 1 1 {spki_sha256(setup.cert.cert)}",)
    assert tlsa.ttl == 600
    status = body["status"]["dns"]
    assert status["zone"] == "example.test"
    assert status["recordSets"] == len(expected)
    assert status["provider"] == "DNSProvider/local-bind"
    # The registry lists exactly what was published, and names its owner.
    registry = zone_rrsets(dns_stack)[(registry_name(setup.domain), "TXT")]
    content = decode_registry(registry, setup.domain)
    assert content.keys == {r.key for r in expected}
    assert content.owner is not None
    assert content.owner.uid == body["metadata"]["uid"]


def test_second_reconcile_sends_no_update(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    setup = publish_setup()
    _wait_dns(kube, setup.namespace, "True", "Published")
    time.sleep(1)
    before = bind_updates(dns_stack)
    zone_before = zone_rrsets(dns_stack)
    nothing_sent = f"{setup.namespace}/example: zone example.test already holds its records"
    passes = operator.log().count(nothing_sent)
    # An annotation change makes kopf run the update handler again: a full reconcile ...
    kube.kubectl(
        "annotate", "maildomain", "example", "-n", setup.namespace, "test.mailward.io/poke=1"
    )
    kube.wait_for(
        "the reconcile after the annotation", lambda: operator.log().count(nothing_sent) > passes
    )
    # ... and the resync timer (every 10 s in tests) runs it again.
    kube.wait_for("a resync", lambda: operator.log().count(nothing_sent) > passes + 1, timeout=30)
    print(f"passes that sent nothing: {operator.log().count(nothing_sent) - passes}")
    after = bind_updates(dns_stack)
    print(f"UPDATE messages received by BIND: before {before}, after {after}")
    assert after == before
    assert zone_rrsets(dns_stack) == zone_before


def test_foreign_record_is_left_alone_and_reported(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    setup = publish_setup(apply=False)
    foreign_name = f"_dmarc.{setup.domain}."
    update = dns_stack.authoritative.new_update("example.test")
    update.add(foreign_name, 300, "TXT", '"v=DMARC1; p=none"')
    dns_stack.authoritative.send_update(update)
    kube.apply(setup.manifest)
    body = _wait_dns(kube, setup.namespace, "False", "OwnershipConflict")
    assert f"_dmarc.{setup.domain} TXT" in _condition(body, "DNSReady")["message"]  # type: ignore[index]
    assert body["status"]["dns"]["conflicts"] == [f"_dmarc.{setup.domain} TXT"]
    zone = zone_rrsets(dns_stack)
    assert zone[(foreign_name, "TXT")].rdata == ('"v=DMARC1; p=none"',)
    assert zone[(foreign_name, "TXT")].ttl == 300
    # Everything else is published, and the registry does not claim the foreign RRset.
    expected = [r for r in _expected(setup) if r.name != foreign_name]
    assert all(zone.get(r.key) == r for r in expected)
    registry = decode_registry(zone[(registry_name(setup.domain), "TXT")], setup.domain)
    assert (foreign_name, "TXT") not in registry.keys
    described = kube.kubectl("describe", "maildomain", "example", "-n", setup.namespace).stdout
    print(described)
    assert "OwnershipConflict" in described
    assert f"_dmarc.{setup.domain} TXT" in described
    kube.wait_for(
        "a Warning Event OwnershipConflict",
        lambda: [
            e
            for e in kube.core.list_namespaced_event(setup.namespace).items
            if e.reason == "OwnershipConflict" and e.type == "Warning"
        ],
    )
    # Deleting the MailDomain leaves the foreign record too.
    kube.kubectl("delete", "maildomain", "example", "-n", setup.namespace, "--timeout=60s")
    zone = zone_rrsets(dns_stack)
    assert zone[(foreign_name, "TXT")].rdata == ('"v=DMARC1; p=none"',)
    assert not [k for k in _mine(zone, setup.domain) if k != (foreign_name, "TXT")]


def test_wrong_tsig_is_refused_then_recovers_when_the_secret_is_fixed(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    real = dns_stack.tsig.secret
    wrong = base64.b64encode(b"not the key of this server, 32by").decode()
    setup = publish_setup(tsig_secret=wrong)
    body = _wait_dns(kube, setup.namespace, "False", "UpdateRefused")
    message = _condition(body, "DNSReady")["message"]  # type: ignore[index]
    print(message)
    assert f"Secret {setup.namespace}/local-bind-tsig key 'secret'" in message
    assert "does not match" in message
    events = kube.core.list_namespaced_event(setup.namespace).items
    for text in (json.dumps(body), message, *(e.message or "" for e in events)):
        assert real not in text
        assert wrong not in text
    assert operator.process.poll() is None
    kube.apply(tsig_secret_manifest(setup.namespace, real))
    _wait_dns(kube, setup.namespace, "True", "Published", timeout=30)
    zone = zone_rrsets(dns_stack)
    assert all(zone.get(r.key) == r for r in _expected(setup))
    assert real not in operator.log()


def test_server_down_then_back_nothing_lost_or_duplicated(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    setup = publish_setup()
    _wait_dns(kube, setup.namespace, "True", "Published")
    bind = dns_stack.authoritative
    bind.process.stop()
    try:
        # A change made while the server is down: it must arrive once it is back.
        kube.kubectl(
            "patch",
            "maildomain",
            "example",
            "-n",
            setup.namespace,
            "--type=json",
            "-p",
            json.dumps([{"op": "replace", "path": "/spec/mx/0/priority", "value": 5}]),
        )
        _wait_dns(kube, setup.namespace, "False", "ProviderUnreachable")
        time.sleep(8)  # several retries with backoff (1, 2, 4, 4 s in tests)
    finally:
        bind.process.start()
        kube.wait_for("BIND to serve again", lambda: _serves(dns_stack), timeout=30)
    _wait_dns(kube, setup.namespace, "True", "Published", timeout=30)
    setup.manifest["spec"]["mx"][0]["priority"] = 5
    expected = {r.key: r for r in _expected(setup)}
    mine = _mine(zone_rrsets(dns_stack), setup.domain)
    registry_key = (registry_name(setup.domain), "TXT")
    assert mine.pop(registry_key)
    assert mine == expected  # each RRset once, with exactly the desired data
    mx = expected[(f"{setup.domain}.", "MX")]
    assert f"5 mx1.{setup.domain}." in mx.rdata
    retries = operator.log().count(f"no answer from {dns_stack.authoritative.address}#53")
    assert retries >= 2


def _serves(stack: DNSStack) -> bool:
    try:
        response = stack.authoritative.query("example.test", "SOA", timeout=0.5)
    except Exception:
        return False
    return response.rcode() == dns.rcode.NOERROR


def test_delete_removes_exactly_its_records(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    before = zone_rrsets(dns_stack)
    setup = publish_setup()
    _wait_dns(kube, setup.namespace, "True", "Published")
    published = zone_rrsets(dns_stack)
    added = set(published) - set(before)
    assert added == {r.key for r in _expected(setup)} | {(registry_name(setup.domain), "TXT")}
    kube.kubectl("delete", "maildomain", "example", "-n", setup.namespace, "--timeout=60s")
    after = zone_rrsets(dns_stack)
    print(f"zone: {len(before)} RRsets before, {len(published)} published, {len(after)} after")
    assert after == before


def test_external_dns_provider_writes_a_dnsendpoint(
    kube: Kube,
    operator: OperatorProcess,
    dnsendpoint_crd: None,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    setup = publish_setup(apply=False)
    kube.apply(
        {
            "apiVersion": "mailward.io/v1alpha1",
            "kind": "DNSProvider",
            "metadata": {"name": "external", "namespace": setup.namespace},
            "spec": {"externalDNS": {}},
        }
    )
    setup.manifest["spec"]["dns"]["providerRef"]["name"] = "external"
    kube.apply(setup.manifest)
    body = _wait_dns(kube, setup.namespace, "False", "TLSAUnsupported")
    assert "rfc2136" in _condition(body, "DNSReady")["message"]  # type: ignore[index]
    endpoint = kube.custom.get_namespaced_custom_object(
        "externaldns.k8s.io", "v1alpha1", setup.namespace, "dnsendpoints", "mailward-example"
    )
    records = {(e["dnsName"], e["recordType"]) for e in endpoint["spec"]["endpoints"]}
    assert (setup.domain, "MX") in records
    assert (f"_smtp._tls.{setup.domain}", "TXT") in records
    assert not [r for r in records if r[1] == "TLSA"]
    assert any("TLSA" in u for u in body["status"]["dns"]["unpublished"])
    kube.kubectl("delete", "maildomain", "example", "-n", setup.namespace, "--timeout=60s")
    listed = kube.kubectl("get", "dnsendpoints", "-n", setup.namespace, "-o", "name").stdout
    assert listed.strip() == ""


def test_unparsable_certificate_is_tls_secret_invalid(
    kube: Kube, operator: OperatorProcess, publish_setup: Callable[..., PublishSetup]
) -> None:
    setup = publish_setup(apply=False)
    fake = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "mx-tls", "namespace": setup.namespace},
            "data": {"tls.crt": fake, "tls.key": fake},
        }
    )
    kube.apply(setup.manifest)

    def invalid() -> dict[str, Any] | None:
        condition = _condition(kube.get_maildomain(setup.namespace, "example"), "CertificateReady")
        return condition if condition and condition["reason"] == "TLSSecretInvalid" else None

    condition = kube.wait_for("CertificateReady TLSSecretInvalid", invalid)
    assert "tls.crt" in condition["message"]


def test_provider_admission_needs_exactly_one_backend(kube: Kube, namespace: str) -> None:
    both = {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "DNSProvider",
        "metadata": {"name": "both", "namespace": namespace},
        "spec": {
            "externalDNS": {},
            "rfc2136": {
                "nameserver": {"host": "192.0.2.53"},
                "tsigKeyName": "k",
                "tsigSecretRef": {"name": "s", "key": "secret"},
            },
        },
    }
    result = kube.kubectl("apply", "-f", "-", input=json.dumps(both), check=False)
    assert result.returncode != 0
    assert "exactly one of rfc2136 or externalDNS" in result.stderr


def test_demo_provider_publishes_the_example(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    local_ca: LocalCA,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What `make demo` does with examples/maildomain.yaml, under a domain of this test."""
    dns_dir = dns_stack.authoritative.state_dir.parent
    create_dns_provider(kube.kubeconfig, dns_dir, namespace)
    example = yaml.safe_load((REPO / "examples" / "maildomain.yaml").read_text())
    domain = f"t{uuid.uuid4().hex[:10]}.example.test"
    example["metadata"]["namespace"] = namespace
    example["spec"]["domain"] = domain
    example["spec"]["mx"] = [{"host": f"mx1.{domain}", "priority": 10, "addresses": [addr(25)]}]
    # rua stays empty (the collector's mailbox), its host points at an address of this test.
    example["spec"]["dns"]["tlsRptCollector"] = {"addresses": [addr(26)]}
    # No cert-manager and no ClusterDNSProvider beside this control plane: a Secret of the
    # test's CA, and the namespace's provider.
    example["spec"]["tls"] = {"secretName": "mx-example-test-tls"}
    example["spec"]["dns"]["providerRef"] = {"kind": "DNSProvider", "name": "local-bind"}
    cert = local_ca.issue_server_cert([f"mx1.{domain}"])
    kube.apply(tls_secret_manifest(namespace, cert, "mx-example-test-tls"))
    kube.apply(example)
    _wait_dns(kube, namespace, "True", "Published")
    assert check(kube.kubeconfig, dns_dir, namespace, "example", timeout=20) == 0
    shown = capsys.readouterr().out
    assert "BAD" not in shown
    # The leaf's key, and with `dane.issuerRecord` the CA's key (its certificate is in the chain).
    (tlsa,) = [line for line in shown.splitlines() if f"_25._tcp.mx1.{domain}. TLSA" in line]
    assert f"3 1 1 {spki_sha256(cert.cert)}" in tlsa
    assert f"2 1 1 {spki_sha256(local_ca.cert)}" in tlsa
    assert f'_smtp._tls.{domain}. TXT "v=TLSRPTv1; rua=mailto:tlsrpt@tlsrpt.{domain}"' in shown
    assert f"tlsrpt.{domain}. MX 10 tlsrpt.{domain}." in shown
    assert f"tlsrpt.{domain}. A {addr(26)}" in shown
    assert f"_25._tcp.tlsrpt.{domain}" not in shown


def test_cluster_dns_provider_with_a_secret_in_another_namespace(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    setup = publish_setup(apply=False)
    name = f"cluster-{setup.namespace}"
    provider = dns_provider_manifest(dns_stack, setup.namespace)
    provider["kind"] = "ClusterDNSProvider"
    provider["metadata"] = {"name": name}
    provider["spec"]["rfc2136"]["tsigSecretRef"]["namespace"] = setup.namespace
    kube.apply(provider)
    setup.manifest["spec"]["dns"]["providerRef"] = {"kind": "ClusterDNSProvider", "name": name}
    kube.apply(setup.manifest)
    body = _wait_dns(kube, setup.namespace, "True", "Published")
    assert body["status"]["dns"]["provider"] == f"ClusterDNSProvider/{name}"
    zone = zone_rrsets(dns_stack)
    assert all(zone.get(r.key) == r for r in _expected(setup))


def test_drift_and_cleared_conflicts_are_repaired_by_the_resync(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    """Without any change to the object: a record someone deleted comes back, and a conflict
    clears once the foreign record is gone (the resync runs every 10 s in tests)."""
    setup = publish_setup(apply=False)
    foreign = f"_dmarc.{setup.domain}."
    update = dns_stack.authoritative.new_update("example.test")
    update.add(foreign, 300, "TXT", '"v=DMARC1; p=none"')
    dns_stack.authoritative.send_update(update)
    kube.apply(setup.manifest)
    _wait_dns(kube, setup.namespace, "False", "OwnershipConflict")
    expected = {r.key: r for r in _expected(setup)}
    mx_key = (f"{setup.domain}.", "MX")
    update = dns_stack.authoritative.new_update("example.test")
    update.delete(foreign, "TXT")
    update.delete(mx_key[0], "MX")
    dns_stack.authoritative.send_update(update)
    body = _wait_dns(kube, setup.namespace, "True", "Published", timeout=40)
    zone = zone_rrsets(dns_stack)
    assert zone[mx_key] == expected[mx_key]
    assert zone[(foreign, "TXT")] == expected[(foreign, "TXT")]
    assert body["status"]["dns"].get("conflicts", []) == []


def _deleted_within(kube: Kube, namespace: str, seconds: float) -> float:
    """Delete the example and wait until it is gone; how long that took."""
    began = time.monotonic()
    subprocess.run(
        [str(kubectl_path()), "--kubeconfig", str(kube.kubeconfig), "delete", "maildomain",
         "example", "-n", namespace, "--wait=true", f"--timeout={seconds:.0f}s"],
        check=True, capture_output=True, timeout=seconds + 10,
    )  # fmt: skip
    return time.monotonic() - began


def _events(kube: Kube, namespace: str, reason: str) -> list[str]:
    return [
        e.message or ""
        for e in kube.core.list_namespaced_event(namespace).items
        if e.reason == reason and e.involved_object.name == "example"
    ]


def test_deleting_a_domain_whose_zone_is_not_served_finishes_at_once(
    kube: Kube, operator: OperatorProcess, publish_setup: Callable[..., PublishSetup]
) -> None:
    setup = publish_setup(apply=False)
    typo = setup.domain.replace(".example.test", ".example.invalid")  # a zone nobody serves
    setup.manifest["spec"]["domain"] = typo
    kube.apply(setup.manifest)
    body = _wait_dns(kube, setup.namespace, "False", "UpdateRefused")
    assert "not authoritative" in _condition(body, "DNSReady")["message"]  # type: ignore[index]
    took = _deleted_within(kube, setup.namespace, 30)
    print(f"\nnever published: deleted in {took:.1f}s")
    assert not _events(kube, setup.namespace, "RecordsLeft")  # nothing was there to leave


def test_deleting_a_domain_whose_provider_is_gone_leaves_its_records_and_says_so(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    setup = publish_setup()
    _wait_dns(kube, setup.namespace, "True", "Published")
    kube.kubectl("delete", "dnsprovider", "local-bind", "-n", setup.namespace)
    took = _deleted_within(kube, setup.namespace, 30)
    print(f"\nprovider gone: deleted in {took:.1f}s")
    (said,) = kube.wait_for(
        "a RecordsLeft Event", lambda: _events(kube, setup.namespace, "RecordsLeft")
    )
    assert f"of {setup.domain} in zone example.test" in said, said
    assert "does not exist" in said, said
    left = _mine(zone_rrsets(dns_stack), setup.domain)
    assert {r.key for r in _expected(setup)} <= set(left)


@pytest.mark.timeout(400)
def test_a_server_that_never_answers_holds_the_deletion_for_the_withdrawal_timeout(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    setup = publish_setup(apply=False)
    setup.manifest["spec"]["dns"]["withdrawalTimeout"] = "1m"
    kube.apply(setup.manifest)
    _wait_dns(kube, setup.namespace, "True", "Published")
    bind = dns_stack.authoritative
    bind.process.stop()
    try:
        took = _deleted_within(kube, setup.namespace, 150)
    finally:
        bind.process.start()
        kube.wait_for("BIND to serve again", lambda: _serves(dns_stack), timeout=30)
    print(f"\nserver down: deleted after {took:.1f}s (withdrawalTimeout 1m)")
    assert 55 <= took <= 120
    (said,) = _events(kube, setup.namespace, "RecordsLeft")
    assert "spec.dns.withdrawalTimeout" in said, said
    assert "no answer" in said, said
