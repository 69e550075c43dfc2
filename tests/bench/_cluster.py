"""What the benchmarks on the real local cluster (`mailward_localstack`) share.

A fresh stack in a state directory of its own, always torn down (`fresh_stack`); a budget after
which the bench stops itself (`start_budget`, `Stopped`); manifests applied with kubectl or, in
bulk, by server-side apply straight to the API server (`Api`); the operator's pods, their cgroup
memory and their last words.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from mailward_localstack.controlplane import kubectl
from mailward_localstack.dns import ensure_loopback_address, remove_loopback_address
from mailward_localstack.node import node_cgroups
from mailward_localstack.pki import IssuedCert
from mailward_localstack.stack import RELEASE_NAMESPACE, Stack, StackLayout, down, up

API = "mailward.io/v1alpha1"
OPERATOR_PODS = "app.kubernetes.io/name=mailward,app.kubernetes.io/instance=mailward"
OPERATOR_CONTAINER = "operator"
MIB = 1024 * 1024


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the budget ----------------------------------------------------------------------------------


class Stopped(BaseException):
    """Not an Exception: no probe's `except Exception` may swallow the end of the budget."""


def _stop(signum: int, _: FrameType | None) -> None:
    raise Stopped(f"stopped by signal {signum} (budget spent, or terminated)")


def start_budget(seconds: int) -> None:
    """`Stopped` is raised in the main thread after `seconds`, or on SIGTERM."""
    signal.signal(signal.SIGALRM, _stop)
    signal.signal(signal.SIGTERM, _stop)
    signal.alarm(seconds)


# -- the stack -----------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_stack(
    state: Path,
    layout: StackLayout,
    values: dict[str, Any],
    addresses: Sequence[str] = (),
) -> Iterator[Stack]:
    """A stack on a fresh etcd (no object of an earlier run) with `values` over the chart's, and
    `addresses` on `lo` for the bench's own host-network pods; all of it goes in any case."""
    if state.exists():
        down(state)
        shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    added: list[str] = []
    stack: Stack | None = None
    try:
        began = time.monotonic()
        stack = up(state, None, layout, values=values)
        say(f"stack up in {time.monotonic() - began:.0f}s")
        added = [a for a in addresses if ensure_loopback_address(a)]
        yield stack
    except BaseException:
        if stack is not None:
            with contextlib.suppress(Exception):
                operator_log(stack)
        raise
    finally:
        signal.alarm(0)
        for address in added:
            remove_loopback_address(address)
        down(state)


def operator_log(stack: Stack, lines: int = 60) -> None:
    """The operator's last words, on stderr (the bench's log)."""
    logs = ("logs", "-n", RELEASE_NAMESPACE, "deploy/mailward", f"--tail={lines}")
    say(kubectl(stack.kubeconfig, *logs, check=False))


# -- manifests through kubectl -------------------------------------------------------------------


def apply(stack: Stack, items: list[dict[str, Any]], *flags: str) -> None:
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    kubectl(stack.kubeconfig, "apply", *flags, "-f", "-", input=listing)


def jsonpath(stack: Stack, *args: str, path: str) -> str:
    return kubectl(stack.kubeconfig, "get", *args, "-o", f"jsonpath={path}")


def manifest(api: str, kind: str, meta: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": meta, **fields}


def secret(namespace: str, name: str, cert: IssuedCert) -> dict[str, Any]:
    files = {"tls.crt": cert.chain_file, "tls.key": cert.key_file}
    data = {key: base64.b64encode(path.read_bytes()).decode() for key, path in files.items()}
    meta = {"name": name, "namespace": namespace}
    return manifest("v1", "Secret", meta, type="kubernetes.io/tls", data=data)


def pods(stack: Stack, namespace: str, selector: str) -> dict[str, str]:
    """name -> uid of the pods `selector` picks."""
    path = "{range .items[*]}{.metadata.name}={.metadata.uid} {end}"
    listing = jsonpath(stack, "pods", "-n", namespace, "-l", selector, path=path)
    return dict(pair.split("=") for pair in listing.split())


# -- straight to the API server ------------------------------------------------------------------


class Api:
    """The admin's HTTPS client, one kept-alive connection per thread: a LIST of thousands of
    objects or thousands of applies without a kubectl process each."""

    def __init__(self, stack: Stack) -> None:
        plane = stack.plane
        self._url = urllib.parse.urlsplit(plane.server_url)
        self._context = ssl.create_default_context(cafile=str(plane.ca_file))
        self._context.load_cert_chain(plane.pki_dir / "admin.crt", plane.pki_dir / "admin.key")
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPSConnection:
        connection: http.client.HTTPSConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            host, port = self._url.hostname or "", self._url.port or 443
            connection = http.client.HTTPSConnection(host, port, context=self._context, timeout=120)
            self._local.connection = connection
        return connection

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):  # a kept-alive connection the server closed: once more, anew
            connection = self._connection()
            try:
                connection.request(method, path, body=payload, headers=headers)
                response = connection.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, OSError):
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data)

    def list(self, path: str, selector: str = "") -> list[dict[str, Any]]:
        """The collection from the API server's watch cache (resourceVersion=0): cheap."""
        query = {"resourceVersion": "0", **({"labelSelector": selector} if selector else {})}
        reply = self.request("GET", f"{path}?{urllib.parse.urlencode(query)}")
        items: list[dict[str, Any]] = reply["items"]
        return items

    def server_side_apply(self, path: str, body: dict[str, Any], manager: str) -> Any:
        query = urllib.parse.urlencode({"fieldManager": manager, "force": "true"})
        return self.request("PATCH", f"{path}?{query}", body, "application/apply-patch+yaml")


# -- memory --------------------------------------------------------------------------------------

Reading = tuple[int, int, int, int]  # memory.current, anon, file, peak


def pod_cgroup(stack: Stack, uid: str) -> Path:
    """The pod-level memory cgroup (cgroup v2 or v1); its containers are its subdirectories."""
    names = {f"pod{uid}", f"pod{uid.replace('-', '_')}"}
    for top in node_cgroups(stack.state_dir / "node"):
        for directory, _, files in os.walk(top):
            if Path(directory).name in names and "memory.stat" in files:
                return Path(directory)
    raise LookupError(f"no memory cgroup for pod {uid}")


def container_cgroup(pod: Path, container_id: str) -> Path:
    """A container's cgroup below its pod's (`<id>` or `cri-containerd-<id>.scope`)."""
    container_id = container_id.rpartition("://")[2]
    for child in pod.iterdir():
        if container_id and container_id in child.name:
            return child
    raise LookupError(f"no cgroup for container {container_id} in {pod}")


def cgroup_memory(here: Path) -> Reading:
    """memory.current, anon, file and peak by cgroup v2 names or their v1 counterparts."""
    v2 = (here / "memory.current").exists()
    current = "memory.current" if v2 else "memory.usage_in_bytes"
    peak = "memory.peak" if v2 else "memory.max_usage_in_bytes"
    stat = dict(line.split() for line in (here / "memory.stat").open())
    anon = int(stat.get("anon", stat.get("total_rss", "0")))
    file = int(stat.get("file", stat.get("total_cache", "0")))
    peak_bytes = int((here / peak).read_text()) if (here / peak).exists() else 0
    return int((here / current).read_text()), anon, file, peak_bytes


def pod_memory(stack: Stack, uid: str) -> Reading:
    return cgroup_memory(pod_cgroup(stack, uid))


def oom_kills(here: Path) -> int:
    """The cgroup's OOM kills (v2 memory.events, v1 memory.oom_control)."""
    for name in ("memory.events", "memory.oom_control"):
        with contextlib.suppress(OSError):
            for line in (here / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return 0


@dataclass
class OperatorPod:
    """The operator's pod as the API server describes it."""

    name: str
    uid: str
    container_id: str
    restarts: int
    last_termination: str  # e.g. "OOMKilled (exit 137)", or ""
    memory_limit: str


def operator_pod(api: Api) -> OperatorPod | None:
    path = f"/api/v1/namespaces/{RELEASE_NAMESPACE}/pods"
    selector = urllib.parse.quote(OPERATOR_PODS)
    items = api.request("GET", f"{path}?labelSelector={selector}")["items"]
    live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
    if not live:
        return None
    pod = live[0]
    spec = next(c for c in pod["spec"]["containers"] if c["name"] == OPERATOR_CONTAINER)
    statuses = pod.get("status", {}).get("containerStatuses") or []
    status: dict[str, Any] = next((s for s in statuses if s["name"] == OPERATOR_CONTAINER), {})
    terminated = status.get("lastState", {}).get("terminated") or {}
    last = f"{terminated['reason']} (exit {terminated.get('exitCode')})" if terminated else ""
    return OperatorPod(
        name=pod["metadata"]["name"],
        uid=pod["metadata"]["uid"],
        container_id=status.get("containerID", ""),
        restarts=int(status.get("restartCount", 0)),
        last_termination=last,
        memory_limit=spec.get("resources", {}).get("limits", {}).get("memory", "none"),
    )
