"""The demo's local stack: control plane, DNS, resolver, CA and the operator, on 127.77.0.0/24.

`mailward stack up` is what `make demo` runs. It is idempotent by restarting: whatever an earlier
`up` left running in the state directory is stopped first, and then everything starts again from
the same state (etcd's data, the CA and the DNS keys are kept), so running the demo twice in a row
gives the same result. `mailward stack down` stops every process that has a pid file there.

The tests use the same classes on 127.88.0.0/24 with their own state, so the demo and the test
suite can run at the same time on one machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from mailward.api.v1alpha1 import API_GROUP, PLURAL
from mailward.localstack._process import (
    ManagedProcess,
    StackError,
    free_port,
    http_ok,
    read_live_pid,
    stop_all,
    wait_until,
)
from mailward.localstack.controlplane import (
    ControlPlane,
    kubectl,
    kubectl_path,
    repo_root,
    wait_established,
)
from mailward.localstack.demo_compliance import operator_environment as compliance_environment
from mailward.localstack.demo_dns import create_dns_provider
from mailward.localstack.demo_mta import start_demo_mta
from mailward.localstack.demo_policy import start_policy_endpoint
from mailward.localstack.demo_tlsrpt import start_tlsrpt_collector
from mailward.localstack.dns import AuthoritativeDNS, DNSStack, ZoneSpec
from mailward.localstack.pki import LocalCA


@dataclass(frozen=True)
class DemoLayout:
    """Addresses and names of the demo; all on loopback."""

    apiserver: str = "127.77.0.1"
    authoritative: str = "127.77.0.53"
    resolver: str = "127.77.0.54"
    mta: str = "127.77.0.25"
    tlsrpt_collector: str = "127.77.0.26"
    policy_endpoint: str = "127.77.0.44"
    domain: str = "example.test"
    namespace: str = "default"
    maildomain: str = "example"
    tls_secret: str = "mx-example-test-tls"
    mx_hosts: tuple[str, ...] = ("mx1.example.test",)

    @property
    def tlsrpt_host(self) -> str:
        return f"tlsrpt.{self.domain}"


def up(state_dir: Path, env_file: Path, layout: DemoLayout = DemoLayout()) -> None:
    state_dir = state_dir.resolve()
    stopped = _stop_everything(state_dir)
    if stopped:
        _say(f"stopped the previous run: {', '.join(stopped)}")

    ca_dir = state_dir / "ca"
    ca = LocalCA.load(ca_dir) if (ca_dir / "ca.pem").exists() else LocalCA.create(ca_dir)
    _say(f"local CA: {ca.ca_file}")

    plane = ControlPlane(state_dir / "controlplane", host=layout.apiserver)
    plane.start()
    _say(f"kube-apiserver: {plane.server_url}")

    dns_stack = DNSStack.create(
        state_dir / "dns",
        auth_address=layout.authoritative,
        resolver_address=layout.resolver,
        zones=[ZoneSpec(layout.domain)],
    )
    try:
        dns_stack.start()
    except BaseException:
        plane.stop()
        raise
    _say(
        f"authoritative DNS (BIND, DNSSEC, RFC 2136 + TSIG): {layout.authoritative}; "
        f"validating resolver (Unbound): {layout.resolver}"
    )

    kubectl(
        plane.kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(repo_root() / "crds"),
    )
    wait_established(plane.kubeconfig, f"{PLURAL}.{API_GROUP}")
    _no_pods_running(plane.kubeconfig)
    cert = ca.issue_server_cert([*layout.mx_hosts, layout.tlsrpt_host], out_dir=state_dir / "certs")
    secret = kubectl(
        plane.kubeconfig,
        "create",
        "secret",
        "tls",
        layout.tls_secret,
        "-n",
        layout.namespace,
        f"--cert={cert.chain_file}",
        f"--key={cert.key_file}",
        "--dry-run=client",
        "-o",
        "json",
    )
    kubectl(plane.kubeconfig, "apply", "-f", "-", input=secret)
    _say(f"TLS Secret {layout.namespace}/{layout.tls_secret} for {', '.join(layout.mx_hosts)}")
    create_dns_provider(plane.kubeconfig, state_dir / "dns", layout.namespace)
    policy = start_policy_endpoint(
        state_dir / "policy",
        plane.kubeconfig,
        ca,
        domain=layout.domain,
        address=layout.policy_endpoint,
    )
    _say(f"MTA-STS policy endpoint (mailward serve-policies): {policy.url}")

    liveness = f"http://{layout.apiserver}:{free_port(layout.apiserver)}/healthz"
    operator = ManagedProcess(
        "operator",
        [sys.executable, "-m", "mailward", "run", "--all-namespaces", "--liveness", liveness],
        state_dir / "operator",
        extra_env={
            "KUBECONFIG": str(plane.kubeconfig),
            **policy.operator_env,
            "MAILWARD_TLSRPT_COLLECTOR_URL": f"http://{layout.tlsrpt_collector}:9108",
            # The operator applies the collector's objects; `workloads` runs them.
            "MAILWARD_TLSRPT_DEPLOY": "true",
            "MAILWARD_TLSRPT_IMAGE": "mailward:local",
            # A person watching the demo should not wait the production retry delays.
            "MAILWARD_TLSRPT_RETRY_SECONDS": "5",
            "MAILWARD_MTA_RETRY_SECONDS": "3",
            # The compliance probes ask the demo's validating resolver and trust its CA.
            **compliance_environment(
                layout.resolver, ca.ca_file, metrics_address=f"{layout.apiserver}:9108"
            ),
        },
    )
    operator.start()
    wait_until(lambda: http_ok(liveness), timeout=60, what="the operator", process=operator)
    _say(f"operator: pid {operator.pid()}, log {operator.log_file}")

    bin_dir = state_dir.parent / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, target in (
        ("kubectl", kubectl_path()),
        ("mailward", Path(sys.executable).with_name("mailward")),
    ):
        link = bin_dir / name
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    _write_env(
        env_file,
        {
            "KUBECONFIG": str(plane.kubeconfig),
            "MAILWARD_RESOLVER": layout.resolver,
            "MAILWARD_AUTHORITATIVE_DNS": layout.authoritative,
            "MAILWARD_CA_FILE": str(ca.ca_file),
            "MAILWARD_TSIG_KEY_FILE": str(dns_stack.authoritative.tsig_file),
            "MAILWARD_POLICY_ENDPOINT": layout.policy_endpoint,
            "MAILWARD_MTA": layout.mta,
            "MAILWARD_TLSRPT_COLLECTOR": layout.tlsrpt_collector,
            "DEMO_DOMAIN": layout.domain,
            "DEMO_NAMESPACE": layout.namespace,
            "PATH": f"{bin_dir}:$PATH",
        },
    )
    _say(f"wrote {env_file}")


def workloads(state_dir: Path, layout: DemoLayout = DemoLayout()) -> None:
    """Run what the operator rendered for the example, as a kubelet would (there is none here).

    Called once the example MailDomain exists: the MTA from its StatefulSet and ConfigMap, the
    TLSRPT collector from its rendered configuration, both read back from the API server.
    """
    state_dir = state_dir.resolve()
    kubeconfig = ControlPlane.attach(state_dir / "controlplane").kubeconfig
    line = start_demo_mta(
        state_dir / "mta",
        kubeconfig,
        namespace=layout.namespace,
        maildomain=layout.maildomain,
        address=layout.mta,
        resolver=layout.resolver,
    )
    _say(line)
    collector = start_tlsrpt_collector(
        state_dir, kubeconfig, namespace=layout.namespace, address=layout.tlsrpt_collector
    )
    _say(f"TLSRPT collector: SMTP {collector.smtp[0]}:{collector.smtp[1]}, API {collector.api_url}")


def _no_pods_running(kubeconfig: Path) -> None:
    """Tell the truth about workloads after a restart: none runs until `workloads` starts them.

    The demo's stand-in for the kubelet wrote ready replicas into StatefulSet statuses during the
    last run; etcd kept them, but the processes are gone. A kubelet would report that at once.
    """
    listing = json.loads(kubectl(kubeconfig, "get", "statefulsets", "-A", "-o", "json"))
    idle = {"replicas": 0, "readyReplicas": 0, "availableReplicas": 0, "currentReplicas": 0}
    for item in listing["items"]:
        meta = item["metadata"]
        kubectl(
            kubeconfig,
            "patch",
            "statefulset",
            meta["name"],
            "-n",
            meta["namespace"],
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {**idle, "updatedReplicas": 0}}),
        )


def down(state_dir: Path) -> None:
    state_dir = state_dir.resolve()
    stopped = _stop_everything(state_dir)
    _say(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def _stop_everything(state_dir: Path) -> list[str]:
    dns_dir = state_dir / "dns"
    stopped = []
    if (dns_dir / "authoritative" / AuthoritativeDNS.STATE_FILE).exists():
        # Through the object, so that the loopback alias BIND needed is removed too.
        with contextlib.suppress(Exception):
            dns_stack = DNSStack.attach(dns_dir)
            if dns_stack.authoritative.is_running():
                stopped.append("dns")
            dns_stack.stop()
    return stopped + stop_all(state_dir)


def status(state_dir: Path) -> int:
    pid_files = sorted(state_dir.resolve().rglob("*.pid"))
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
        elif action == "workloads":
            workloads(state_dir)
        elif action == "down":
            down(state_dir)
        else:
            return status(state_dir)
    except StackError as error:
        print(f"mailward stack {action}: {error}", file=sys.stderr)
        return 2
    return 0


def _write_env(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `mailward stack up` (make demo). Use: source .local/demo.env"]
    for key, value in values.items():
        quoted = value if key == "PATH" else json.dumps(value)
        lines.append(f'export {key}="{value}"' if key == "PATH" else f"export {key}={quoted}")
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o644)


def _say(message: str) -> None:
    print(f"[stack] {message}", flush=True)
