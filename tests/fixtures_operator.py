"""Pytest plugin: the CRDs installed in the real API server, and the operator running against it.

The operator runs as the real `mailward run` command in its own process, exactly as it would in a
pod, so a test sees only what any client of the API server would see.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from mailward.api.v1alpha1 import API_GROUP, API_VERSION, PLURAL
from mailward_localstack._process import free_port
from mailward_localstack.controlplane import ControlPlane, kubectl_path, wait_established
from tests.chart import OPERATOR_GROUPS, OPERATOR_USER, RELEASE_NAMESPACE, rbac_documents
from tests.fixtures_compliance import operator_environment as compliance_operator_environment
from tests.fixtures_dns import RESOLVER_ADDRESS
from tests.fixtures_mta import set_statefulset_ready
from tests.manifests import valid_maildomain
from tests.processes import mailward_process

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Kube:
    """A handle on the test cluster: kubectl as a user runs it, and the Python client."""

    kubeconfig: Path
    api: client.ApiClient

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(kubectl_path()), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def get_maildomain(self, namespace: str, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self.custom.get_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, name
        )
        return body

    def apply(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def wait_for(
        self,
        what: str,
        probe: Callable[[], Any],
        *,
        timeout: float = 30.0,
        interval: float = 0.25,
    ) -> Any:
        """Poll `probe` until it returns something truthy; fail naming `what` otherwise."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Iterator[Kube]:
    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    handle = Kube(control_plane.kubeconfig, api)
    handle.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    wait_established(control_plane.kubeconfig, f"{PLURAL}.{API_GROUP}")
    yield handle
    api.close()


@pytest.fixture
def namespace(kube: Kube) -> str:
    """A fresh namespace per test (never deleted: the local stack has no namespace controller)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", name)
    return name


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


@pytest.fixture(scope="session")
def operator(
    kube: Kube, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log_file = tmp_path_factory.mktemp("operator") / "operator.log"
    with run_operator(kube, control_plane, tmp_path_factory, log_file) as process:
        yield process


@contextlib.contextmanager
def run_operator(
    kube: Kube,
    control_plane: ControlPlane,
    tmp_path_factory: pytest.TempPathFactory,
    log_file: Path,
    *,
    module: str = "mailward",
    args: tuple[str, ...] = (),
) -> Iterator[OperatorProcess]:
    """`python -m <module> <args> run --all-namespaces` with the test settings below and the
    chart's RBAC, until the block ends."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        # Tests must not wait the production retry delay for a Secret created a moment later.
        "MAILWARD_TLS_SECRET_RETRY_SECONDS": "2",
        "MAILWARD_MTA_RETRY_SECONDS": "1",
        # Backoff ceilings: what is not there after a few looks (the many MailDomains earlier
        # tests leave behind) is looked at every 8 s, not every second.
        "MAILWARD_TLS_SECRET_RETRY_MAX_SECONDS": "8",
        "MAILWARD_MTA_RETRY_MAX_SECONDS": "8",
        # DNS: retries with backoff from 1 s up to 4 s, and a resync (drift check) every 10 s.
        "MAILWARD_DNS_RETRY_SECONDS": "1",
        "MAILWARD_DNS_RETRY_MAX_SECONDS": "4",
        "MAILWARD_RESYNC_SECONDS": "10",
        # As the chart installs it: a TLSRPT collector per namespace with MailDomains.
        "MAILWARD_TLSRPT_DEPLOY": "true",
        "MAILWARD_TLSRPT_IMAGE": "ghcr.io/mailward/operator:test",
        "MAILWARD_TLSRPT_OPERATOR_NAMESPACE": RELEASE_NAMESPACE,
        # An address of its own for tlsrpt.<domain> (no controller assigns one here: tests do).
        "MAILWARD_TLSRPT_SERVICE_TYPE": "LoadBalancer",
        **compliance_operator_environment(tmp_path_factory),
        # The DKIM rotation's gate: the session's validating Unbound, which resolves the zone
        # the DNS tests publish in (the compliance checks ask the lab's resolver).
        "MAILWARD_DKIM_RESOLVER": RESOLVER_ADDRESS,
    }
    # The operator runs with exactly the RBAC rules the Helm chart grants, not as an admin:
    # a permission the chart lacks fails these tests as it would fail in a cluster.
    kube.kubectl("create", "namespace", RELEASE_NAMESPACE, check=False)
    kube.kubectl("apply", "-f", "-", input=rbac_documents())
    env["KUBECONFIG"] = str(control_plane.kubeconfig_for(OPERATOR_USER, OPERATOR_GROUPS))
    liveness = f"http://127.0.0.1:{free_port('127.0.0.1')}/healthz"
    with mailward_process(
        [*args, "run", "--all-namespaces", "--liveness", liveness],
        env=env,
        log_file=log_file,
        ready_url=liveness,
        what="the operator",
        module=module,
    ) as process:
        yield OperatorProcess(process, log_file)


def maildomain_without_dns(namespace: str) -> dict[str, Any]:
    """The valid example without `spec.dns`: for tests of the operator loop; the DNS part's own
    tests (test_dns_publish.py) give it a provider."""
    body = valid_maildomain(namespace=namespace)
    del body["spec"]["dns"]
    return body


def run_example_mta(kube: Kube, namespace: str) -> None:
    """Play the kubelet for the example's MTA StatefulSet (the local control plane has none), so
    that `MTAReady` and with it `Ready` can become True."""
    kube.wait_for(
        "the MTA StatefulSet",
        lambda: (
            "example-mta"
            in kube.kubectl("get", "statefulsets", "-n", namespace, "-o", "name").stdout
        ),
    )
    set_statefulset_ready(kube.api, namespace, "example-mta")
