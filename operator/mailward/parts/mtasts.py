"""The mtasts part: the policy endpoint serves the domain's MTA-STS policy, and says which.

RFC 8461 senders cache a policy under the id announced in `_mta-sts.<domain>` and fetch again
only when the id changes. If the new id reached DNS before the endpoint served the new text,
a sender would fetch the old text and cache it under the new id, for max_age. So this part
fetches the policy from the endpoint exactly as a sender would and hands the DNS part (which
runs after it) the id of the bytes actually served, never the id of the desired text:

- `ctx.findings.served_policy`: the id of the policy the endpoint serves now, or the last one
  seen served when the endpoint cannot be reached (the DNS part keeps that id), or None when
  nothing is served for the domain (publish no new id).

Changes that senders' caches make unsafe go in order (plan/mtasts_changes.py, RFC 8461 §8.1,
§8.3), and the part hands the DNS part what it may publish:
- `ctx.findings.mx_hosts`: the MX hosts to publish; during an MX change under `enforce` the
  earlier ones, until the policy naming old and new hosts (`status.mtaSts.keptMx`, which the
  endpoint reads) has aged;
- `ctx.findings.sts_withdrawn`: a withdrawal (`mode: none`) aged, the `_mta-sts` record goes;
- `ctx.findings.release_hold`: while the MailDomain is deleted, how long the deletion waits
  for the withdrawal (domains.py runs passes until then, `holds_release`).

Condition `MTASTSReady`: True/`Serving` when the served bytes are the desired ones; True with
reason `Withdrawing`, `Withdrawn`, `MXChangeAging` or `MXMoved` while a change runs (the message
names the time of its next step, `status.mtaSts.until` holds it); Unknown/`Pending` while the
endpoint still serves older text (or nothing: the endpoint picks MailDomains up through its
watch within a second or two), retried shortly; False/`EndpointUnreachable` when no answer
comes. `status.mtaSts.policyId` is the served id.

Configuration (settings.PolicySettings, chart `policyEndpoint.*`): where to fetch (e.g.
`https://mailward-policy.mailward-system.svc:443`) and the trust for it, and whether the
operator manages the endpoint's Deployment, Service, PDB, ServiceAccount and one Ingress per
domain (its RBAC comes with the installation, see render/policy_objects.py). Without the URL
the part says nothing, as the tlsrpt part does without a collector.
"""

from __future__ import annotations

import logging

from mailward.adapters.apply import ObjectApplier
from mailward.adapters.policy_endpoint import (
    Fetched,
    PolicyFetcher,
)
from mailward.api.status import PublishedMX
from mailward.api.v1alpha1 import MailDomainStatus, MXHost
from mailward.conditions import Verdict, find, utcnow
from mailward.parts import Event, PartResult, ReconcileContext, ReleaseHold, ServedPolicy
from mailward.parts.dns import DNS_READY
from mailward.plan.mtasts_changes import PENDING, SERVING, ChangeInputs, Served, plan
from mailward.render.mta_sts import parse_policy, policy_id
from mailward.render.policy_objects import (
    NAME,
    EndpointSettings,
    ingress_name,
    render_ingress,
    render_shared_objects,
)

log = logging.getLogger(__name__)

MTASTS_READY = "MTASTSReady"


def served_verdict(domain: str, desired: str, fetched: Fetched) -> tuple[Verdict, str | None, bool]:
    """(verdict, id of what is served or None, whether to look again soon), decided purely."""
    host = f"mta-sts.{domain}"
    desired_id = policy_id(desired)
    if fetched.status is None:
        return (
            Verdict(
                MTASTS_READY,
                "False",
                "EndpointUnreachable",
                f"fetching https://{host}/.well-known/mta-sts.txt failed: {fetched.error}",
            ),
            None,
            True,
        )
    if fetched.status == 404:
        return (
            Verdict(
                MTASTS_READY,
                "Unknown",
                "Pending",
                f"the endpoint does not serve {host} yet (404); waiting for policy {desired_id}",
            ),
            None,
            True,
        )
    if fetched.status != 200:
        return (
            Verdict(
                MTASTS_READY,
                "False",
                "EndpointUnreachable",
                f"the endpoint answered {fetched.status} for {host}; RFC 8461 §3.3 wants 200",
            ),
            None,
            True,
        )
    try:
        served = fetched.body.decode("ascii")
    except UnicodeDecodeError:
        served = fetched.body.decode("ascii", errors="replace")
    served_id = policy_id(served)
    if served == desired:
        return (
            Verdict(MTASTS_READY, "True", "Serving", f"{host} serves policy {desired_id}"),
            served_id,
            False,
        )
    return (
        Verdict(
            MTASTS_READY,
            "Unknown",
            "Pending",
            f"{host} still serves policy {served_id}; waiting for policy {desired_id}",
        ),
        served_id,
        True,
    )


def _served(fetched: Fetched) -> Served | None:
    """What a 200 answer served; None for no answer or any other status."""
    if fetched.status != 200:
        return None
    text = fetched.body.decode("ascii", errors="replace")
    return Served(policy_id(text), parse_policy(text))


def _dns_ready(ctx: ReconcileContext) -> bool:
    condition = find(ctx.status.conditions, DNS_READY)
    return condition is not None and condition.status == "True"


def _previous_phase(ctx: ReconcileContext) -> str | None:
    condition = find(ctx.status.conditions, MTASTS_READY)
    return condition.reason if condition is not None else None


def _sts_sessions(ctx: ReconcileContext) -> tuple[int, int] | None:
    """The MTA-STS sessions the collector's reports counted in 7 days: (successful, failed)."""
    reports = ctx.status.tls_rpt
    if reports is None:
        return None
    for counts in reports.policies:
        if counts.policy_type == "sts":
            return counts.last7d.successful, counts.last7d.failed
    return None


def _mx_host(entry: PublishedMX) -> MXHost:
    return MXHost(host=entry.host, priority=entry.priority, addresses=list(entry.addresses))


class MTASTSPart:
    name = "mtasts"
    condition = MTASTS_READY

    def __init__(
        self,
        fetcher: PolicyFetcher | None,
        objects: ObjectApplier | None,
        settings: EndpointSettings,
        *,
        retry_seconds: float = 2.0,
        unreachable_retry_seconds: float = 15.0,
    ) -> None:
        self._fetcher = fetcher
        self._objects = objects
        self._settings = settings
        self._retry_seconds = retry_seconds
        self._unreachable_retry_seconds = unreachable_retry_seconds

    async def reconcile(self, ctx: ReconcileContext) -> PartResult:
        recorded = ctx.status.mta_sts
        previous = recorded.policy_id if recorded else None
        ctx.findings.served_policy = ServedPolicy(previous)
        if self._objects is not None:
            try:
                for obj in render_shared_objects(self._settings, rbac=False):
                    await self._objects.apply(obj)
                await self._objects.apply(render_ingress(ctx.spec.domain, self._settings))
            except Exception as error:  # the verdict below still says what is served
                log.warning("applying the policy endpoint's objects failed: %s", error)
        if self._fetcher is None:
            return PartResult([])

        fetched = await self._fetcher.fetch(ctx.spec.domain)
        served = _served(fetched)
        now = utcnow()
        change = plan(
            ChangeInputs(
                spec=ctx.spec,
                recorded=recorded,
                served=served,
                now=now,
                deleting_since=ctx.deleting_since,
                dns_ready=_dns_ready(ctx),
                previous_phase=_previous_phase(ctx),
                sts_sessions=_sts_sessions(ctx),
            )
        )
        if fetched.status is not None:
            ctx.findings.served_policy = ServedPolicy(served.id if served else None)
        ctx.findings.mx_hosts = tuple(_mx_host(e) for e in change.mx_hosts)
        ctx.findings.sts_withdrawn = not change.announce

        events = [Event("Normal", reason, message) for reason, message in change.events]
        retry = change.seconds_left(now)
        if served is None:
            # No policy fetched: what the fetch found decides the verdict (and nothing moves).
            verdict, _, _ = served_verdict(ctx.spec.domain, change.desired, fetched)
            unreachable = verdict.reason == "EndpointUnreachable"
            retry = self._unreachable_retry_seconds if unreachable else self._retry_seconds
        elif change.phase == PENDING:
            verdict = Verdict(MTASTS_READY, "Unknown", PENDING, change.message)
            retry = self._retry_seconds
        else:
            verdict = Verdict(MTASTS_READY, "True", change.phase, change.message)
            if change.phase == SERVING and served.id != previous:
                events.append(Event("Normal", "PolicyServed", change.message))
        if change.release_after is not None:
            # The deletion waits (0: no longer), and looks again when this part would.
            if change.release_after:
                retry = min(retry or change.release_after, change.release_after)
            ctx.findings.release_hold = ReleaseHold(verdict.message, retry or 0.0)
        status = {"mtaSts": change.status.model_dump(mode="json", by_alias=True)}
        return PartResult([verdict], status=status, retry_after=retry, events=events)

    def holds_release(self, status: MailDomainStatus) -> bool:
        """Whether a deletion must first withdraw a served policy (RFC 8461 §8.3): a policy
        other than `mode: none` was served, or earlier ones may still be cached."""
        recorded = status.mta_sts
        if self._fetcher is None or recorded is None or recorded.policy_id is None:
            return False
        return recorded.mode != "none" or recorded.earlier_policies_expire is not None

    def deletion_hold(self, ctx: ReconcileContext) -> ReleaseHold:
        """The hold from the recorded status and deletionTimestamp alone: for a deletion pass
        that stopped before this part (an earlier part blocked), so the bound still holds."""
        change = plan(
            ChangeInputs(
                spec=ctx.spec,
                recorded=ctx.status.mta_sts,
                served=None,
                now=utcnow(),
                deleting_since=ctx.deleting_since or utcnow(),
            )
        )
        return ReleaseHold(change.message, change.release_after or 0.0)

    async def release(self, ctx: ReconcileContext) -> None:
        """Remove the domain's Ingress; the shared objects serve the other domains.

        Before any part releases, the deletion withdraws the policy (domains.py runs passes
        while `holds_release` says so and the pass finds `release_hold`): the endpoint serves
        mode `none` from deletionTimestamp on, for as long as the MailDomain exists.
        """
        if self._objects is not None:
            await self._objects.delete(
                "networking.k8s.io/v1",
                "Ingress",
                self._settings.namespace,
                ingress_name(ctx.spec.domain),
            )


__all__ = [
    "MTASTS_READY",
    "NAME",
    "MTASTSPart",
]
