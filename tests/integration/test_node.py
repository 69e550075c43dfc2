"""The node alone: a pod runs from an imported image, and teardown leaves nothing behind.

Its own control plane and node (no chart), so that what teardown leaves can be looked at while
the session's `cluster` may still be running.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mailward_localstack.controlplane import ControlPlane, kubectl
from mailward_localstack.images import build_image
from mailward_localstack.node import Node, node_cgroups, pod_processes, teardown
from tests.net import NODE_NET

pytestmark = [pytest.mark.controlplane, pytest.mark.node]

NET = NODE_NET.rsplit(".", 1)[0] + f".{(int(NODE_NET.rsplit('.', 1)[1]) + 1) % 256}"


def _mounts_below(directory: Path) -> list[str]:
    prefix = str(directory)
    return [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(prefix)
    ]


def test_a_pod_runs_and_teardown_leaves_no_process_mount_or_cgroup(tmp_path: Path) -> None:
    pause = build_image("pause")
    plane = ControlPlane(
        tmp_path / "controlplane",
        host=f"{NET}.129",
        service_cidr=f"{NET}.128/25",
        apiserver_port=443,
    )
    node = Node(tmp_path / "node", plane, sandbox_image=pause.ref, volume_count=1)
    plane.start()
    try:
        began = time.monotonic()
        node.start([pause])
        node_ready = time.monotonic() - began
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sleeper", "namespace": "default"},
            "spec": {
                "hostNetwork": True,
                "containers": [
                    {
                        "name": "sleeper",
                        "image": pause.ref,
                        "imagePullPolicy": "Never",
                        "securityContext": {
                            "runAsUser": 65535,
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }
        kubectl(plane.kubeconfig, "apply", "-f", "-", input=json.dumps(pod))
        kubectl(plane.kubeconfig, "wait", "--for=condition=Ready", "pod/sleeper", "--timeout=60s")
        assert pod_processes(node.state_dir), "the pod's processes are not in the node's cgroups"
        assert _mounts_below(tmp_path), "kubelet and containerd mounted nothing?"
        print(f"\nnode Ready in {node_ready:.1f}s")
    finally:
        stopped = teardown(node.state_dir)
        plane.stop()
    assert {"kubelet", "containerd", "pods"} <= set(stopped), stopped
    assert _mounts_below(tmp_path) == []
    assert node_cgroups(node.state_dir) == []
    assert _shims_of(node.containerd_socket) == []


def _shims_of(socket: Path) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        if "containerd-shim" in argv and str(socket) in argv:
            found.append(cmdline.parent.name)
    return found
