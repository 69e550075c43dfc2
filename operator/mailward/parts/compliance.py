"""The compliance part: every MailDomain probed from outside, the verdict on the resource.

Probing a domain takes seconds to minutes (dozens of TLS handshakes per MX), so it does not run
inside the reconcile pass that decides `Ready`. A kopf daemon per MailDomain (`handlers.py`)
runs `ComplianceRunner.run`: check, write `status.compliance` and the `Compliant` condition if
something changed, sleep `spec.compliance.interval` with ±10 % jitter (so a hundred domains
created together do not probe together forever), repeat. The part's `reconcile` only wakes that
loop when the spec changed, which gives the immediate check after an edit. `Compliant` does not
feed `Ready`: a domain can be reconciled and still fail an outside check (an expired
certificate, a zone edited by hand), and the two questions have different audiences.

Concurrency is bounded for the whole process by one semaphore on network probes
(MAILWARD_COMPLIANCE_CONCURRENCY, default 8), shared by all domains.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

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
from mailward.parts import RECORDS_CHANGED, Event, PartResult, ReconcileContext
from mailward.reconcile import InvalidSpec, parse_spec

_Logger = logging.Logger | logging.LoggerAdapter[Any]
JITTER = 0.1
# A check whose probes could not all complete is repeated this soon (with the same jitter):
# MX hosts that serve many domains rate-limit a prober that checks all of them at once.
INCOMPLETE_RETRY_SECONDS = 300.0
# A newly created domain is probed after a short random delay, not all at once.
FIRST_CHECK_MAX_DELAY = 5.0


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
class ComplianceSettings:
    resolver: str
    resolver_port: int = 53
    cafile: str | None = None
    concurrency: int = 8
    heartbeat_seconds: float = 6 * 3600
    # Only objects carrying this label (key=value) are probed; empty: every MailDomain.
    label_selector: str = ""

    def selects(self, labels: Mapping[str, str]) -> bool:
        if not self.label_selector:
            return True
        key, _, value = self.label_selector.partition("=")
        return labels.get(key.strip()) == value.strip()

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> ComplianceSettings:
        env = os.environ if env is None else env
        resolver = (
            env.get("MAILWARD_COMPLIANCE_RESOLVER")
            or env.get("MAILWARD_RESOLVER")
            or _system_resolver()
            or "127.0.0.1"
        )
        address, port = resolver, 53
        if resolver.count(":") == 1:
            address, _, port_text = resolver.partition(":")
            port = int(port_text)
        return cls(
            resolver=address,
            resolver_port=port,
            cafile=env.get("MAILWARD_COMPLIANCE_CA_FILE") or env.get("MAILWARD_CA_FILE") or None,
            concurrency=int(env.get("MAILWARD_COMPLIANCE_CONCURRENCY", "8")),
            heartbeat_seconds=float(env.get("MAILWARD_COMPLIANCE_HEARTBEAT_SECONDS", "21600")),
            label_selector=env.get("MAILWARD_COMPLIANCE_LABEL_SELECTOR", ""),
        )


def _system_resolver() -> str | None:
    try:
        with open("/etc/resolv.conf") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    return parts[1]
    except OSError:
        return None
    return None


@dataclass
class ComplianceRunner:
    settings: ComplianceSettings
    writer: StatusWriter
    post_event: Any  # callable(body, type, reason, message)
    _limit: asyncio.Semaphore | None = None
    _wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    _generations: dict[str, int] = field(default_factory=dict)
    # MX endpoints (a MailServer's hosts) probed once per interval for every domain they serve.
    endpoint_probes: EndpointProbes = field(default_factory=EndpointProbes)

    @property
    def limit(self) -> asyncio.Semaphore:
        # Created lazily: it must belong to the operator's event loop.
        if self._limit is None:
            self._limit = asyncio.Semaphore(max(1, self.settings.concurrency))
        return self._limit

    def wake(self, uid: str, generation: int, *, force: bool = False) -> None:
        """Check now if the spec changed since the last check of this object (or `force`)."""
        if not force and self._generations.get(uid) == generation:
            return
        self._wakeups.setdefault(uid, asyncio.Event()).set()

    def forget(self, uid: str) -> None:
        self._wakeups.pop(uid, None)
        self._generations.pop(uid, None)

    async def check_once(self, body: Mapping[str, Any], logger: _Logger) -> StatusChange | None:
        meta = body.get("metadata", {})
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        generation = int(meta.get("generation") or 0)
        uid = str(meta.get("uid", ""))
        try:
            spec = parse_spec(body.get("spec", {}))
        except InvalidSpec:
            return None  # the reconcile handler reports it; nothing to probe
        self._generations[uid] = generation
        report = await check_domain(
            spec.domain,
            resolver=self.settings.resolver,
            port=self.settings.resolver_port,
            profile=spec.compliance.profile,
            cafile=self.settings.cafile,
            limit=self.limit,
            shared=self.endpoint_probes,
            # Below the domain's own interval: its next check never reuses its own last probe.
            shared_max_age=0.9 * parse_duration(spec.compliance.interval),
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
            self.post_event(body, "Warning", "NonCompliant", change.verdict.message)
        return change

    async def run(self, body: Mapping[str, Any], stopped: Any, logger: _Logger) -> None:
        """The daemon's loop; `body` is kopf's live view of the object."""
        metrics.serve_from_environment()
        meta = body.get("metadata", {})
        uid = str(meta.get("uid", ""))
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        wakeup = self._wakeups.setdefault(uid, asyncio.Event())
        delay = random.uniform(0, FIRST_CHECK_MAX_DELAY)
        try:
            # Judge a new domain on what the operator published for it, not half set up: its
            # first probe waits for the reconcile handler's first pass (at most one interval).
            deadline = time.monotonic() + _interval_seconds(body)
            # kopf updates `body` in place from its watch and offers no event to wait on.
            while not stopped and not reconciled(body) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
            while not stopped:
                await self._sleep(delay, wakeup, stopped)
                if stopped:
                    break
                wakeup.clear()
                started = time.monotonic()
                change = None
                try:
                    change = await self.check_once(body, logger)
                except Exception as error:  # one domain's trouble must not end its loop
                    logger.warning("compliance check of %s/%s failed: %s", namespace, name, error)
                interval = _interval_seconds(body)
                if change is not None and change.incomplete:
                    interval = min(interval, INCOMPLETE_RETRY_SECONDS)
                elapsed = time.monotonic() - started
                delay = max(0.0, interval * random.uniform(1 - JITTER, 1 + JITTER) - elapsed)
        finally:
            metrics.forget(namespace, name)
            self.forget(uid)

    @staticmethod
    async def _sleep(seconds: float, wakeup: asyncio.Event, stopped: Any) -> None:
        deadline = time.monotonic() + seconds
        while not stopped and not wakeup.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(1.0, remaining))


def reconciled(body: Mapping[str, Any]) -> bool:
    """Whether the reconcile handler finished a pass over the object's current generation."""
    generation = body.get("metadata", {}).get("generation")
    ready = find(parse_status(body.get("status")).conditions, READY)
    return ready is not None and generation is not None and ready.observed_generation == generation


def _interval_seconds(body: Mapping[str, Any]) -> float:
    try:
        return parse_duration(str(body["spec"]["compliance"]["interval"]))
    except (KeyError, TypeError, ValueError):
        return 3600.0


class CompliancePart:
    """Runs last; asks the daemon for an immediate check when the spec changed."""

    name = "compliance"

    def __init__(self, runner: ComplianceRunner) -> None:
        self._runner = runner

    async def reconcile(self, ctx: ReconcileContext) -> PartResult:
        # Only a daemon's loop listens; for an object it does not select, the event just waits.
        # A part that changed what is published outside (DNS records) says so in the facts.
        self._runner.wake(ctx.uid, ctx.generation, force=bool(ctx.facts.get(RECORDS_CHANGED)))
        return PartResult([], events=list[Event]())

    async def release(self, ctx: ReconcileContext) -> None:
        metrics.forget(ctx.namespace, ctx.name)
        self._runner.forget(ctx.uid)


def _kopf_event(body: Mapping[str, Any], type: str, reason: str, message: str) -> None:
    import kopf

    kopf.event(cast(kopf.Body, body), type=type, reason=reason, message=message)


_runner: ComplianceRunner | None = None


def compliance_runner() -> ComplianceRunner:
    """The process-wide runner: one probe semaphore and one wake-up table for all domains."""
    global _runner
    if _runner is None:
        from mailward.adapters.status_writer import KubeStatusWriter

        _runner = ComplianceRunner(
            ComplianceSettings.from_environment(), KubeStatusWriter(), _kopf_event
        )
    return _runner


def compliance_selected(labels: Mapping[str, str], **_: Any) -> bool:
    """kopf `when=` filter of the compliance daemon."""
    return compliance_runner().settings.selects(labels)


def compliance_part_from_env() -> CompliancePart:
    return CompliancePart(compliance_runner())
