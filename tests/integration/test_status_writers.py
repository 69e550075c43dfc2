"""The reconcile handler and the compliance daemon write one status without undoing each other.

Against the real API server (a control plane with no operator running, so that only the two
writers of this test touch the object): each applies its part of the status, computed from a
read that is stale by the time it writes, as happens when the daemon finishes a probe while the
handler reconciles. With a merge patch, the later writer's `conditions` list replaced the other's;
with server-side apply on the list-map, both survive.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from kubernetes import client
from kubernetes import config as kube_config

from mailward.adapters.status_writer import COMPLIANCE, RECONCILER, KubeStatusWriter
from mailward.api.v1alpha1 import API_GROUP, API_VERSION, PLURAL
from mailward.conditions import compliance_view, reconciler_view
from mailward_localstack.controlplane import kubectl, wait_established
from tests.fixtures_operator import REPO
from tests.manifests import minimal_maildomain


def _condition(type_: str, status: str, reason: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": "",
        "observedGeneration": 1,
        "lastTransitionTime": "2026-11-27T12:00:00Z",
    }


def test_neither_writer_drops_the_others_conditions(tlsrpt_control_plane: Any) -> None:
    kubeconfig = tlsrpt_control_plane.kubeconfig
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    wait_established(kubeconfig, f"{PLURAL}.{API_GROUP}")
    namespace = f"w-{uuid.uuid4().hex[:8]}"
    kubectl(kubeconfig, "create", "namespace", namespace)
    kubectl(
        kubeconfig, "apply", "-f", "-", input=json.dumps(minimal_maildomain(namespace=namespace))
    )
    api = kube_config.new_client_from_config(config_file=str(kubeconfig))
    writer = KubeStatusWriter(api)
    custom = client.CustomObjectsApi(api)

    def stored() -> dict[str, Any]:
        body = custom.get_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, "minimal"
        )
        return dict(body.get("status", {}))

    def types(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
        return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}

    async def scenario() -> None:
        # Both read the same (empty) status; the handler writes first.
        handler_first = {
            "observedGeneration": 1,
            "conditions": [_condition("Ready", "True", "Reconciled")],
        }
        await writer.apply_status(
            namespace, "minimal", reconciler_view(handler_first), field_manager=RECONCILER
        )
        # The daemon, from its stale read (no Ready in it), writes its verdict.
        daemon = {
            "conditions": [_condition("Compliant", "False", "MustChecksFailing")],
            "compliance": {
                "profile": "tr-03108",
                "score": 80,
                "failingMust": ["TR-DANE-02"],
                "checks": [],
                "lastChecked": "2026-11-27T12:00:00Z",
            },
        }
        await writer.apply_status(
            namespace, "minimal", compliance_view(daemon), field_manager=COMPLIANCE
        )
        assert types(stored()) == {
            "Ready": ("True", "Reconciled"),
            "Compliant": ("False", "MustChecksFailing"),
        }
        # The handler again, from a read taken before the daemon wrote: Ready flips and a part
        # condition appears; Compliant is not in its view and must stay as the daemon set it.
        handler_second = {
            "observedGeneration": 2,
            "conditions": [
                _condition("Ready", "False", "DNSNotReady"),
                _condition("DNSReady", "False", "ProviderUnreachable"),
            ],
        }
        await writer.apply_status(
            namespace, "minimal", reconciler_view(handler_second), field_manager=RECONCILER
        )
        status = stored()
        assert types(status) == {
            "Ready": ("False", "DNSNotReady"),
            "DNSReady": ("False", "ProviderUnreachable"),
            "Compliant": ("False", "MustChecksFailing"),
        }
        assert status["compliance"]["failingMust"] == ["TR-DANE-02"]
        assert status["observedGeneration"] == 2
        # And the daemon from its stale read once more: the handler's conditions stay.
        daemon["conditions"] = [_condition("Compliant", "True", "AllMustChecksPass")]
        await writer.apply_status(
            namespace, "minimal", compliance_view(daemon), field_manager=COMPLIANCE
        )
        assert types(stored()) == {
            "Ready": ("False", "DNSNotReady"),
            "DNSReady": ("False", "ProviderUnreachable"),
            "Compliant": ("True", "AllMustChecksPass"),
        }
        # A condition the handler no longer reports is removed: it owned it.
        handler_third = {
            "observedGeneration": 2,
            "conditions": [_condition("Ready", "True", "Reconciled")],
        }
        await writer.apply_status(
            namespace, "minimal", reconciler_view(handler_third), field_manager=RECONCILER
        )
        assert types(stored()) == {
            "Ready": ("True", "Reconciled"),
            "Compliant": ("True", "AllMustChecksPass"),
        }

    try:
        asyncio.run(scenario())
    finally:
        api.close()
