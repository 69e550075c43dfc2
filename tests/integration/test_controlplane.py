"""The local control plane is a real, pinned Kubernetes API server, and cleans up after itself."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mailward_localstack._process import StackError
from mailward_localstack.controlplane import ADMIN_USER, ControlPlane, kubectl, kubectl_path

pytestmark = pytest.mark.controlplane

KUBERNETES_VERSION = "v1.34.4"
CEL_MESSAGE = "minReplicas must not exceed maxReplicas"
# CRDs through the generic API: plain JSON both ways, no client models in between.
_CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")


@pytest.fixture
def api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with _client(control_plane) as api_client:
        yield api_client


@pytest.fixture
def namespace(api: client.ApiClient) -> str:
    # Never deleted: without a controller-manager a deleted namespace stays Terminating anyway.
    name = f"test-{uuid.uuid4().hex[:10]}"
    client.CoreV1Api(api).create_namespace(_namespace_body(name))
    return name


def test_server_is_the_pinned_version(control_plane: ControlPlane, tmp_path: Path) -> None:
    kubectl = kubectl_path()
    assert kubectl == control_plane.bin_dir / "kubectl"
    result = subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={control_plane.kubeconfig}",
            f"--cache-dir={tmp_path / 'kubectl-cache'}",
            "version",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    version = json.loads(result.stdout)
    assert version["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert version["clientVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_kubeconfig_authenticates_as_cluster_admin(
    control_plane: ControlPlane, api: client.ApiClient
) -> None:
    kubeconfig = yaml.safe_load(control_plane.kubeconfig.read_text())
    assert kubeconfig["current-context"] == "mailward-local"
    assert kubeconfig["clusters"][0]["cluster"]["server"] == control_plane.server_url
    assert control_plane.kubeconfig.stat().st_mode & 0o077 == 0  # it holds the admin key
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    assert review.status is not None
    assert review.status.user_info is not None
    assert review.status.user_info.username == ADMIN_USER
    assert "system:masters" in (review.status.user_info.groups or [])


def test_namespace_round_trip(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    name = f"roundtrip-{uuid.uuid4().hex[:10]}"
    created = core.create_namespace(_namespace_body(name))
    read = core.read_namespace(name)
    assert created.metadata is not None
    assert read.metadata is not None
    assert read.metadata.uid == created.metadata.uid
    assert read.metadata.labels == {
        "app.kubernetes.io/part-of": "mailward",
        "kubernetes.io/metadata.name": name,  # set by the NamespaceLifecycle admission
    }
    assert read.status is not None
    assert read.status.phase == "Active"
    assert name in {ns.metadata.name for ns in core.list_namespace().items if ns.metadata}


def test_crd_cel_rule_is_enforced(api: client.ApiClient, namespace: str) -> None:
    objects = client.CustomObjectsApi(api)
    objects.create_cluster_custom_object(*_CRDS, _cel_probe_crd())
    _wait_established(objects, "celprobes.test.mailward.io")

    group, version, plural = "test.mailward.io", "v1", "celprobes"
    with pytest.raises(ApiException) as rejected:
        objects.create_namespaced_custom_object(
            group, version, namespace, plural, _cel_probe("bad", min_replicas=3, max_replicas=1)
        )
    assert rejected.value.status == 422
    status = json.loads(rejected.value.body or "{}")
    assert status["reason"] == "Invalid"
    [cause] = status["details"]["causes"]
    assert cause["field"] == "spec"
    assert cause["message"] == f'Invalid value: "object": {CEL_MESSAGE}'

    objects.create_namespaced_custom_object(
        group, version, namespace, plural, _cel_probe("good", min_replicas=1, max_replicas=3)
    )
    good = _dict(objects.get_namespaced_custom_object(group, version, namespace, plural, "good"))
    assert good["spec"] == {"minReplicas": 1, "maxReplicas": 3}


def test_crd_with_uncompilable_cel_rule_is_refused(api: client.ApiClient) -> None:
    crd = _cel_probe_crd(rule="self.noSuchField > 0", plural="brokenprobes", kind="BrokenProbe")
    with pytest.raises(ApiException) as refused:
        client.CustomObjectsApi(api).create_cluster_custom_object(*_CRDS, crd)
    assert refused.value.status == 422
    assert "compilation failed" in (refused.value.body or "")


def test_second_plane_runs_beside_restarts_and_stops_cleanly(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    plane = ControlPlane(tmp_path / "second")
    try:
        plane.start()
        assert plane.server_url != control_plane.server_url
        assert plane.is_ready()
        assert control_plane.is_ready()
        assert len(_processes_mentioning(plane.state_dir)) == 2
        with _client(plane) as api:
            client.CoreV1Api(api).create_namespace(_namespace_body("survives-restart"))

        # Another process (`mailward down`) knows nothing but the state directory.
        attached = ControlPlane.attach(plane.state_dir)
        assert attached.server_url == plane.server_url
        assert attached.is_running()
        attached.stop()
        assert not plane.is_running()
        assert _processes_mentioning(plane.state_dir) == []
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((plane.host, int(plane.server_url.rsplit(":", 1)[1])), 2)

        # A restart keeps the data, the CA and (when free) the server URL of the kubeconfig.
        url = plane.server_url
        plane.start()
        assert plane.server_url == url
        with _client(plane) as api:
            client.CoreV1Api(api).read_namespace("survives-restart")
    finally:
        plane.stop()
    assert _processes_mentioning(plane.state_dir) == []
    assert control_plane.is_ready()


def test_failed_start_reports_the_log_and_leaves_nothing_running(tmp_path: Path) -> None:
    plane = ControlPlane(tmp_path / "impatient")
    with pytest.raises(StackError, match=r"timed out .* waiting for .*last log lines of"):
        plane.start(timeout=1.5)  # etcd may make it, the API server cannot
    assert not plane.is_running()
    assert _processes_mentioning(plane.state_dir) == []


def _namespace_body(name: str) -> client.V1Namespace:
    return client.V1Namespace(
        metadata=client.V1ObjectMeta(name=name, labels={"app.kubernetes.io/part-of": "mailward"})
    )


def _cel_probe_crd(
    rule: str = "self.minReplicas <= self.maxReplicas",
    plural: str = "celprobes",
    kind: str = "CelProbe",
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.test.mailward.io"},
        "spec": {
            "group": "test.mailward.io",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["minReplicas", "maxReplicas"],
                                    "properties": {
                                        "minReplicas": {"type": "integer"},
                                        "maxReplicas": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {"rule": rule, "message": CEL_MESSAGE}
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def _cel_probe(name: str, *, min_replicas: int, max_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "test.mailward.io/v1",
        "kind": "CelProbe",
        "metadata": {"name": name},
        "spec": {"minReplicas": min_replicas, "maxReplicas": max_replicas},
    }


def _client(plane: ControlPlane) -> client.ApiClient:
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(plane.kubeconfig)
    )
    return api


def _dict(obj: object) -> dict[str, Any]:
    assert isinstance(obj, dict)
    return obj


def _wait_established(objects: client.CustomObjectsApi, name: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        crd = _dict(objects.get_cluster_custom_object(*_CRDS, name))
        conditions = crd.get("status", {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        assert time.monotonic() < deadline, f"CRD {name} not established: {conditions}"
        time.sleep(0.1)


def _processes_mentioning(path: Path) -> list[int]:
    """Pids of live processes whose command line names `path`."""
    needle = str(path).encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_kubectl_helper_answers_afresh_each_call(control_plane: ControlPlane) -> None:
    """Callers poll with it (wait_established, the demo): a cached answer would never change."""
    name = f"fresh-{uuid.uuid4().hex[:8]}"
    args = ("get", "namespace", name, "-o", "name")
    assert kubectl(control_plane.kubeconfig, *args, check=False) == ""
    kubectl(control_plane.kubeconfig, "create", "namespace", name)
    assert kubectl(control_plane.kubeconfig, *args, check=False).strip() == f"namespace/{name}"
