"""Pieces of pod specs that the MTA, the policy endpoint and the TLSRPT collector share (pure).

Security contexts, host-network ports, anti-affinity and probes are decided here once, so the
three workloads cannot drift apart in how they run as root, bind a host address, or check that
their service answers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Manifest = dict[str, Any]

NOBODY = 65534
# Below this a port is privileged (net.ipv4.ip_unprivileged_port_start on a default node).
FIRST_UNPRIVILEGED_PORT = 1024
RUNTIME_DEFAULT_SECCOMP = {"type": "RuntimeDefault"}


def non_root(uid: int) -> Manifest:
    """A container that runs as `uid` with no capability at all."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
    }


def root_with(capabilities: Sequence[str]) -> Manifest:
    """A container that must start as uid 0, holding only `capabilities`.

    Binding a port below 1024 needs NET_BIND_SERVICE in the effective set. Added to a non-root
    container, the capability stays in the bounding and permitted sets but never becomes
    effective (no ambient capabilities in Kubernetes), and `allowPrivilegeEscalation: false`
    (no_new_privs) rules out file capabilities on the binary too: so the process runs as root,
    with every other capability dropped, a read-only root and no way to gain more.
    """
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": list(capabilities)},
        "runAsNonRoot": False,
        "runAsUser": 0,
        "runAsGroup": 0,
    }


@dataclass(frozen=True)
class Listener:
    """A named port the container binds, on every one of `addresses` (host network) or on the
    wildcard of the pod's own network namespace (empty `addresses`)."""

    name: str
    port: int
    addresses: tuple[str, ...] = ()
    protocol: str = "TCP"


def binds_privileged_port(listeners: Sequence[Listener]) -> bool:
    return any(lis.port < FIRST_UNPRIVILEGED_PORT for lis in listeners)


def listener_security(uid: int, listeners: Sequence[Listener], host_network: bool) -> Manifest:
    """Non-root as `uid`, unless the container binds a privileged port on the host network.

    In its own network namespace a pod listens above 1024 and its Service maps the public port;
    on the host network there is no such mapping, so the process itself binds 25 or 443.
    """
    if host_network and binds_privileged_port(listeners):
        return root_with(["NET_BIND_SERVICE"])
    return non_root(uid)


def pod_security(container: Manifest, fs_group: int) -> Manifest:
    """The pod-level context of a one-container pod: its user when that is not root, the group
    that owns the volumes it writes, and the runtime's default seccomp profile."""
    user: Manifest = {}
    if container.get("runAsNonRoot"):
        user = {k: container[k] for k in ("runAsNonRoot", "runAsUser", "runAsGroup")}
    return {**user, "fsGroup": fs_group, "seccompProfile": RUNTIME_DEFAULT_SECCOMP}


def container_ports(listeners: Sequence[Listener]) -> list[Manifest]:
    """`ports` of a container, with each bound host address declared.

    A host-network pod's ports are host ports, and the scheduler refuses a second pod that
    wants the same (address, port) on the node. Without `hostIP` that is every address: two
    MTAs binding different addresses could never share a node. So every address gets its entry
    (the name on the first only: names are unique in a pod).
    """
    ports: list[Manifest] = []
    for lis in listeners:
        if not lis.addresses:
            ports.append({"name": lis.name, "containerPort": lis.port, "protocol": lis.protocol})
            continue
        for index, address in enumerate(lis.addresses):
            entry: Manifest = {"containerPort": lis.port, "protocol": lis.protocol}
            if index == 0:
                entry = {"name": lis.name, **entry}
            ports.append({**entry, "hostPort": lis.port, "hostIP": address})
    return ports


def required_node_anti_affinity(selector: Mapping[str, str]) -> Manifest:
    """At most one pod matching `selector` per node: on the host network, two would bind the
    same addresses and ports, and the second would fail."""
    return {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": dict(selector)},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }


def host_address(address: str) -> str:
    """`address` as written before `:port` (IPv6 in brackets)."""
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


def host_port(address: str, port: int) -> str:
    return f"{host_address(address)}:{port}"


@dataclass(frozen=True)
class ProbeTiming:
    period: int
    timeout: int
    failures: int
    initial_delay: int = 0

    def fields(self) -> Manifest:
        timing: Manifest = {
            "periodSeconds": self.period,
            "timeoutSeconds": self.timeout,
            "failureThreshold": self.failures,
        }
        if self.initial_delay:
            timing = {"initialDelaySeconds": self.initial_delay, **timing}
        return timing


def http_probe(path: str, port: str, host: str | None, timing: ProbeTiming) -> Manifest:
    """GET `path`; a host-network listener is not on the pod IP the kubelet would use."""
    action: Manifest = {"path": path, "port": port}
    if host is not None:
        action["host"] = host
    return {"httpGet": action, **timing.fields()}


def exec_probe(script: str, args: Sequence[str], timing: ProbeTiming) -> Manifest:
    """`python3 -c script args...` in the container (the MTA image has python3)."""
    return {"exec": {"command": ["python3", "-c", script, *args]}, **timing.fields()}


# EHLO to the MTA and a 250 back: the master process, smtpd, the configuration and the TLS files
# are all in order, which an open TCP port alone does not say. One `connect from`/`disconnect
# from` pair per probe in the log, hence the 10-20 s periods.
SMTP_EHLO_PROBE = """\
import smtplib, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    with smtplib.SMTP(host, port, local_hostname="probe.invalid", timeout=timeout) as smtp:
        code, reply = smtp.ehlo()
except (OSError, smtplib.SMTPException) as error:
    sys.exit(f"no SMTP greeting from {host}:{port}: {error}")
sys.exit(0 if code == 250 else f"EHLO answered {code} {reply[:200]!r}")
"""

# A query answered from the resolver's own data (the `localhost.` zone every Unbound serves), so
# readiness says "the resolver answers DNS on its address" without making the MTA unready when an
# upstream is slow: outbound mail then defers on its own (TEMP), inbound must go on. Over TCP: a
# UDP query's socket is bound to the wildcard address while it waits for the answer, which a
# pod confined to loopback must never hold, not even for a moment.
DNS_PROBE = """\
import sys
import dns.message, dns.query, dns.rcode
host, timeout = sys.argv[1], float(sys.argv[2])
answer = dns.query.tcp(dns.message.make_query("localhost.", "A"), host, timeout=timeout)
sys.exit(0 if answer.rcode() == dns.rcode.NOERROR and answer.answer else 1)
"""

# A socketmap request the DANE-first policy server answers without DNS (a parent-domain key):
# its event loop and listener are alive.
SOCKETMAP_PROBE = """\
import socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
request = b"postfix .probe.invalid"
with socket.create_connection((host, port), timeout=timeout) as s:
    s.sendall(str(len(request)).encode() + b":" + request + b",")
    answer = s.recv(64)
sys.exit(0 if answer.startswith(b"9:NOTFOUND ") else 1)
"""
