"""The MailDomains of a namespace, for what several of them share (the TLSRPT collector), and
one MailDomain as the API server holds it now (for the scheduler's jobs).

`MailDomainDirectory` is fed by kopf's watch of MailDomains (handlers.py, `@kopf.on.event`),
which the operator runs anyway: asking for a namespace's domains costs no request, where a list
per reconcile cost one request and a parse of every domain of the namespace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol, cast

from kubernetes import client

from mailward.adapters.kube import shared_api_client
from mailward.api.v1alpha1 import API_GROUP, API_VERSION, PLURAL


class MailDomainLister(Protocol):
    async def list(self, namespace: str) -> list[dict[str, Any]]:
        """The MailDomain objects of `namespace` as the API server holds them."""
        ...


class MailDomainDirectory:
    """What kopf's watch last showed of every MailDomain: its name, uid, deletion and spec."""

    def __init__(self) -> None:
        self._by_namespace: dict[str, dict[str, dict[str, Any]]] = {}

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name"))
        domains = self._by_namespace.setdefault(namespace, {})
        if event_type == "DELETED":
            domains.pop(name, None)
            if not domains:
                del self._by_namespace[namespace]
            return
        slim = {k: meta[k] for k in ("name", "namespace", "uid", "deletionTimestamp") if k in meta}
        domains[name] = {"metadata": slim, "spec": dict(body.get("spec") or {})}

    async def list(self, namespace: str) -> list[dict[str, Any]]:
        return list(self._by_namespace.get(namespace, {}).values())


class KubeMailDomainReader:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        # One client for every call: a new ApiClient per call opens a new connection pool.
        self._api = client.CustomObjectsApi(api or shared_api_client())

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The MailDomain as the API server holds it now; None once it is gone."""

        def read() -> dict[str, Any] | None:
            try:
                found = self._api.get_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, PLURAL, name
                )
            except client.ApiException as error:
                if error.status == 404:
                    return None
                raise
            return cast(dict[str, Any], found)

        return await asyncio.to_thread(read)
