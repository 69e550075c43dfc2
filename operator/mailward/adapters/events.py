"""Posting core/v1 Events about mailward's objects, from anywhere in the operator.

kopf's `kopf.event` works only inside a kopf handler (it queues into the handler's context);
the scheduler's jobs (resync, compliance checks) run outside any. This poster is what both use.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mailward.adapters.kube import shared_api_client

log = logging.getLogger("mailward.events")
COMPONENT = "mailward"
# The API server refuses longer messages.
MESSAGE_LIMIT = 1024


class EventPoster(Protocol):
    async def post(self, obj: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        """An Event about `obj` (a body with apiVersion, kind and metadata)."""
        ...


class KubeEventPoster:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        self._api = client.CoreV1Api(api or shared_api_client())

    async def post(self, obj: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        meta = obj.get("metadata", {})
        namespace = str(meta.get("namespace") or "default")
        now = datetime.now(UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                name=f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", namespace=namespace
            ),
            involved_object=client.V1ObjectReference(
                api_version=obj.get("apiVersion"),
                kind=obj.get("kind"),
                name=meta.get("name"),
                namespace=meta.get("namespace"),
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
            ),
            type=type,
            reason=reason,
            message=message[:MESSAGE_LIMIT],
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
            reporting_instance=COMPONENT,
            first_timestamp=now,
            last_timestamp=now,
            event_time=now,
            action=reason,
            count=1,
        )
        try:
            await asyncio.to_thread(self._api.create_namespaced_event, namespace, event)
        except ApiException as error:  # an Event lost is not worth failing a pass for
            log.warning("posting Event %s about %s failed: %s", reason, meta.get("name"), error)
