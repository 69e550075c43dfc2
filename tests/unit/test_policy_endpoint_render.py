"""Pure parts of the policy endpoint: autoconfig XML, the catalog, the Kubernetes objects, the
verdict of the mtasts part; against golden files where the output is a document."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml

from mailward.adapters.policy_endpoint import Fetched
from mailward.endpoint.catalog import (
    AUTOCONFIG_PATH,
    POLICY_PATH,
    WELL_KNOWN_AUTOCONFIG_PATH,
    build_catalog,
    parse_host_header,
)
from mailward.endpoint.server import PolicyServer
from mailward.parts.mtasts import served_verdict
from mailward.reconcile import parse_spec
from mailward.render.autoconfig import ClientService, autoconfig_for, render_autoconfig
from mailward.render.mta_sts import policy_for, policy_id, withdrawal_policy
from mailward.render.policy_objects import (
    EndpointSettings,
    ingress_name,
    render_deployment,
    render_ingress,
    render_shared_objects,
    tls_secret_name,
)
from mailward.settings import SettingsError, from_environment
from tests.manifests import valid_maildomain

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def _with_srv(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["spec"]["dns"]["srv"] = {
        "submissions": {"target": "smtp.example.test", "port": 465},
        "submission": {"target": "smtp.example.test", "port": 587},
        "imaps": {"target": "imap.example.test", "port": 993},
    }
    return manifest


def test_autoconfig_matches_the_golden_file() -> None:
    xml = autoconfig_for(parse_spec(_with_srv(valid_maildomain())["spec"]))
    assert xml is not None
    _golden("autoconfig.example.test.xml", xml)


def test_autoconfig_offers_implicit_tls_only() -> None:
    xml = autoconfig_for(parse_spec(_with_srv(valid_maildomain())["spec"]))
    assert xml is not None
    provider = ElementTree.fromstring(xml).find("emailProvider")
    assert provider is not None
    servers = [(e.get("type"), e.findtext("port"), e.findtext("socketType")) for e in provider]
    servers = [s for s in servers if s[0]]
    # STARTTLS submission (587) is in the SRV records but not offered here (TR-03108).
    assert servers == [("imap", "993", "SSL"), ("smtp", "465", "SSL")]


def test_no_autoconfig_without_incoming_and_outgoing_servers() -> None:
    assert autoconfig_for(parse_spec(valid_maildomain()["spec"])) is None
    manifest = valid_maildomain()
    manifest["spec"]["dns"]["srv"] = {"imaps": {"target": "imap.example.test", "port": 993}}
    assert autoconfig_for(parse_spec(manifest["spec"])) is None


def test_autoconfig_escapes_what_it_is_given() -> None:
    xml = render_autoconfig("example.test", [ClientService("imap", "a<b>&c.test", 993)])
    assert "a&lt;b&gt;&amp;c.test" in xml
    ElementTree.fromstring(xml)


def _body(name: str, namespace: str, created: str, **changes: Any) -> dict[str, Any]:
    body = _with_srv(valid_maildomain(name, namespace))
    body["metadata"].update(uid=f"{namespace}-{name}", resourceVersion="1")
    body["metadata"]["creationTimestamp"] = created
    body["spec"]["mtaSts"].update(changes)
    return body


def test_catalog_serves_policy_and_autoconfig_by_host_and_path() -> None:
    body = _body("example", "default", "2026-01-01T00:00:00Z")
    catalog = build_catalog([body])
    policy = policy_for(parse_spec(body["spec"]))
    document = catalog.lookup("mta-sts.example.test", POLICY_PATH)
    assert document is not None
    assert document.body == policy.encode()
    assert document.content_type.startswith("text/plain")
    xml = catalog.lookup("autoconfig.example.test", AUTOCONFIG_PATH)
    assert xml is not None
    assert catalog.lookup("example.test", WELL_KNOWN_AUTOCONFIG_PATH) == xml
    assert catalog.lookup("mta-sts.example.test", AUTOCONFIG_PATH) is None
    assert catalog.lookup("mta-sts.other.test", POLICY_PATH) is None
    assert catalog.sites["example.test"].policy_id == policy_id(policy)


def test_catalog_keeps_the_oldest_claim_of_a_domain() -> None:
    old = _body("first", "a", "2026-01-01T00:00:00Z", mode="enforce")
    new = _body("second", "b", "2026-02-01T00:00:00Z", mode="testing")
    for order in ([old, new], [new, old]):
        site = build_catalog(order).sites["example.test"]
        assert site.owner == "a/first"
        assert "mode: enforce" in site.policy


def test_catalog_serves_the_withdrawal_of_a_deleted_maildomain() -> None:
    body = _body("example", "default", "2026-01-01T00:00:00Z")
    body["metadata"]["deletionTimestamp"] = "2026-03-01T00:00:00Z"
    site = build_catalog([body]).sites["example.test"]
    assert site.withdrawing
    assert site.policy == withdrawal_policy(parse_spec(body["spec"]))


def test_catalog_skips_invalid_specs_and_caches_renders() -> None:
    good = _body("good", "default", "2026-01-01T00:00:00Z")
    bad = _body("bad", "default", "2026-01-01T00:00:00Z")
    bad["spec"]["domain"] = "Not A Domain"
    cache: dict[tuple[str, str], Any] = {}
    assert set(build_catalog([good, bad], cache).sites) == {"example.test"}
    assert len(cache) == 2
    good["metadata"]["resourceVersion"] = "2"
    build_catalog([good], cache)
    assert set(cache) == {("default-good", "2")}


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("mta-sts.example.test", "mta-sts.example.test"),
        ("MTA-STS.Example.TEST:443", "mta-sts.example.test"),
        ("mta-sts.example.test.", "mta-sts.example.test"),
        ("mta-sts.example.test:99999", None),
        ("../../etc", None),
        ("a b", None),
        ("user@mta-sts.example.test", None),
        ("", None),
        (None, None),
        ("x" * 300, None),
    ],
)
def test_host_header_parsing(header: str | None, host: str | None) -> None:
    assert parse_host_header(header) == host


def test_policy_objects_match_the_golden_file() -> None:
    settings = EndpointSettings(
        namespace="mailward-system",
        image="ghcr.io/mailward/operator:0.1.0",
        ingress_class="nginx",
        cluster_issuer="local-ca",
    )
    objects = [*render_shared_objects(settings), render_ingress("example.test", settings)]
    _golden("policy-endpoint.yaml", yaml.safe_dump_all(objects, sort_keys=False))


def test_policy_objects_are_hardened() -> None:
    settings = EndpointSettings()
    deployment = next(o for o in render_shared_objects(settings) if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"readinessProbe", "livenessProbe"} <= set(container)
    kinds = {o["kind"] for o in render_shared_objects(settings)}
    assert {"PodDisruptionBudget", "Service", "ServiceAccount", "Role", "ClusterRole"} <= kinds


def test_ingress_names_every_host_and_no_wildcard() -> None:
    long_domain = ".".join(["a" * 50] * 4) + ".test"
    for domain in ("example.test", long_domain):
        ingress = render_ingress(domain, EndpointSettings(ingress_class="nginx"))
        assert len(ingress_name(domain)) <= 63
        assert len(tls_secret_name(domain)) <= 63
        assert ingress["spec"]["tls"][0]["hosts"] == [f"mta-sts.{domain}", f"autoconfig.{domain}"]
        assert not any("*" in h for h in ingress["spec"]["tls"][0]["hosts"])
        assert ingress["spec"]["ingressClassName"] == "nginx"
    assert "ingressClassName" not in render_ingress("example.test", EndpointSettings())["spec"]


def test_settings_from_the_environment() -> None:
    settings = from_environment(
        {"MAILWARD_POLICY_NAMESPACE": "mail", "MAILWARD_POLICY_INGRESS_CLASS": "traefik"}
    ).policy.endpoint
    assert (settings.namespace, settings.ingress_class, settings.replicas) == ("mail", "traefik", 2)


POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n"
OLD = "version: STSv1\r\nmode: testing\r\nmx: mx.example.test\r\nmax_age: 86400\r\n"


@pytest.mark.parametrize(
    ("fetched", "status", "reason", "served"),
    [
        (Fetched(200, POLICY.encode()), "True", "Serving", policy_id(POLICY)),
        (Fetched(200, OLD.encode()), "Unknown", "Pending", policy_id(OLD)),
        (Fetched(404, b"not found\n"), "Unknown", "Pending", None),
        (Fetched(503, b""), "False", "EndpointUnreachable", None),
        (Fetched(None, error="ConnectionRefusedError"), "False", "EndpointUnreachable", None),
    ],
)
def test_served_verdict(fetched: Fetched, status: str, reason: str, served: str | None) -> None:
    verdict, served_id, again = served_verdict("example.test", POLICY, fetched)
    assert (verdict.type, verdict.status, verdict.reason) == ("MTASTSReady", status, reason)
    assert served_id == served
    assert again is (reason != "Serving")


def _request(method: str, path: str, headers: dict[str, str]) -> Any:
    from aiohttp.test_utils import make_mocked_request

    return make_mocked_request(method, path, headers=headers)


async def _answer(method: str, path: str, headers: dict[str, str]) -> Any:
    server = PolicyServer()
    server.set_catalog(build_catalog([_body("example", "default", "2026-01-01T00:00:00Z")]))
    return await server.handle(_request(method, path, headers))


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", POLICY_PATH, {"Host": "mta-sts.example.test"}, 200),
        ("HEAD", POLICY_PATH, {"Host": "mta-sts.example.test"}, 200),
        ("GET", POLICY_PATH + "?x=<script>", {"Host": "mta-sts.example.test"}, 200),
        ("GET", "/.well-known/../mta-sts.txt", {"Host": "mta-sts.example.test"}, 404),
        ("GET", POLICY_PATH, {"Host": "mta-sts.other.test"}, 404),
        ("GET", POLICY_PATH, {}, 400),
        ("GET", POLICY_PATH, {"Host": "bad host"}, 400),
        ("POST", POLICY_PATH, {"Host": "mta-sts.example.test"}, 405),
        ("DELETE", POLICY_PATH, {"Host": "mta-sts.example.test"}, 405),
        ("GET", POLICY_PATH, {"Host": "mta-sts.example.test", "Content-Length": "5"}, 400),
    ],
)
def test_handler_answers(method: str, path: str, headers: dict[str, str], status: int) -> None:
    response = asyncio.run(_answer(method, path, headers))
    assert response.status == status
    assert response.headers["Cache-Control"] == "no-store"
    assert "Location" not in response.headers
    assert b"script" not in (response.body or b"")
    if status == 405:
        assert response.headers["Allow"] == "GET, HEAD"


def test_on_the_host_network_the_endpoint_binds_443_on_its_addresses() -> None:
    settings = _endpoint(
        {"MAILWARD_POLICY_HOST_NETWORK_ADDRESSES": "127.77.0.44, 2001:db8::44"}
    )
    assert settings.host_addresses == ("127.77.0.44", "2001:db8::44")
    deployment = render_deployment(settings)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["hostNetwork"] is True
    assert container["args"] == [
        "serve-policies",
        "--https",
        "127.77.0.44:443",
        "--https",
        "[2001:db8::44]:443",
        "--http",
        "127.77.0.44:80",
        "--http",
        "[2001:db8::44]:80",
        "--admin",
        "127.77.0.44:9090",
        "--tls-namespace",
        "mailward-system",
    ]
    https = [p for p in container["ports"] if p["containerPort"] == 443]
    assert [(p.get("name"), p["hostIP"]) for p in https] == [
        ("https", "127.77.0.44"),
        (None, "2001:db8::44"),
    ]
    # The kubelet probes the admin listener where it is, not the pod IP.
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["host"] == "127.77.0.44"
        assert container[probe]["httpGet"]["port"] == "admin"
    # 443 and 80 on the host: root, with NET_BIND_SERVICE and nothing else.
    context = container["securityContext"]
    assert (context["runAsUser"], context["runAsNonRoot"]) == (0, False)
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert "runAsNonRoot" not in pod["securityContext"]
    # Never two pods binding the same addresses on one node, not even during a rollout.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    # It watches the API server: its token stays.
    assert pod["automountServiceAccountToken"] is True


def test_in_its_own_network_the_endpoint_stays_unprivileged() -> None:
    deployment = render_deployment(EndpointSettings())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "hostNetwork" not in pod
    assert "affinity" not in pod
    assert container["args"][:7] == [
        "serve-policies",
        "--https",
        "0.0.0.0:8443",
        "--http",
        "0.0.0.0:8080",
        "--admin",
        "0.0.0.0:9090",
    ]
    assert container["securityContext"]["runAsUser"] == 65532
    assert "host" not in container["readinessProbe"]["httpGet"]
    assert pod["securityContext"]["fsGroup"] == 65532
    with pytest.raises(SettingsError, match="MAILWARD_POLICY_HOST_NETWORK_ADDRESSES"):
        from_environment({"MAILWARD_POLICY_HOST_NETWORK_ADDRESSES": "mta-sts"})


def _endpoint(env: dict[str, str]) -> EndpointSettings:
    return from_environment(env).policy.endpoint
