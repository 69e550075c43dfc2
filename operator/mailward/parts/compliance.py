"""The compliance part: every MailDomain probed from outside, the verdict on the resource.

Probing a domain takes seconds to minutes (dozens of TLS handshakes per MX), so it does not run
inside the reconcile pass that decides `Ready`. The operator's one scheduler (scheduler.py,
domains.py) runs `ComplianceRunner.check` for each selected MailDomain every
`spec.compliance.interval`, each on its own phase of the interval (so a thousand domains created
together do not probe together): check, write `status.compliance` and the `Compliant` condition
if something changed. The part's `reconcile` asks for a check at once when the spec or the
published records changed, which gives the immediate check after an edit. `Compliant` does not
feed `Ready`: a domain can be reconciled and still fail an outside check (an expired
certificate, a zone edited by hand), and the two questions have different audiences.

Concurrency is bounded for the whole process by one semaphore on network probes
(chart `compliance.concurrency`, default 8), shared by all domains.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailward.adapters.events import EventPoster
from mailward.adapters.status_writer import COMPLIANCE, StatusWriter
from mailward.api.compliance_status import ComplianceStatus
from mailward.api.v1alpha1 import MailDomainStatus, parse_duration
from mailward.compliance import metrics
from mailward.compliance.endpoint_probes import EndpointProbes
from mailward.compliance.engine import check_domain
from mailward.compliance.model import Report, Result
from mailward.conditions import (
    COMPLIANT,
    READY,
    Verdict,
    apply_verdicts,
    compliance_view,
    find,
    parse_status,
    utcnow,
)
from mailward.parts import PartResult, ReconcileContext
from mailward.reconcile import InvalidSpec, parse_spec
from mailward.settings import ComplianceSettings

_Logger = logging.Logger | logging.LoggerAdapter[Any]
# A check whose probes could not all complete is repeated this soon (with the same jitter):
# MX hosts that serve many domains rate-limit a prober that checks all of them at once.
INCOMPLETE_RETRY_SECONDS = 300.0
# A domain whose first reconcile pass has not finished is looked at again this soon.
NOT_RECONCILED_RETRY_SECONDS = 5.0


def compliant_verdict(report: Report) -> Verdict:
    if report.fatal:
        return Verdict(
            COMPLIANT, "Unknown", "CheckFailed", f"the check could not run: {report.fatal}"
        )
    if report.failing_musts:
        return Verdict(
            COMPLIANT,
            "False",
            "MustChecksFailing",
            f"MUST checks not passed: {', '.join(report.failing_musts)} (score {report.score}, "
            f"profile {report.profile})",
        )
    return Verdict(
        COMPLIANT,
        "True",
        "AllMustChecksPass",
        f"every MUST check passed (score {report.score}, profile {report.profile})",
    )


def compliance_status(report: Report) -> ComplianceStatus:
    return ComplianceStatus.model_validate(
        {
            "profile": report.profile,
            "score": report.score,
            "failingMust": report.failing_musts,
            "checks": [
                {"id": c.id, "level": str(c.level), "result": str(c.result), "message": c.message}
                for c in report.checks
            ],
            "lastChecked": report.started,
        }
    )


@dataclass(frozen=True)
class StatusChange:
    """What to merge into the status (None: nothing), and whether to warn."""

    patch: dict[str, Any] | None
    became_noncompliant: bool
    verdict: Verdict
    # A probe could not complete (a refused, timed-out or rate-limited connection): the next
    # check comes within INCOMPLETE_RETRY_SECONDS rather than after the interval.
    incomplete: bool = False


def decide(
    current: MailDomainStatus,
    report: Report,
    *,
    generation: int,
    now: datetime,
    heartbeat_seconds: float,
) -> StatusChange:
    """The status write a finished check calls for; pure, so that it is unit-tested."""
    verdict = compliant_verdict(report)
    before = find(current.conditions, COMPLIANT)
    conditions = apply_verdicts(current.conditions, [verdict], generation=generation, now=now)
    after = find(conditions, COMPLIANT)
    new = compliance_status(report)
    old = current.compliance
    same_results = old is not None and old.model_dump(exclude={"last_checked"}) == new.model_dump(
        exclude={"last_checked"}
    )
    same_condition = before is not None and after is not None and before == after
    heartbeat_due = old is None or (now - old.last_checked).total_seconds() >= heartbeat_seconds
    became_noncompliant = verdict.status == "False" and (before is None or before.status != "False")
    incomplete = any(c.result is Result.ERROR for c in report.checks)
    if same_results and same_condition and not heartbeat_due:
        return StatusChange(None, False, verdict, incomplete)
    # Only what the daemon owns: the reconcile handler's conditions are not its to write.
    patch = compliance_view(
        {
            "compliance": new.model_dump(mode="json", by_alias=True),
            "conditions": [c.model_dump(mode="json", by_alias=True) for c in conditions],
        }
    )
    return StatusChange(patch, became_noncompliant, verdict, incomplete)


@dataclass
class ComplianceRunner:
    """Checks one domain when the scheduler says so (handlers.py: one job per selected
    MailDomain, every `spec.compliance.interval`, spread over the interval by its uid)."""

    settings: ComplianceSettings
    writer: StatusWriter
    events: EventPoster
    _limit: asyncio.Semaphore | None = None
    # MX endpoints (a MailServer's hosts) probed once per interval for every domain they serve.
    endpoint_probes: EndpointProbes = field(default_factory=EndpointProbes)

    @property
    def limit(self) -> asyncio.Semaphore:
        # Created lazily: it must belong to the operator's event loop.
        if self._limit is None:
            self._limit = asyncio.Semaphore(max(1, self.settings.concurrency))
        return self._limit

    async def check_once(self, body: Mapping[str, Any], logger: _Logger) -> StatusChange | None:
        meta = body.get("metadata", {})
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        generation = int(meta.get("generation") or 0)
        try:
            spec = parse_spec(body.get("spec", {}))
        except InvalidSpec:
            return None  # the reconcile handler reports it; nothing to probe
        report = await check_domain(
            spec.domain,
            resolver=self.settings.resolver,
            port=self.settings.resolver_port,
            profile=spec.compliance.profile,
            cafile=self.settings.cafile,
            limit=self.limit,
            shared=self.endpoint_probes,
            # The scheduler starts a domain's next check at least half an interval after the
            # last: below that, a check never reuses its own last probe, while the domains of
            # one fleet checked within the window share one.
            shared_max_age=0.4 * parse_duration(spec.compliance.interval),
        )
        metrics.record(namespace, name, report)
        current = parse_status(body.get("status"))
        change = decide(
            current,
            report,
            generation=generation,
            now=utcnow(),
            heartbeat_seconds=self.settings.heartbeat_seconds,
        )
        logger.info(
            "compliance of %s: %s (%.1fs)%s",
            spec.domain,
            change.verdict.message,
            report.duration_seconds,
            "" if change.patch else "; unchanged, status not written",
        )
        if change.patch is not None:
            await self.writer.apply_status(namespace, name, change.patch, field_manager=COMPLIANCE)
        if change.became_noncompliant:
            await self.events.post(body, "Warning", "NonCompliant", change.verdict.message)
        return change

    async def check(self, body: Mapping[str, Any], logger: _Logger) -> float | None:
        """One scheduled check of the object as it is now; the seconds after which it should be
        checked again sooner than its interval (a check whose probes did not all complete, a
        domain not reconciled yet), or None."""
        if not reconciled(body):
            # Judge a new domain on what the operator published for it, not half set up.
            return NOT_RECONCILED_RETRY_SECONDS
        meta = body.get("metadata", {})
        try:
            change = await self.check_once(body, logger)
        except Exception as error:  # one domain's trouble must not end its schedule
            logger.warning(
                "compliance check of %s/%s failed: %s",
                meta.get("namespace"),
                meta.get("name"),
                error,
            )
            return INCOMPLETE_RETRY_SECONDS
        if change is not None and change.incomplete:
            return INCOMPLETE_RETRY_SECONDS
        return None

    def forget(self, namespace: str, name: str) -> None:
        metrics.forget(namespace, name)


def due_now(status: MailDomainStatus, generation: int, records_changed: bool) -> bool:
    """Whether a reconcile pass calls for a check at once rather than at the next interval: the
    spec changed since the last check, or what the world sees of the domain did."""
    if records_changed:
        return True
    compliant = find(status.conditions, COMPLIANT)
    return compliant is None or compliant.observed_generation != generation


def reconciled(body: Mapping[str, Any]) -> bool:
    """Whether the reconcile handler finished a pass over the object's current generation."""
    generation = body.get("metadata", {}).get("generation")
    ready = find(parse_status(body.get("status")).conditions, READY)
    return ready is not None and generation is not None and ready.observed_generation == generation


class CompliancePart:
    """Runs last: keeps the domain's check on the schedule (`track`, domains.py), and asks for
    one at once when the spec or the published records changed."""

    name = "compliance"
    condition = COMPLIANT

    def __init__(
        self, runner: ComplianceRunner, track: Callable[[ReconcileContext, bool], None]
    ) -> None:
        self._runner = runner
        self._track = track

    async def reconcile(self, ctx: ReconcileContext) -> PartResult:
        self._track(ctx, due_now(ctx.status, ctx.generation, ctx.findings.records_changed))
        return PartResult([])

    async def release(self, ctx: ReconcileContext) -> None:
        self._runner.forget(ctx.namespace, ctx.name)
