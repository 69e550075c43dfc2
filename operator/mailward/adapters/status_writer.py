"""Writes a MailDomain's status outside a kopf handler (the compliance loop runs in a daemon)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from kubernetes import client

from mailward.api.v1alpha1 import API_GROUP, API_VERSION, PLURAL


class StatusWriter(Protocol):
    async def merge_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...


class KubeStatusWriter:
    """A JSON merge patch on the status subresource: only the fields given are touched."""

    def __init__(self, api: client.CustomObjectsApi | None = None) -> None:
        self._api = api

    async def merge_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        api = self._api or client.CustomObjectsApi()
        await asyncio.to_thread(
            api.patch_namespaced_custom_object_status,
            API_GROUP,
            API_VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
        )
