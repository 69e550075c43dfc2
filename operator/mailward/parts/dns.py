"""The DNS part: publish the domain's records through its DNS provider, owning only its own.

What it reads of the earlier parts' findings (`ctx.findings`, parts/__init__.py):
- the served chain and the TLSA digests (certificate part): the rollover's current, next and
  previous key are pinned as `3 1 1` (the leaf's key when no digests are known), the issuing
  CAs as `2 1 1` with `spec.dane.issuerRecord`;
- the served policy (policy endpoint part): the TXT announces what senders can actually fetch
  (update the policy first, then the id: RFC 8461 §3.1). When nothing is known to be served,
  an `_mta-sts` TXT already published stays as it is; a first one announces the spec's id (a
  sender that finds no policy yet caches nothing). Without a policy part, the spec's id;
- the collector's load-balancer address (tlsrpt part), where `tlsrpt.<domain>` points unless
  `spec.dns.tlsRptCollector` says otherwise.

Failures are retried with exponential backoff (the handler turns `retry_after` into a kopf
retry); a periodic resync of the handler finds drift and fixed conflicts without a spec change,
and costs one zone read and no UPDATE when nothing changed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

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
from mailward.owner import Owner
from mailward.parts import (
    Event,
    Findings,
    PartResult,
    ReconcileContext,
    ReleasePending,
)
from mailward.parts.backoff import Backoff
from mailward.plan.records import Key
from mailward.render import mta_sts
from mailward.render.dns_records import RRset, absolute, desired_rrsets, spki_sha256

DNS_READY = "DNSReady"
_STATUS_LIST_MAX = 32

log = logging.getLogger("mailward.dns")


def tlsa_digests(spec: MailDomainSpec, found: Findings) -> dict[str, list[str]]:
    if spec.mail_server_ref is not None:
        return {}  # the fleet publishes its hosts' TLSA records, once for every domain
    if found.tlsa_digests is not None:
        return {host: list(digests) for host, digests in found.tlsa_digests.items()}
    if not found.certificate_chain:
        return {}
    leaf = spki_sha256(found.certificate_chain[0])
    return {mx.host: [leaf] for mx in spec.mx}


def keep_if_owned_for(spec: MailDomainSpec, found: Findings) -> frozenset[Key]:
    if found.sts_withdrawn:
        return frozenset()
    if found.served_policy is not None and not found.served_policy.id:
        return frozenset({(absolute(f"_mta-sts.{spec.domain}"), "TXT")})
    return frozenset()


def desired_for(spec: MailDomainSpec, found: Findings) -> list[RRset]:
    served = found.served_policy.id if found.served_policy is not None else None
    policy_id = served or mta_sts.policy_id(mta_sts.policy_for(spec))
    # The policy part holds the MX records during an MX change under `enforce`
    # (plan/mtasts_changes.py); the held hosts keep their addresses, and a TLSA RRset only
    # where the certificate part knows its keys.
    published = spec if found.mx_hosts is None else spec.model_copy(update={"mx": found.mx_hosts})
    rrsets = desired_rrsets(
        published,
        tlsa_spki_sha256=tlsa_digests(spec, found),
        sts_policy_id=policy_id,
        tlsrpt_collector=found.tlsrpt_collector_target,
        tlsa_issuer_sha256=found.tlsa_issuer_digests if spec.mail_server_ref is None else None,
    )
    if found.sts_withdrawn:  # RFC 8461 §8.3: the record goes once the withdrawal aged
        sts_record = absolute(f"_mta-sts.{spec.domain}")
        rrsets = [r for r in rrsets if r.key != (sts_record, "TXT")]
    return rrsets


class DNSPart:
    name = "dns"
    condition = DNS_READY

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
        if ctx.spec.attached and ctx.fleet is None:
            # The MTA part did not say which fleet serves the domain (it failed in this pass):
            # publishing now would withdraw the MX records.
            verdict = Verdict(
                DNS_READY,
                "Unknown",
                "WaitingForMailServer",
                "the serving MailServer is not known yet",
            )
            return PartResult([verdict], retry_after=self._backoff.next(ctx.uid))
        if ctx.spec.dane.enabled and not ctx.spec.attached and ctx.findings.tlsa_digests is None:
            # Publishing without knowing the keys would withdraw the TLSA records: DANE off
            # for every sender until the next pass. Nothing is sent; the next pass publishes.
            verdict = Verdict(
                DNS_READY, "Unknown", "WaitingForKeys", "the TLSA records' keys are not known yet"
            )
            return PartResult([verdict], retry_after=self._backoff.next(ctx.uid))
        ref = dns_spec.provider_ref
        owner = Owner(ctx.namespace, ctx.name, ctx.uid)
        desired = desired_for(ctx.spec, ctx.findings)
        try:
            provider = await self._providers.resolve(ref, ctx.namespace)
            keep = keep_if_owned_for(ctx.spec, ctx.findings)
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
            ctx.findings.records_changed = True
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
