"""A real Kubernetes node on loopback: containerd, kubelet, controller-manager and scheduler.

Started on top of a `ControlPlane`, it turns the API server into a single-node cluster that runs
what the operator renders as real pods. The facts it rests on (docs/real-node.md):
- containerd and runc come from Debian; the CRI plugin must `restrict_oom_score_adj`, because
  the machine's bounding set lacks CAP_SYS_RESOURCE and the sandbox's -998 would fail.
- There is no pod network and no kube-proxy: pods use the host network and bind the loopback
  addresses they are given. containerd wants a CNI config to call the network ready; a conflist
  with only the `loopback` plugin is enough, and no plugin binary is called for host-network pods.
- kubelet refuses a loopback `--node-ip`; `--hostname-override=127.0.0.1` without it gives the
  node the InternalIP 127.0.0.1, which `kubectl logs` and `exec` need.
- Volumes: a pool of `local` PersistentVolumes in the state directory (StorageClass
  `mailward-local`, the default). kubelet applies a pod's `fsGroup` to local volumes (it does
  not to the in-tree hostPath provisioner's directories, which are root's, 0750), so a non-root
  collector can write its database, as on a cloud disk.

Everything is owned by one state directory, `stop()` and `teardown()` (which needs nothing but
that directory) stop the pods' processes, unmount what kubelet and containerd mounted and remove
the node's cgroups, so nothing of the cluster outlives `make down`:

    state_dir/
      node.json             cgroup root, kubelet ports, containerd socket of the last start
      containerd/           config.toml, root/, state/, containerd.sock, cni/
      kubelet/              config.yaml, kubeconfig, pki/, root/ (pods' volumes)
      volumes/pv-NN/        the local PersistentVolumes
      *.pid, *.log          containerd, kubelet, kube-controller-manager, kube-scheduler
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mailward_localstack._process import (
    ManagedProcess,
    StackError,
    free_port,
    http_ok,
    wait_until,
)
from mailward_localstack.controlplane import ControlPlane, kubectl
from mailward_localstack.images import ImageArchive
from mailward_localstack.pki import LocalCA

NODE_NAME = "127.0.0.1"
STORAGE_CLASS = "mailward-local"
IMAGE_NAMESPACE = "k8s.io"
_STATE_FILE = "node.json"
_CGROUP_FS = Path("/sys/fs/cgroup")
# The controllers a single node needs (names as kube-controller-manager 1.34 spells them).
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "disruption-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "pod-garbage-collector-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    "clusterrole-aggregation-controller",
)
# Not the endpointslice controller: host-network pods have loopback IPs, which EndpointSlices
# refuse, and without kube-proxy no Service would route through them anyway.
_SERVERS = ("kubelet", "kube-scheduler", "kube-controller-manager")


@dataclass(frozen=True)
class NodeState:
    """What teardown needs to know of the last start, kept in `node.json`."""

    cgroup_root: str
    containerd_socket: str
    kubelet_port: int
    healthz_port: int


class Node:
    """The node of one ControlPlane; `start()` makes the cluster schedule and run pods."""

    def __init__(
        self,
        state_dir: Path,
        plane: ControlPlane,
        *,
        sandbox_image: str,
        volume_count: int = 16,
        volume_capacity: str = "10Gi",
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.plane = plane
        self.sandbox_image = sandbox_image
        self.volume_count = volume_count
        self.volume_capacity = volume_capacity

    # -- where things are --------------------------------------------------------------------

    @property
    def containerd_dir(self) -> Path:
        return self.state_dir / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def kubelet_dir(self) -> Path:
        return self.state_dir / "kubelet"

    @property
    def cgroup_root(self) -> str:
        # One cgroup subtree per state directory: a test cluster and the demo never share one.
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10]
        return f"/mailward-{digest}"

    def _process(self, name: str, argv: list[str] | None = None) -> ManagedProcess:
        return ManagedProcess(name, argv or [name], self.state_dir, cwd=self.state_dir)

    # -- start -------------------------------------------------------------------------------

    def start(self, images: Iterable[ImageArchive] = (), timeout: float = 120) -> None:
        """Start containerd, import `images`, then the controllers and kubelet.

        Returns once the node is Ready, untainted and the `default` ServiceAccount exists, so
        a pod created next is scheduled and started. Leaves nothing running when it fails.
        """
        deadline = time.monotonic() + timeout
        teardown(self.state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            kubelet_port = free_port(NODE_NAME)
            healthz_port = free_port(NODE_NAME)
            state = NodeState(
                self.cgroup_root, str(self.containerd_socket), kubelet_port, healthz_port
            )
            (self.state_dir / _STATE_FILE).write_text(json.dumps(state.__dict__, indent=2))
            self._start_containerd(deadline)
            for image in images:
                self.import_image(image)
            self._start_controllers()
            self._start_kubelet(state, deadline)
            self._await_schedulable(deadline)
            self._ensure_volumes()
        except BaseException:
            teardown(self.state_dir)
            raise

    def import_image(self, image: ImageArchive) -> None:
        """Make an OCI archive's image available to the kubelet (no registry involved)."""
        base_name = image.ref.rpartition(":")[0]
        result = subprocess.run(
            [*self._ctr(), "images", "import", f"--base-name={base_name}", str(image.archive)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise StackError(f"ctr images import {image.archive} failed: {result.stderr.strip()}")
        if image.ref not in self.image_names():
            raise StackError(f"{image.archive} did not import as {image.ref}")

    def _ctr(self) -> list[str]:
        return ["ctr", "--address", str(self.containerd_socket), "-n", IMAGE_NAMESPACE]

    def image_names(self) -> list[str]:
        result = subprocess.run(
            [*self._ctr(), "images", "ls", "-q"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout.split()

    def _start_containerd(self, deadline: float) -> None:
        root = self.containerd_dir
        cni_conf = root / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (root / "cni" / "bin").mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-loopback.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": "mailward-host-network",
                    "plugins": [{"type": "loopback"}],
                }
            )
        )
        config = f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
oom_score = 0

[grpc]
  address = "{self.containerd_socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.sandbox_image}"
  # The machine lacks CAP_SYS_RESOURCE: the sandbox's oom_score_adj -998 would fail.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{root / "cni" / "bin"}"
    conf_dir = "{cni_conf}"
"""
        (root / "config.toml").write_text(config)
        containerd = self._process(
            "containerd", ["containerd", "--config", str(root / "config.toml"), "--log-level=warn"]
        )
        containerd.log_file.unlink(missing_ok=True)
        containerd.start()

        def answers() -> bool:
            subprocess.run(
                [*self._ctr(), "version"],
                capture_output=True,
                timeout=5,
                check=True,
            )
            return True

        wait_until(
            answers, timeout=_left(deadline), what="containerd", process=containerd, interval=0.2
        )

    def _start_controllers(self) -> None:
        plane = self.plane
        pki = plane.pki_dir
        # The controller-manager acts for every controller with one identity; the admin's keeps
        # this local cluster simple (kubeadm gives it per-controller ServiceAccounts instead).
        controller_manager = self._process(
            "kube-controller-manager",
            [
                str(plane.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={plane.kubeconfig}",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--root-ca-file={plane.ca_file}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={plane.service_cidr}",
                "--leader-elect=false",
                "--secure-port=0",
                # The node-lifecycle controller evicts pods of a node that stops reporting; a
                # paused test machine should not lose its pods after 40 s.
                "--node-monitor-grace-period=120s",
                "--v=1",
            ],
        )
        scheduler_kubeconfig = plane.kubeconfig_for("system:kube-scheduler")
        scheduler = self._process(
            "kube-scheduler",
            [
                str(plane.bin_dir / "kube-scheduler"),
                f"--kubeconfig={scheduler_kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )
        for process in (controller_manager, scheduler):
            process.log_file.unlink(missing_ok=True)
            process.start()

    def _start_kubelet(self, state: NodeState, deadline: float) -> None:
        plane = self.plane
        kubelet_dir = self.kubelet_dir
        pki = kubelet_dir / "pki"
        ca = LocalCA.load(plane.pki_dir / "ca")
        serving = ca.issue_server_cert([NODE_NAME, "localhost"], out_dir=pki, basename="kubelet")
        kubeconfig = plane.kubeconfig_for(f"system:node:{NODE_NAME}", ["system:nodes"])
        _ensure_cgroup(state.cgroup_root)
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_NAME,
            "port": state.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": NODE_NAME,
            "healthzPort": state.healthz_port,
            "tlsCertFile": str(serving.chain_file),
            "tlsPrivateKeyFile": str(serving.key_file),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(plane.ca_file)},
            },
            # Only holders of a certificate of the cluster's CA get this far (the API server).
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "imageServiceEndpoint": f"unix://{self.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": state.cgroup_root,
            "failCgroupV1": False,
            "failSwapOn": False,
            # Without CAP_SYS_RESOURCE, neither a negative oom_score_adj nor a higher
            # RLIMIT_NOFILE can be set.
            "oomScoreAdj": 0,
            "maxOpenFiles": 20000,
            "resolvConf": "",
            "clusterDNS": [],
            "makeIPTablesUtilChains": False,
            "volumePluginDir": str(kubelet_dir / "volume-plugins"),
            "staticPodPath": "",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
            "nodeStatusReportFrequency": "1m",
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "shutdownGracePeriod": "0s",
            "serializeImagePulls": False,
        }
        (kubelet_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        kubelet = self._process(
            "kubelet",
            [
                str(plane.bin_dir / "kubelet"),
                f"--config={kubelet_dir / 'config.yaml'}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={kubelet_dir / 'root'}",
                f"--cert-dir={pki}",
                f"--hostname-override={NODE_NAME}",
                "--v=1",
            ],
        )
        kubelet.log_file.unlink(missing_ok=True)
        kubelet.start()

        healthz = f"http://{NODE_NAME}:{state.healthz_port}/healthz"
        wait_until(
            lambda: http_ok(healthz, timeout=2),
            timeout=_left(deadline),
            what="kubelet /healthz",
            process=kubelet,
        )

    def _await_schedulable(self, deadline: float) -> None:
        kubeconfig = self.plane.kubeconfig

        def node_ready() -> bool:
            node = json.loads(kubectl(kubeconfig, "get", "node", NODE_NAME, "-o", "json"))
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in node["status"].get("conditions", [])
            )
            blocking = [
                t
                for t in node["spec"].get("taints", [])
                if t["effect"] in ("NoSchedule", "NoExecute")
            ]
            return ready and not blocking

        wait_until(
            node_ready,
            timeout=_left(deadline),
            what=f"node {NODE_NAME} Ready without taints",
            process=self._process("kubelet"),
            interval=0.5,
        )
        wait_until(
            lambda: bool(kubectl(kubeconfig, "get", "serviceaccount", "default", "-o", "name")),
            timeout=_left(deadline),
            what="the default ServiceAccount",
            process=self._process("kube-controller-manager"),
            interval=0.5,
        )

    def _ensure_volumes(self) -> None:
        """The StorageClass and enough Available local PersistentVolumes for `volume_count`.

        Released volumes (their claims were deleted) are kept, with their data, as a cluster
        administrator would want: a retained mail queue is evidence. New ones are added instead.
        """
        kubeconfig = self.plane.kubeconfig
        storage_class = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Retain",
        }
        volumes = json.loads(kubectl(kubeconfig, "get", "persistentvolumes", "-o", "json"))
        existing = {item["metadata"]["name"] for item in volumes["items"]}
        available = sum(
            1 for item in volumes["items"] if item.get("status", {}).get("phase") == "Available"
        )
        documents: list[dict[str, Any]] = [storage_class]
        index = 0
        while available < self.volume_count:
            name = f"local-pv-{index:03d}"
            index += 1
            if name in existing:
                continue
            path = self.state_dir / "volumes" / name
            path.mkdir(parents=True, exist_ok=True)
            documents.append(self._volume(name, path))
            available += 1
        kubectl(
            kubeconfig,
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}),
        )

    def _volume(self, name: str, path: Path) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"mailward.io/local-volume": "true"}},
            "spec": {
                "capacity": {"storage": self.volume_capacity},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": STORAGE_CLASS,
                "volumeMode": "Filesystem",
                "local": {"path": str(path)},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "In",
                                        "values": [NODE_NAME],
                                    }
                                ]
                            }
                        ]
                    }
                },
            },
        }

    # -- stop --------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        return teardown(self.state_dir)


def teardown(state_dir: Path, grace: float = 5.0) -> list[str]:
    """Stop everything of the node in `state_dir`; returns the names of what was running.

    Order matters: kubelet first (or it restarts the containers we stop), then every process in
    the pods' cgroups (SIGTERM, then SIGKILL after `grace` seconds), the containerd shims,
    containerd, and finally the mounts under the state directory and the cgroups.
    """
    state_dir = Path(state_dir).absolute()
    stopped = []
    for name in _SERVERS:
        if ManagedProcess(name, [name], state_dir).is_running():
            stopped.append(name)
        ManagedProcess(name, [name], state_dir).stop()
    state = _read_state(state_dir)
    if state is not None:
        if _stop_cgroup_processes(state.cgroup_root, grace):
            stopped.append("pods")
        _kill_shims(state.containerd_socket)
    containerd = ManagedProcess("containerd", ["containerd"], state_dir)
    if containerd.is_running():
        stopped.append("containerd")
    containerd.stop()
    _unmount_below(state_dir)
    if state is not None:
        _remove_cgroups(state.cgroup_root)
    return stopped


def teardown_below(directory: Path) -> list[str]:
    """`teardown` of every node whose state lies in or below `directory` (for the watchdog)."""
    stopped = []
    for state_file in sorted(Path(directory).rglob(_STATE_FILE)):
        stopped += teardown(state_file.parent)
    return stopped


def pod_processes(state_dir: Path) -> set[int]:
    """The pids of every process the pods of the node in `state_dir` run (its cgroups)."""
    state = _read_state(state_dir)
    return _cgroup_pids(state.cgroup_root) if state else set()


def node_cgroups(state_dir: Path) -> list[Path]:
    """The node's cgroup directories that exist, in every hierarchy (none after teardown)."""
    state = _read_state(state_dir)
    return list(_cgroup_dirs(state.cgroup_root)) if state else []


def _read_state(state_dir: Path) -> NodeState | None:
    try:
        return NodeState(**json.loads((state_dir / _STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers and the v2 one of a hybrid layout)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split()[0] if right else ""
        if fstype in ("cgroup", "cgroup2"):
            found.append(Path(left.split()[4]))
    return found


def _ensure_cgroup(cgroup_root: str) -> None:
    for hierarchy in _hierarchies():
        path = hierarchy / cgroup_root.lstrip("/")
        with contextlib.suppress(OSError):
            path.mkdir(exist_ok=True)
            # cpuset children start empty; a task cannot join a cgroup without cpus and mems.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                parent_value = (hierarchy / knob).read_text() if (hierarchy / knob).exists() else ""
                if parent_value and not (path / knob).read_text().strip():
                    (path / knob).write_text(parent_value)


def _cgroup_dirs(cgroup_root: str) -> Iterator[Path]:
    for hierarchy in _hierarchies():
        top = hierarchy / cgroup_root.lstrip("/")
        if top.is_dir():
            yield top


def _cgroup_pids(cgroup_root: str) -> set[int]:
    pids: set[int] = set()
    for top in _cgroup_dirs(cgroup_root):
        # os.walk, not rglob: a pod's cgroup may vanish while we walk, which rglob raises on.
        for directory, _, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError, ValueError):
                    text = (Path(directory) / "cgroup.procs").read_text()
                    pids.update(int(p) for p in text.split())
    return pids


def _stop_cgroup_processes(cgroup_root: str, grace: float) -> bool:
    pids = _cgroup_pids(cgroup_root)
    if not pids:
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        end = time.monotonic() + wait
        while time.monotonic() < end and _cgroup_pids(cgroup_root):
            time.sleep(0.1)
        pids = _cgroup_pids(cgroup_root)
        if not pids:
            break
    return True


def _kill_shims(containerd_socket: str) -> None:
    """The runc shims of our containerd (each names the socket in its command line)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"containerd-shim" in argv[0] and containerd_socket.encode() in argv:
                os.kill(int(proc.name), signal.SIGKILL)


def _unmount_below(state_dir: Path) -> None:
    """Detach every mount under `state_dir`, deepest first (pod volumes, rootfs, shm, kubelet)."""
    prefix = str(state_dir) + "/"
    for _ in range(3):
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point == str(state_dir):
                mounts.append(point)
        if not mounts:
            return
        for point in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _remove_cgroups(cgroup_root: str) -> None:
    for top in _cgroup_dirs(cgroup_root):
        for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)
