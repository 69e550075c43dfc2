"""A real Flux pipeline on the local node: a Git forge on loopback, source-controller and
kustomize-controller as pods.

Not the product: the tests' GitOps pipeline (tests/fixtures_flux.py). Flux's controllers are
built from the Go module proxy at the version pinned in tools/flux/go.mod, packed into
`mailward.local/flux` by images/flux/build.sh and imported into the node's containerd; their
CRDs come from the same modules (`config/crd/bases`). Everything binds loopback addresses of
the stack's /24, as every pod of this node does (host network, no pod network, no kube-proxy):

- `gitserver` (tools/flux/gitserver, `git http-backend` behind Go's CGI handler), a host
  process serving the bare repositories below its folder over Git's smart HTTP protocol;
- source-controller on the host network, its artifact server bound to, and advertised at,
  a loopback address (`--storage-addr`, `--storage-adv-addr`), which is how kustomize-controller
  downloads what it applies; metrics and health endpoints on the same address;
- kustomize-controller likewise on an address of its own.

Both run under one ServiceAccount bound to `cluster-admin`: kustomize-controller applies
whatever the repository holds (a real installation would give each Kustomization a
ServiceAccount of its own); acceptable for a test cluster, not a pattern to copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailward_localstack._process import ManagedProcess, StackError, wait_until
from mailward_localstack.controlplane import kubectl, repo_root, wait_established
from mailward_localstack.gotools import tool_path
from mailward_localstack.images import ImageArchive

NAMESPACE = "flux-system"
SERVICE_ACCOUNT = "flux-controllers"
MODULES = ("github.com/fluxcd/source-controller", "github.com/fluxcd/kustomize-controller")
STORAGE_PORT = 9090
METRICS_PORT = 8080
HEALTH_PORT = 9440
GIT_PORT = 8080


def build_image() -> ImageArchive:
    """`mailward.local/flux` (built once per machine; progress goes to our stderr)."""
    script = repo_root() / "images" / "flux" / "build.sh"
    result = subprocess.run(
        ["bash", str(script)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) != 2:
        raise StackError(f"{script} failed (exit code {result.returncode})")
    return ImageArchive(lines[0], Path(lines[1]))


def module_versions() -> dict[str, str]:
    """The pinned versions of the controllers' modules (tools/flux/go.mod)."""
    return {module: version for module, (version, _) in _modules().items()}


def crd_files() -> list[Path]:
    """The controllers' CRDs, from the modules the binaries were built from."""
    files: list[Path] = []
    for _, directory in _modules().values():
        files += sorted((directory / "config" / "crd" / "bases").glob("*.yaml"))
    if not files:
        raise StackError("no Flux CRDs found in the module cache (run tools/flux/build.sh)")
    return files


def _modules() -> dict[str, tuple[str, Path]]:
    tool_path("flux", "source-controller")  # downloads the modules if this machine lacks them
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    result = subprocess.run(
        ["go", "list", "-m", "-json", *MODULES],
        cwd=repo_root() / "tools" / "flux",
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    decoder = json.JSONDecoder()
    text, found = result.stdout.strip(), {}
    while text:
        entry, end = decoder.raw_decode(text)
        found[entry["Path"]] = (entry["Version"], Path(entry["Dir"]))
        text = text[end:].strip()
    return found


@dataclass(frozen=True)
class FluxAddresses:
    """Where the pipeline listens: three loopback addresses of the stack's /24."""

    git: str
    source_controller: str
    kustomize_controller: str

    @property
    def storage(self) -> str:
        return f"{self.source_controller}:{STORAGE_PORT}"

    def repository_url(self, name: str) -> str:
        return f"http://{self.git}:{GIT_PORT}/{name}.git"


class GitForge:
    """Bare repositories served over HTTP by `gitserver`, and a working clone to commit in.

    Commits are pushed through the file system (the forge is ours); Flux reads over HTTP.
    """

    def __init__(self, state_dir: Path, address: str) -> None:
        self.state_dir = state_dir
        self.address = address
        self.root = state_dir / "repositories"
        argv = [str(tool_path("flux", "gitserver")), "-listen", f"{address}:{GIT_PORT}"]
        self.process = ManagedProcess("gitserver", [*argv, "-root", str(self.root)], state_dir)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.process.is_running():
            self.process.start()
        wait_until(self._answers, timeout=30, what=f"gitserver on {self.address}", interval=0.2)

    def _answers(self) -> bool:
        import socket

        self.process.ensure_alive()
        try:
            with socket.create_connection((self.address, GIT_PORT), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        self.process.stop()

    def create(self, name: str, branch: str = "main") -> Repository:
        bare = self.root / f"{name}.git"
        work = self.state_dir / "work" / name
        if not bare.exists():
            _git(self.root, "init", "--quiet", "--bare", f"--initial-branch={branch}", bare.name)
        if not work.exists():
            work.parent.mkdir(parents=True, exist_ok=True)
            _git(work.parent, "init", "--quiet", f"--initial-branch={branch}", work.name)
            _git(work, "remote", "add", "origin", str(bare))
        return Repository(work, branch)


@dataclass(frozen=True)
class Repository:
    """A working clone whose `commit` pushes to its bare repository at once."""

    work: Path
    branch: str

    def commit(self, files: dict[str, str | None], message: str) -> str:
        """Write (text) or remove (None) `files`, commit all, push; the new commit's hash."""
        for relative, content in files.items():
            path = self.work / relative
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
        _git(self.work, "add", "--all")
        _git(self.work, "commit", "--quiet", "--allow-empty", "-m", message)
        _git(self.work, "push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}")
        return _git(self.work, "rev-parse", "HEAD").strip()


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_AUTHOR_NAME": "mailward tests",
        "GIT_AUTHOR_EMAIL": "tests@example.test",
        "GIT_COMMITTER_NAME": "mailward tests",
        "GIT_COMMITTER_EMAIL": "tests@example.test",
    }
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60
    )
    if result.returncode != 0:
        raise StackError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def controller_manifests(image: str, addresses: FluxAddresses) -> list[dict[str, Any]]:
    """Namespace, ServiceAccount, its binding to cluster-admin, and the two Deployments."""
    source_args = [
        f"--storage-addr={addresses.storage}",
        f"--storage-adv-addr={addresses.storage}",
        "--storage-path=/data",
    ]
    kustomize_args: list[str] = []
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "flux-controllers-cluster-admin"},
            # Test cluster only: the applier may create whatever the repository holds.
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
            ],
        },
        _deployment(
            "source-controller", image, addresses.source_controller, source_args, ["/data"]
        ),
        _deployment(
            "kustomize-controller", image, addresses.kustomize_controller, kustomize_args, []
        ),
    ]


def _deployment(
    name: str, image: str, address: str, args: list[str], data_dirs: list[str]
) -> dict[str, Any]:
    mounts = ["/tmp", *data_dirs]
    volumes = [f"v{i}" for i in range(len(mounts))]
    probe: dict[str, Any] = {"httpGet": {"host": address, "port": HEALTH_PORT}, "periodSeconds": 2}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            # Fixed host ports: the old pod must be gone before the new one binds.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "hostNetwork": True,
                    "dnsPolicy": "Default",  # addresses only: nothing to resolve
                    "terminationGracePeriodSeconds": 5,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65534,
                        "runAsGroup": 65534,
                        "fsGroup": 65534,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "manager",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": [f"/usr/local/bin/{name}"],
                            "args": [
                                f"--metrics-addr={address}:{METRICS_PORT}",
                                f"--health-addr={address}:{HEALTH_PORT}",
                                "--events-addr=",
                                "--watch-all-namespaces=true",
                                "--log-level=info",
                                "--log-encoding=console",
                                *args,
                            ],
                            "env": [
                                {
                                    "name": "RUNTIME_NAMESPACE",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                                },
                                {"name": "TMPDIR", "value": "/tmp"},
                            ],
                            "readinessProbe": {
                                **probe,
                                "httpGet": {**probe["httpGet"], "path": "/readyz"},
                            },
                            "livenessProbe": {
                                **probe,
                                "httpGet": {**probe["httpGet"], "path": "/healthz"},
                                "failureThreshold": 15,
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "64Mi"},
                                "limits": {"memory": "1Gi"},
                            },
                            "volumeMounts": [
                                {"name": v, "mountPath": m}
                                for v, m in zip(volumes, mounts, strict=True)
                            ],
                        }
                    ],
                    "volumes": [{"name": v, "emptyDir": {}} for v in volumes],
                },
            },
        },
    }


@dataclass
class Flux:
    """The pipeline running in one stack."""

    kubeconfig: Path
    addresses: FluxAddresses
    forge: GitForge
    image: ImageArchive
    versions: dict[str, str]


def install(
    kubeconfig: Path,
    state_dir: Path,
    addresses: FluxAddresses,
    import_image: Any,
    *,
    timeout: float = 110,
) -> Flux:
    """Build and import the image, apply the CRDs and controllers, start the forge; returns
    once both controllers are Ready. `import_image(ImageArchive)` imports into the node."""
    began = time.monotonic()
    image = build_image()
    import_image(image)
    _say(f"image {image.ref} imported ({time.monotonic() - began:.0f}s)")
    for crd in crd_files():
        kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
    names = [f"{p.stem.split('_', 1)[1]}.{p.stem.split('_', 1)[0]}" for p in crd_files()]
    wait_established(kubeconfig, *names)
    _say(f"CRDs: {', '.join(names)}")
    forge = GitForge(state_dir, addresses.git)
    forge.start()
    manifests = controller_manifests(image.ref, addresses)
    kubectl(
        kubeconfig,
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )
    kubectl(
        kubeconfig,
        "rollout", "status", "-n", NAMESPACE, "deployment/source-controller",
        "deployment/kustomize-controller", f"--timeout={int(timeout)}s",
    )  # fmt: skip
    versions = module_versions()
    _say(
        "source-controller "
        f"{versions[MODULES[0]]} on {addresses.source_controller} (artifacts "
        f"http://{addresses.storage}), kustomize-controller {versions[MODULES[1]]} on "
        f"{addresses.kustomize_controller}, git http://{addresses.git}:{GIT_PORT}/ "
        f"({time.monotonic() - began:.0f}s)"
    )
    return Flux(kubeconfig, addresses, forge, image, versions)


def uninstall(flux: Flux) -> None:
    """Flux's objects (while the controllers can still remove their finalizers), then the
    controllers, their namespace and binding, and the forge. For teardown: best effort."""
    kubeconfig = flux.kubeconfig
    for kind in (
        "kustomizations.kustomize.toolkit.fluxcd.io",
        "gitrepositories.source.toolkit.fluxcd.io",
    ):
        kubectl(
            kubeconfig, "delete", kind, "--all", "--all-namespaces", "--timeout=60s",
            check=False,
        )  # fmt: skip
    kubectl(
        kubeconfig, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false",
        check=False,
    )  # fmt: skip
    kubectl(
        kubeconfig, "delete", "clusterrolebinding", "flux-controllers-cluster-admin",
        "--ignore-not-found", check=False,
    )  # fmt: skip
    flux.forge.stop()


def _say(message: str) -> None:
    print(f"[flux] {message}", flush=True)
