"""A part that raises is contained: its own condition names the failure, the other parts'
conditions and status are written, and the operator goes on (issue #15).

The operator runs as `python -m tests.faulty_operator tlsrpt run ...`: the real operator with the
TLSRPT part's reconcile replaced by one that raises. It gets a control plane of its own, so that
the session's operator (which would reconcile the same objects) is not in the way.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import config

from mailward.api.v1alpha1 import API_GROUP, PLURAL
from mailward_localstack._process import start_watchdog
from mailward_localstack.controlplane import ControlPlane, wait_established
from mailward_localstack.pki import LocalCA
from tests.fixtures_operator import (
    REPO,
    Kube,
    OperatorProcess,
    maildomain_without_dns,
    run_example_mta,
    run_operator,
)
from tests.manifests import tls_secret_manifest

pytestmark = pytest.mark.controlplane


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kube, ControlPlane]]:
    plane = ControlPlane(tmp_path_factory.mktemp("faulty-controlplane"))
    watchdog = start_watchdog(plane.state_dir)
    try:
        plane.start()
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        kube = Kube(plane.kubeconfig, api)
        kube.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        wait_established(plane.kubeconfig, f"{PLURAL}.{API_GROUP}")
        yield kube, plane
        api.close()
    finally:
        plane.stop()
        watchdog.terminate()
        watchdog.wait()


@pytest.fixture(scope="module")
def faulty_operator(
    own_cluster: tuple[Kube, ControlPlane], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log_file = tmp_path_factory.mktemp("faulty-operator") / "operator.log"
    kube, plane = own_cluster
    with run_operator(
        kube,
        plane,
        tmp_path_factory,
        log_file,
        module="tests.faulty_operator",
        args=("tlsrpt",),
    ) as process:
        yield process


def _conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in body.get("status", {}).get("conditions", [])}


def test_a_raising_part_names_its_failure_and_the_others_are_written(
    own_cluster: tuple[Kube, ControlPlane], faulty_operator: OperatorProcess, local_ca: LocalCA
) -> None:
    kube, _ = own_cluster
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", namespace)
    cert = local_ca.issue_server_cert(["mx1.example.test", "mx2.example.test"])
    kube.apply(tls_secret_manifest(namespace, cert, "mx-example-test-tls"))
    kube.apply(maildomain_without_dns(namespace))
    run_example_mta(kube, namespace)

    def settled() -> dict[str, Any] | None:
        body = kube.get_maildomain(namespace, "example")
        conditions = _conditions(body)
        wanted = ("CertificateReady", "MTAReady", "DNSReady", "TLSReportsHealthy")
        if all(t in conditions for t in wanted) and conditions["MTAReady"]["status"] == "True":
            return body
        return None

    body = kube.wait_for("every part's condition", settled, timeout=60)
    conditions = _conditions(body)
    failed = conditions["TLSReportsHealthy"]
    assert (failed["status"], failed["reason"]) == ("False", "PartFailed")
    assert "InjectedFailure" in failed["message"]
    assert f"injected by the test for {namespace}/example" in failed["message"]
    # The parts before it and after it reported, and wrote the status fields they own.
    assert conditions["CertificateReady"]["status"] == "True"
    assert conditions["MTAReady"]["status"] == "True"
    assert conditions["DNSReady"]["reason"] == "NotManaged"
    assert body["status"]["certificate"]["notAfter"]
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    # Ready says which part keeps the domain from being ready.
    ready = conditions["Ready"]
    assert ready["status"] == "False"
    assert (ready["reason"], ready["message"].split(":")[0]) == ("PartFailed", "TLSReportsHealthy")

    events = kube.wait_for(
        "a Warning Event PartFailed",
        lambda: [
            e
            for e in kube.core.list_namespaced_event(namespace).items
            if e.reason == "PartFailed" and e.type == "Warning"
        ],
    )
    assert "InjectedFailure" in events[0].message
    # Contained: the operator process is still running and retries (the log says so).
    assert faulty_operator.process.poll() is None
    assert "the tlsrpt part failed" in faulty_operator.log()
