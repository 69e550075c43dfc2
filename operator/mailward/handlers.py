"""kopf handlers: load the object, let each part reconcile, write the status if it changed.

Nothing here decides anything on its own. kopf keeps its bookkeeping in `mailward.io/*`
annotations rather than in `status`, because a structural CRD schema prunes unknown status
fields (kopf #321) and because the status belongs to the users' tools (kstatus, Argo CD, Flux).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, cast

import kopf

from mailward import fleet_handlers as fleet_handlers  # registers the MailServer handlers
from mailward import provider_handlers as provider_handlers  # and the DNS providers'
from mailward.adapters.certificate_requests import KubeCertificateRequests
from mailward.adapters.endpoint_keys import KubeMTAEndpoints
from mailward.adapters.kube import load_client_config
from mailward.adapters.mailservers import KubeMailServerDirectory
from mailward.adapters.nameservers import NameserverObserver
from mailward.adapters.serving_secret import KubeServingSecrets
from mailward.adapters.status_writer import RECONCILER, KubeStatusWriter, StatusWriter
from mailward.adapters.workloads import KubeWorkloadClient
from mailward.api.mta import DEFAULT_MTA_IMAGE
from mailward.api.v1alpha1 import API_GROUP, API_VERSION, PLURAL, MailDomainStatus
from mailward.conditions import (
    READY,
    Verdict,
    apply_verdicts,
    find,
    parse_status,
    reconciler_view,
    started_verdicts,
    status_document,
    utcnow,
)
from mailward.parts import Part, PartResult, ReconcileContext, ReleasePending
from mailward.parts.certificate import CertificatePart
from mailward.parts.compliance import (
    ComplianceSettings,
    compliance_part_from_env,
    compliance_runner,
    compliance_selected,
)
from mailward.parts.dns import dns_part_from_env
from mailward.parts.mta import MTAPart
from mailward.parts.mtasts import mtasts_part_from_env
from mailward.parts.policy_certificate import PolicyCertificatePart
from mailward.parts.tlsrpt import tlsrpt_part_from_env
from mailward.reconcile import InvalidSpec, invalid_spec_verdicts, parse_spec, settled_verdicts
from mailward.render.resolver import ResolverSettings
from mailward.rollover.issuance import Issuance

FINALIZER = f"{API_GROUP}/finalizer"
# How often a missing TLS Secret is looked for again (Secrets are not watched).
TLS_SECRET_RETRY_SECONDS = float(os.environ.get("MAILWARD_TLS_SECRET_RETRY_SECONDS", "30"))
# Each look that still finds nothing doubles the delay, up to this (parts/backoff.py).
TLS_SECRET_RETRY_MAX_SECONDS = float(os.environ.get("MAILWARD_TLS_SECRET_RETRY_MAX_SECONDS", "300"))
# How often a StatefulSet that is still rolling out is looked at again (it is not watched).
MTA_RETRY_SECONDS = float(os.environ.get("MAILWARD_MTA_RETRY_SECONDS", "15"))
MTA_RETRY_MAX_SECONDS = float(os.environ.get("MAILWARD_MTA_RETRY_MAX_SECONDS", "300"))
# Level-based resync: what lives outside the cluster (DNS records) drifts without any change
# to the object, so every MailDomain is reconciled again this often; unchanged, it writes nothing.
RESYNC_SECONDS = float(os.environ.get("MAILWARD_RESYNC_SECONDS", "300"))
# Objects shared by many MailDomains (policy endpoint, collectors) are applied again at least
# this often, so that one resync repairs them when someone deleted or edited them by hand.
SHARED_APPLY_REFRESH_SECONDS = min(60.0, RESYNC_SECONDS / 2)

_parts: list[Part] | None = None


class _OnePassAtATime:
    """kopf runs the resync timer beside the change handlers, so two passes over one object can
    overlap; the parts' writes (the rollover's Secret, DNS) must not. One lock per object, kept
    only while a pass holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def of(self, uid: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(uid, asyncio.Lock())
        self._users[uid] = self._users.get(uid, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[uid] -= 1
            if not self._users[uid]:
                del self._users[uid], self._locks[uid]


_passes = _OnePassAtATime()


def nameserver_observer() -> NameserverObserver:
    """Finds a zone's authoritative servers through the resolver the compliance checks use."""
    settings = ComplianceSettings.from_environment()
    return NameserverObserver(settings.resolver, port=settings.resolver_port)


_status_writer: StatusWriter | None = None


def parts() -> list[Part]:
    """The parts in reconcile order; built on first use, after the client is configured."""
    global _parts, _status_writer
    if _parts is None:
        load_client_config()
        _status_writer = KubeStatusWriter()
        _parts = [
            # The certificate first: no MTA pod is rendered for a Secret that is missing.
            CertificatePart(
                KubeServingSecrets(),
                Issuance(KubeCertificateRequests()),
                nameserver_observer,
                KubeMTAEndpoints(),
                TLS_SECRET_RETRY_SECONDS,
                TLS_SECRET_RETRY_MAX_SECONDS,
            ),
            # Then who serves the domain: for an attached domain, the fleet's hosts become the
            # MX every later part publishes (or the pass stops when the fleet refuses it).
            MTAPart(
                KubeWorkloadClient(),
                MTA_RETRY_SECONDS,
                MTA_RETRY_MAX_SECONDS,
                ResolverSettings.from_environment(),
                os.environ.get("MAILWARD_MTA_IMAGE") or DEFAULT_MTA_IMAGE,
                KubeMailServerDirectory(),
            ),
            # With a cert-manager issuer, the policy host's certificate before the endpoint
            # is asked to serve it.
            PolicyCertificatePart(
                KubeServingSecrets(),
                KubeCertificateRequests(),
                os.environ.get("MAILWARD_POLICY_NAMESPACE") or None,
            ),
            mtasts_part_from_env(SHARED_APPLY_REFRESH_SECONDS),
            # Before the DNS part: the collector's public address goes into tlsrpt.<domain>.
            tlsrpt_part_from_env(apply_refresh_seconds=SHARED_APPLY_REFRESH_SECONDS),
            dns_part_from_env(),
            compliance_part_from_env(),
        ]
    return _parts


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    # Events for warnings only: kopf's per-handler "succeeded" events would be noise.
    settings.posting.level = logging.WARNING
    # Reconnect watches that a load balancer silently dropped (kopf #204 and many since).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.inactivity_timeout = 360


@kopf.daemon(
    API_GROUP,
    API_VERSION,
    PLURAL,
    id="compliance",
    cancellation_timeout=10,
    when=compliance_selected,
)
async def compliance(
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    """Probe the domain from outside every `spec.compliance.interval` (parts/compliance.py)."""
    parts()  # configures the API client
    await compliance_runner().run(body, stopped, logger)


@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
@kopf.on.update(API_GROUP, API_VERSION, PLURAL)
async def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    namespace: str | None,
    **_: Any,
) -> None:
    generation = int(meta.get("generation") or 0)
    current = parse_status(status)
    where = (namespace or "", str(meta.get("name")))
    try:
        model = parse_spec(spec)
    except InvalidSpec as error:
        parts()  # configures the API client
        verdicts = invalid_spec_verdicts(str(error))
        if await _write_status(where, current, _status_after(current, verdicts, {}, generation)):
            kopf.warn(body, reason="InvalidSpec", message=str(error))
        return

    if current.observed_generation != generation:
        parts()  # configures the API client
        started = started_verdicts(current.conditions, generation)
        began = _status_after(current, started, {}, generation)
        await _write_status(where, current, began)
        current = began
    ctx = ReconcileContext(
        name=str(meta.get("name")),
        namespace=namespace or "",
        uid=str(meta.get("uid")),
        generation=generation,
        spec=model,
        status=current,
    )
    results: list[PartResult] = []
    async with _passes.of(ctx.uid):
        for part in parts():
            result = await part.reconcile(ctx)
            results.append(result)
            if result.blocking:
                break
    part_verdicts = [v for r in results for v in r.verdicts]
    owned_status = {k: v for r in results for k, v in r.status.items()}
    verdicts = settled_verdicts(ctx.spec, part_verdicts)
    await _write_status(where, current, _status_after(current, verdicts, owned_status, generation))
    for result in results:
        for event in result.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    # A part that wants to look again only after the next resync (a renewal weeks away) waits
    # for the resync: a TemporaryError that long would hold back kopf's handling of the next
    # spec change, and the resync timer's own runs, for as long.
    delays = [r.retry_after for r in results if r.retry_after is not None]
    delays = [d for d in delays if d < RESYNC_SECONDS]
    if delays:
        # Every part that is not there yet, not only the first: the log is where an operator
        # of the operator sees why a domain keeps being retried.
        waiting = [f"{v.type}: {v.message}" for v in part_verdicts if v.status != "True"]
        raise kopf.TemporaryError("; ".join(waiting) or verdicts[0].message, delay=min(delays))


@kopf.timer(API_GROUP, API_VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync(**kwargs: Any) -> None:
    """The same reconcile, on a timer (kopf passes the same keyword arguments)."""
    await cast(Callable[..., Awaitable[None]], reconcile)(**kwargs)


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL)
async def release(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any
) -> None:
    """Release what the MailDomain owns outside the cluster, last part first."""
    try:
        model = parse_spec(spec)
    except InvalidSpec:
        return  # never reconciled, so nothing was created
    deleting = meta.get("deletionTimestamp")
    ctx = ReconcileContext(
        name=str(meta.get("name")),
        namespace=str(meta.get("namespace") or ""),
        uid=str(meta.get("uid")),
        generation=int(meta.get("generation") or 0),
        spec=model,
        status=parse_status(status),
        deleting_since=datetime.fromisoformat(deleting) if deleting else None,
    )
    try:
        async with _passes.of(ctx.uid):
            for part in reversed(parts()):
                await part.release(ctx)
    except ReleasePending as pending:
        # The bound is counted from deletionTimestamp, so a restarted operator keeps it.
        raise kopf.TemporaryError(str(pending), delay=pending.delay) from None
    finally:
        for event in ctx.release_events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _status_after(
    current: MailDomainStatus, verdicts: list[Verdict], owned: dict[str, Any], generation: int
) -> MailDomainStatus:
    conditions = apply_verdicts(current.conditions, verdicts, generation=generation, now=utcnow())
    return MailDomainStatus.model_validate(
        {**status_document(current), **owned, "observedGeneration": generation}
    ).model_copy(update={"conditions": conditions})


async def _write_status(
    where: tuple[str, str], current: MailDomainStatus, desired: MailDomainStatus
) -> bool:
    """Apply the reconciler's part of `desired` if it differs from `current`'s; True when
    Ready changed. `Compliant` and `status.compliance` are the compliance daemon's, written
    with its own field manager (adapters/status_writer.py), so they are left out here."""
    document = reconciler_view(status_document(desired))
    if document == reconciler_view(status_document(current)):
        return False
    assert _status_writer is not None  # set up by parts()
    namespace, name = where
    await _status_writer.apply_status(namespace, name, document, field_manager=RECONCILER)
    before, after = find(current.conditions, READY), find(desired.conditions, READY)
    if before is None or after is None:
        return True
    return (before.reason, before.message) != (after.reason, after.message)
