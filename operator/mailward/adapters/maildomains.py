"""Reading the MailDomains of a namespace, for what several of them share (the TLSRPT collector).

A list, not a cache fed by a watch: it is asked only when one MailDomain of the namespace is
reconciled or deleted, and kopf's own watch already triggers exactly those moments.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, cast

from kubernetes import client

from mailward.api.v1alpha1 import API_GROUP, API_VERSION, PLURAL


class MailDomainLister(Protocol):
    async def list(self, namespace: str) -> list[dict[str, Any]]:
        """The MailDomain objects of `namespace` as the API server holds them."""
        ...


class KubeMailDomainLister:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        # One client for every call: a new ApiClient per call opens a new connection pool.
        self._api = client.CustomObjectsApi(api or client.ApiClient())

    async def list(self, namespace: str) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            api = self._api
            listing = cast(
                dict[str, Any],
                api.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL),
            )
            items: list[dict[str, Any]] = listing.get("items", [])
            return items

        return await asyncio.to_thread(read)
