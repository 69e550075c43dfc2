"""Server-side apply of rendered objects, the one way mailward writes Kubernetes objects.

The API server merges by field ownership (field manager `mailward`) and leaves an unchanged
object untouched: no new resourceVersion, so re-applying on every reconcile costs a request but
never a write. `force_conflicts` takes back fields someone else changed by hand: the rendered
object is the desired state.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

FIELD_MANAGER = "mailward"


class ServerSideApplier:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        self._api = api
        self._dynamic: dynamic.DynamicClient | None = None

    def _client(self) -> dynamic.DynamicClient:
        # API discovery happens on first use, not at import or construction.
        if self._dynamic is None:
            api = self._api or client.ApiClient()
            self._dynamic = dynamic.DynamicClient(api)  # type: ignore[no-untyped-call]
        return self._dynamic

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self._apply, manifest)

    def _apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        resource = self._client().resources.get(
            api_version=manifest["apiVersion"], kind=manifest["kind"]
        )
        meta = manifest["metadata"]
        applied = resource.server_side_apply(
            body=manifest,
            name=meta["name"],
            namespace=meta.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        result: dict[str, Any] = applied.to_dict()
        return result

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete if present; an object already gone is what was asked for."""
        await asyncio.to_thread(self._delete, api_version, kind, namespace, name)

    def _delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        resource = self._client().resources.get(api_version=api_version, kind=kind)
        try:
            resource.delete(name=name, namespace=namespace)
        except ApiException as error:
            if error.status != 404:
                raise


class ObjectApplier(Protocol):
    async def apply(self, obj: dict[str, Any]) -> None: ...

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None: ...


class KubeObjectApplier:
    """Server-side apply that sends an object already applied in the same form by this process
    at most once per `refresh_seconds`.

    The policy endpoint's and the collector's objects are rendered by every MailDomain's
    reconcile, so without the memo each reconcile would cost their requests. The memo expires,
    though: an object deleted or edited by hand is re-applied by the first reconcile after that,
    so the resync repairs drift as for every other object (level-based, not edge-based).
    """

    def __init__(
        self,
        api: client.ApiClient | None = None,
        *,
        refresh_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._applier = ServerSideApplier(api)
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._applied: dict[tuple[str, str, str], tuple[str, float]] = {}

    async def apply(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
        now = self._clock()
        memo = self._applied.get(key)
        if memo is not None and memo[0] == digest and now - memo[1] < self._refresh_seconds:
            return
        await self._applier.apply(obj)
        self._applied[key] = (digest, now)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self._applied.pop((kind, namespace, name), None)
        await self._applier.delete(api_version, kind, namespace, name)
