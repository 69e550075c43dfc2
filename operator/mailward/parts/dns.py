"""The DNS part: publish the domain's records through its DNS provider, owning only its own.

Facts read (`ctx.facts`):
- `certificate.chain` (certificate part): the served chain; its leaf's key is pinned as `3 1 1`.
- `dane.tlsa_spki_sha256` (certificate part): MX host → SPKI SHA-256 digests to pin, the
  rollover's current, next and previous key; overrides the leaf.
- `dane.tlsa_issuer_sha256` (certificate part, with `spec.dane.issuerRecord`): MX host → the
  issuing CAs' SPKI digests, published as `2 1 1`.
- `mta_sts.served_policy_id` (policy endpoint part): the id of the policy being served. The TXT
  announces what senders can actually fetch (update the policy first, then the id: RFC 8461 §3.1).
  None means nothing served is known: an `_mta-sts` TXT already published stays as it is; a
  first one announces the spec's id (a sender that finds no policy yet caches nothing). Without
  the key (no policy part), the spec's id is published.
- `tlsrpt.collector_target` (tlsrpt part): the collector's load-balancer address, where
  `tlsrpt.<domain>` points unless `spec.dns.tlsRptCollector` says otherwise.

Failures are retried with exponential backoff (the handler turns `retry_after` into a kopf
retry); a periodic resync of the handler finds drift and fixed conflicts without a spec change,
and costs one zone read and no UPDATE when nothing changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509

from mailward.adapters.dns_kube import ProviderNotFound, ProviderResolver
from mailward.adapters.dns_provider import (
    ConcurrentChange,
    ProviderUnreachable,
    PublishResult,
    UpdateRefused,
)
from mailward.api.base import parse_duration
from mailward.api.v1alpha1 import ConditionStatus, DNSStatus, MailDomainSpec
from mailward.conditions import Verdict, find, utcnow
from mailward.parts import (
    RECORDS_CHANGED,
    TLSRPT_COLLECTOR_TARGET,
    Event,
    PartResult,
    ReconcileContext,
    ReleasePending,
)
from mailward.parts.backoff import Backoff
from mailward.parts.certificate import CERTIFICATE_CHAIN, TLSA_DIGESTS, TLSA_ISSUER_DIGESTS
from mailward.plan.records import Key, Owner
from mailward.render import mta_sts
from mailward.render.dns_records import RRset, absolute, desired_rrsets, spki_sha256

DNS_READY = "DNSReady"
SERVED_POLICY_ID = "mta_sts.served_policy_id"
_STATUS_LIST_MAX = 32

log = logging.getLogger("mailward.dns")


def tlsa_digests(spec: MailDomainSpec, facts: Mapping[str, Any]) -> dict[str, list[str]]:
    if spec.mail_server_ref is not None:
        return {}  # the fleet publishes its hosts' TLSA records, once for every domain
    override = facts.get(TLSA_DIGESTS)
    if override is not None:
        return {host: list(digests) for host, digests in override.items()}
    chain: Sequence[x509.Certificate] = facts.get(CERTIFICATE_CHAIN) or ()
    if not chain:
        return {}
    leaf = spki_sha256(chain[0])
    return {mx.host: [leaf] for mx in spec.mx}


def keep_if_owned_for(spec: MailDomainSpec, facts: Mapping[str, Any]) -> frozenset[Key]:
    if SERVED_POLICY_ID in facts and not facts[SERVED_POLICY_ID]:
        return frozenset({(absolute(f"_mta-sts.{spec.domain}"), "TXT")})
    return frozenset()


def desired_for(spec: MailDomainSpec, facts: Mapping[str, Any]) -> list[RRset]:
    policy_id = facts.get(SERVED_POLICY_ID) or mta_sts.policy_id(mta_sts.policy_for(spec))
    return desired_rrsets(
        spec,
        tlsa_spki_sha256=tlsa_digests(spec, facts),
        sts_policy_id=str(policy_id),
        tlsrpt_collector=facts.get(TLSRPT_COLLECTOR_TARGET),
        tlsa_issuer_sha256=facts.get(TLSA_ISSUER_DIGESTS) if spec.mail_server_ref is None else None,
    )


class DNSPart:
    name = "dns"

    def __init__(
        self, providers: ProviderResolver, retry_seconds: float, retry_max_seconds: float
    ) -> None:
        self._providers = providers
        self._backoff = Backoff(retry_seconds, retry_max_seconds)

    async def reconcile(self, ctx: ReconcileContext) -> PartResult:
        dns_spec = ctx.spec.dns
        if dns_spec is None:
            verdict = Verdict(
                DNS_READY,
                "True",
                "NotManaged",
                "spec.dns is not set: the domain's records are published by hand",
            )
            return PartResult([verdict], status={"dns": None})
        if ctx.spec.dane.enabled and not ctx.spec.attached and TLSA_DIGESTS not in ctx.facts:
            # Publishing without knowing the keys would withdraw the TLSA records: DANE off
            # for every sender until the next pass. Nothing is sent; the next pass publishes.
            verdict = Verdict(
                DNS_READY, "Unknown", "WaitingForKeys", "the TLSA records' keys are not known yet"
            )
            return PartResult([verdict], retry_after=self._backoff.next(ctx.uid))
        ref = dns_spec.provider_ref
        owner = Owner(ctx.namespace, ctx.name, ctx.uid)
        desired = desired_for(ctx.spec, ctx.facts)
        try:
            provider = await self._providers.resolve(ref, ctx.namespace)
            keep = keep_if_owned_for(ctx.spec, ctx.facts)
            result = await provider.publish(owner, ctx.spec.domain, desired, keep)
        except ProviderNotFound as error:
            return self._failed(ctx, "False", "ProviderNotFound", str(error))
        except UpdateRefused as error:
            # The server answered no (a key, a policy, a zone it does not serve): retried, but
            # only a person's change makes it say yes.
            message = f"{error}; retrying"
            return self._failed(ctx, "False", "UpdateRefused", message, stalled=True)
        except ProviderUnreachable as error:
            return self._failed(ctx, "False", "ProviderUnreachable", f"{error}; retrying")
        except ConcurrentChange as error:
            return self._failed(ctx, "Unknown", "ConcurrentChange", str(error))
        self._backoff.reset(ctx.uid)
        if not result.writes:
            log.info(
                "%s/%s: zone %s already holds its records, nothing sent",
                ctx.namespace,
                ctx.name,
                result.zone,
            )
        return self._published(ctx, provider.description, desired, result)

    def _failed(
        self,
        ctx: ReconcileContext,
        status: ConditionStatus,
        reason: str,
        message: str,
        *,
        stalled: bool = False,
    ) -> PartResult:
        verdict = Verdict(DNS_READY, status, reason, message, stalled=stalled)
        return PartResult(
            [verdict],
            retry_after=self._backoff.next(ctx.uid),
            events=self._warn_on_change(ctx, verdict),
        )

    def _published(
        self,
        ctx: ReconcileContext,
        provider: str,
        desired: Sequence[RRset],
        result: PublishResult,
    ) -> PartResult:
        plan = result.plan
        events: list[Event] = []
        previous = ctx.status.dns
        last_change = previous.last_change_time if previous else None
        if result.writes:
            last_change = utcnow()
            ctx.facts[RECORDS_CHANGED] = True
            events.append(
                Event(
                    "Normal",
                    "Published",
                    f"{provider}: zone {result.zone}: {len(plan.create)} RRsets created, "
                    f"{len(plan.update)} replaced, {len(plan.delete)} deleted",
                )
            )
        summary = DNSStatus(
            provider=provider,
            zone=result.zone,
            record_sets=len(result.managed),
            records=sum(len(r.rdata) for r in result.managed),
            last_change_time=last_change,
            conflicts=[c.describe() for c in plan.conflicts][:_STATUS_LIST_MAX],
            unpublished=result.unpublished[:_STATUS_LIST_MAX],
        )
        status = {"dns": summary.model_dump(mode="json", by_alias=True, exclude_defaults=True)}
        where = f"zone {result.zone} via {provider}"
        if plan.conflicts:
            listed = "; ".join(f"{c.describe()} ({c.reason})" for c in plan.conflicts[:8])
            more = f" and {len(plan.conflicts) - 8} more" if len(plan.conflicts) > 8 else ""
            verdict = Verdict(
                DNS_READY,
                "False",
                "OwnershipConflict",
                f"{len(plan.conflicts)} RRsets exist in {where} and are not mailward's; they "
                f"are left as they are (remove them, or the record from the spec): "
                f"{listed}{more}",
                stalled=True,
            )
        elif ctx.spec.dane.enabled and any(" TLSA:" in u for u in result.unpublished):
            verdict = Verdict(
                DNS_READY,
                "False",
                "TLSAUnsupported",
                f"{provider} cannot publish TLSA records, which DANE (spec.dane) needs: use a "
                f"provider with rfc2136; the other records are published in {where}",
                stalled=True,
            )
        else:
            extra = (
                f"; not published: {', '.join(result.unpublished)}" if result.unpublished else ""
            )
            verdict = Verdict(
                DNS_READY,
                "True",
                "Published",
                f"{len(result.managed)} RRsets ({summary.records} records) in {where}{extra}",
            )
        events += self._warn_on_change(ctx, verdict)
        return PartResult([verdict], status=status, events=events)

    @staticmethod
    def _warn_on_change(ctx: ReconcileContext, verdict: Verdict) -> list[Event]:
        """A Warning Event when the condition turns bad or its message changes, not at every
        retry or resync (Events are writes too)."""
        if verdict.status == "True":
            return []
        current = find(ctx.status.conditions, DNS_READY)
        if current is not None and (current.reason, current.message) == (
            verdict.reason,
            verdict.message,
        ):
            return []
        return [Event("Warning", verdict.reason, verdict.message)]

    async def release(self, ctx: ReconcileContext) -> None:
        """Remove exactly the records this MailDomain owns (its registry lists them).

        A deletion always finishes: what was never published needs nothing; a provider that is
        gone, or a server that keeps refusing past `spec.dns.withdrawalTimeout`, leaves the
        records where they are, and a Warning Event `RecordsLeft` says which and why.
        """
        dns_spec = ctx.spec.dns
        published = ctx.status.dns
        if dns_spec is None or published is None or published.record_sets == 0:
            return
        where = f"{published.record_sets} RRsets of {ctx.spec.domain} in zone {published.zone}"
        try:
            provider = await self._providers.resolve(dns_spec.provider_ref, ctx.namespace)
            owner = Owner(ctx.namespace, ctx.name, ctx.uid)
            result = await provider.release(owner, ctx.spec.domain)
        except ProviderNotFound as error:
            # Nothing to talk to: keeping the finalizer would only block the deletion forever.
            self._left(ctx, f"{where} were not withdrawn: {error}")
            return
        except (UpdateRefused, ProviderUnreachable, ConcurrentChange) as error:
            timeout = parse_duration(dns_spec.withdrawal_timeout)
            since = ctx.deleting_since or utcnow()
            waited = (utcnow() - since).total_seconds()
            if waited < timeout:
                delay = min(self._backoff.next(ctx.uid), max(1.0, timeout - waited))
                raise ReleasePending(
                    f"withdrawing {where}: {error}; tried for {waited:.0f} of {timeout:.0f} s "
                    "(spec.dns.withdrawalTimeout)",
                    delay,
                ) from None
            self._left(
                ctx,
                f"{where} were left after {timeout:.0f} s (spec.dns.withdrawalTimeout): {error}",
            )
            return
        self._backoff.reset(ctx.uid)
        log.info(
            "removed %d RRsets of %s/%s from zone %s",
            len(result.plan.delete),
            ctx.namespace,
            ctx.name,
            result.zone,
        )

    def _left(self, ctx: ReconcileContext, message: str) -> None:
        self._backoff.reset(ctx.uid)
        log.warning("%s/%s: %s", ctx.namespace, ctx.name, message)
        ctx.release_events.append(Event("Warning", "RecordsLeft", message))


def dns_part_from_env() -> DNSPart:
    """The part as the operator runs it; retry delays from the environment (tests shorten them)."""
    import os

    from mailward.adapters.dns_kube import KubeProviderResolver

    return DNSPart(
        KubeProviderResolver(),
        retry_seconds=float(os.environ.get("MAILWARD_DNS_RETRY_SECONDS", "5")),
        retry_max_seconds=float(os.environ.get("MAILWARD_DNS_RETRY_MAX_SECONDS", "300")),
    )
