"""A MailDomain's reconcile pass, and its periodic work on the operator's one scheduler.

The kopf handlers (handlers.py) call `reconcile` when the object changes; the scheduler calls it
again every resync interval (DNS drifts without any change to the object) and after a part
asked to look again, and runs the compliance checks. Retries live in memory, in the scheduler:
nothing is written to the object for them (a kopf TemporaryError writes an annotation after
every sleep).

Each part's failure is contained: an exception that escapes `part.reconcile` becomes a False
verdict on that part's condition naming the exception, a Warning Event and a retry with backoff;
the other parts run and the status is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from mailward.adapters.events import EventPoster
from mailward.adapters.observed import ObjectRef
from mailward.adapters.status_writer import RECONCILER, StatusWriter
from mailward.api.v1alpha1 import KIND, MailDomainStatus, parse_duration
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
from mailward.owner import Owner
from mailward.parts import (
    Event,
    HoldsRelease,
    Part,
    PartResult,
    ReconcileContext,
    ReleasePending,
)
from mailward.parts.backoff import Backoff
from mailward.parts.compliance import ComplianceRunner
from mailward.reconcile import (
    PART_FAILED,
    InvalidSpec,
    invalid_spec_verdicts,
    parse_spec,
    settled_verdicts,
)
from mailward.scheduler import JobKey, JobKind, ObjectKey, Scheduler

log = logging.getLogger("mailward.domains")

Body = Mapping[str, Any]

RESYNC = JobKind("resync", concurrency=8)
# A contained failure is retried after this, doubling up to the maximum.
FAILED_PART_RETRY_SECONDS = 5.0
FAILED_PART_RETRY_MAX_SECONDS = 300.0
# A deletion waiting for an MTA-STS withdrawal looks again at least this often, so that a
# shorter spec.mtaSts.agingSeconds set on the deleting object takes effect within it.
RELEASE_HOLD_RECHECK_SECONDS = 300.0


class MailDomainReader(Protocol):
    async def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class OnePassAtATime:
    """The kopf change handlers and the scheduler's resync can both start a pass over one
    object; the parts' writes (the rollover's Secret, DNS) must not overlap. One lock per
    object, kept only while a pass holds or waits for it."""

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


@dataclass(frozen=True)
class PassOutcome:
    results: list[PartResult]
    verdicts: list[Verdict]
    # Seconds until the pass should run again (the earliest retry a part asked for).
    retry_after: float | None


async def run_parts(parts: list[Part], ctx: ReconcileContext, failures: Backoff) -> PassOutcome:
    """Every part in order, each one's failure contained; a part that says `blocking` (later
    parts depend on what it could not do) ends the pass."""
    results: list[PartResult] = []
    for part in parts:
        try:
            result = await part.reconcile(ctx)
        except Exception as error:
            log.exception("%s/%s: the %s part failed", ctx.namespace, ctx.name, part.name)
            result = failed_part(part, error, failures.next(f"{ctx.uid}/{part.name}"))
        else:
            failures.reset(f"{ctx.uid}/{part.name}")
        results.append(result)
        if result.blocking:
            break
    verdicts = [v for r in results for v in r.verdicts]
    delays = [r.retry_after for r in results if r.retry_after is not None]
    return PassOutcome(results, verdicts, min(delays) if delays else None)


def failed_part(part: Part, error: Exception, retry_after: float) -> PartResult:
    what = f"{type(error).__name__}: {error}"[:400]
    message = f"the {part.name} part failed: {what}; retrying in {retry_after:.0f}s"
    return PartResult(
        [Verdict(part.condition, "False", PART_FAILED, message)],
        retry_after=retry_after,
        events=[Event("Warning", PART_FAILED, message)],
    )


class DomainReconciler:
    def __init__(
        self,
        parts: list[Part],
        status_writer: StatusWriter,
        reader: MailDomainReader,
        compliance: ComplianceRunner,
        scheduler: Scheduler,
        events: EventPoster,
        *,
        resync_seconds: float,
        concurrency: int,
        compliance_concurrency: int,
        selects_for_compliance: Callable[[Mapping[str, str]], bool],
    ) -> None:
        self._parts = parts
        self._writer = status_writer
        self._reader = reader
        self._compliance = compliance
        self._scheduler = scheduler
        self._events = events
        self._resync_seconds = resync_seconds
        self._check = JobKind("compliance", concurrency=max(1, compliance_concurrency))
        self._selects = selects_for_compliance
        self._passes = OnePassAtATime()
        # Passes at once: a start resumes every MailDomain together; unbounded, thousands of
        # passes would share the event loop and the API server's attention at once.
        self._slots = asyncio.Semaphore(concurrency)
        self._failures = Backoff(FAILED_PART_RETRY_SECONDS, FAILED_PART_RETRY_MAX_SECONDS)

    # -- what kopf calls ------------------------------------------------------------------------

    async def reconcile(self, body: Body) -> None:
        """One pass over the object as `body` shows it; the status written if it changed."""
        await self._pass(body)

    async def _pass(
        self, body: Body, deleting_since: datetime | None = None
    ) -> ReconcileContext | None:
        """One pass; its context (what the parts found), or None when the spec is invalid."""
        meta = body.get("metadata", {})
        key = object_key(body)
        generation = int(meta.get("generation") or 0)
        current = parse_status(body.get("status"))
        self._scheduler.every(JobKey(RESYNC, key), self._resync_seconds, self._resync)
        try:
            model = parse_spec(body.get("spec") or {})
        except InvalidSpec as error:
            verdicts = invalid_spec_verdicts(str(error))
            if await self._write(key, current, _status_after(current, verdicts, {}, generation)):
                await self._events.post(body, "Warning", "InvalidSpec", str(error))
            return None
        if current.observed_generation != generation:
            began = _status_after(
                current, started_verdicts(current.conditions, generation), {}, generation
            )
            await self._write(key, current, began)
            current = began
        ctx = ReconcileContext(
            name=key.name,
            namespace=key.namespace,
            uid=key.uid,
            generation=generation,
            spec=model,
            status=current,
            deleting_since=deleting_since,
        )
        async with self._passes.of(key.uid), self._slots:
            outcome = await run_parts(self._parts, ctx, self._failures)
        owned = {k: v for r in outcome.results for k, v in r.status.items()}
        verdicts = settled_verdicts(ctx.spec, outcome.verdicts)
        await self._write(key, current, _status_after(current, verdicts, owned, generation))
        for result in outcome.results:
            for event in result.events:
                await self._events.post(body, event.type, event.reason, event.message)
        if outcome.retry_after is not None and outcome.retry_after < self._resync_seconds:
            waiting = [f"{v.type}: {v.message}" for v in outcome.verdicts if v.status != "True"]
            log.info(
                "%s/%s: again in %.0fs: %s",
                key.namespace,
                key.name,
                outcome.retry_after,
                "; ".join(waiting) or "a part asked",
            )
            self._scheduler.schedule(JobKey(RESYNC, key), time.monotonic() + outcome.retry_after)
        return ctx

    async def release(self, body: Body) -> None:
        """Release what the MailDomain owns outside the cluster, last part first. A part that
        cannot release yet raises ReleasePending (kopf retries the deletion)."""
        key = object_key(body)
        try:
            model = parse_spec(body.get("spec") or {})
        except InvalidSpec:
            self._scheduler.forget_object(key)
            return  # never reconciled, so nothing was created
        deleting = body.get("metadata", {}).get("deletionTimestamp")
        ctx = ReconcileContext(
            name=key.name,
            namespace=key.namespace,
            uid=key.uid,
            generation=int(body.get("metadata", {}).get("generation") or 0),
            spec=model,
            status=parse_status(body.get("status")),
            deleting_since=datetime.fromisoformat(deleting) if deleting else None,
        )
        holding = [
            p for p in self._parts if isinstance(p, HoldsRelease) and p.holds_release(ctx.status)
        ]
        if holding:
            # A served MTA-STS policy is withdrawn first (RFC 8461 §8.3): passes go on, serving
            # `mode: none` and announcing it, until the withdrawal aged; then the parts release.
            passed = await self._pass(body, deleting_since=ctx.deleting_since)
            hold = passed.findings.release_hold if passed is not None else None
            if hold is None:  # the pass stopped before the part: the bound still holds
                hold = holding[0].deletion_hold(ctx)
            if hold.delay > 0:
                raise ReleasePending(hold.message, min(hold.delay, RELEASE_HOLD_RECHECK_SECONDS))
        try:
            async with self._passes.of(key.uid):
                for part in reversed(self._parts):
                    await part.release(ctx)
            self._scheduler.forget_object(key)
        finally:
            for event in ctx.release_events:
                await self._events.post(body, event.type, event.reason, event.message)

    def track_compliance(self, ctx: ReconcileContext, now: bool) -> None:
        """Keep the domain's check on the schedule at its interval; `now`: check at once."""
        key = JobKey(self._check, ObjectKey(ctx.namespace, ctx.name, ctx.uid))
        interval = parse_duration(ctx.spec.compliance.interval)
        self._scheduler.every(key, interval, self._check_compliance)
        if now:
            self._scheduler.run_now(key)

    def repair(self, ref: ObjectRef, owners: tuple[Owner, ...]) -> None:
        """Someone deleted or edited an object a MailDomain's pass applies: that pass now."""
        for owner in owners:
            if owner.kind == KIND:
                obj = ObjectKey(owner.namespace, owner.name, owner.uid)
                self._scheduler.run_now(JobKey(RESYNC, obj))

    # -- what the scheduler runs ----------------------------------------------------------------

    async def _resync(self, key: JobKey) -> None:
        body = await self._reader.get(key.obj.namespace, key.obj.name)
        if body is None or _replaced(body, key) or body["metadata"].get("deletionTimestamp"):
            if body is None or _replaced(body, key):
                self._scheduler.forget_object(key.obj)
            return
        await self.reconcile(body)

    async def _check_compliance(self, key: JobKey) -> None:
        body = await self._reader.get(key.obj.namespace, key.obj.name)
        if body is None or _replaced(body, key):
            self._scheduler.forget(key)
            return
        if body["metadata"].get("deletionTimestamp"):
            return
        if not self._selects(body["metadata"].get("labels") or {}):
            return
        sooner = await self._compliance.check(body, log)
        if sooner is not None:
            self._scheduler.schedule(key, time.monotonic() + sooner)

    # -- status ---------------------------------------------------------------------------------

    async def _write(
        self, key: ObjectKey, current: MailDomainStatus, desired: MailDomainStatus
    ) -> bool:
        """Apply the reconciler's part of `desired` if it differs from `current`'s; True when
        Ready changed. `Compliant` and `status.compliance` are the compliance checks', written
        with their own field manager (adapters/status_writer.py), so they are left out here."""
        document = reconciler_view(status_document(desired))
        before_document = reconciler_view(status_document(current))
        if document == before_document:
            return False
        # What made this write: an operator that keeps writing says where it comes from.
        log.info(
            "%s/%s: status %s changed",
            key.namespace,
            key.name,
            ", ".join(changed_fields(before_document, document)),
        )
        await self._writer.apply_status(key.namespace, key.name, document, field_manager=RECONCILER)
        before, after = find(current.conditions, READY), find(desired.conditions, READY)
        if before is None or after is None:
            return True
        return (before.reason, before.message) != (after.reason, after.message)


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The top-level status fields that differ, conditions by type (`conditions[Ready]`)."""
    changed = []
    for name in sorted(set(before) | set(after)):
        if name == "conditions":
            old = {c.get("type"): c for c in before.get(name) or []}
            new = {c.get("type"): c for c in after.get(name) or []}
            for kind in sorted(set(old) | set(new), key=str):
                if old.get(kind) != new.get(kind):
                    changed.append(f"conditions[{kind}]")
        elif before.get(name) != after.get(name):
            changed.append(name)
    return changed


def object_key(body: Body) -> ObjectKey:
    meta = body.get("metadata", {})
    return ObjectKey(str(meta.get("namespace") or ""), str(meta.get("name")), str(meta.get("uid")))


def _replaced(body: Body, key: JobKey) -> bool:
    """The name now belongs to another object (deleted and created again)."""
    return str(body.get("metadata", {}).get("uid")) != key.obj.uid


def _status_after(
    current: MailDomainStatus, verdicts: list[Verdict], owned: dict[str, Any], generation: int
) -> MailDomainStatus:
    conditions = apply_verdicts(current.conditions, verdicts, generation=generation, now=utcnow())
    return MailDomainStatus.model_validate(
        {**status_document(current), **owned, "observedGeneration": generation}
    ).model_copy(update={"conditions": conditions})
