"""Pytest plugin: the real single-node cluster with mailward installed by its chart.

`cluster` runs exactly what `make demo` runs (`mailward_localstack.stack.up`) on a loopback /24
of its own (`tests.net.NODE_NET`, 127.188.0.0/24 by default), so it can run beside the demo.
Only tests that ask for it pay for it (about 30 s once the images are cached). The node is torn
down at the end of the session, and by the watchdog if pytest dies first: no pod, mount or
cgroup outlives the session.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailward_localstack._process import start_watchdog
from mailward_localstack.controlplane import kubectl
from mailward_localstack.dns import ZoneSpec
from mailward_localstack.stack import RELEASE_NAMESPACE, Stack, StackLayout, down, up
from tests.net import NODE_NET

REPO = Path(__file__).resolve().parents[1]
# Short enough that "re-created within one resync" is seconds, not the production 5 minutes.
RESYNC_SECONDS = 20


# Where the MTA pod sends mail in the tests: hosts at these addresses are started by the tests.
QUEUE_HOST = 61
MISMATCH_HOST = 62
# A zone of its own for the TLSA rollover test (tests/integration/test_tlsa_rollover.py).
ROLLOVER_ZONE = "rollover.test"
# A digest no key has: a TLSA record that matches nothing (RFC 7672 §2.2: no usable TLSA).
WRONG_DIGEST = "00" * 32


def destination_zones(net: str) -> tuple[ZoneSpec, ...]:
    return (
        # Secure, no TLSA: DANE falls back to opportunistic TLS (RFC 7672 §2.2).
        ZoneSpec("queue.test", records=("@ IN MX 10 mx", f"mx IN A {net}.{QUEUE_HOST}")),
        # Secure, with a TLSA that the receiver's key does not match: mail must stay queued.
        ZoneSpec(
            "mismatch.test",
            records=(
                "@ IN MX 10 mx",
                f"mx IN A {net}.{MISMATCH_HOST}",
                f"_25._tcp.mx IN TLSA 3 1 1 {WRONG_DIGEST}",
            ),
        ),
        # Signed and secure, on the primary and a secondary whose transfers a test can hold
        # back; empty: the rollover test's MailDomain publishes into it.
        ZoneSpec(ROLLOVER_ZONE, records=(), secondary=True),
        # Signed, but the parent's DS matches no key: every answer is bogus (SERVFAIL).
        ZoneSpec(
            "bogus.test",
            ds="bogus",
            records=(f"_25._tcp.mx IN TLSA 3 1 1 {WRONG_DIGEST}", f"mx IN A {net}.63"),
        ),
    )


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state_dir = tmp_path_factory.mktemp("cluster")
    watchdog = start_watchdog(state_dir)
    try:
        yield up(
            state_dir,
            None,
            StackLayout(net=NODE_NET, extra_zones=destination_zones(NODE_NET)),
            values={"reconcile": {"resyncSeconds": RESYNC_SECONDS}},
        )
    finally:
        down(state_dir)
        watchdog.terminate()
        watchdog.wait()


def fleet_maildomain(
    layout: StackLayout,
    name: str,
    namespace: str,
    domain: str,
    server: tuple[str, str],
    provider: str = "local-bind",
) -> dict[str, Any]:
    """A MailDomain of this stack attached to the MailServer `server` (namespace, name).

    Its reports go to the example's collector (one collector for a test, not one per
    namespace), and it is probed from outside once a week: tests probe when they need to.
    """
    zone = domain.split(".", 1)[1]
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "domain": domain,
            "mailServerRef": {"name": server[1], "namespace": server[0]},
            "dns": {
                "providerRef": {"kind": "DNSProvider", "name": provider},
                "mtaStsEndpoint": {"addresses": [layout.policy_endpoint]},
                "dmarc": {"rua": [f"mailto:dmarc-reports@{zone}"]},
            },
            # A deletion withdraws the served policy first (RFC 8461 §8.3): for the policy's
            # max_age (a day) unless the bound is shorter, as here for tests that delete.
            "mtaSts": {"mode": "enforce", "maxAge": 86400, "agingSeconds": 5},
            "tlsRpt": {"rua": [f"mailto:tlsrpt@{layout.tlsrpt_host}"]},
            "compliance": {"interval": "168h"},
        },
    }


def example_maildomain(layout: StackLayout) -> dict[str, Any]:
    """examples/maildomain.yaml, moved from the demo's /24 to this stack's."""
    text = (REPO / "examples" / "maildomain.yaml").read_text()
    manifest: dict[str, Any] = yaml.safe_load(text.replace("127.77.0.", f"{layout.net}."))
    return manifest


def get_json(stack: Stack, *args: str) -> Any:
    return json.loads(kubectl(stack.kubeconfig, "get", *args, "-o", "json"))


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 120, interval: float = 1) -> Any:
    """Poll `probe` until it returns something truthy (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as error:
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


NAMESPACE = "default"
# Workload -> (namespace, kind, name, pod label selector)
WORKLOADS = {
    "operator": (RELEASE_NAMESPACE, "deployment", "mailward", "app.kubernetes.io/name=mailward"),
    "mta": (NAMESPACE, "statefulset", "example-mta", "app.kubernetes.io/name=mailward-mta"),
    "policy endpoint": (
        RELEASE_NAMESPACE,
        "deployment",
        "mailward-policy",
        "app.kubernetes.io/name=mailward-policy",
    ),
    "collector": (
        NAMESPACE,
        "statefulset",
        "mailward-tlsrpt",
        "app.kubernetes.io/name=mailward-tlsrpt",
    ),
}


def condition(body: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for found in body.get("status", {}).get("conditions", []):
        if found["type"] == kind:
            return dict(found)
    return None


def ready_pods(stack: Stack, namespace: str, selector: str) -> list[dict[str, Any]]:
    pods = get_json(stack, "pods", "-n", namespace, "-l", selector)["items"]
    return [
        pod
        for pod in pods
        if pod["status"].get("phase") == "Running"
        and not pod["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod["status"].get("conditions", [])
        )
    ]


@pytest.fixture(scope="session")
def example(cluster: Stack) -> dict[str, Any]:
    """The example MailDomain applied once and Ready, with every workload's pod Ready."""
    kubectl(
        cluster.kubeconfig, "apply", "-f", "-", input=json.dumps(example_maildomain(cluster.layout))
    )

    def ready() -> dict[str, Any] | None:
        body: dict[str, Any] = get_json(cluster, "maildomain", "example", "-n", NAMESPACE)
        ready = condition(body, "Ready")
        return body if ready and ready["status"] == "True" else None

    body: dict[str, Any] = wait_for("MailDomain example Ready", ready, timeout=300)
    for workload, (namespace, _, _, selector) in WORKLOADS.items():
        wait_for(
            f"a Ready {workload} pod", lambda n=namespace, s=selector: ready_pods(cluster, n, s)
        )
    return body
