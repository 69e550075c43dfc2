"""The local stack: a real single-node cluster with mailward installed by its Helm chart.

`python -m mailward_localstack up` is what `make demo` runs; the tests' `cluster` fixture
runs the same on a /24 of its own. On one loopback /24 (127.77.0.0/24 for the demo) it starts:
- the "internet": BIND serving the DNSSEC-signed `test.` and the example's zone (RFC 2136 +
  TSIG), a validating Unbound as the outside world's resolver, and a local CA;
- the cluster: etcd, kube-apiserver on the `kubernetes` Service address (.129:443, the Service
  range is the upper half of the /24), kube-controller-manager, kube-scheduler, containerd and
  kubelet (`localstack.node`), with the project's images imported into containerd;
- mailward, installed with `helm upgrade --install` from `charts/mailward`: the operator runs as
  a pod under the chart's ServiceAccount and RBAC, and every workload it renders (MTA, policy
  endpoint, TLSRPT collector) becomes a pod on the host network, bound to the addresses the
  example publishes.

It is idempotent by restarting: whatever an earlier `up` left running in the state directory is
stopped first; etcd's data, the CA and the DNS keys are kept. `make down` stops it all.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailward_localstack import certmanager
from mailward_localstack._process import (
    StackError,
    managed_pid_files,
    read_live_pid,
    stop_all,
    wait_until,
)
from mailward_localstack.certmanager import CertManagerAddresses
from mailward_localstack.controlplane import (
    ControlPlane,
    kubectl,
    kubectl_path,
    repo_root,
    wait_established,
)
from mailward_localstack.demo_dns import create_cluster_dns_provider, create_dns_provider
from mailward_localstack.dns import (
    AuthoritativeDNS,
    DNSStack,
    ZoneSpec,
    ensure_loopback_address,
    remove_loopback_address,
)
from mailward_localstack.helm import helm
from mailward_localstack.images import IMAGES, ImageArchive, build_image
from mailward_localstack.node import Node
from mailward_localstack.node import teardown as node_teardown
from mailward_localstack.pki import LocalCA

RELEASE = "mailward"
RELEASE_NAMESPACE = "mailward-system"


@dataclass(frozen=True)
class StackLayout:
    """Addresses and names of one stack; everything in the loopback /24 `<net>.0/24`."""

    net: str = "127.77.0"
    domain: str = "example.test"
    namespace: str = "default"
    maildomain: str = "example"
    mx_hosts: tuple[str, ...] = ("mx1.example.test",)
    extra_zones: tuple[ZoneSpec, ...] = ()
    """More zones under `test.` (the tests' mail destinations)."""

    def address(self, host: int) -> str:
        return f"{self.net}.{host}"

    @property
    def service_cidr(self) -> str:
        return f"{self.net}.128/25"

    @property
    def apiserver(self) -> str:
        """The `kubernetes` Service address, where pods find the API server in-cluster."""
        return self.address(129)

    @property
    def operator(self) -> str:
        return self.address(2)

    @property
    def authoritative(self) -> str:
        return self.address(53)

    @property
    def resolver(self) -> str:
        return self.address(54)

    @property
    def secondary(self) -> str:
        """The BIND secondary of zones with `ZoneSpec.secondary` (started only for those)."""
        return self.address(55)

    @property
    def mta(self) -> str:
        return self.address(25)

    @property
    def cert_manager(self) -> str:
        """cert-manager's controller (metrics, health), which issues the example's certificates."""
        return self.address(88)

    @property
    def tlsrpt_collector(self) -> str:
        return self.address(26)

    @property
    def policy_endpoint(self) -> str:
        return self.address(44)

    @property
    def fleet_mx(self) -> str:
        """The demo MailServer's host (examples/mailserver.yaml)."""
        return self.address(31)

    @property
    def tlsrpt_host(self) -> str:
        return f"tlsrpt.{self.domain}"

    @property
    def node_addresses(self) -> tuple[str, ...]:
        """The addresses host-network pods bind, configured on the node as on a mail server."""
        return (
            self.operator,
            self.mta,
            self.tlsrpt_collector,
            self.policy_endpoint,
            self.fleet_mx,
        )


@dataclass(frozen=True)
class Stack:
    """A running stack, as `up` leaves it (attach to one with `Stack.attach`)."""

    state_dir: Path
    layout: StackLayout
    plane: ControlPlane
    ca: LocalCA
    images: dict[str, ImageArchive]

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    @property
    def dns(self) -> DNSStack:
        return DNSStack.attach(self.state_dir / "dns")


def up(
    state_dir: Path,
    env_file: Path | None,
    layout: StackLayout = StackLayout(),
    *,
    values: dict[str, Any] | None = None,
) -> Stack:
    """Start it all; `values` are merged over the chart values (the tests' short resync)."""
    state_dir = state_dir.resolve()
    stopped = _stop_everything(state_dir)
    if stopped:
        _say(f"stopped the previous run: {', '.join(stopped)}")

    # Images first: a build failure should not leave half a cluster running.
    images = {name: build_image(name) for name in IMAGES}
    _say("images: " + ", ".join(image.ref for image in images.values()))

    ca_dir = state_dir / "ca"
    ca = LocalCA.load(ca_dir) if (ca_dir / "ca.pem").exists() else LocalCA.create(ca_dir)
    _say(f"local CA: {ca.ca_file}")

    plane = ControlPlane(
        state_dir / "controlplane",
        host=layout.apiserver,
        service_cidr=layout.service_cidr,
        apiserver_port=443,
    )
    dns_stack = DNSStack.create(
        state_dir / "dns",
        auth_address=layout.authoritative,
        resolver_address=layout.resolver,
        zones=[ZoneSpec(layout.domain), *layout.extra_zones],
        secondary_address=layout.secondary,
    )
    node = Node(state_dir / "node", plane, sandbox_image=images["pause"].ref)
    try:
        plane.start()
        _say(f"kube-apiserver: {plane.server_url} (Service range {layout.service_cidr})")
        dns_stack.start()
        _say(
            f"authoritative DNS (BIND, DNSSEC, RFC 2136 + TSIG): {layout.authoritative}; "
            f"validating resolver (Unbound): {layout.resolver}"
        )
        _configure_node_addresses(state_dir, layout.node_addresses)
        node.start(images.values())
        _say("node 127.0.0.1: containerd, kubelet, kube-controller-manager, kube-scheduler")
        stack = Stack(state_dir, layout, plane, ca, images)
        _install(stack, dns_stack, node, values or {})
    except BaseException:
        _stop_everything(state_dir)
        raise
    if env_file is not None:
        _write_env_file(stack, env_file)
        _say(f"wrote {env_file}")
    return stack


def _install(stack: Stack, dns_stack: DNSStack, node: Node, overrides: dict[str, Any]) -> None:
    """The chart, then cert-manager with the local CA's ClusterIssuer (which the example names:
    its certificates are issued, none is made by hand), then the DNSProvider (its CRD comes with
    the chart)."""
    layout, kubeconfig, ca = stack.layout, stack.kubeconfig, stack.ca
    for namespace in {layout.namespace, RELEASE_NAMESPACE}:
        if not kubectl(kubeconfig, "get", "namespace", namespace, "--ignore-not-found"):
            kubectl(kubeconfig, "create", "namespace", namespace)

    _adopt_crds(kubeconfig)
    values_file = stack.state_dir / "values.yaml"
    values = merged(chart_values(stack, dns_stack), overrides)
    # JSON (which YAML reads) quotes every string: an image tag of digits only, such as a
    # content hash `076936462988`, written as plain YAML, would reach helm as a number.
    values_file.write_text(json.dumps(values, indent=2) + "\n")
    helm(
        kubeconfig,
        "upgrade", "--install", RELEASE, str(repo_root() / "charts" / "mailward"),
        "--namespace", RELEASE_NAMESPACE,
        "--values", str(values_file),
        "--wait", "--timeout", "180s",
    )  # fmt: skip
    _say(f"helm: release {RELEASE} in {RELEASE_NAMESPACE} (values {values_file})")
    wait_established(kubeconfig, *CRD_NAMES)
    certmanager.install(
        kubeconfig,
        stack.state_dir / "cert-manager",
        CertManagerAddresses(controller=layout.cert_manager),
        node.import_image,
        ca,
    )
    create_dns_provider(kubeconfig, stack.state_dir / "dns", layout.namespace)
    create_cluster_dns_provider(kubeconfig, stack.state_dir / "dns", RELEASE_NAMESPACE)


CRD_NAMES = tuple(
    f"{plural}.mailward.io"
    for plural in ("maildomains", "mailservers", "dnsproviders", "clusterdnsproviders")
)


def _adopt_crds(kubeconfig: Path) -> None:
    """CRDs that an older state directory applied with kubectl become the release's.

    The chart installs its CRDs as templates now; helm takes over an existing object only when
    it carries the release's ownership label and annotations (what a person upgrading from a
    chart version with crds/ does by hand, see the README).
    """
    for name in CRD_NAMES:
        if not kubectl(kubeconfig, "get", "crd", name, "--ignore-not-found", "-o", "name"):
            continue
        kubectl(
            kubeconfig, "label", "crd", name, "--overwrite", "app.kubernetes.io/managed-by=Helm"
        )
        kubectl(
            kubeconfig, "annotate", "crd", name, "--overwrite",
            f"meta.helm.sh/release-name={RELEASE}",
            f"meta.helm.sh/release-namespace={RELEASE_NAMESPACE}",
        )  # fmt: skip


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` laid over it, maps merged key by key as helm merges values."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def chart_values(stack: Stack, dns_stack: DNSStack) -> dict[str, Any]:
    """The chart's values for this cluster: host network, loopback addresses, local images."""
    layout = stack.layout
    repository, _, tag = stack.images["mailward"].ref.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "hostNetwork": True,
        "bindAddress": layout.operator,
        # One node, and on its network the operator's ports allow one replica (the chart's
        # two need two nodes; tests/integration/test_ha.py runs two without the ports).
        "replicas": 1,
        "policyEndpoint": {
            "replicas": 1,
            "hostNetwork": {"addresses": [layout.policy_endpoint]},
            "url": f"https://{layout.policy_endpoint}:443",
            # The policy endpoint's certificates chain to the local CA too.
            "caFile": "/etc/mailward/ca/ca.crt",
        },
        "tlsrptCollector": {
            "hostNetwork": True,
            "url": f"http://{layout.tlsrpt_collector}:9108",
        },
        "mta": {
            "image": stack.images["mta"].ref,
            "resolver": {
                # The MTA pod's own validating resolver anchors at the test parent zone and
                # asks the local authoritative server, where a real cluster uses the root.
                "trustAnchors": dns_stack.authoritative.trust_anchor(),
                "forwarders": [layout.authoritative],
            },
        },
        "compliance": {"resolver": layout.resolver, "caBundle": stack.ca.ca_file.read_text()},
        # A person watching the demo should not wait the production retry delays.
        "reconcile": {"mtaRetrySeconds": 3, "tlsrptRetrySeconds": 5},
    }


def apply_tls_secret(kubeconfig: Path, namespace: str, name: str, cert: Any) -> None:
    secret = kubectl(
        kubeconfig,
        "create", "secret", "tls", name, "-n", namespace,
        f"--cert={cert.chain_file}", f"--key={cert.key_file}",
        "--dry-run=client", "-o", "json",
    )  # fmt: skip
    kubectl(kubeconfig, "apply", "-f", "-", input=secret)


def wait_for_pods(kubeconfig: Path, timeout: float = 180) -> None:
    """Until every pod in the cluster is Running and Ready (for the demo's last table)."""

    def all_ready() -> bool:
        pods = json.loads(kubectl(kubeconfig, "get", "pods", "-A", "-o", "json"))["items"]
        return bool(pods) and all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])
            for p in pods
            if p.get("status", {}).get("conditions")
        )

    wait_until(all_ready, timeout=timeout, what="every pod Ready", interval=1.0)


def _configure_node_addresses(state_dir: Path, addresses: tuple[str, ...]) -> None:
    """/32 aliases on `lo`: Postfix refuses an `inet_interfaces` address no interface has.

    All are recorded, also those an earlier run that was killed left behind: the stack owns its
    /24, so `down` removes them whoever added them.
    """
    for address in addresses:
        ensure_loopback_address(address)
    known = state_dir / "node-addresses.json"
    previous = json.loads(known.read_text()) if known.exists() else []
    known.write_text(json.dumps(sorted(set(previous) | set(addresses))))


def _remove_node_addresses(state_dir: Path) -> None:
    known = state_dir / "node-addresses.json"
    if known.exists():
        for address in json.loads(known.read_text()):
            remove_loopback_address(address)
        known.unlink()


def down(state_dir: Path) -> None:
    state_dir = state_dir.resolve()
    stopped = _stop_everything(state_dir)
    _say(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def _stop_everything(state_dir: Path) -> list[str]:
    # The node first: kubelet would restart what we stop, and pods hold mounts and cgroups.
    stopped = node_teardown(state_dir / "node")
    _remove_node_addresses(state_dir)
    dns_dir = state_dir / "dns"
    if (dns_dir / "authoritative" / AuthoritativeDNS.STATE_FILE).exists():
        # Through the object, so that the loopback alias BIND needed is removed too.
        with contextlib.suppress(Exception):
            dns_stack = DNSStack.attach(dns_dir)
            if dns_stack.authoritative.is_running():
                stopped.append("dns")
            dns_stack.stop()
    return stopped + stop_all(state_dir)


def status(state_dir: Path) -> int:
    pid_files = managed_pid_files(state_dir.resolve())
    if not pid_files:
        print("no stack in", state_dir)
        return 1
    down_count = 0
    for pid_file in pid_files:
        pid = read_live_pid(pid_file)
        down_count += pid is None
        name = pid_file.relative_to(state_dir.resolve()).with_suffix("")
        print(f"{name!s:32} {'running, pid ' + str(pid) if pid else 'not running'}")
    return 1 if down_count else 0


def command(action: str, state_dir: Path, env_file: Path) -> int:
    try:
        if action == "up":
            up(state_dir, env_file)
        elif action == "down":
            down(state_dir)
        else:
            return status(state_dir)
    except StackError as error:
        print(f"mailward_localstack {action}: {error}", file=sys.stderr)
        return 2
    return 0


def _write_env_file(stack: Stack, path: Path) -> None:
    layout = stack.layout
    bin_dir = stack.state_dir.parent / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, target in (
        ("kubectl", kubectl_path()),
        ("mailward", Path(sys.executable).with_name("mailward")),
    ):
        link = bin_dir / name
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    values = {
        "KUBECONFIG": str(stack.kubeconfig),
        "MAILWARD_RESOLVER": layout.resolver,
        "MAILWARD_AUTHORITATIVE_DNS": layout.authoritative,
        "MAILWARD_CA_FILE": str(stack.ca.ca_file),
        "MAILWARD_TSIG_KEY_FILE": str(stack.dns.authoritative.tsig_file),
        "MAILWARD_POLICY_ENDPOINT": layout.policy_endpoint,
        "MAILWARD_MTA": layout.mta,
        "MAILWARD_TLSRPT_COLLECTOR": layout.tlsrpt_collector,
        "DEMO_DOMAIN": layout.domain,
        "DEMO_NAMESPACE": layout.namespace,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `make demo` (python -m mailward_localstack up). Use: source this file"]
    lines += [f"export {key}={json.dumps(value)}" for key, value in values.items()]
    lines.append(f'export PATH="{bin_dir}:$PATH"')
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o644)


def _say(message: str) -> None:
    print(f"[stack] {message}", flush=True)
