"""DNSProvider and ClusterDNSProvider: verified when they change and at every resync.

A provider is Ready when its server answers a query signed with its TSIG key (adapters
`verify`). A key the server rejects needs a person (Stalled); a server that does not answer or a
Secret not there yet is in progress (Reconciling). Either is verified again every
`RETRY_SECONDS`, a Ready provider at every resync. Without this a provider has no status, and a
GitOps tool would call a provider with a wrong key healthy until the first MailDomain fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import kopf

from mailward.adapters.dns_kube import KubeProviderResolver, ProviderNotFound, ProviderResolver
from mailward.adapters.dns_provider import ProviderUnreachable, UpdateRefused
from mailward.adapters.kube import load_client_config
from mailward.adapters.status_writer import RECONCILER, KubeStatusWriter, StatusWriter
from mailward.api.dnsprovider import (
    CLUSTER_DNS_PROVIDER_KIND,
    CLUSTER_DNS_PROVIDER_PLURAL,
    DNS_PROVIDER_KIND,
    DNS_PROVIDER_PLURAL,
    ProviderStatus,
)
from mailward.api.v1alpha1 import API_GROUP, API_VERSION, ProviderReference
from mailward.conditions import READY, Verdict, apply_verdicts, progress_verdicts, utcnow

RESYNC_SECONDS = float(os.environ.get("MAILWARD_RESYNC_SECONDS", "300"))
# A provider that is not usable (no answer, its Secret missing, its key rejected) is looked at
# again this often.
RETRY_SECONDS = float(os.environ.get("MAILWARD_DNS_RETRY_SECONDS", "5")) * 6


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


@dataclass
class _Kind:
    name: Literal["DNSProvider", "ClusterDNSProvider"]
    plural: str
    writer: StatusWriter | None = None


_KINDS = {
    DNS_PROVIDER_PLURAL: _Kind(DNS_PROVIDER_KIND, DNS_PROVIDER_PLURAL),
    CLUSTER_DNS_PROVIDER_PLURAL: _Kind(CLUSTER_DNS_PROVIDER_KIND, CLUSTER_DNS_PROVIDER_PLURAL),
}
_resolver: ProviderResolver | None = None


def _setup(plural: str) -> tuple[ProviderResolver, StatusWriter]:
    global _resolver
    kind = _KINDS[plural]
    if _resolver is None:
        load_client_config()
        _resolver = KubeProviderResolver()
    if kind.writer is None:
        kind.writer = KubeStatusWriter(kind=kind.name, plural=kind.plural)
    return _resolver, kind.writer


async def _reconcile(
    plural: str, meta: kopf.Meta, status: kopf.Status, namespace: str | None, *, retry: bool
) -> None:
    resolver, writer = _setup(plural)
    kind = _KINDS[plural].name
    ref = ProviderReference(kind=kind, name=str(meta.get("name")))
    ready = await verify(resolver, ref, namespace or "")
    generation = int(meta.get("generation") or 0)
    current = ProviderStatus.model_validate(dict(status or {}))
    desired = status_after(current, ready, generation)
    document = desired.model_dump(mode="json", by_alias=True, exclude_none=True)
    if document != current.model_dump(mode="json", by_alias=True, exclude_none=True):
        await writer.apply_status(
            namespace or "", str(meta.get("name")), document, field_manager=RECONCILER
        )
    # A rejected key is retried too: the fix is usually a new Secret, which is not watched, so
    # without a retry it would be seen only at the next resync.
    if retry and ready.status != "True":
        raise kopf.TemporaryError(ready.message, delay=RETRY_SECONDS)


def _register(plural: str) -> None:
    @kopf.on.resume(API_GROUP, API_VERSION, plural)
    @kopf.on.create(API_GROUP, API_VERSION, plural)
    @kopf.on.update(API_GROUP, API_VERSION, plural)
    async def changed(
        meta: kopf.Meta, status: kopf.Status, namespace: str | None, **_: Any
    ) -> None:
        await _reconcile(plural, meta, status, namespace, retry=True)

    @kopf.timer(API_GROUP, API_VERSION, plural, interval=RESYNC_SECONDS)
    async def resync(meta: kopf.Meta, status: kopf.Status, namespace: str | None, **_: Any) -> None:
        """A key changed on the server, or its Secret: seen at the next resync."""
        await _reconcile(plural, meta, status, namespace, retry=False)


for _plural in _KINDS:
    _register(_plural)
