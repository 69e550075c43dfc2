"""Reads of MailServers, namespaces and fleet pods that attaching a domain needs."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from mailward.adapters.kube import shared_api_client
from mailward.api.mailserver import MAILSERVER_PLURAL, MailServerSpec, MailServerStatus
from mailward.api.v1alpha1 import API_GROUP, API_VERSION
from mailward.conditions import READY, find


@dataclass(frozen=True)
class MailServerObservation:
    found: bool
    # None when the object exists but its spec does not validate.
    spec: MailServerSpec | None = None
    ready: bool = False
    ready_message: str = ""


class MailServerDirectory(Protocol):
    async def mail_server(self, namespace: str, name: str) -> MailServerObservation: ...

    async def namespace_labels(self, name: str) -> dict[str, str] | None: ...

    async def accounts(self, namespace: str, name: str) -> dict[str, str] | None:
        """Local part → password of an accounts Secret, or None if it does not exist."""
        ...


def observe_mail_server(body: dict[str, Any]) -> MailServerObservation:
    try:
        spec = MailServerSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return MailServerObservation(found=True)
    generation = int(body.get("metadata", {}).get("generation") or 0)
    status = MailServerStatus.model_validate(body.get("status") or {})
    ready = find(status.conditions, READY)
    current = ready is not None and ready.observed_generation == generation
    return MailServerObservation(
        found=True,
        spec=spec,
        ready=current and ready is not None and ready.status == "True",
        ready_message=ready.message if ready is not None else "not reconciled yet",
    )


class KubeMailServerDirectory:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        self._api = api or shared_api_client()

    async def accounts(self, namespace: str, name: str) -> dict[str, str] | None:
        def read() -> dict[str, str] | None:
            try:
                secret = client.CoreV1Api(self._api).read_namespaced_secret(name, namespace)
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            return {
                key: base64.b64decode(value).decode()
                for key, value in (secret.data or {}).items()
                if value
            }

        return await asyncio.to_thread(read)

    async def mail_server(self, namespace: str, name: str) -> MailServerObservation:
        def read() -> MailServerObservation:
            try:
                body = client.CustomObjectsApi(self._api).get_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, MAILSERVER_PLURAL, name
                )
            except ApiException as error:
                if error.status == 404:
                    return MailServerObservation(found=False)
                raise
            return observe_mail_server(dict(body))  # type: ignore[call-overload]

        return await asyncio.to_thread(read)

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        def read() -> dict[str, str] | None:
            try:
                namespace = client.CoreV1Api(self._api).read_namespace(name)
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            return dict((namespace.metadata and namespace.metadata.labels) or {})

        return await asyncio.to_thread(read)


class WatchedMailServers:
    """MailServers and namespace labels as kopf's watches last showed them (fleet_handlers.py
    feeds them), with `fallback` asked for what the watches have not shown yet: a pass that
    attaches a domain reads no MailServer and no namespace from the API server once the watches
    run, and a start-up that reconciles before the first events still finds them."""

    def __init__(self, fallback: MailServerDirectory) -> None:
        self._fallback = fallback
        self._servers: dict[tuple[str, str], MailServerObservation] = {}
        self._labels: dict[str, dict[str, str]] = {}

    def observe_mail_server(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED":
            self._servers.pop(key, None)
        else:
            self._servers[key] = observe_mail_server(body)

    def observe_namespace(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        name = str(meta.get("name"))
        if event_type == "DELETED":
            self._labels.pop(name, None)
        else:
            self._labels[name] = dict(meta.get("labels") or {})

    async def mail_server(self, namespace: str, name: str) -> MailServerObservation:
        seen = self._servers.get((namespace, name))
        return seen if seen is not None else await self._fallback.mail_server(namespace, name)

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        seen = self._labels.get(name)
        return dict(seen) if seen is not None else await self._fallback.namespace_labels(name)

    async def accounts(self, namespace: str, name: str) -> dict[str, str] | None:
        return await self._fallback.accounts(namespace, name)


class KubeFleetPods:
    """Annotates a fleet's pods (metadata only: the StatefulSet controller leaves pod
    annotations alone, and the kubelet syncs the pod, refreshing its ConfigMap volumes)."""

    def __init__(self, api: client.ApiClient | None = None) -> None:
        self._api = api or shared_api_client()

    async def annotate(self, namespace: str, selector: str, key: str, value: str) -> int:
        def write() -> int:
            core = client.CoreV1Api(self._api)
            pods = core.list_namespaced_pod(namespace, label_selector=selector).items
            changed = 0
            for pod in pods:
                meta = pod.metadata
                if meta is None or (meta.annotations or {}).get(key) == value:
                    continue
                body = {"metadata": {"annotations": {key: value}}}
                core.patch_namespaced_pod(str(meta.name), namespace, body)
                changed += 1
            return changed

        return await asyncio.to_thread(write)
