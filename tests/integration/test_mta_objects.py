"""The MTA part against the real API server: objects with owner references, idempotent applies,
a spec edit that changes the ConfigMap and the pod template's hash and nothing else, and
`MTAReady` from the StatefulSet's status (written here: the local control plane has no
StatefulSet controller and no kubelet)."""

from __future__ import annotations

import asyncio
import base64
import copy
from typing import Any

import pytest
from kubernetes import client

from mailward.adapters.workloads import KubeWorkloadClient
from mailward.conditions import parse_status
from mailward.parts import ReconcileContext
from mailward.parts.mta import MTA_READY, MTAPart
from mailward.reconcile import parse_spec
from mailward.render.mta_objects import CONFIG_HASH_ANNOTATION
from tests.fixtures_mta import set_statefulset_ready
from tests.fixtures_operator import Kube
from tests.manifests import valid_maildomain

pytestmark = pytest.mark.controlplane

OBJECTS = [
    ("ConfigMap", "example-mta-domains"),
    ("ConfigMap", "example-mta-config"),
    ("Service", "example-mta-pods"),
    ("Service", "example-mta"),
    ("StatefulSet", "example-mta"),
    ("PodDisruptionBudget", "example-mta"),
    ("NetworkPolicy", "example-mta"),
]


def _read(kube: Kube, namespace: str, kind: str, name: str) -> dict[str, Any]:
    api = kube.api
    readers = {
        "ConfigMap": lambda: client.CoreV1Api(api).read_namespaced_config_map(name, namespace),
        "Service": lambda: client.CoreV1Api(api).read_namespaced_service(name, namespace),
        "StatefulSet": lambda: client.AppsV1Api(api).read_namespaced_stateful_set(name, namespace),
        "PodDisruptionBudget": lambda: client.PolicyV1Api(
            api
        ).read_namespaced_pod_disruption_budget(name, namespace),
        "NetworkPolicy": lambda: client.NetworkingV1Api(api).read_namespaced_network_policy(
            name, namespace
        ),
    }
    obj: dict[str, Any] = api.sanitize_for_serialization(readers[kind]())
    return obj


def _reconcile(kube: Kube, namespace: str) -> tuple[ReconcileContext, Any]:
    body = kube.get_maildomain(namespace, "example")
    ctx = ReconcileContext(
        name="example",
        namespace=namespace,
        uid=body["metadata"]["uid"],
        generation=body["metadata"]["generation"],
        spec=parse_spec(body["spec"]),
        status=parse_status(body.get("status")),
    )
    part = MTAPart(KubeWorkloadClient(kube.api), retry_seconds=1)
    return ctx, asyncio.run(part.reconcile(ctx))


def _snapshot(kube: Kube, namespace: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(kind, name): _read(kube, namespace, kind, name) for kind, name in OBJECTS}


def test_objects_owner_references_idempotence_and_a_spec_edit(kube: Kube, namespace: str) -> None:
    manifest = valid_maildomain(namespace=namespace)
    manifest["spec"]["mta"] = {"accountsSecretName": "mail-accounts", "replicas": 2}
    kube.apply(manifest)
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mail-accounts", "namespace": namespace},
            "data": {"alice": base64.b64encode(b"secret").decode()},
        }
    )
    ctx, result = _reconcile(kube, namespace)
    (verdict,) = result.verdicts
    assert (verdict.type, verdict.status, verdict.reason) == (MTA_READY, "Unknown", "MTAPending")
    assert result.retry_after == 1

    first = _snapshot(kube, namespace)
    for (kind, name), obj in first.items():
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == ctx.uid, name
        assert ref["kind"] == "MailDomain", name
        assert ref["controller"] is True, name
        managers = {m["manager"] for m in obj["metadata"]["managedFields"]}
        assert "mailward" in managers, (kind, name, managers)
    config = first[("ConfigMap", "example-mta-config")]["data"]
    tables = first[("ConfigMap", "example-mta-domains")]["data"]
    assert "alice@example.test example.test/alice/" in tables["mailboxes"]
    assert tables["domains"] == "example.test OK\n"
    # The password never reaches a ConfigMap.
    assert "secret" not in "".join([*config.values(), *tables.values()])
    service = first[("Service", "example-mta")]["spec"]
    assert service["externalTrafficPolicy"] == "Local"
    assert sorted(p["port"] for p in service["ports"]) == [25, 465, 587]
    sts = first[("StatefulSet", "example-mta")]["spec"]
    assert sts["replicas"] == 2
    assert sts["volumeClaimTemplates"][0]["metadata"]["name"] == "queue"
    postfix = sts["template"]["spec"]["containers"][0]
    assert postfix["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert postfix["securityContext"]["readOnlyRootFilesystem"] is True

    # Unchanged spec: applying again changes nothing on the server.
    _reconcile(kube, namespace)
    again = _snapshot(kube, namespace)
    for key in first:
        assert (
            again[key]["metadata"]["resourceVersion"] == first[key]["metadata"]["resourceVersion"]
        ), key

    # An edit of the spec: the ConfigMap and the pod template's hash change, nothing else.
    manifest["spec"]["mta"]["messageSizeLimit"] = 10 * 1024 * 1024
    kube.apply(manifest)
    _reconcile(kube, namespace)
    after = _snapshot(kube, namespace)
    changed = {
        key
        for key in first
        if after[key]["metadata"]["resourceVersion"] != first[key]["metadata"]["resourceVersion"]
    }
    assert changed == {("ConfigMap", "example-mta-config"), ("StatefulSet", "example-mta")}
    new_config = after[("ConfigMap", "example-mta-config")]["data"]
    assert "message_size_limit = 10485760" in new_config["main.cf"]
    assert {k for k in config if config[k] != new_config[k]} == {"main.cf"}
    before_sts = copy.deepcopy(first[("StatefulSet", "example-mta")]["spec"])
    after_sts = copy.deepcopy(after[("StatefulSet", "example-mta")]["spec"])
    old_hash = before_sts["template"]["metadata"]["annotations"].pop(CONFIG_HASH_ANNOTATION)
    new_hash = after_sts["template"]["metadata"]["annotations"].pop(CONFIG_HASH_ANNOTATION)
    assert old_hash != new_hash
    assert before_sts == after_sts


def test_mta_ready_follows_the_statefulset_status(kube: Kube, namespace: str) -> None:
    kube.apply(valid_maildomain(namespace=namespace))
    _, result = _reconcile(kube, namespace)
    assert result.verdicts[0].reason == "MTAPending"
    apps = client.AppsV1Api(kube.api)
    sts = apps.read_namespaced_stateful_set("example-mta", namespace)
    generation = sts.metadata.generation

    def set_status(ready: int, updated: int, current: str, update: str) -> None:
        apps.patch_namespaced_stateful_set_status(
            "example-mta",
            namespace,
            {
                "status": {
                    "observedGeneration": generation,
                    "replicas": 1,
                    "readyReplicas": ready,
                    "updatedReplicas": updated,
                    "currentRevision": current,
                    "updateRevision": update,
                    "availableReplicas": ready,
                }
            },
        )

    set_status(0, 0, "rev-1", "rev-2")
    _, result = _reconcile(kube, namespace)
    assert (result.verdicts[0].status, result.verdicts[0].reason) == ("False", "MTARollingOut")
    set_status(0, 1, "rev-2", "rev-2")
    _, result = _reconcile(kube, namespace)
    assert (result.verdicts[0].status, result.verdicts[0].reason) == ("False", "MTANotReady")
    set_statefulset_ready(kube.api, namespace, "example-mta")
    _, result = _reconcile(kube, namespace)
    assert (result.verdicts[0].status, result.verdicts[0].reason) == ("True", "MTARunning")
    assert result.retry_after is None
    assert [e.reason for e in result.events] == ["MTARunning"]


def test_missing_accounts_secret_is_reported(kube: Kube, namespace: str) -> None:
    manifest = valid_maildomain(namespace=namespace)
    manifest["spec"]["mta"] = {"accountsSecretName": "nowhere"}
    kube.apply(manifest)
    _, result = _reconcile(kube, namespace)
    assert (result.verdicts[0].status, result.verdicts[0].reason) == (
        "False",
        "AccountsSecretNotFound",
    )
    assert "spec.mta.accountsSecretName" in result.verdicts[0].message
