"""The dkim part in the running operator, against the real API server, BIND and the validating
Unbound: a MailDomain with `spec.dkim.managed` gets its keys (in a Secret it owns), their
records (published by the DNS part, beside a key pasted into `spec.dns.dkim`), `status.dkim`
with both selectors Active once Unbound returns them, and an MTA whose pods would sign with
exactly those keys. No private key reaches the status or an Event.

The signing itself, and a full rotation, are shown with the real MTA in test_dkim_signing.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import dns.flags
import dns.rcode
import dns.rdatatype
import pytest

from mailward.adapters.dkim_keys import ROTATION_ANNOTATION
from mailward.adapters.dkim_resolver import public_key_in
from mailward.dkim.keys import public_of
from mailward_localstack.dns import DNSStack
from mailward_localstack.pki import LocalCA
from tests.fixtures_dnspublish import PublishSetup, tls_secret_manifest
from tests.fixtures_operator import Kube, OperatorProcess

pytestmark = [pytest.mark.controlplane, pytest.mark.dnsstack]


def _condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in body.get("status", {}).get("conditions", []):
        if condition["type"] == type_:
            return dict(condition)
    return None


def _validated_key(stack: DNSStack, name: str) -> str | None:
    response = stack.resolver.query(name, "TXT")
    if response.rcode() != dns.rcode.NOERROR or not response.flags & dns.flags.AD:
        return None
    texts = [
        b"".join(r.strings).decode()
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for r in rrset
    ]
    return public_key_in(texts)


def test_managed_keys_are_held_published_active_and_mounted(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    setup = publish_setup(apply=False)
    setup.manifest["spec"]["dkim"] = {"managed": True}
    kube.apply(setup.manifest)
    namespace, domain = setup.namespace, setup.domain

    def signing() -> dict[str, Any] | None:
        body = kube.get_maildomain(namespace, "example")
        ready = _condition(body, "DKIMReady")
        selectors = (body.get("status", {}).get("dkim") or {}).get("selectors", [])
        if ready and ready["status"] == "True" and len(selectors) == 2:
            return body
        return None

    body: dict[str, Any] = kube.wait_for("DKIMReady=True", signing, timeout=120)
    selectors = body["status"]["dkim"]["selectors"]
    print(f"evidence: status.dkim.selectors = {json.dumps(selectors)}")
    print(f"evidence: DKIMReady = {_condition(body, 'DKIMReady')}")
    assert {s["algorithm"] for s in selectors} == {"ed25519", "rsa"}
    assert {s["phase"] for s in selectors} == {"Active"}
    names = sorted(s["selector"] for s in selectors)

    # The keys: in a Secret owned by the MailDomain, one item per selector, and the record.
    secret = kube.core.read_namespaced_secret("example-dkim", namespace)
    owners = secret.metadata.owner_references
    assert [(o.kind, o.uid) for o in owners] == [("MailDomain", body["metadata"]["uid"])]
    assert sorted(secret.data) == [f"{s}.key" for s in names]
    record = json.loads(secret.metadata.annotations[ROTATION_ANNOTATION])
    assert sorted(k["selector"] for k in record) == names
    private = {s: base64.b64decode(secret.data[f"{s}.key"]).decode() for s in names}

    # The records: what Unbound returns, validated, is exactly each key's public half; the key
    # pasted into spec.dns.dkim is still published beside them.
    algorithms = {s["selector"]: s["algorithm"] for s in selectors}
    for selector in names:
        found = _validated_key(dns_stack, f"{selector}._domainkey.{domain}.")
        assert found == public_of(algorithms[selector], private[selector]), selector
    pasted = kube.wait_for(
        "the pasted key",
        lambda: _validated_key(dns_stack, f"s1._domainkey.{domain}."),
        timeout=20,
    )
    print(f"evidence: Unbound returns (AD) {names} with their keys, and s1 (pasted) = {pasted}")

    # The MTA: the signer beside Postfix, mounting only the Active keys, configured for them.
    apps = kube.kubectl("get", "statefulset", "example-mta", "-n", namespace, "-o", "json")
    template = json.loads(apps.stdout)["spec"]["template"]["spec"]
    assert "dkim" in [c["name"] for c in template["initContainers"]]
    (volume,) = [v for v in template["volumes"] if v["name"] == "dkim-keys"]
    assert volume["secret"]["secretName"] == "example-dkim"
    assert sorted(i["key"] for i in volume["secret"]["items"]) == [f"{s}.key" for s in names]
    config = kube.kubectl("get", "configmap", "example-mta-config", "-n", namespace, "-o", "json")
    milter = json.loads(config.stdout)["data"]["dkimpy-milter.conf"]
    for selector in names:
        assert selector in milter
    print("evidence: dkimpy-milter.conf:\n" + milter)

    # No private key anywhere a reader of the object or its Events looks.
    events = kube.core.list_namespaced_event(namespace)
    rotation = [e.message for e in events.items if e.reason == "DKIMRotation"]
    print(f"evidence: DKIMRotation Events: {rotation}")
    assert len(rotation) >= 4  # two generated, two signing
    shown = json.dumps(body) + json.dumps([e.message for e in events.items])
    for key in private.values():
        body_lines = [line for line in key.splitlines() if line and not line.startswith("-----")]
        assert not any(line in shown for line in body_lines)


def test_a_fleet_signs_for_an_attached_domain_with_the_domains_keys(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    local_ca: LocalCA,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    """An attached domain's keys are its own (its Secret, its records, its status); the
    MailServer's fleet copies the Active ones into its namespace and runs the signer with them."""
    setup = publish_setup(apply=False)  # the DNS provider and its TSIG Secret
    namespace, domain = setup.namespace, setup.domain
    host = f"mx.fleet-{domain}"
    cert = local_ca.issue_server_cert([host])
    kube.apply(tls_secret_manifest(namespace, cert, "fleet-tls"))
    provider = {"kind": "DNSProvider", "name": "local-bind"}
    kube.apply(
        {
            "apiVersion": "mailward.io/v1alpha1",
            "kind": "MailServer",
            "metadata": {"name": "fleet", "namespace": namespace},
            "spec": {
                "hosts": [{"host": host, "priority": 10}],
                "replicas": 1,
                "tls": {"secretName": "fleet-tls"},
                "dns": {"providerRef": provider},
            },
        }
    )
    kube.apply(
        {
            "apiVersion": "mailward.io/v1alpha1",
            "kind": "MailDomain",
            "metadata": {"name": "attached", "namespace": namespace},
            "spec": {
                "domain": domain,
                "mailServerRef": {"name": "fleet"},
                "dns": {"providerRef": provider},
                "dkim": {"managed": True},
            },
        }
    )

    def active() -> list[str] | None:
        body = kube.get_maildomain(namespace, "attached")
        found = (body.get("status", {}).get("dkim") or {}).get("selectors", [])
        names = [s["selector"] for s in found if s["phase"] == "Active"]
        return names if len(names) == 2 else None

    names = sorted(kube.wait_for("the attached domain's keys Active", active, timeout=120))
    own = kube.core.read_namespaced_secret("attached-dkim", namespace)

    def copied() -> dict[str, str] | None:
        result = kube.kubectl(
            "get", "secret", "fleet-dkim", "-n", namespace, "-o", "json", check=False
        )
        if result.returncode != 0:
            return None
        data: dict[str, str] = json.loads(result.stdout).get("data") or {}
        return data if len(data) == 2 else None

    copy = kube.wait_for("the fleet's copy of the keys", copied, timeout=60)
    assert copy == {f"{domain}_{s}.key": own.data[f"{s}.key"] for s in names}
    config = kube.kubectl("get", "configmap", "fleet-config", "-n", namespace, "-o", "json")
    milter = json.loads(config.stdout)["data"]["dkimpy-milter.conf"]
    print("evidence: the fleet's dkimpy-milter.conf:\n" + milter)
    for selector in names:
        assert f"{selector}" in milter
        assert f"/etc/mailward/dkim-keys/{domain}_{selector}.key" in milter
    statefulset = kube.kubectl("get", "statefulset", "fleet", "-n", namespace, "-o", "json")
    template = json.loads(statefulset.stdout)["spec"]["template"]["spec"]
    assert "dkim" in [c["name"] for c in template["initContainers"]]
    print(f"evidence: fleet-dkim items {sorted(copy)}; the fleet's pod runs the signer")


def test_the_running_operator_rotates_on_its_own_clock(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    """SHORTENED CLOCK (this test only): `rotateAfter: 1m`, `retireAfter: 0s`, one key type.
    Nothing but the operator's own retries drives the rotation: the first key signs, a minute
    later a second one takes over, and the first leaves DNS, the Secret and the MTA's pod."""
    setup = publish_setup(apply=False)
    setup.manifest["spec"]["dkim"] = {
        "managed": True,
        "keyTypes": ["ed25519"],
        "rotateAfter": "1m",
        "retireAfter": "0s",
    }
    kube.apply(setup.manifest)
    namespace, domain = setup.namespace, setup.domain

    def phases() -> dict[str, str]:
        body = kube.get_maildomain(namespace, "example")
        found = (body.get("status", {}).get("dkim") or {}).get("selectors", [])
        return {s["selector"]: s["phase"] for s in found}

    first = kube.wait_for(
        "the first key Active", lambda: list(phases()) if "Active" in phases().values() else None
    )
    (first_selector,) = first
    print(f"evidence: first key {first_selector}: {phases()}")
    seen: list[dict[str, str]] = []

    def rotated() -> str | None:
        now = phases()
        if not seen or seen[-1] != now:
            seen.append(now)
        if first_selector in now or list(now.values()) != ["Active"]:
            return None
        return next(iter(now))

    second = kube.wait_for("the second key alone, Active", rotated, timeout=240, interval=1.0)
    print("evidence: phases seen: " + " -> ".join(json.dumps(p) for p in seen))
    assert any(
        p.get(first_selector) == "Retiring" or p.get(first_selector) == "Withdrawn" for p in seen
    )
    assert _validated_key(dns_stack, f"{first_selector}._domainkey.{domain}.") is None
    assert _validated_key(dns_stack, f"{second}._domainkey.{domain}.") is not None
    secret = kube.core.read_namespaced_secret("example-dkim", namespace)
    assert sorted(secret.data) == [f"{second}.key"]
    statefulset = kube.kubectl("get", "statefulset", "example-mta", "-n", namespace, "-o", "json")
    template = json.loads(statefulset.stdout)["spec"]["template"]["spec"]
    (volume,) = [v for v in template["volumes"] if v["name"] == "dkim-keys"]
    assert [i["key"] for i in volume["secret"]["items"]] == [f"{second}.key"]
