"""kstatus and Argo CD's health script agree on live MailDomains and MailServers.

Both are computed by the tools' own code (sigs.k8s.io/cli-utils kstatus and gopher-lua running
charts/mailward/files/argocd-health.lua) on objects read back from the API server while the
operator works on them: in progress right after apply, done once Ready, failed for a spec that
got past admission, in progress again after an edit until it is reconciled.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from typing import Any

import pytest

from mailward_localstack._process import free_port
from mailward_localstack.controlplane import kubectl_path
from mailward_localstack.dns import DNSStack
from mailward_localstack.pki import LocalCA
from tests.fixtures_dnspublish import (
    dns_provider_manifest,
    tls_secret_manifest,
    tsig_secret_manifest,
)
from tests.fixtures_mta import set_statefulset_ready
from tests.fixtures_operator import (
    Kube,
    OperatorProcess,
    maildomain_without_dns,
    run_example_mta,
)
from tests.gitops_health import Health, health_of
from tests.manifests import INVALID_CASES

pytestmark = pytest.mark.controlplane

IN_PROGRESS = ("InProgress", "Progressing")
CURRENT = ("Current", "Healthy")
FAILED = ("Failed", "Degraded")


def _health(kube: Kube, namespace: str, name: str = "example") -> Health:
    (found,) = health_of([kube.get_maildomain(namespace, name)])
    return found


def _wait_health(kube: Kube, namespace: str, wanted: tuple[str, str]) -> Health:
    deadline = time.monotonic() + 60
    while True:
        found = _health(kube, namespace)
        if found.pair == wanted:
            return found
        if time.monotonic() > deadline:
            conditions = kube.get_maildomain(namespace, "example")["status"].get("conditions")
            raise AssertionError(f"not {wanted} within 60 s: {found}; conditions: {conditions}")
        time.sleep(0.5)


def test_a_maildomain_from_apply_to_ready_and_through_an_edit(
    kube: Kube, namespace: str, operator: OperatorProcess, local_ca: LocalCA
) -> None:
    cert = local_ca.issue_server_cert(["mx1.example.test", "mx2.example.test"])
    kube.apply(tls_secret_manifest(namespace, cert, "mx-example-test-tls"))
    kube.apply(maildomain_without_dns(namespace))
    # Read at once, before the operator can have written anything: the CRD's status default
    # makes even this first read InProgress, never Current.
    first = _health(kube, namespace)
    assert first.pair == IN_PROGRESS, first
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen.add(_health(kube, namespace).pair)
        body = kube.get_maildomain(namespace, "example")
        if any(c["type"] == "Reconciling" for c in body.get("status", {}).get("conditions", [])):
            break
        time.sleep(0.2)
    # While the MTA StatefulSet has no ready pod, both say in progress, with the reason, and
    # `kubectl wait` keeps waiting.
    waiting = _wait_health(kube, namespace, IN_PROGRESS)
    assert seen == {IN_PROGRESS}, seen
    wait = subprocess.Popen(
        [str(kubectl_path()), "--kubeconfig", str(kube.kubeconfig), "wait", "-n", namespace,
         "--for=condition=Ready", "maildomain/example", "--timeout=90s"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    time.sleep(3)
    assert wait.poll() is None, wait.communicate()[0]
    run_example_mta(kube, namespace)
    done = _wait_health(kube, namespace, CURRENT)
    assert "Reconciled" in done.argo_message
    output, _ = wait.communicate(timeout=60)
    assert wait.returncode == 0, output
    assert "condition met" in output

    # An edit: InProgress until the new generation is reconciled and Ready again.
    kube.kubectl(
        "patch", "maildomain", "example", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"mta": {"messageSizeLimit": 20971520}}}',
    )  # fmt: skip
    edited = _health(kube, namespace)
    assert edited.pair == IN_PROGRESS, edited
    kube.wait_for(
        "the MTA StatefulSet changed",
        lambda: kube.kubectl(
            "get", "statefulset", "example-mta", "-n", namespace,
            "-o", "jsonpath={.metadata.generation}",
        ).stdout == "2",
    )  # fmt: skip
    assert _health(kube, namespace).pair == IN_PROGRESS
    set_statefulset_ready(kube.api, namespace, "example-mta")
    _wait_health(kube, namespace, CURRENT)
    print(f"\nwhile waiting: kstatus {waiting.kstatus_message!r}; Argo CD {waiting.argo_message!r}")


def test_a_spec_past_admission_but_invalid_is_failed_with_the_field(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    (case,) = [c for c in INVALID_CASES if c.tier == "model"]
    manifest = case.manifest(name="example", namespace=namespace)
    del manifest["spec"]["dns"]
    kube.apply(manifest)
    failed = _wait_health(kube, namespace, FAILED)
    assert case.field in failed.kstatus_message, failed
    assert case.field in failed.argo_message, failed
    body = kube.get_maildomain(namespace, "example")
    conditions = {c["type"]: c for c in body["status"]["conditions"]}
    assert conditions["Stalled"]["reason"] == "InvalidSpec"
    assert conditions["Reconciling"]["status"] == "False"


def test_the_health_readers_agree_on_every_state_mailward_writes() -> None:
    """The same objects through both readers; mailward's states only (no cluster needed)."""

    def domain(status: dict[str, Any] | None, generation: int = 2) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": "mailward.io/v1alpha1",
            "kind": "MailDomain",
            "metadata": {"name": "d", "namespace": "n", "generation": generation},
        }
        if status is not None:
            body["status"] = status
        return body

    def conditions(**statuses: str) -> list[dict[str, str]]:
        return [
            {"type": kind, "status": status, "reason": "Why", "message": f"{kind} said so"}
            for kind, status in statuses.items()
        ]

    cases = {
        "never written (the CRD default)": (domain({"observedGeneration": 0}), IN_PROGRESS),
        "work started": (
            domain(
                {
                    "observedGeneration": 2,
                    "conditions": conditions(Ready="Unknown", Reconciling="True", Stalled="False"),
                }
            ),
            IN_PROGRESS,
        ),
        "an older generation": (
            domain({"observedGeneration": 1, "conditions": conditions(Ready="True")}),
            IN_PROGRESS,
        ),
        "ready": (
            domain(
                {
                    "observedGeneration": 2,
                    "conditions": conditions(Ready="True", Reconciling="False", Stalled="False"),
                }
            ),
            CURRENT,
        ),
        "stalled": (
            domain(
                {
                    "observedGeneration": 2,
                    "conditions": conditions(Ready="False", Reconciling="False", Stalled="True"),
                }
            ),
            FAILED,
        ),
        "ready before, reconciling an edit": (
            domain(
                {
                    "observedGeneration": 2,
                    "conditions": conditions(Ready="True", Reconciling="True", Stalled="False"),
                }
            ),
            IN_PROGRESS,
        ),
    }
    found = health_of([body for body, _ in cases.values()])
    assert {name: h.pair for name, h in zip(cases, found, strict=True)} == {
        name: wanted for name, (_, wanted) in cases.items()
    }


def _provider(
    dns_stack: DNSStack, namespace: str, name: str, secret: str, *, port: int | None = None
) -> dict[str, Any]:
    body = dns_provider_manifest(dns_stack, namespace, name)
    body["spec"]["rfc2136"]["tsigSecretRef"]["name"] = secret
    if port is not None:
        body["spec"]["rfc2136"]["nameserver"]["port"] = port
    return body


def _wait_provider(kube: Kube, namespace: str, name: str, wanted: tuple[str, str]) -> Any:
    deadline = time.monotonic() + 60
    while True:
        body = json.loads(
            kube.kubectl("get", "dnsprovider", name, "-n", namespace, "-o", "json").stdout
        )
        (found,) = health_of([body])
        if found.pair == wanted:
            return {c["type"]: c for c in body["status"]["conditions"]}
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not {wanted} in 60 s: {found}; {body.get('status')}")
        time.sleep(0.5)


def test_a_dns_provider_is_ready_only_when_its_server_accepts_its_key(
    kube: Kube, namespace: str, operator: OperatorProcess, dns_stack: DNSStack
) -> None:
    kube.apply(tsig_secret_manifest(namespace, dns_stack.tsig.secret, "right-tsig"))
    # Another 32-byte secret under the same key name: the server's signature check fails.
    wrong = base64.b64encode(bytes(32)).decode()
    kube.apply(tsig_secret_manifest(namespace, wrong, "wrong-tsig"))
    kube.apply(_provider(dns_stack, namespace, "right", "right-tsig"))
    kube.apply(_provider(dns_stack, namespace, "wrong", "wrong-tsig"))
    kube.apply(
        _provider(
            dns_stack,
            namespace,
            "silent",
            "right-tsig",
            port=free_port(dns_stack.authoritative.address),
        )
    )

    right = _wait_provider(kube, namespace, "right", CURRENT)["Ready"]
    assert (right["reason"], right["status"]) == ("Verified", "True")
    assert "accepts TSIG key" in right["message"]
    stalled = _wait_provider(kube, namespace, "wrong", FAILED)["Stalled"]
    assert stalled["reason"] == "KeyRejected"
    assert "wrong-tsig" in stalled["message"], stalled  # names the Secret to fix
    silent = _wait_provider(kube, namespace, "silent", IN_PROGRESS)
    assert silent["Reconciling"]["reason"] == "ServerUnreachable"
    assert silent["Stalled"]["status"] == "False"

    # The key fixed in the Secret (not watched): the retry of a stalled provider sees it.
    kube.apply(tsig_secret_manifest(namespace, dns_stack.tsig.secret, "wrong-tsig"))
    fixed = _wait_provider(kube, namespace, "wrong", CURRENT)
    assert (fixed["Ready"]["reason"], fixed["Stalled"]["status"]) == ("Verified", "False")
