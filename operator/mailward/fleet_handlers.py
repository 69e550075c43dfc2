"""kopf glue of the MailServer controller (fleet.py): an index of the MailDomains that name a
MailServer, and one daemon per MailServer that reconciles it when that set or its spec changes.

The indexes are kopf's, fed by the MailDomain watch the operator runs anyway and a watch of
namespaces (their labels decide who may attach): finding a fleet's domains costs no request.
The daemon compares, once a second and in memory, what it last reconciled (generation,
attaching domains, their namespaces' labels) with what the indexes hold now, and runs a pass
only when they differ, when a pass asked to be retried, or after the resync interval (drift of
what lives outside the indexes: objects edited by hand, DNS, accounts Secrets).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, cast

import kopf
from pydantic import ValidationError

from mailward.api.mailserver import MAILSERVER_PLURAL
from mailward.api.v1alpha1 import API_GROUP, API_VERSION, PLURAL, MailDomainSpec
from mailward.fleet import AttachingDomain, FleetController, MailServerObject

# How often the daemon looks at the index (memory only).
POLL_SECONDS = 1.0


def controller(memo: Any) -> FleetController:
    return cast(FleetController, memo.runtime.fleets)


@kopf.index(API_GROUP, API_VERSION, PLURAL)
def fleet_domains(
    namespace: str | None,
    name: str | None,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    **_: Any,
) -> dict[tuple[str, str], AttachingDomain] | None:
    """MailServer (namespace, name) → the MailDomains that name it; a deleting or invalid
    MailDomain names none. The DKIM keys a domain signs with are in its status: a new Active
    key changes the entry, and the fleet's signer follows."""
    ref = spec.get("mailServerRef")
    if not ref or meta.get("deletionTimestamp"):
        return None
    try:
        model = MailDomainSpec.model_validate(dict(spec))
    except ValidationError:
        return None
    assert model.mail_server_ref is not None
    key = (model.mail_server_ref.namespace or namespace or "", model.mail_server_ref.name)
    accounts = model.mta.accounts_secret_name
    dkim = active_dkim_keys(dict(status)) if model.dkim.managed else ()
    return {key: AttachingDomain(namespace or "", str(name), model.domain, accounts, dkim)}


def active_dkim_keys(status: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """(selector, algorithm) of the Active keys in `status.dkim` (written by the dkim part)."""
    selectors = (status.get("dkim") or {}).get("selectors") or []
    return tuple(
        sorted((s["selector"], s["algorithm"]) for s in selectors if s.get("phase") == "Active")
    )


@kopf.index("", "v1", "namespaces")
def namespace_labels(
    name: str | None, labels: kopf.Labels, **_: Any
) -> dict[str, tuple[tuple[str, str], ...]]:
    """Namespace → its labels: which namespaces a MailServer allows can change without any
    MailDomain changing, and the fleet must notice that as quickly as the domains do."""
    return {str(name): tuple(sorted(labels.items()))}


@kopf.on.event("", "v1", "namespaces")
def observe_namespace(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """What an attaching MailDomain's pass reads instead of asking for its namespace."""
    memo.runtime.mail_servers.observe_namespace(event.get("type"), dict(body))


@kopf.on.event(API_GROUP, API_VERSION, MAILSERVER_PLURAL)
def observe_mail_server(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """What an attaching MailDomain's pass reads instead of asking for its MailServer."""
    memo.runtime.mail_servers.observe_mail_server(event.get("type"), dict(body))


def _server(body: kopf.Body) -> MailServerObject:
    meta = body.get("metadata", {})
    return MailServerObject(
        namespace=str(meta.get("namespace")),
        name=str(meta.get("name")),
        uid=str(meta.get("uid")),
        generation=int(meta.get("generation") or 0),
        spec=dict(body.get("spec") or {}),
        status=dict(body.get("status") or {}),
    )


def _candidates(index: kopf.Index[Any, Any], key: tuple[str, str]) -> list[AttachingDomain]:
    found: Iterable[AttachingDomain] = index.get(key, [])
    return sorted(set(found))


def _labels_of(index: kopf.Index[Any, Any], namespaces: Iterable[str]) -> dict[str, dict[str, str]]:
    """The watched labels of `namespaces`; one the watch has not delivered yet is left out."""
    found: dict[str, dict[str, str]] = {}
    for namespace in sorted(namespaces):
        for labels in index.get(namespace, []):
            found[namespace] = dict(labels)
    return found


@kopf.daemon(API_GROUP, API_VERSION, MAILSERVER_PLURAL, id="fleet", cancellation_timeout=10)
async def fleet(
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    # kopf passes indexes by their function's name.
    fleet_domains: kopf.Index[Any, Any] = kwargs["fleet_domains"]
    labels_index: kopf.Index[Any, Any] = kwargs["namespace_labels"]
    last: tuple[Any, ...] | None = None
    next_pass = 0.0
    while not stopped:
        server = _server(body)
        candidates = _candidates(fleet_domains, (server.namespace, server.name))
        labels = _labels_of(labels_index, {c.namespace for c in candidates})
        seen = sorted((namespace, sorted(found.items())) for namespace, found in labels.items())
        state = (server.generation, candidates, seen)
        if state != last or time.monotonic() >= next_pass:
            try:
                outcome = await controller(memo).reconcile(server, candidates, labels)
            except Exception:  # a failed status write: the next second tries again
                logger.exception("MailServer pass failed")
                await stopped.wait(POLL_SECONDS)
                continue
            last = state
            resync = memo.runtime.settings.reconcile.resync_seconds
            delay = outcome.retry_after if outcome.retry_after is not None else resync
            next_pass = time.monotonic() + delay
        await stopped.wait(POLL_SECONDS)


@kopf.on.delete(API_GROUP, API_VERSION, MAILSERVER_PLURAL)
async def release_fleet(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The hosts' DNS records go; the objects follow their owner reference."""
    await controller(memo).release(_server(body))
