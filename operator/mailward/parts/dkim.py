"""The DKIM part: managed keys generated, published, signing and rotated (`spec.dkim`).

Every pass:
1. reads the MailDomain's DKIM Secret (adapters/dkim_keys.py): the private keys and the
   rotation record (each selector's phase and since when);
2. asks the validating resolver which of the published selectors it returns, validated and
   with the right key (adapters/dkim_resolver.py);
3. lets the rotation (dkim/machine.py) decide, generates the keys it asks for, and writes the
   Secret if anything changed (a private key leaves it when its key is withdrawn);
4. hands on what the later parts need: the records to publish, by adding the keys in DNS to
   `ctx.spec.dns.dkim` for this pass (beside keys pasted there, which stay as they were), and
   the Active keys the MTA signs with (`ctx.findings.dkim_signing`).

It runs before the MTA and DNS parts. Without `spec.dkim.managed` and with no managed key left,
it says nothing (no condition); turning `managed` off retires the keys like a rotation does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from mailward.adapters.dkim_keys import DKIMKeyState, DKIMKeyStore
from mailward.adapters.dkim_resolver import DKIMResolver
from mailward.api.base import parse_duration
from mailward.api.dkim import (
    MAXIMAL_QUEUE_LIFETIME_SECONDS,
    DKIMSelectorStatus,
    DKIMStatus,
    KeyType,
)
from mailward.api.v1alpha1 import DKIMKey, MailDomainSpec
from mailward.conditions import Verdict
from mailward.dkim import keys as dkim_keys
from mailward.dkim.machine import Decision, ManagedKey, Timing, in_dns, published, step
from mailward.owner import Owner
from mailward.parts import Event, PartResult, ReconcileContext
from mailward.render.dkim import DKIMSigning, SigningKey, secret_name

DKIM_READY = "DKIMReady"
# While a Published key waits for the resolver, look again this often (the DNS part publishes
# in the same pass; the resolver sees it once its negative cache entry, if any, expires).
POLL_SECONDS = 10.0
# The longest the part sleeps on the clock alone: a resync comes sooner anyway.
MAX_SLEEP_SECONDS = 3600.0

log = logging.getLogger("mailward.dkim")

ResolverFactory = Callable[[], DKIMResolver | None]


def timing_for(spec: MailDomainSpec) -> Timing:
    ttl = spec.dns.ttl.default if spec.dns else 3600
    retire = spec.dkim.retire_after
    return Timing(
        rotate_after=parse_duration(spec.dkim.rotate_after),
        retire_after=(
            parse_duration(retire) if retire is not None else MAXIMAL_QUEUE_LIFETIME_SECONDS + ttl
        ),
    )


def with_records(
    spec: MailDomainSpec, keys: tuple[ManagedKey, ...], publics: dict[str, str]
) -> MailDomainSpec:
    """The spec as the DNS part should publish it in this pass: the managed keys in DNS added to
    `spec.dns.dkim` (a selector pasted there by hand wins)."""
    if spec.dns is None:
        return spec
    pasted = {k.selector for k in spec.dns.dkim}
    managed = [
        DKIMKey(selector=k.selector, key_type=k.algorithm, public_key=publics[k.selector])
        for k in in_dns(keys)
        if k.selector not in pasted and k.selector in publics
    ]
    if not managed:
        return spec
    dns = spec.dns.model_copy(update={"dkim": [*spec.dns.dkim, *managed]})
    return spec.model_copy(update={"dns": dns})


def status_of(keys: tuple[ManagedKey, ...]) -> DKIMStatus:
    return DKIMStatus(
        selectors=[
            DKIMSelectorStatus(
                selector=k.selector, algorithm=k.algorithm, phase=k.phase, since=k.since
            )
            for k in sorted(keys, key=lambda k: (k.algorithm, k.since, k.selector))
        ][:16]
    )


class DKIMPart:
    name = "dkim"
    condition = DKIM_READY

    def __init__(
        self,
        store: DKIMKeyStore,
        resolver: ResolverFactory,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._resolver = resolver
        self._clock = clock

    async def reconcile(self, ctx: ReconcileContext) -> PartResult:
        spec = ctx.spec
        name = secret_name(ctx.name)
        if not spec.dkim.managed and ctx.status.dkim is None:
            return PartResult([], status={"dkim": None})
        if spec.dns is None:
            verdict = Verdict(
                DKIM_READY,
                "False",
                "NoDNSProvider",
                "spec.dkim.managed needs spec.dns: the keys' records must be published before "
                "they may sign",
                stalled=True,
            )
            return PartResult([verdict], status={"dkim": None})
        now = self._clock()
        state = await self._store.read(ctx.namespace, name)
        publics = {
            s: dkim_keys.public_of(_algorithm(state, s), p) for s, p in state.private.items()
        }
        wanted = spec.dkim.key_types if spec.dkim.managed else []
        visible = await self._visible(ctx, state, publics, wanted)
        decision = step(state.keys, wanted, visible, timing_for(spec), now)
        keys, private = list(decision.keys), dict(state.private)
        for algorithm in decision.generate:
            pair = dkim_keys.generate(algorithm)
            selector = dkim_keys.new_selector(algorithm, now, {k.selector for k in keys})
            keys.append(published(selector, algorithm, now))
            private[selector], publics[selector] = pair.private, pair.public
            decision.happened.append(f"{selector} ({algorithm}) generated and published")
        kept = {k.selector for k in in_dns(keys)}
        private = {s: p for s, p in private.items() if s in kept}
        new_state = DKIMKeyState(
            state.found, state.resource_version, tuple(keys), private, state.damaged
        )
        if (new_state.keys, new_state.private) != (state.keys, state.private):
            owner = Owner(ctx.namespace, ctx.name, ctx.uid).reference()
            await self._store.write(ctx.namespace, name, owner, new_state)
        if not spec.dkim.managed and not new_state.keys:
            return PartResult([], status={"dkim": None})  # every key withdrawn and gone
        ctx.spec = with_records(spec, new_state.keys, publics)
        # A key whose private half is missing (a Secret edited by hand) cannot sign.
        active = [
            k for k in new_state.keys if k.phase == "Active" and k.selector in new_state.private
        ]
        if active:
            signing = tuple(SigningKey(spec.domain, k.selector, k.algorithm) for k in active)
            ctx.findings.dkim_signing = DKIMSigning(name, signing)
        events = [Event("Normal", "DKIMRotation", what) for what in decision.happened]
        if state.damaged:
            # The record was unreadable: the rotation started afresh with new keys.
            events.append(
                Event("Warning", "DKIMRecordUnreadable", f"Secret {name}: {state.damaged}")
            )
        for what in decision.happened:
            log.info("%s/%s: %s", ctx.namespace, ctx.name, what)
        status = status_of(new_state.keys).model_dump(mode="json", by_alias=True)
        verdict, retry = self._verdict(decision, new_state.keys, wanted, visible, now)
        return PartResult([verdict], status={"dkim": status}, retry_after=retry, events=events)

    async def _visible(
        self,
        ctx: ReconcileContext,
        state: DKIMKeyState,
        publics: dict[str, str],
        wanted: Sequence[str],
    ) -> frozenset[str] | None:
        if {k.phase for k in state.keys} == {"Active"} and set(wanted) <= {
            k.algorithm for k in state.keys
        }:
            return None  # every wanted type signs and nothing waits on the resolver: not asked
        resolver = self._resolver()
        if resolver is None:
            return None
        # A withdrawn key's private half is gone: any record at its name keeps it listed.
        expected = {k.selector: publics.get(k.selector) for k in state.keys}
        return await resolver.visible(ctx.spec.domain, expected)

    @staticmethod
    def _verdict(
        decision: Decision,
        keys: tuple[ManagedKey, ...],
        wanted: Sequence[str],
        visible: frozenset[str] | None,
        now: datetime,
    ) -> tuple[Verdict, float | None]:
        active = {k.algorithm: k.selector for k in keys if k.phase == "Active"}
        waiting = [k.selector for k in keys if k.phase == "Published"]
        sleep = None
        if decision.next_transition is not None:
            sleep = min(
                MAX_SLEEP_SECONDS, max(1.0, (decision.next_transition - now).total_seconds())
            )
        if waiting or any(k.phase == "Withdrawn" for k in keys):
            sleep = min(sleep or POLL_SECONDS, POLL_SECONDS)
        missing = [t for t in wanted if t not in active]
        if missing:
            why = "the resolver could not be asked" if visible is None else "not returned yet"
            message = (
                f"no {', '.join(missing)} key signs yet: waiting for the validating resolver to "
                f"return {', '.join(waiting) or 'the new records'} ({why})"
            )
            return Verdict(DKIM_READY, "Unknown", "WaitingForResolver", message), sleep
        signing = ", ".join(f"{s} ({t})" for t, s in sorted(active.items())) or "nothing"
        return Verdict(DKIM_READY, "True", "Signing", f"signing with {signing}"), sleep

    async def release(self, ctx: ReconcileContext) -> None:
        """The Secret carries an owner reference (the garbage collector removes it); the
        records go with the DNS part's release."""


def _algorithm(state: DKIMKeyState, selector: str) -> KeyType:
    return next(k.algorithm for k in state.keys if k.selector == selector)
