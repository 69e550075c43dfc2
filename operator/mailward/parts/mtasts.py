"""The mtasts part: the policy endpoint serves the domain's MTA-STS policy, and says which.

RFC 8461 senders cache a policy under the id announced in `_mta-sts.<domain>` and fetch again
only when the id changes. If the new id reached DNS before the endpoint served the new text,
a sender would fetch the old text and cache it under the new id, for max_age. So this part
fetches the policy from the endpoint exactly as a sender would and hands the DNS part (which
runs after it) the id of the bytes actually served, never the id of the desired text:

- `ctx.findings.served_policy`: the id of the policy the endpoint serves now, or the last one
  seen served when the endpoint cannot be reached (the DNS part keeps that id), or None when
  nothing is served for the domain (publish no new id).

Condition `MTASTSReady`: True/`Serving` when the served bytes are the desired ones;
Unknown/`Pending` while the endpoint still serves older text (or nothing: the endpoint picks
MailDomains up through its watch within a second or two), retried shortly; False/
`EndpointUnreachable` when no answer comes. `status.mtaSts.policyId` is the served id.

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
from mailward.api.v1alpha1 import MTASTSStatus
from mailward.conditions import Verdict
from mailward.parts import Event, PartResult, ReconcileContext, ServedPolicy
from mailward.render.mta_sts import policy_for, policy_id
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
        desired = policy_for(ctx.spec)
        previous = ctx.status.mta_sts.policy_id if ctx.status.mta_sts else None
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
        verdict, served_id, again = served_verdict(ctx.spec.domain, desired, fetched)
        if fetched.status is not None:
            ctx.findings.served_policy = ServedPolicy(served_id)
        shown = served_id if fetched.status is not None else previous
        events = []
        if verdict.reason == "Serving" and served_id != previous:
            events.append(Event("Normal", "PolicyServed", verdict.message))
        retry = None
        if again:
            unreachable = verdict.reason == "EndpointUnreachable"
            retry = self._unreachable_retry_seconds if unreachable else self._retry_seconds
        status = {"mtaSts": MTASTSStatus(policy_id=shown).model_dump(by_alias=True)}
        return PartResult([verdict], status=status, retry_after=retry, events=events)

    async def release(self, ctx: ReconcileContext) -> None:
        """Remove the domain's Ingress; the shared objects serve the other domains.

        The endpoint itself serves mode `none` for a MailDomain that is being deleted (RFC 8461
        §8.3) for as long as the MailDomain exists.
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


