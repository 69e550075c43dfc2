"""Server-side apply of rendered objects, the one way mailward writes Kubernetes objects.

The API server merges by field ownership (field manager `mailward`) and leaves an unchanged
object untouched: no new resourceVersion, so re-applying on every reconcile costs a request but
never a write. `force_conflicts` takes back fields someone else changed by hand: the rendered
object is the desired state.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from mailward.adapters.kube import shared_api_client

FIELD_MANAGER = "mailward"


class ServerSideApplier:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        self._api = api
        self._dynamic: dynamic.DynamicClient | None = None

    def _client(self) -> dynamic.DynamicClient:
        # API discovery happens on first use, not at import or construction.
        if self._dynamic is None:
            api = self._api or shared_api_client()
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

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """The object as the API server holds it, or None."""
        return await asyncio.to_thread(self._get, api_version, kind, namespace, name)

    def _get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        resource = self._client().resources.get(api_version=api_version, kind=kind)
        try:
            found: dict[str, Any] = resource.get(name=name, namespace=namespace).to_dict()
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

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
