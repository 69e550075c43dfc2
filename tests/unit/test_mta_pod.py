"""The MTA's pod: its own network namespace by default, the host network with explicit addresses
on request; the validating resolver every process asks; security contexts and probes."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from aiosmtpd.smtp import SMTP

from mailward.reconcile import parse_spec
from mailward.render.mta_pod import POSTFIX_CAPABILITIES
from mailward.render.pods import SMTP_EHLO_PROBE, SOCKETMAP_PROBE
from mailward.render.resolver import ResolverSettings
from mailward.sidecars.tlspolicy import PolicyServer
from tests.manifests import valid_maildomain
from tests.own_mta import own_config, own_objects


def _spec(**mta: Any) -> Any:
    manifest = valid_maildomain()["spec"]
    manifest["mta"] = mta
    return parse_spec(manifest)


def _objects(**mta: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """The ConfigMap's data and the pod template's spec."""
    objects = own_objects(_spec(**mta), ["alice"], ResolverSettings())
    configmap = next(o for o in objects if o["metadata"]["name"].endswith("-config"))
    statefulset = next(o for o in objects if o["kind"] == "StatefulSet")
    return configmap["data"], statefulset["spec"]["template"]["spec"]


def _containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in [*pod["initContainers"], *pod["containers"]]}


def _probe_args(probe: dict[str, Any]) -> list[str]:
    command: list[str] = probe["exec"]["command"]
    assert command[:2] == ["python3", "-c"]
    return command[3:]


def test_in_its_own_network_the_pod_listens_as_before() -> None:
    data, pod = _objects()
    assert "hostNetwork" not in pod
    assert "affinity" not in pod
    config = own_config(_spec(), [])
    assert config.parameter("inet_interfaces") == "all"
    assert config.parameter("smtp_tls_policy_maps") == "socketmap:inet:127.0.0.1:8461:postfix"
    with pytest.raises(KeyError):
        config.parameter("smtp_bind_address")
    assert "    interface: 127.0.0.1\n" in data["unbound.conf"]
    assert yaml.safe_load(data["mta-sts-daemon.yml"])["host"] == "127.0.0.1"
    containers = _containers(pod)
    policy = containers["tls-policy"]["command"]
    assert policy[policy.index("--listen") + 1] == "127.0.0.1:8461"
    assert policy[policy.index("--sts") + 1] == "127.0.0.1:8462"
    assert [p["containerPort"] for p in containers["postfix"]["ports"]] == [25, 465, 587]
    assert not any("hostIP" in p for p in containers["postfix"]["ports"])
    # Loopback-only listeners are not declared as ports of the pod.
    assert "ports" not in containers["resolver"] or containers["resolver"]["ports"] == []


def test_every_process_asks_the_pods_validating_resolver() -> None:
    for mta, address in (({}, "127.0.0.1"), ({"hostNetwork": True}, "127.77.0.25")):
        data, pod = _objects(**mta)
        assert pod["dnsPolicy"] == "None"
        assert pod["dnsConfig"] == {
            "nameservers": [address],
            "options": [{"name": "edns0"}, {"name": "trust-ad"}],
        }
        assert f"    interface: {address}\n" in data["unbound.conf"]
        resolver = _containers(pod)["resolver"]
        assert resolver["command"] == ["unbound", "-d", "-c", "/etc/mailward/resolver/unbound.conf"]
        mounts = {m["name"]: m["mountPath"] for m in resolver["volumeMounts"]}
        assert mounts == {"resolver-config": "/etc/mailward/resolver"}
        volume = next(v for v in pod["volumes"] if v["name"] == "resolver-config")
        assert volume["configMap"]["items"] == [{"key": "unbound.conf", "path": "unbound.conf"}]
        policy = _containers(pod)["tls-policy"]["command"]
        assert policy[policy.index("--nameserver") + 1] == address


def test_on_the_host_network_postfix_binds_exactly_the_mx_addresses() -> None:
    data, pod = _objects(hostNetwork=True)
    assert pod["hostNetwork"] is True
    config = own_config(_spec(hostNetwork=True), [])
    assert config.parameter("inet_interfaces") == "127.77.0.25, [::1]"
    assert config.parameter("inet_protocols") == "all"
    assert config.parameter("smtp_bind_address") == "127.77.0.25"
    assert config.parameter("smtp_bind_address6") == "::1"
    # The pod's EHLO probe comes from the first address: never rate-limited into a restart.
    exempt = config.parameter("smtpd_client_event_limit_exceptions")
    assert exempt == "$mynetworks, 127.77.0.25"
    # The other listeners bind the first MX address, on ports of their own.
    assert config.parameter("smtp_tls_policy_maps") == ("socketmap:inet:127.77.0.25:8461:postfix")
    daemon = yaml.safe_load(data["mta-sts-daemon.yml"])
    assert (daemon["host"], daemon["port"]) == ("127.77.0.25", 8462)
    containers = _containers(pod)
    policy = containers["tls-policy"]["command"]
    assert policy[policy.index("--listen") + 1] == "127.77.0.25:8461"
    assert policy[policy.index("--sts") + 1] == "127.77.0.25:8462"
    # Host ports name their address, so MTAs on other addresses can share the node.
    smtp = [p for p in containers["postfix"]["ports"] if p["containerPort"] == 25]
    assert [(p.get("name"), p["hostIP"], p["hostPort"]) for p in smtp] == [
        ("smtp", "127.77.0.25", 25),
        (None, "::1", 25),
    ]
    declared = {
        (c["name"], p["containerPort"], p["protocol"], p["hostIP"])
        for c in containers.values()
        if c["name"] != "postfix"
        for p in c["ports"]
    }
    assert declared == {
        ("resolver", 53, "UDP", "127.77.0.25"),
        ("resolver", 53, "TCP", "127.77.0.25"),
        ("mta-sts-resolver", 8462, "TCP", "127.77.0.25"),
        ("tls-policy", 8461, "TCP", "127.77.0.25"),
    }
    # Two pods of one MTA on a node would bind the same addresses.
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "example-mta"


def test_the_published_families_decide_what_postfix_speaks() -> None:
    manifest = valid_maildomain()["spec"]
    manifest["mx"] = [
        {"host": "mx1.example.test", "addresses": ["192.0.2.25", "192.0.2.26"]},
        {"host": "mx2.example.test", "addresses": ["192.0.2.26"]},
    ]
    manifest["mta"] = {"hostNetwork": True}
    config = own_config(parse_spec(manifest), [])
    assert config.parameter("inet_interfaces") == "192.0.2.25, 192.0.2.26"
    assert config.parameter("inet_protocols") == "ipv4"
    assert config.parameter("smtp_bind_address") == "192.0.2.25"
    with pytest.raises(KeyError):
        config.parameter("smtp_bind_address6")
    # A public address: the resolver also lets in queries from that address itself.
    objects = own_objects(parse_spec(manifest), [])
    unbound = objects[1]["data"]["unbound.conf"]
    assert "    interface: 192.0.2.25\n" in unbound
    assert "    access-control: 192.0.2.25/32 allow\n" in unbound
    # Its queries leave from that address too, as the mail does.
    assert "    outgoing-interface: 192.0.2.25\n" in unbound


def test_security_contexts() -> None:
    for mta in ({}, {"hostNetwork": True}):
        _, pod = _objects(**mta)
        assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
        assert pod["automountServiceAccountToken"] is False
        containers = _containers(pod)
        for container in containers.values():
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        postfix = containers["postfix"]["securityContext"]
        assert (postfix["runAsUser"], postfix["capabilities"]["add"]) == (0, POSTFIX_CAPABILITIES)
        assert "SYS_CHROOT" not in POSTFIX_CAPABILITIES
        resolver = containers["resolver"]["securityContext"]
        assert (resolver["runAsUser"], resolver["capabilities"]["add"]) == (0, ["NET_BIND_SERVICE"])
        for name in ("tls-policy", "mta-sts-resolver"):
            context = containers[name]["securityContext"]
            assert (context["runAsNonRoot"], context["runAsUser"]) == (True, 65534), name
            assert "add" not in context["capabilities"], name


def test_sidecars_start_before_postfix_and_outlive_it() -> None:
    _, pod = _objects()
    assert [c["name"] for c in pod["initContainers"]] == [
        "resolver",
        "mta-sts-resolver",
        "tls-policy",
        "tlsrpt-collectd",
    ]
    assert all(c["restartPolicy"] == "Always" for c in pod["initContainers"])
    assert [c["name"] for c in pod["containers"]] == ["postfix", "tlsrpt-reportd"]
    # Without the MTA-STS fallback and TLSRPT sending only the resolver runs beside Postfix.
    data, pod = _objects(mtaStsFallback=False, tlsReports={"enabled": False})
    assert [c["name"] for c in pod["initContainers"]] == ["resolver"]
    assert [c["name"] for c in pod["containers"]] == ["postfix"]
    assert "mta-sts-daemon.yml" not in data
    assert "mta-sts-config" not in [v["name"] for v in pod["volumes"]]


def test_probes_speak_smtp_and_dns_to_the_bound_address() -> None:
    for mta, address in (({}, "127.0.0.1"), ({"hostNetwork": True}, "127.77.0.25")):
        _, pod = _objects(**mta)
        containers = _containers(pod)
        postfix = containers["postfix"]
        ready, live = postfix["readinessProbe"], postfix["livenessProbe"]
        assert ready["exec"]["command"][2] == SMTP_EHLO_PROBE
        assert _probe_args(ready) == [address, "25", "4"]
        assert _probe_args(live) == [address, "25", "8"]
        # Liveness tolerates more than readiness; neither runs more often than every 10 s.
        assert live["failureThreshold"] * live["periodSeconds"] > (
            ready["failureThreshold"] * ready["periodSeconds"]
        )
        assert 10 <= ready["periodSeconds"] <= 20
        assert 10 <= live["periodSeconds"] <= 20
        # The probe's own timeout ends before the kubelet gives up on it.
        assert float(_probe_args(ready)[2]) < ready["timeoutSeconds"]
        resolver = containers["resolver"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert _probe_args(resolver[kind])[0] == address, kind
        assert "localhost." in resolver["readinessProbe"]["exec"]["command"][2]
        assert _probe_args(containers["tls-policy"]["livenessProbe"])[:2] == [address, "8461"]


def test_the_pod_stops_within_its_grace_period() -> None:
    data, pod = _objects()
    grace = pod["terminationGracePeriodSeconds"]
    assert yaml.safe_load(data["mta-sts-daemon.yml"])["shutdown_timeout"] < grace <= 60


@contextlib.contextmanager
def _serving(factory: Callable[[asyncio.AbstractEventLoop], Any]) -> Iterator[int]:
    """A listener on 127.0.0.1 (an ephemeral port) served by an event loop in a thread."""
    loop = asyncio.new_event_loop()
    listener = loop.run_until_complete(loop.create_server(lambda: factory(loop), "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        listener.close()
        loop.close()


def _smtp(loop: asyncio.AbstractEventLoop) -> SMTP:
    return SMTP(object(), hostname="mx.example.test", loop=loop)


def _socketmap(loop: asyncio.AbstractEventLoop) -> asyncio.StreamReaderProtocol:
    server = PolicyServer(resolver=None, sts=None)  # type: ignore[arg-type]
    reader = asyncio.StreamReader(loop=loop)
    return asyncio.StreamReaderProtocol(reader, server.handle, loop=loop)


def _run(script: str, *args: str) -> int:
    return subprocess.run([sys.executable, "-c", script, *args], timeout=30).returncode


def test_the_probe_scripts_pass_against_the_real_protocols_and_fail_without_them() -> None:
    """The scripts as the kubelet runs them, against in-process servers on loopback."""
    with _serving(_smtp) as port:
        assert _run(SMTP_EHLO_PROBE, "127.0.0.1", str(port), "4") == 0
    with _serving(_socketmap) as port:
        assert _run(SOCKETMAP_PROBE, "127.0.0.1", str(port), "4") == 0
    # Nothing listens there any more.
    assert _run(SMTP_EHLO_PROBE, "127.0.0.1", str(port), "1") != 0
    assert _run(SOCKETMAP_PROBE, "127.0.0.1", str(port), "1") != 0
