"""Applying the MTA's objects and reading back their state, through the Kubernetes API.

Objects are written by server-side apply with the field manager `mailward`: the API server
merges only the fields mailward sets, leaves fields set by others (an HPA's replicas excepted,
which mailward owns) alone, and does not even bump `resourceVersion` when the applied manifest
equals what is stored. So applying on every reconcile is idempotent and cheap.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mailward.adapters.apply import ObjectApplier, ServerSideApplier
from mailward.adapters.kube import shared_api_client


@dataclass(frozen=True)
class StatefulSetObservation:
    """What the StatefulSet controller (and the kubelets) report about the MTA's pods."""

    found: bool
    generation: int = 0
    replicas: int = 0
    observed_generation: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    current_revision: str = ""
    update_revision: str = ""


class WorkloadClient(Protocol):
    async def apply(self, manifest: dict[str, Any]) -> None: ...

    async def secret_keys(self, namespace: str, name: str) -> list[str] | None: ...

    async def observe_statefulset(self, namespace: str, name: str) -> StatefulSetObservation: ...


class KubeWorkloadClient:
    def __init__(
        self, api: client.ApiClient | None = None, applier: ObjectApplier | None = None
    ) -> None:
        self._api = api or shared_api_client()
        # Without the operator's level-based applier (tests of the part alone): every apply sent.
        self._applier = applier or ServerSideApplier(self._api)

    async def apply(self, manifest: dict[str, Any]) -> None:
        await self._applier.apply(manifest)

    async def secret_keys(self, namespace: str, name: str) -> list[str] | None:
        """The key names of a Secret (never its values), or None if it does not exist."""

        def read() -> list[str] | None:
            try:
                secret = client.CoreV1Api(self._api).read_namespaced_secret(name, namespace)
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            return sorted(k for k, v in (secret.data or {}).items() if v)

        return await asyncio.to_thread(read)

    async def observe_statefulset(self, namespace: str, name: str) -> StatefulSetObservation:
        def read() -> StatefulSetObservation:
            try:
                sts = client.AppsV1Api(self._api).read_namespaced_stateful_set(name, namespace)
            except ApiException as error:
                if error.status == 404:
                    return StatefulSetObservation(found=False)
                raise
            status = sts.status
            return StatefulSetObservation(
                found=True,
                generation=(sts.metadata and sts.metadata.generation) or 0,
                replicas=sts.spec.replicas if sts.spec.replicas is not None else 1,
                observed_generation=(status and status.observed_generation) or 0,
                ready_replicas=(status and status.ready_replicas) or 0,
                updated_replicas=(status and status.updated_replicas) or 0,
                current_revision=(status and status.current_revision) or "",
                update_revision=(status and status.update_revision) or "",
            )

        return await asyncio.to_thread(read)
