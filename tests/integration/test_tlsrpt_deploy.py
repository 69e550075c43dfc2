"""The operator deploys the TLSRPT collector of a namespace, from every MailDomain there.

Against the real API server, with the operator running under exactly the chart's RBAC rules
(the shared `operator` fixture): the collector's ConfigMap, StatefulSet and two Services appear
when MailDomains do, follow their specs, are owned by all of them, and drop a MailDomain when it
is deleted. The local control plane has no garbage collector, so what the last deletion leaves is
shown by the owner references that the collector would be collected by.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from mailward.render.tlsrpt_objects import API_SERVICE, CONFIG_KEY, NAME
from mailward.tlsrpt.config import CollectorConfig
from mailward_localstack.dns import DNSStack
from mailward_localstack.pki import LocalCA
from tests.chart import RELEASE_NAMESPACE
from tests.fixtures_dnspublish import PublishSetup, tls_secret_manifest, zone_rrsets
from tests.fixtures_operator import Kube, OperatorProcess
from tests.manifests import minimal_maildomain
from tests.net import addr

OBJECTS = (
    ("configmap", NAME),
    ("statefulset", NAME),
    ("service", NAME),
    ("service", API_SERVICE),
    ("networkpolicy", NAME),
)


def _maildomain(namespace: str, name: str, domain: str, **spec: Any) -> dict[str, Any]:
    manifest = minimal_maildomain(name=name, namespace=namespace)
    manifest["spec"].update(
        {
            "domain": domain,
            "mx": [{"host": f"mx.{domain}"}],
            "tls": {"secretName": f"{name}-tls"},
            **spec,
        }
    )
    return manifest


def _get(kube: Kube, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = kube.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _config(kube: Kube, namespace: str) -> CollectorConfig | None:
    configmap = _get(kube, namespace, "configmap", NAME)
    return CollectorConfig.model_validate_json(configmap["data"][CONFIG_KEY]) if configmap else None


def _owner_uids(kube: Kube, namespace: str) -> dict[tuple[str, str], list[str]]:
    owners = {}
    for kind, name in OBJECTS:
        body = _get(kube, namespace, kind, name) or {}
        refs = body.get("metadata", {}).get("ownerReferences", [])
        owners[(kind, name)] = sorted(r["uid"] for r in refs)
    return owners


def test_the_collector_follows_the_namespaces_maildomains(
    kube: Kube, operator: OperatorProcess, local_ca: LocalCA, namespace: str
) -> None:
    for name, domain in (("alpha", "alpha.test"), ("beta", "beta.test")):
        cert = local_ca.issue_server_cert([f"mx.{domain}", f"tlsrpt.{domain}"])
        kube.apply(tls_secret_manifest(namespace, cert, f"{name}-tls"))
    kube.apply(_maildomain(namespace, "alpha", "alpha.test"))
    # beta sends its reports elsewhere as well: both mailbox hosts are accepted.
    kube.apply(
        _maildomain(
            namespace,
            "beta",
            "beta.test",
            tlsRpt={"rua": ["mailto:tls@reports.beta.test", "mailto:tlsrpt@tlsrpt.beta.test"]},
        )
    )
    uids = {
        name: kube.get_maildomain(namespace, name)["metadata"]["uid"] for name in ("alpha", "beta")
    }

    def both_served() -> CollectorConfig | None:
        config = _config(kube, namespace)
        return config if config and config.domains == ["alpha.test", "beta.test"] else None

    config = kube.wait_for("the collector serving alpha and beta", both_served, timeout=60)
    assert config.mailbox_domains == ["reports.beta.test", "tlsrpt.alpha.test", "tlsrpt.beta.test"]
    assert len(config.certificates) == 2
    assert all(uid == sorted(uids.values()) for uid in _owner_uids(kube, namespace).values())

    statefulset = _get(kube, namespace, "statefulset", NAME)
    assert statefulset is not None
    pod = statefulset["spec"]["template"]["spec"]
    # Each domain's certificate as mailward serves it (its copy, moved only by the rollover),
    # not the user's Secret.
    assert sorted(v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v) == [
        "alpha-mailward-tls",
        "beta-mailward-tls",
    ]
    assert pod["containers"][0]["image"] == "ghcr.io/mailward/operator:test"
    public = _get(kube, namespace, "service", NAME)
    internal = _get(kube, namespace, "service", API_SERVICE)
    assert public is not None
    assert internal is not None
    assert sorted(p["port"] for p in public["spec"]["ports"]) == [25, 443]
    assert [p["port"] for p in internal["spec"]["ports"]] == [9108]
    policy = _get(kube, namespace, "networkpolicy", NAME)
    assert policy is not None
    api_rule = policy["spec"]["ingress"][1]
    assert api_rule["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": RELEASE_NAMESPACE
    }

    # Unchanged MailDomains, one resync (every 10 s in tests) later: nothing was written.
    versions = {
        o: (_get(kube, namespace, *o) or {})["metadata"]["resourceVersion"] for o in OBJECTS
    }
    time.sleep(12)
    assert versions == {
        o: (_get(kube, namespace, *o) or {})["metadata"]["resourceVersion"] for o in OBJECTS
    }

    # A changed spec rolls the collector: new mailbox host, new configuration hash.
    hash_before = statefulset["spec"]["template"]["metadata"]["annotations"]
    kube.kubectl(
        "patch", "maildomain", "beta", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"tlsRpt": {"rua": ["mailto:tls@other.beta.test"]}}}),
    )  # fmt: skip

    def other_mailbox() -> CollectorConfig | None:
        config = _config(kube, namespace)
        return config if config and "other.beta.test" in config.mailbox_domains else None

    config = kube.wait_for("the new mailbox host", other_mailbox, timeout=30)
    assert config.mailbox_domains == ["other.beta.test", "tlsrpt.alpha.test"]
    statefulset = _get(kube, namespace, "statefulset", NAME)
    assert statefulset is not None
    assert statefulset["spec"]["template"]["metadata"]["annotations"] != hash_before

    # beta deleted: the collector serves alpha alone and is owned by alpha alone.
    kube.kubectl("delete", "maildomain", "beta", "-n", namespace, "--wait=true", "--timeout=60s")

    def alpha_only() -> CollectorConfig | None:
        config = _config(kube, namespace)
        return config if config and config.domains == ["alpha.test"] else None

    config = kube.wait_for("the collector without beta", alpha_only, timeout=30)
    assert config.mailbox_domains == ["tlsrpt.alpha.test"]
    assert all(u == [uids["alpha"]] for u in _owner_uids(kube, namespace).values())

    # alpha deleted too: the objects are owned by nothing that exists any more, which is what
    # makes a cluster's garbage collector remove them (this control plane runs none).
    kube.kubectl("delete", "maildomain", "alpha", "-n", namespace, "--wait=true", "--timeout=60s")
    listing = kube.kubectl("get", "maildomains", "-n", namespace, "-o", "name").stdout
    assert listing.strip() == ""
    assert all(u == [uids["alpha"]] for u in _owner_uids(kube, namespace).values())


def test_the_load_balancer_address_becomes_the_mailbox_host(
    kube: Kube,
    operator: OperatorProcess,
    dns_stack: DNSStack,
    publish_setup: Callable[..., PublishSetup],
) -> None:
    """The collector's LoadBalancer Service gets an address (here written by the test, as a
    cloud controller would): `tlsrpt.<domain>` points at it, unless the spec names one."""
    setup = publish_setup(apply=False)
    del setup.manifest["spec"]["tlsRpt"]  # the default: the collector's mailbox
    kube.apply(setup.manifest)
    host = f"tlsrpt.{setup.domain}."
    rua = f'"v=TLSRPTv1; rua=mailto:tlsrpt@{host.rstrip(".")}"'

    def published() -> dict[tuple[str, str], Any] | None:
        zone = zone_rrsets(dns_stack)
        txt = zone.get((f"_smtp._tls.{setup.domain}.", "TXT"))
        return zone if txt and txt.rdata == (rua,) else None

    zone = kube.wait_for("the default rua in the zone", published, timeout=60)
    # The load balancer has no address yet: nothing is published for its name.
    assert not [key for key in zone if key[0] == host]
    service = _get(kube, setup.namespace, "service", NAME)
    assert service is not None
    assert service["spec"]["type"] == "LoadBalancer"

    kube.kubectl(
        "patch", "service", NAME, "-n", setup.namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": addr(27)}]}}}),
    )  # fmt: skip

    def host_at(address: str) -> Callable[[], dict[str, tuple[str, ...]] | None]:
        def records() -> dict[str, tuple[str, ...]] | None:
            zone = zone_rrsets(dns_stack)
            found = {key[1]: rrset.rdata for key, rrset in zone.items() if key[0] == host}
            return found if found.get("A") == (address,) else None

        return records

    # Services are not watched: the resync (every 10 s in tests) picks the address up.
    found = kube.wait_for("tlsrpt.<domain> at the load balancer", host_at(addr(27)), timeout=40)
    assert found == {"A": (addr(27),), "MX": (f"10 {host}",)}

    # The spec names another address: it wins over the load balancer's.
    kube.kubectl(
        "patch", "maildomain", "example", "-n", setup.namespace, "--type=merge",
        "-p", json.dumps({"spec": {"dns": {"tlsRptCollector": {"addresses": [addr(28)]}}}}),
    )  # fmt: skip

    found = kube.wait_for("tlsrpt.<domain> at the spec's address", host_at(addr(28)), timeout=30)
    assert found == {"A": (addr(28),), "MX": (f"10 {host}",)}
