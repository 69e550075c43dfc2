"""DNSProvider and ClusterDNSProvider: verified when they change and at every resync.

A provider is Ready when its server answers a query signed with its TSIG key (adapters
`verify`). A key the server rejects needs a person (Stalled); a server that does not answer or a
Secret not there yet is in progress (Reconciling). Either is verified again after
`RETRY_FACTOR` times the DNS retry delay, a Ready provider at every resync, both on the operator's
scheduler. Without this a provider has no status, and a GitOps tool would call a provider with
a wrong key healthy until the first MailDomain fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast

import kopf

from mailward.adapters.dns_kube import ProviderNotFound, ProviderResolver
from mailward.adapters.dns_provider import ProviderUnreachable, UpdateRefused
from mailward.adapters.kube import KubeCustomObjects
from mailward.adapters.status_writer import RECONCILER, KubeStatusWriter
from mailward.api.dnsprovider import (
    CLUSTER_DNS_PROVIDER_KIND,
    CLUSTER_DNS_PROVIDER_PLURAL,
    DNS_PROVIDER_KIND,
    DNS_PROVIDER_PLURAL,
    ProviderStatus,
)
from mailward.api.v1alpha1 import API_GROUP, API_VERSION, ProviderReference
from mailward.conditions import READY, Verdict, apply_verdicts, progress_verdicts, utcnow
from mailward.scheduler import JobKey, JobKind, ObjectKey, Scheduler

# A provider that is not usable (no answer, its Secret missing, its key rejected) is looked at
# again after this many DNS retry delays.
RETRY_FACTOR = 6
PROVIDER_RESYNC = JobKind("provider-resync", concurrency=2)


async def verify(resolver: ProviderResolver, ref: ProviderReference, namespace: str) -> Verdict:
    """`Ready` of one provider, from what its server says."""
    try:
        provider = await resolver.resolve(ref, namespace)
        message = await provider.verify()
    except ProviderNotFound as error:
        return Verdict(READY, "False", "ProviderIncomplete", str(error))
    except UpdateRefused as error:
        return Verdict(READY, "False", "KeyRejected", str(error), stalled=True)
    except ProviderUnreachable as error:
        return Verdict(READY, "False", "ServerUnreachable", str(error))
    return Verdict(READY, "True", "Verified", message)


def status_after(current: ProviderStatus, ready: Verdict, generation: int) -> ProviderStatus:
    verdicts = [ready, *progress_verdicts(ready, [])]
    conditions = apply_verdicts(current.conditions, verdicts, generation=generation, now=utcnow())
    return ProviderStatus(observed_generation=generation, conditions=conditions)


_KINDS: dict[str, Literal["DNSProvider", "ClusterDNSProvider"]] = {
    DNS_PROVIDER_PLURAL: DNS_PROVIDER_KIND,
    CLUSTER_DNS_PROVIDER_PLURAL: CLUSTER_DNS_PROVIDER_KIND,
}


class ProviderReconciler:
    """Verifies providers when they change and on the scheduler."""

    def __init__(
        self,
        resolver: ProviderResolver,
        objects: KubeCustomObjects,
        scheduler: Scheduler,
        *,
        resync_seconds: float,
        retry_seconds: float,
        changed: Callable[[ProviderReference, str], None] = lambda ref, namespace: None,
    ) -> None:
        """`changed` is told of every provider this verifies, so that what the MailDomains'
        passes keep of it (adapters/recent_providers.py) is read again."""
        self._resolver = resolver
        self._changed = changed
        self._objects = objects
        self._scheduler = scheduler
        self._resync_seconds = resync_seconds
        self._retry_seconds = retry_seconds
        self._writers = {
            plural: KubeStatusWriter(kind=kind, plural=plural) for plural, kind in _KINDS.items()
        }

    async def reconcile(self, plural: str, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata", {})
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name"))
        # The plural is part of the name: a DNSProvider and a ClusterDNSProvider of one name
        # are two jobs.
        key = JobKey(
            PROVIDER_RESYNC, ObjectKey(namespace, f"{plural}/{name}", str(meta.get("uid")))
        )
        self._scheduler.every(key, self._resync_seconds, self._resync)
        ref = ProviderReference(kind=_KINDS[plural], name=name)
        self._changed(ref, namespace)
        ready = await verify(self._resolver, ref, namespace)
        generation = int(meta.get("generation") or 0)
        current = ProviderStatus.model_validate(dict(body.get("status") or {}))
        desired = status_after(current, ready, generation)
        document = desired.model_dump(mode="json", by_alias=True, exclude_none=True)
        if document != current.model_dump(mode="json", by_alias=True, exclude_none=True):
            await self._writers[plural].apply_status(
                namespace, name, document, field_manager=RECONCILER
            )
        # A rejected key is retried too: the fix is usually a new Secret, which is not
        # watched, so without a retry it would be seen only at the next resync.
        if ready.status != "True":
            self._scheduler.schedule(key, time.monotonic() + self._retry_seconds)

    def observe(self, plural: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A provider deleted (or being deleted) is not used any more from the next pass on:
        what the passes kept of it goes at once, not after its bound."""
        meta = body.get("metadata", {})
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            ref = ProviderReference(kind=_KINDS[plural], name=str(meta.get("name")))
            self._changed(ref, str(meta.get("namespace") or ""))

    async def _resync(self, key: JobKey) -> None:
        plural, _, name = key.obj.name.partition("/")
        body = await self._objects.get(plural, key.obj.namespace, name)
        if body is None or str(body.get("metadata", {}).get("uid")) != key.obj.uid:
            self._scheduler.forget(key)
            return
        await self.reconcile(plural, body)


def _register(plural: str) -> None:
    @kopf.on.resume(API_GROUP, API_VERSION, plural)
    @kopf.on.create(API_GROUP, API_VERSION, plural)
    @kopf.on.update(API_GROUP, API_VERSION, plural)
    async def changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await cast(ProviderReconciler, memo.runtime.provider_status).reconcile(plural, body)

    @kopf.on.event(API_GROUP, API_VERSION, plural)
    def seen(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        reconciler = cast(ProviderReconciler, memo.runtime.provider_status)
        reconciler.observe(plural, event.get("type"), body)


for _plural in _KINDS:
    _register(_plural)
