"""The tlsrpt part: the namespace's TLSRPT collector, and what other MTAs' TLS reports say about
the domain, as status and condition.

With `MAILWARD_TLSRPT_DEPLOY` on, it applies the collector of the MailDomain's namespace
(render/tlsrpt_objects.py) from every MailDomain there, so the domain that is reconciled (or
deleted) brings the shared collector up to date; `spec.tlsRpt.rua` defaults to that collector's
mailbox (tlsrpt/rua.py), which the DNS part publishes.

It reads the collector's evaluation (see adapters/tlsrpt_collector.py for why over its API),
writes `status.tlsRpt`, and sets `TLSReportsHealthy`: False when the share of failed sessions
passes `spec.tlsRpt.failureThresholdPercent`, naming the dominant failure type. A failure type
that was not in the previous status posts a Warning Event, once. Reports arrive all day, so the
part relies on the handler's periodic resync to pick new ones up; only when the collector
cannot be asked does it ask for an earlier retry.

When the collector's Service is a LoadBalancer with an address, the part leaves it for the DNS
part (`ctx.findings.tlsrpt_collector_target`), which runs after it and points
`tlsrpt.<domain>` there unless the spec names an address.

Without a configured collector the part says nothing (no condition, no status): a cluster that
collects its reports elsewhere is not penalised for it. A collector on the host network
(`MAILWARD_TLSRPT_HOST_NETWORK`) with no address to bind is not deployed; the condition says so
(`CollectorHasNoAddress`), with a Warning Event when that is new.

Configuration (settings.TLSRptSettings, chart `tlsrpt.*`): the collectors' API (may name the
namespace as `{namespace}`), whether to deploy them, and the settings of render/tlsrpt_objects.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from mailward.adapters.apply import ObjectApplier
from mailward.adapters.maildomains import MailDomainLister
from mailward.adapters.services import ServiceIngressReader
from mailward.adapters.tlsrpt_collector import CollectorUnavailable, ReportSummarySource
from mailward.api.tlsrpt_status import TLSRPTStatus
from mailward.api.v1alpha1 import HostTarget
from mailward.conditions import Verdict
from mailward.parts import Event, PartResult, ReconcileContext
from mailward.reconcile import InvalidSpec, parse_spec
from mailward.render.tlsrpt_objects import (
    NAME,
    CollectorSettings,
    NoCollectorAddress,
    ServedDomain,
    public_target,
    render_collector,
)
from mailward.settings import TLSRptSettings
from mailward.tlsrpt.evaluate import DomainSummary

log = logging.getLogger(__name__)

TLS_REPORTS_HEALTHY = "TLSReportsHealthy"


def served_domains(items: Sequence[Mapping[str, Any]]) -> list[ServedDomain]:
    """The MailDomains a namespace's collector serves: all but those being deleted and those
    whose spec the operator refuses (they are reconciled into nothing else either)."""
    served = []
    for item in items:
        meta = item.get("metadata")
        if not isinstance(meta, Mapping) or meta.get("deletionTimestamp"):
            continue
        try:
            spec = parse_spec(item.get("spec") or {})
        except InvalidSpec:
            continue
        served.append(
            ServedDomain(str(meta.get("name")), str(meta.get("uid")), spec, _fleet_mx_hosts(item))
        )
    return sorted(served, key=lambda d: d.spec.domain)


def _fleet_mx_hosts(item: Mapping[str, Any]) -> tuple[str, ...]:
    """The MailServer's MX hosts an attached domain's status names (the collector attributes
    DANE reports by them, tlsrpt/attribution.py); none for a domain with an MTA of its own."""
    status = item.get("status")
    attachment = status.get("mailServer") if isinstance(status, Mapping) else None
    hosts = attachment.get("hosts") if isinstance(attachment, Mapping) else None
    if not isinstance(hosts, list):
        return ()
    return tuple(str(h) for h in hosts if isinstance(h, str))


class CollectorDeployment:
    """Applies the collector of a namespace from the MailDomains found there."""

    def __init__(
        self,
        lister: MailDomainLister,
        objects: ObjectApplier,
        settings: CollectorSettings,
        services: ServiceIngressReader | None = None,
    ) -> None:
        self._lister = lister
        self._objects = objects
        self._settings = settings
        self._services = services
        # One pass per namespace at a time: a pass that listed before another domain appeared
        # must not apply after the pass that saw it.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # The last address seen per namespace: a failed read must not withdraw the DNS records.
        self._targets: dict[str, HostTarget] = {}

    @property
    def exposed(self) -> bool:
        """The collector gets an address of its own (a LoadBalancer Service)."""
        return self._services is not None and self._settings.service_type == "LoadBalancer"

    async def public_address(self, namespace: str) -> HostTarget | None:
        """Where the namespace's collector is reachable from outside; None while pending."""
        if self._services is None or not self.exposed:
            return None
        try:
            ingress = await self._services.load_balancer(namespace, NAME)
        except Exception as error:  # the API server's refusal, or no answer at all
            log.warning("reading Service %s/%s failed: %s", namespace, NAME, error)
            return self._targets.get(namespace)
        target = public_target(ingress.ips, ingress.hostnames) if ingress else None
        if target is None:
            self._targets.pop(namespace, None)
        else:
            self._targets[namespace] = target
        return target

    async def apply(self, namespace: str) -> list[str]:
        """Bring the namespace's collector up to date; the domains it serves now.

        With no MailDomain left, nothing is applied: the objects' owner references name only
        MailDomains that are gone or going, and the garbage collector removes them.
        """
        async with self._locks[namespace]:
            served = served_domains(await self._lister.list(namespace))
            if served:
                for manifest in render_collector(namespace, served, self._settings):
                    await self._objects.apply(manifest)
            return [d.spec.domain for d in served]


def status_from_summary(summary: DomainSummary) -> TLSRPTStatus:
    return TLSRPTStatus.model_validate(
        {
            "reports7d": summary.reports_7d,
            "last24h": summary.last_24h.model_dump(),
            "last7d": summary.last_7d.model_dump(),
            "policies": [
                {
                    "policyType": p.policy_type,
                    "last24h": p.last_24h.model_dump(),
                    "last7d": p.last_7d.model_dump(),
                }
                for p in summary.policies
            ],
            "topFailures": [
                {"resultType": f.result_type, "sessions": f.sessions} for f in summary.top_failures
            ],
            "failureTypes": summary.failure_types[:32],
            "organisations": [o.name for o in summary.organisations][:16],
        }
    )


def reports_verdict(status: TLSRPTStatus, threshold_percent: int) -> Verdict:
    """Healthy unless the failed share of reported sessions passes the threshold."""
    window, counts = "24 hours", status.last24h
    if counts.successful + counts.failed == 0:
        window, counts = "7 days", status.last7d
    total = counts.successful + counts.failed
    if total == 0:
        return Verdict(
            TLS_REPORTS_HEALTHY,
            "True",
            "NoSessionsReported",
            "no TLS report covered the last 7 days; nothing reported failing",
        )
    percent = 100.0 * counts.failed / total
    summary = f"{counts.failed} of {total} sessions failed in the last {window} ({percent:.2f}%)"
    if percent > threshold_percent:
        dominant = status.top_failures[0] if status.top_failures else None
        cause = (
            f"; mostly {dominant.result_type} ({dominant.sessions} sessions)" if dominant else ""
        )
        return Verdict(
            TLS_REPORTS_HEALTHY,
            "False",
            "FailureRatioExceeded",
            f"{summary}, above {threshold_percent}%{cause}",
        )
    return Verdict(
        TLS_REPORTS_HEALTHY,
        "True",
        "FailureRatioWithinLimit",
        f"{summary}, within {threshold_percent}%",
    )


def new_failure_types(previous: TLSRPTStatus | None, current: TLSRPTStatus) -> list[str]:
    seen = set(previous.failure_types) if previous else set()
    return [t for t in current.failure_types if t not in seen]


class TLSRptPart:
    name = "tlsrpt"
    condition = TLS_REPORTS_HEALTHY

    def __init__(
        self,
        source: ReportSummarySource | None,
        retry_seconds: float,
        deployment: CollectorDeployment | None = None,
    ) -> None:
        self._source = source
        self._retry_seconds = retry_seconds
        self._deployment = deployment

    @classmethod
    def build(
        cls,
        settings: TLSRptSettings,
        retry_seconds: float,
        *,
        applier: ObjectApplier,
        domains: MailDomainLister,
    ) -> TLSRptPart:
        """The part as the operator runs it."""
        from mailward.adapters.services import KubeServiceIngressReader
        from mailward.adapters.tlsrpt_collector import CollectorAPI

        deployment = (
            CollectorDeployment(
                domains,
                applier,
                settings.collector,
                KubeServiceIngressReader(),
            )
            if settings.deploy
            else None
        )
        source = CollectorAPI(settings.collector_url) if settings.collector_url else None
        return cls(source, retry_seconds=retry_seconds, deployment=deployment)

    async def reconcile(self, ctx: ReconcileContext) -> PartResult:
        domain = ctx.spec.domain
        if self._deployment is not None:
            try:
                await self._deployment.apply(ctx.namespace)
            except NoCollectorAddress as error:
                return _no_address(ctx, str(error))
            except Exception as error:  # the API server's refusal, or no answer at all
                log.warning("applying the TLSRPT collector in %s failed: %s", ctx.namespace, error)
                verdict = Verdict(
                    TLS_REPORTS_HEALTHY,
                    "Unknown",
                    "CollectorNotApplied",
                    f"applying the TLSRPT collector of namespace {ctx.namespace} failed: "
                    f"{str(error)[:300]}",
                )
                return PartResult([verdict], retry_after=self._retry_seconds)
            # A load balancer still without an address is looked at again by the periodic
            # resync (Services are not watched); nothing is published for it meanwhile.
            target = await self._deployment.public_address(ctx.namespace)
            if target is not None:
                ctx.findings.tlsrpt_collector_target = target
        if self._source is None:
            return PartResult([])
        try:
            summary = await self._source.summary(ctx.namespace, domain)
        except CollectorUnavailable as error:
            verdict = Verdict(
                TLS_REPORTS_HEALTHY,
                "Unknown",
                "CollectorUnavailable",
                f"the TLSRPT collector could not be asked: {error}",
            )
            return PartResult([verdict], retry_after=self._retry_seconds)
        if summary is None:
            verdict = Verdict(
                TLS_REPORTS_HEALTHY,
                "Unknown",
                "DomainNotCollected",
                f"the TLSRPT collector does not collect reports for {domain} yet",
            )
            return PartResult([verdict], retry_after=self._retry_seconds)
        status = status_from_summary(summary)
        verdict = reports_verdict(status, ctx.spec.tls_rpt.failure_threshold_percent)
        events = [
            Event(
                "Warning",
                "NewTLSFailureType",
                f"TLS reports for {domain} name a new failure type: {result_type}",
            )
            for result_type in new_failure_types(ctx.status.tls_rpt, status)
        ]
        # No retry_after: new reports are picked up by the handler's periodic resync.
        return PartResult(
            [verdict],
            status={"tlsRpt": status.model_dump(mode="json", by_alias=True)},
            events=events,
        )

    async def release(self, ctx: ReconcileContext) -> None:
        """The collector stops serving the domain; the stored reports stay until the
        collector's retention removes them: they are evidence."""
        if self._deployment is None:
            return
        try:
            await self._deployment.apply(ctx.namespace)
        except Exception as error:
            # Not worth holding the deletion for: the next reconcile of any MailDomain of the
            # namespace renders the collector without this one.
            log.warning("updating the TLSRPT collector in %s failed: %s", ctx.namespace, error)


def _no_address(ctx: ReconcileContext, message: str) -> PartResult:
    """Nothing to ask and nothing to bind: say why, once as an Event; the resync looks again
    (a MailDomain that publishes an address changes nothing in this one's spec)."""
    reason = "CollectorHasNoAddress"
    verdict = Verdict(TLS_REPORTS_HEALTHY, "Unknown", reason, message)
    previous = next((c for c in ctx.status.conditions if c.type == TLS_REPORTS_HEALTHY), None)
    events = [] if previous and previous.reason == reason else [Event("Warning", reason, message)]
    return PartResult([verdict], events=events)
