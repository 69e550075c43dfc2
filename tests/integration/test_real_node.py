"""The product on a real node: the chart installed, the example's workloads as pods.

Everything here runs against `cluster` (tests/fixtures_cluster.py): kubelet, containerd and runc
run the images the project built, and the operator runs as a pod under the chart's RBAC. The
tests share one example MailDomain and run in file order: the first one brings it up.
"""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mailward_localstack.controlplane import kubectl
from mailward_localstack.node import pod_processes
from mailward_localstack.stack import Stack
from tests.fixtures_cluster import (
    NAMESPACE,
    RESYNC_SECONDS,
    WORKLOADS,
    condition,
    get_json,
    ready_pods,
    wait_for,
)

pytestmark = [pytest.mark.controlplane, pytest.mark.dnsstack, pytest.mark.node]

# Linux capability numbers (capability.h), for reading CapEff from /proc/<pid>/status.
CAPABILITY_BITS = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "DAC_READ_SEARCH": 2,
    "FOWNER": 3,
    "FSETID": 4,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "SETPCAP": 8,
    "NET_BIND_SERVICE": 10,
    "NET_RAW": 13,
    "SYS_CHROOT": 18,
    "MKNOD": 27,
    "AUDIT_WRITE": 29,
    "SETFCAP": 31,
}


def _ehlo_size(address: str) -> int | None:
    with smtplib.SMTP(address, 25, timeout=10) as session:
        session.ehlo("probe.test")
        size = session.esmtp_features.get("size")
    return int(size) if size else None


def test_every_workload_is_a_ready_pod_from_a_project_image(
    cluster: Stack, example: dict[str, Any]
) -> None:
    for workload, (namespace, _, _, selector) in WORKLOADS.items():
        pods = ready_pods(cluster, namespace, selector)
        assert len(pods) == 1, f"{workload}: {[p['metadata']['name'] for p in pods]}"
        pod = pods[0]
        assert pod["spec"]["hostNetwork"] is True, workload
        for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            assert container["image"].startswith("mailward.local/"), (workload, container)
        # What containerd actually ran: the image digest kubelet reports.
        for status in pod["status"]["containerStatuses"]:
            assert status["ready"] is True, (workload, status["name"])
            assert status["imageID"].startswith("sha256:") or "@sha256:" in status["imageID"]
    operator = ready_pods(cluster, *WORKLOADS["operator"][::3])[0]
    assert operator["spec"]["serviceAccountName"] == "mailward"


def test_the_example_complies_and_mailward_check_agrees_from_the_host(
    cluster: Stack, example: dict[str, Any]
) -> None:
    def compliant() -> bool:
        body = get_json(cluster, "maildomain", "example", "-n", NAMESPACE)
        found = condition(body, "Compliant")
        return bool(found and found["status"] == "True")

    wait_for("Compliant=True on the example", compliant, timeout=300, interval=3)
    outsider = ["--resolver", cluster.layout.resolver, "--ca-file", str(cluster.ca.ca_file)]
    result = subprocess.run(
        [sys.executable, "-m", "mailward", "check", cluster.layout.domain, "--json", *outsider],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["compliant"] is True, report["failingMust"]
    results = {check["id"]: check["result"] for check in report["checks"]}
    # The MUSTs of TR-03108 the pods serve: DANE on the MX pod, STARTTLS, TLSRPT, MTA-STS.
    for must in ("TR-DANE-01", "TR-SMTP-02", "TR-TLS-01", "TR-RPT-01", "TR-RPT-02", "TR-STS-01"):
        assert results.get(must) == "pass", (must, results)


def test_a_postfix_setting_change_rolls_the_mta_pod_and_is_served(
    cluster: Stack, example: dict[str, Any]
) -> None:
    address = cluster.layout.mta
    before = wait_for("EHLO from the MTA pod", lambda: _ehlo_size(address))
    wanted = before + 1_048_576
    old_pod = ready_pods(cluster, NAMESPACE, WORKLOADS["mta"][3])[0]
    began = time.monotonic()
    kubectl(
        cluster.kubeconfig,
        "patch", "maildomain", "example", "-n", NAMESPACE, "--type=merge",
        "-p", json.dumps({"spec": {"mta": {"messageSizeLimit": wanted}}}),
    )  # fmt: skip
    wait_for(f"SIZE {wanted} in EHLO", lambda: _ehlo_size(address) == wanted, timeout=180)
    elapsed = time.monotonic() - began
    # Postfix may answer before kubelet has run the readiness probe of the new pod.
    replaced = wait_for(
        "the rolled MTA pod Ready",
        lambda: [
            pod
            for pod in ready_pods(cluster, NAMESPACE, WORKLOADS["mta"][3])
            if pod["metadata"]["uid"] != old_pod["metadata"]["uid"]
        ],
        timeout=60,
    )
    assert len(replaced) == 1, "the pod was not rolled"
    # The roll is over only when the StatefulSet says so; later tests exec into its pod.
    kubectl(
        cluster.kubeconfig,
        "rollout", "status", "statefulset/example-mta", "-n", NAMESPACE, "--timeout=120s",
    )  # fmt: skip
    print(f"\nSIZE {before} -> {wanted}: served by a new MTA pod {elapsed:.1f}s after the patch")


def _status_of_pid1(stack: Stack, namespace: str, pod: str, container: str) -> dict[str, str]:
    text = kubectl(
        stack.kubeconfig, "exec", "-n", namespace, pod, "-c", container, "--",
        "cat", "/proc/1/status",
    )  # fmt: skip
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _ready_pods_or_why(stack: Stack, namespace: str, selector: str) -> list[dict[str, Any]]:
    found = ready_pods(stack, namespace, selector)
    if not found:
        pods = get_json(stack, "pods", "-n", namespace, "-l", selector)["items"]
        seen = [(p["metadata"]["name"], p["status"].get("phase")) for p in pods]
        raise LookupError(f"no Ready pod among {seen}")
    return found


def _capability_set(names: list[str]) -> int:
    return sum(1 << CAPABILITY_BITS[name] for name in names)


def test_each_container_runs_as_its_security_context_says(
    cluster: Stack, example: dict[str, Any]
) -> None:
    """`kubectl exec` into every container: user and effective capabilities of its process."""
    seen = 0
    for workload, (namespace, _, _, selector) in WORKLOADS.items():
        # A pod can be briefly not Ready (a roll, a probe during `postfix reload`); the names and
        # phases of the pods seen end up in the failure message if none becomes Ready.
        pod = wait_for(
            f"a Ready {workload} pod",
            lambda n=namespace, s=selector: _ready_pods_or_why(cluster, n, s),
            timeout=120,
        )[0]
        pod_context = pod["spec"].get("securityContext", {})
        assert pod_context.get("seccompProfile", {}).get("type") == "RuntimeDefault", workload
        # Native sidecars (init containers that keep running) are containers too.
        sidecars = [
            c for c in pod["spec"].get("initContainers", []) if c.get("restartPolicy") == "Always"
        ]
        for container in [*sidecars, *pod["spec"]["containers"]]:
            context = container.get("securityContext", {})
            assert context.get("readOnlyRootFilesystem") is True, (workload, container["name"])
            assert context.get("allowPrivilegeEscalation") is False, (workload, container["name"])
            assert context.get("capabilities", {}).get("drop") == ["ALL"], container["name"]
            status = _status_of_pid1(cluster, namespace, pod["metadata"]["name"], container["name"])
            uid = context.get("runAsUser", pod_context.get("runAsUser"))
            assert uid is not None, (workload, container["name"], "no runAsUser")
            assert status["Uid"].split()[0] == str(uid), (workload, container["name"], status)
            added = context.get("capabilities", {}).get("add", [])
            effective = int(status["CapEff"], 16)
            expected = _capability_set(added) if uid == 0 else 0
            assert effective == expected, (workload, container["name"], hex(effective), added)
            assert status["NoNewPrivs"] == "1", (workload, container["name"])
            assert status["Seccomp"] == "2", (workload, container["name"])  # 2: filter mode
            seen += 1
    assert seen >= 7  # operator, policy endpoint, collector, Postfix and its 3 sidecars


def test_every_socket_of_every_pod_stays_on_loopback(
    cluster: Stack, example: dict[str, Any]
) -> None:
    """List every TCP/UDP socket the pods' processes hold; all ends are in 127.0.0.0/8."""
    pids = pod_processes(cluster.state_dir / "node")
    assert len(pids) > 10, pids
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = str(fd.readlink()) if fd.is_symlink() else ""
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue  # the process ended meanwhile
    assert inodes
    ends: list[tuple[str, str, str]] = []
    for table in ("tcp", "udp", "tcp6", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            columns = line.split()
            if columns[9] in inodes:
                ends.append((table, _address(columns[1]), _address(columns[2])))
    assert ends, "no inet socket found for the pods"
    outside = [
        end for end in ends if not all(_is_loopback_or_unspecified(address) for address in end[1:])
    ]
    assert not outside, outside
    listening = {end[1] for end in ends if end[2].startswith("0.0.0.0")}
    assert all(not address.startswith("0.0.0.0:") for address in listening), listening


def _address(hex_address: str) -> str:
    host, _, port = hex_address.partition(":")
    if len(host) == 8:
        octets = [str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0)]
        return f"{'.'.join(octets)}:{int(port, 16)}"
    return f"[{host}]:{int(port, 16)}"


def _is_loopback_or_unspecified(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    if host.startswith("["):
        inner = host.strip("[]")
        return inner in ("0" * 32, "0" * 31 + "1", "0000000000000000FFFF00000100007F") or bool(
            re.fullmatch(r"0{20}FFFF0{4}[0-9A-F]{2}00007F|0{20}FFFF0{4}[0-9A-F]{6}7F", inner)
        )
    return host.startswith("127.") or host == "0.0.0.0"


@pytest.mark.parametrize("workload", ["mta", "policy endpoint", "collector"])
def test_a_workload_deleted_by_hand_comes_back_within_a_resync(
    cluster: Stack, example: dict[str, Any], workload: str
) -> None:
    namespace, kind, name, _ = WORKLOADS[workload]
    old_uid = get_json(cluster, kind, name, "-n", namespace)["metadata"]["uid"]
    began = time.monotonic()
    kubectl(cluster.kubeconfig, "delete", kind, name, "-n", namespace, "--wait=true")

    def recreated() -> bool:
        found = kubectl(
            cluster.kubeconfig, "get", kind, name, "-n", namespace,
            "--ignore-not-found", "-o", "jsonpath={.metadata.uid}",
        )  # fmt: skip
        return bool(found) and found != old_uid

    # Shared objects are re-sent after half a resync (handlers.SHARED_APPLY_REFRESH_SECONDS),
    # so at most one resync passes before the next reconcile applies them again.
    wait_for(f"{kind}/{name} re-created", recreated, timeout=2 * RESYNC_SECONDS + 15)
    elapsed = time.monotonic() - began
    selector = WORKLOADS[workload][3]
    wait_for("its pod Ready again", lambda: ready_pods(cluster, namespace, selector), timeout=120)
    print(f"\n{kind}/{name} re-created {elapsed:.1f}s after deletion (resync {RESYNC_SECONDS}s)")
