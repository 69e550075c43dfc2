"""The operator loop against the real API server: status by the API conventions, and no writes
when nothing changes."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from mailward.api.v1alpha1 import API_GROUP
from mailward_localstack.pki import LocalCA
from tests.fixtures_operator import (
    Kube,
    OperatorProcess,
    maildomain_without_dns,
    run_example_mta,
)
from tests.manifests import INVALID_CASES, tls_secret_manifest

pytestmark = pytest.mark.controlplane


def _ready(body: dict[str, Any]) -> dict[str, Any] | None:
    for condition in body.get("status", {}).get("conditions", []):
        if condition["type"] == "Ready":
            return dict(condition)
    return None


_CA: list[LocalCA] = []


@pytest.fixture(autouse=True)
def _session_ca(local_ca: LocalCA) -> None:
    _CA[:] = [local_ca]


def _tls_secret(namespace: str, name: str = "mx-example-test-tls") -> dict[str, Any]:
    """A TLS Secret with a real chain from the session's CA: the operator parses tls.crt."""
    cert = _CA[0].issue_server_cert(["mx1.example.test", "mx2.example.test"])
    return tls_secret_manifest(namespace, cert, name)


def _wait_ready(kube: Kube, namespace: str, status: str, reason: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = kube.get_maildomain(namespace, "example")
        ready = _ready(body)
        if ready and (ready["status"], ready["reason"]) == (status, reason):
            return body
        return None

    body: dict[str, Any] = kube.wait_for(f"Ready={status} reason {reason}", probe, timeout=45)
    return body


def test_missing_secret_then_ready(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    kube.apply(maildomain_without_dns(namespace))
    body = _wait_ready(kube, namespace, "False", "TLSSecretNotFound")
    ready = _ready(body)
    assert ready is not None
    assert "spec.tls.secretName" in ready["message"]
    assert ready["observedGeneration"] == body["metadata"]["generation"]
    assert f"{API_GROUP}/finalizer" in body["metadata"]["finalizers"]
    # kopf's bookkeeping lives in mailward.io annotations, never in status.
    assert set(body["status"]) == {"observedGeneration", "conditions"}
    # kopf writes its annotations after the handler returns, the status within it: wait.
    assert kube.wait_for(
        "kopf's mailward.io annotations",
        lambda: any(
            k.startswith(f"{API_GROUP}/")
            for k in kube.get_maildomain(namespace, "example")["metadata"].get("annotations", {})
        ),
    )

    kube.apply(_tls_secret(namespace))
    run_example_mta(kube, namespace)
    body = _wait_ready(kube, namespace, "True", "Reconciled")
    assert "mx1.example.test, mx2.example.test" in _ready(body)["message"]  # type: ignore[index]


def test_invalid_spec_is_reported_and_nothing_else_happens(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    (case,) = [c for c in INVALID_CASES if c.tier == "model"]
    manifest = case.manifest(name="example", namespace=namespace)
    del manifest["spec"]["dns"]
    kube.apply(manifest)
    body = _wait_ready(kube, namespace, "False", "InvalidSpec")
    message = _ready(body)["message"]  # type: ignore[index]
    assert case.field in message
    events = kube.wait_for(
        "a Warning Event with reason InvalidSpec",
        lambda: [
            e
            for e in kube.core.list_namespaced_event(namespace).items
            if e.reason == "InvalidSpec" and e.type == "Warning"
        ],
    )
    assert case.field in events[0].message
    assert events[0].involved_object.name == "example"

    # Fixing the field makes it Ready=True once the Secret exists too.
    kube.apply(_tls_secret(namespace))
    kube.kubectl(
        "patch",
        "maildomain",
        "example",
        "-n",
        namespace,
        "--type=json",
        "-p",
        json.dumps(
            [
                {
                    "op": "replace",
                    "path": "/spec/tlsRpt/rua",
                    "value": ["mailto:reports@example.test"],
                }
            ]
        ),
    )
    run_example_mta(kube, namespace)
    _wait_ready(kube, namespace, "True", "Reconciled")


def test_generation_and_transition_time(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    kube.apply(_tls_secret(namespace))
    kube.apply(maildomain_without_dns(namespace))
    run_example_mta(kube, namespace)
    first = _ready(_wait_ready(kube, namespace, "True", "Reconciled"))
    assert first is not None
    time.sleep(1.1)  # a new transition would get a later second
    kube.kubectl(
        "patch",
        "maildomain",
        "example",
        "-n",
        namespace,
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": "/spec/mx/0/priority", "value": 5}]),
    )

    def regenerated() -> dict[str, Any] | None:
        body = kube.get_maildomain(namespace, "example")
        ready = _ready(body)
        return body if ready and ready["observedGeneration"] == 2 else None

    body = kube.wait_for("observedGeneration 2", regenerated)
    second = _ready(body)
    assert second is not None
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"] == 2
    assert second["status"] == "True"
    assert second["lastTransitionTime"] == first["lastTransitionTime"]


def test_idle_operator_does_not_write(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    kube.apply(_tls_secret(namespace))
    kube.apply(maildomain_without_dns(namespace))
    run_example_mta(kube, namespace)
    _wait_ready(kube, namespace, "True", "Reconciled")
    time.sleep(2)  # let kopf finish its own bookkeeping after the handler
    before = kube.get_maildomain(namespace, "example")["metadata"]["resourceVersion"]
    time.sleep(30)
    after = kube.get_maildomain(namespace, "example")
    assert after["metadata"]["resourceVersion"] == before
    assert operator.process.poll() is None


def test_delete_releases_the_finalizer(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    kube.apply(_tls_secret(namespace))
    kube.apply(maildomain_without_dns(namespace))
    run_example_mta(kube, namespace)
    _wait_ready(kube, namespace, "True", "Reconciled")
    kube.kubectl("delete", "maildomain", "example", "-n", namespace, "--wait=true", "--timeout=30s")
    listed = kube.kubectl("get", "maildomains", "-n", namespace, "-o", "name").stdout
    assert listed.strip() == ""
