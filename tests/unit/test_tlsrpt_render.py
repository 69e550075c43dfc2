"""The collector's objects and configuration, against a golden file; the default rua; which
MailDomains a namespace's collector serves."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from mailward.api.v1alpha1 import Condition, MailDomainStatus
from mailward.parts import ReconcileContext
from mailward.parts.tlsrpt import CollectorDeployment, TLSRptPart, served_domains
from mailward.reconcile import parse_spec
from mailward.render.tlsrpt_objects import (
    API_SERVICE,
    CONFIG_KEY,
    NAME,
    CollectorSettings,
    NoCollectorAddress,
    ServedDomain,
    public_target,
    render_collector,
)
from mailward.settings import SettingsError, from_environment
from mailward.tlsrpt.config import CollectorConfig
from mailward.tlsrpt.rua import effective_rua
from tests.manifests import minimal_maildomain, valid_maildomain

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SETTINGS = CollectorSettings(image="ghcr.io/mailward/mailward:0.1.0")
NAMESPACE = "mail"


def _served() -> list[ServedDomain]:
    return [
        ServedDomain("example", "uid-example", parse_spec(valid_maildomain()["spec"])),
        ServedDomain("minimal", "uid-minimal", parse_spec(minimal_maildomain()["spec"])),
    ]


def test_objects_match_the_golden_file() -> None:
    text = yaml.safe_dump_all(render_collector(NAMESPACE, _served(), SETTINGS), sort_keys=False)
    golden = GOLDEN / "tlsrpt-collector.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_the_rendered_configuration_is_what_the_collector_reads() -> None:
    configmap, statefulset, public, internal, _ = render_collector(NAMESPACE, _served(), SETTINGS)
    config = CollectorConfig.model_validate_json(configmap["data"][CONFIG_KEY])
    assert config.domains == ["example.test", "minimal.test"]
    # example.test names its own mailbox; minimal.test gets the collector's by default.
    assert config.mailbox_domains == ["example.test", "tlsrpt.minimal.test"]
    assert len(config.certificates) == 2
    mounted = {
        m["mountPath"]
        for m in statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    for certificate in config.certificates:
        assert str(Path(certificate.cert_file).parent) in mounted
    # The internet side never carries the evaluation API.
    assert {p["port"] for p in public["spec"]["ports"]} == {25, 443}
    assert {p["port"] for p in internal["spec"]["ports"]} == {9108}
    assert (public["metadata"]["name"], internal["metadata"]["name"]) == (NAME, API_SERVICE)
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == [
        "ReadWriteOnce"
    ]
    json.dumps(statefulset)  # plain data, ready for the API server


def test_a_changed_configuration_rolls_the_pod() -> None:
    one = render_collector(NAMESPACE, _served(), SETTINGS)[1]
    two = render_collector(NAMESPACE, _served()[:1], SETTINGS)[1]
    key = "mailward.io/config-hash"
    assert (
        one["spec"]["template"]["metadata"]["annotations"][key]
        != two["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_rua_defaults_to_the_collector_mailbox() -> None:
    minimal = parse_spec(minimal_maildomain()["spec"])
    assert effective_rua(minimal) == ["mailto:tlsrpt@tlsrpt.minimal.test"]
    example = parse_spec(valid_maildomain()["spec"])
    assert effective_rua(example) == list(example.tls_rpt.rua)


def test_every_object_is_owned_by_every_served_maildomain() -> None:
    for manifest in render_collector(NAMESPACE, _served(), SETTINGS):
        owners = manifest["metadata"]["ownerReferences"]
        assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
            ("MailDomain", "example", "uid-example"),
            ("MailDomain", "minimal", "uid-minimal"),
        ]
        # Several owners: none is the controller, and the last one gone takes the object.
        assert not any(o.get("controller") for o in owners)
        assert manifest["metadata"]["namespace"] == NAMESPACE


def test_the_container_needs_no_capability_and_keeps_its_volume() -> None:
    statefulset = render_collector(NAMESPACE, _served(), SETTINGS)[1]
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert all(p["containerPort"] > 1024 for p in container["ports"])
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"


def _item(name: str, spec: dict, **meta: object) -> dict:  # type: ignore[type-arg]
    return {"metadata": {"name": name, "uid": f"uid-{name}", **meta}, "spec": spec}


def test_served_domains_leave_out_the_deleting_and_the_invalid() -> None:
    invalid = dict(minimal_maildomain()["spec"], domain="Not A Domain")
    items = [
        _item("minimal", minimal_maildomain()["spec"]),
        _item("example", valid_maildomain()["spec"], deletionTimestamp="2026-11-27T00:00:00Z"),
        _item("broken", invalid),
    ]
    assert [(d.name, d.spec.domain) for d in served_domains(items)] == [("minimal", "minimal.test")]


def test_settings_from_the_environment() -> None:
    settings = _collector(
        {
            "MAILWARD_TLSRPT_IMAGE": "registry.example/mailward:1",
            "MAILWARD_TLSRPT_RETENTION_DAYS": "30",
            "MAILWARD_TLSRPT_SERVICE_TYPE": "LoadBalancer",
        }
    )
    assert (settings.image, settings.retention_days) == ("registry.example/mailward:1", 30)
    public = render_collector(NAMESPACE, _served(), settings)[2]
    assert public["spec"]["type"] == "LoadBalancer"
    assert public["spec"]["externalTrafficPolicy"] == "Local"
    with pytest.raises(SettingsError, match="MAILWARD_TLSRPT_SERVICE_TYPE"):
        from_environment({"MAILWARD_TLSRPT_SERVICE_TYPE": "Ingress"})


def test_only_the_operators_namespace_reaches_the_api_port() -> None:
    settings = _collector(
        {"MAILWARD_TLSRPT_OPERATOR_NAMESPACE": "mailward-system"}
    )
    policy = render_collector(NAMESPACE, _served(), settings)[-1]
    assert policy["kind"] == "NetworkPolicy"
    reports, api = policy["spec"]["ingress"]
    assert "from" not in reports  # senders are anywhere on the internet
    assert [p["port"] for p in reports["ports"]] == [2525, 8443]
    assert [p["port"] for p in api["ports"]] == [9108]
    assert api["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mailward-system"}}}
    ]


def test_a_load_balancers_addresses_or_name_become_the_mailbox_host_target() -> None:
    by_ip = public_target(["203.0.113.9", "2001:db8::9", "203.0.113.9"], ["lb.example.net"])
    assert by_ip is not None
    assert by_ip.addresses == ["2001:db8::9", "203.0.113.9"]
    by_name = public_target([], ["A1B2.elb.Example.NET."])
    assert by_name is not None
    assert by_name.cname == "a1b2.elb.example.net"
    assert public_target([], []) is None  # pending
    assert public_target(["not-an-address"], []) is None


HOST_NETWORK = CollectorSettings(image="ghcr.io/mailward/mailward:0.1.0", host_network=True)


def _served_at(*addresses: list[str] | None) -> list[ServedDomain]:
    """example.test, minimal.test, ...: each publishing the given tlsrpt.<domain> addresses."""
    served = []
    for index, published in enumerate(addresses):
        manifest = minimal_maildomain(name=f"d{index}")["spec"]
        manifest["domain"] = f"d{index}.test"
        manifest["mx"] = [{"host": f"mx.d{index}.test"}]
        manifest["dns"] = {"providerRef": {"name": "local-bind"}}
        if published is not None:
            manifest["dns"]["tlsRptCollector"] = {"addresses": published}
        served.append(ServedDomain(f"d{index}", f"uid-d{index}", parse_spec(manifest)))
    return served


def test_on_the_host_network_the_collector_binds_what_its_domains_publish() -> None:
    served = _served_at(["127.77.0.26"], ["127.77.0.27", "127.77.0.26"], None)
    configmap, statefulset, *_, policy = render_collector(NAMESPACE, served, HOST_NETWORK)
    config = CollectorConfig.model_validate_json(configmap["data"][CONFIG_KEY])
    for listen, port in ((config.smtp, 25), (config.https, 443), (config.api, 9108)):
        assert (listen.addresses(), listen.port) == (["127.77.0.26", "127.77.0.27"], port)
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["hostNetwork"] is True
    assert [(p["containerPort"], p["hostIP"]) for p in container["ports"]] == [
        (25, "127.77.0.26"),
        (25, "127.77.0.27"),
        (443, "127.77.0.26"),
        (443, "127.77.0.27"),
        (9108, "127.77.0.26"),
        (9108, "127.77.0.27"),
    ]
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "api",
        "host": "127.77.0.26",
    }
    # 25 and 443 on the host: root with NET_BIND_SERVICE only; the pod no longer claims non-root.
    context = container["securityContext"]
    assert (context["runAsUser"], context["capabilities"]["add"]) == (0, ["NET_BIND_SERVICE"])
    assert context["readOnlyRootFilesystem"] is True
    assert "runAsNonRoot" not in pod["securityContext"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert [p["port"] for p in policy["spec"]["ingress"][0]["ports"]] == [25, 443]


def test_in_its_own_network_the_collector_needs_no_token_and_no_capability() -> None:
    statefulset = render_collector(NAMESPACE, _served(), SETTINGS)[1]
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "hostNetwork" not in pod
    assert pod["securityContext"]["fsGroup"] == 65532
    assert pod["containers"][0]["securityContext"]["runAsUser"] == 65532
    assert _collector({"MAILWARD_TLSRPT_HOST_NETWORK": "true"}).host_network


def test_nothing_to_bind_reads_the_same_however_many_domains_the_namespace_holds() -> None:
    """The message is each served domain's condition: a new sibling must not rewrite them all."""
    messages = set()
    for served in (_served_at(None), _served_at(None, None), _served_at(None, None, None)):
        with pytest.raises(NoCollectorAddress) as refused:
            render_collector(NAMESPACE, served, HOST_NETWORK)
        messages.add(str(refused.value))
    assert len(messages) == 1, messages


def test_a_collector_with_nothing_to_bind_is_not_deployed_and_the_condition_says_why() -> None:
    with pytest.raises(NoCollectorAddress, match=r"spec\.dns\.tlsRptCollector\.addresses"):
        render_collector(NAMESPACE, _served_at(None), HOST_NETWORK)

    class Lister:
        async def list(self, namespace: str) -> list[dict[str, Any]]:
            manifest = minimal_maildomain(namespace=namespace)
            return [{**manifest, "metadata": {**manifest["metadata"], "uid": "uid-minimal"}}]

    class Applier:
        applied: ClassVar[list[dict[str, Any]]] = []

        async def apply(self, obj: dict[str, Any]) -> None:
            self.applied.append(obj)

        async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
            raise AssertionError("nothing is deleted")

    part = TLSRptPart(None, 60, CollectorDeployment(Lister(), Applier(), HOST_NETWORK))
    ctx = ReconcileContext(
        "minimal", NAMESPACE, "uid-minimal", 1, parse_spec(minimal_maildomain()["spec"]),
        MailDomainStatus(),
    )  # fmt: skip
    result = asyncio.run(part.reconcile(ctx))
    (verdict,) = result.verdicts
    assert (verdict.type, verdict.status, verdict.reason) == (
        "TLSReportsHealthy",
        "Unknown",
        "CollectorHasNoAddress",
    )
    assert "spec.dns.tlsRptCollector.addresses" in verdict.message, verdict.message
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "CollectorHasNoAddress")]
    assert Applier.applied == []
    # Said once: the same condition again posts no new Event.
    condition = Condition(
        type=verdict.type,
        status=verdict.status,
        reason=verdict.reason,
        message=verdict.message,
        last_transition_time=datetime.now(UTC),
    )
    again = asyncio.run(
        part.reconcile(replace(ctx, status=MailDomainStatus(conditions=[condition])))
    )
    assert again.events == []


def _collector(env: dict[str, str]) -> CollectorSettings:
    return from_environment(env).tlsrpt.collector


def test_the_directory_follows_the_watch_events() -> None:
    from mailward.adapters.maildomains import MailDomainDirectory

    directory = MailDomainDirectory()

    def body(name: str, **meta: str) -> dict[str, Any]:
        spec = {"domain": f"{name}.test", "mx": [{"host": f"mx.{name}.test"}]}
        return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}", **meta},
                "spec": spec, "status": {"big": "x" * 100}}  # fmt: skip

    directory.observe(None, body("a"))  # kopf's initial listing has no type
    directory.observe("ADDED", body("b"))
    directory.observe("MODIFIED", body("b", deletionTimestamp="2026-01-01T00:00:00Z"))
    items = asyncio.run(directory.list("ns"))
    assert [i["metadata"]["name"] for i in items] == ["a", "b"]
    assert "status" not in items[0]
    assert [d.name for d in served_domains(items)] == []  # a has no tls, b is deleting
    directory.observe("DELETED", body("a"))
    directory.observe("DELETED", body("b"))
    assert asyncio.run(directory.list("ns")) == []
    assert asyncio.run(directory.list("other")) == []
