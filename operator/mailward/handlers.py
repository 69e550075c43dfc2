"""kopf handlers: load the object, decide (mailward.reconcile), write the status if it changed.

Nothing here decides anything on its own. kopf keeps its bookkeeping in `mailward.io/*`
annotations rather than in `status`, because a structural CRD schema prunes unknown status
fields (kopf #321) and because the status belongs to the users' tools (kstatus, Argo CD, Flux).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from mailward.adapters.kube import KubeSecretObserver, SecretObserver, load_client_config
from mailward.api.v1alpha1 import API_GROUP, API_VERSION, PLURAL, MailDomainStatus
from mailward.conditions import (
    READY,
    Verdict,
    apply_verdicts,
    find,
    parse_status,
    status_document,
    utcnow,
)
from mailward.reconcile import InvalidSpec, invalid_spec_verdicts, parse_spec, readiness_verdicts

FINALIZER = f"{API_GROUP}/finalizer"
# How long to wait before looking for a missing TLS Secret again. Secrets are not watched:
# that would need list/watch on every Secret of the cluster.
TLS_SECRET_RETRY_SECONDS = float(os.environ.get("MAILWARD_TLS_SECRET_RETRY_SECONDS", "30"))

_secrets: SecretObserver | None = None


def secret_observer() -> SecretObserver:
    global _secrets
    if _secrets is None:
        load_client_config()
        _secrets = KubeSecretObserver()
    return _secrets


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


@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
@kopf.on.update(API_GROUP, API_VERSION, PLURAL)
async def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    namespace: str | None,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    generation = int(meta.get("generation") or 0)
    current = parse_status(status)
    try:
        model = parse_spec(spec)
    except InvalidSpec as error:
        verdicts = invalid_spec_verdicts(str(error))
        if _write_status(patch, current, verdicts, generation):
            kopf.warn(body, reason="InvalidSpec", message=str(error))
        return

    tls = await secret_observer().observe_tls_secret(namespace or "", model.tls.secret_name)
    verdicts = readiness_verdicts(model, tls)
    _write_status(patch, current, verdicts, generation)
    ready = verdicts[0]
    if ready.status != "True":
        raise kopf.TemporaryError(ready.message, delay=TLS_SECRET_RETRY_SECONDS)


@kopf.on.delete(API_GROUP, API_VERSION, PLURAL)
async def release(**_: Any) -> None:
    """Holds the finalizer: the parts a MailDomain owns outside the cluster are released here."""


def _write_status(
    patch: kopf.Patch,
    current: MailDomainStatus,
    verdicts: list[Verdict],
    generation: int,
) -> bool:
    """Put the new status into `patch` if it differs from `current`; True when it changed Ready."""
    conditions = apply_verdicts(current.conditions, verdicts, generation=generation, now=utcnow())
    desired = MailDomainStatus(observed_generation=generation, conditions=conditions)
    document = status_document(desired)
    if document == status_document(current):
        return False
    for key, value in document.items():
        patch.status[key] = value
    before, after = find(current.conditions, READY), find(conditions, READY)
    return (
        before is None
        or after is None
        or (before.reason, before.message)
        != (
            after.reason,
            after.message,
        )
    )
