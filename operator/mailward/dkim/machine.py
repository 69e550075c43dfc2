"""The DKIM key rotation as a pure function: (the keys, what the resolver sees, now) → next step.

Every managed key has a selector of its own and goes through four phases, one key type
(Ed25519, RSA) independently of the other:

    Published ──seen by the validating resolver──▶ Active ──replaced──▶ Retiring
        ──retireAfter──▶ Withdrawn ──no longer seen──▶ (forgotten)

- Published: its record is in DNS, nothing is signed with it yet. It becomes Active only once
  the validating resolver returns the record (validated, with the right key), so a verifier
  never meets a signature whose key it cannot find.
- Active: the MTA signs with it (one Active key per type). After `rotate_after` a new key of
  the type is generated (Published); when that one is seen, it takes over and this one retires
  in the same step, so signing never pauses.
- Retiring: no longer signing, still published for `retire_after`, the longest time a message
  signed with it may take to reach its verifier (the queue lifetime plus the record's TTL).
- Withdrawn: the record is removed from DNS (and the private key from the Secret); the key is
  forgotten once the resolver no longer returns the record.

Nothing here talks to the network or generates keys: the part passes what the resolver saw and
generates the keys `Decision.generate` asks for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from mailward.api.dkim import KeyType, SelectorPhase


class ManagedKey(BaseModel):
    """One key as the rotation records it (the private key is kept beside it, by selector)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    selector: str
    algorithm: KeyType
    phase: SelectorPhase
    since: datetime


@dataclass(frozen=True)
class Timing:
    rotate_after: float
    retire_after: float


@dataclass(frozen=True)
class Decision:
    keys: tuple[ManagedKey, ...]
    # Key types of which a new key must be generated and added as Published (`published`).
    generate: tuple[KeyType, ...]
    # When the next step is due by the clock alone; None: it waits on the resolver.
    next_transition: datetime | None
    # Said once, in an Event, by the part.
    happened: list[str] = field(default_factory=list)

    def active(self) -> dict[KeyType, ManagedKey]:
        return {k.algorithm: k for k in self.keys if k.phase == "Active"}

    def waiting(self) -> list[ManagedKey]:
        """Published keys the resolver does not return yet."""
        return [k for k in self.keys if k.phase == "Published"]


def published(selector: str, algorithm: KeyType, now: datetime) -> ManagedKey:
    return ManagedKey(selector=selector, algorithm=algorithm, phase="Published", since=now)


def in_dns(keys: Iterable[ManagedKey]) -> list[ManagedKey]:
    """The keys whose records must be published: every phase but Withdrawn."""
    return [k for k in keys if k.phase != "Withdrawn"]


def _moved(key: ManagedKey, phase: SelectorPhase, now: datetime) -> ManagedKey:
    return key.model_copy(update={"phase": phase, "since": now})


def step(
    keys: Sequence[ManagedKey],
    wanted: Sequence[KeyType],
    visible: frozenset[str] | None,
    timing: Timing,
    now: datetime,
) -> Decision:
    """One reconcile's worth of rotation. `visible`: the selectors whose record the validating
    resolver returns with the right key; None when it could not be asked (no gated step)."""
    happened: list[str] = []
    result: list[ManagedKey] = []
    generate: list[KeyType] = []
    due: list[datetime] = []
    retire_after = timedelta(seconds=timing.retire_after)
    rotate_after = timedelta(seconds=timing.rotate_after)
    for algorithm in sorted({k.algorithm for k in keys} | set(wanted)):
        of_type = [k for k in keys if k.algorithm == algorithm]
        current = _type_step(of_type, algorithm in wanted, visible, now, happened)
        for key in current:
            if key.phase == "Retiring":
                if now >= key.since + retire_after:
                    key = _moved(key, "Withdrawn", now)
                    happened.append(f"{key.selector} ({algorithm}) withdrawn")
                else:
                    due.append(key.since + retire_after)
            if key.phase == "Withdrawn" and visible is not None and key.selector not in visible:
                continue  # gone from DNS as the resolver sees it: forgotten
            result.append(key)
        if algorithm not in wanted:
            continue
        active = [k for k in current if k.phase == "Active"]
        pending = [k for k in current if k.phase == "Published"]
        if pending:
            continue
        if not active:
            generate.append(algorithm)
        elif now >= active[0].since + rotate_after:
            generate.append(algorithm)
            happened.append(f"{active[0].selector} ({algorithm}) is due for rotation")
        else:
            due.append(active[0].since + rotate_after)
    return Decision(tuple(result), tuple(generate), min(due) if due else None, happened)


def _type_step(
    keys: list[ManagedKey],
    wanted: bool,
    visible: frozenset[str] | None,
    now: datetime,
    happened: list[str],
) -> list[ManagedKey]:
    """The gated changes of one key type: a Published key the resolver returns takes over."""
    if not wanted:
        # The type is no longer signed with: its keys leave as a replaced key does.
        out = []
        for key in keys:
            if key.phase == "Active":
                key = _moved(key, "Retiring", now)
                happened.append(f"{key.selector} ({key.algorithm}) retiring: type not wanted")
            elif key.phase == "Published":
                key = _moved(key, "Withdrawn", now)
                happened.append(f"{key.selector} ({key.algorithm}) withdrawn: never signed")
            out.append(key)
        return out
    seen = [k for k in keys if k.phase == "Published" and visible and k.selector in visible]
    if not seen:
        return list(keys)
    newest = max(seen, key=lambda k: (k.since, k.selector))
    out = []
    for key in keys:
        if key.selector == newest.selector:
            key = _moved(key, "Active", now)
            happened.append(f"{key.selector} ({key.algorithm}) signing: the resolver returns it")
        elif key.phase == "Active":
            key = _moved(key, "Retiring", now)
            happened.append(f"{key.selector} ({key.algorithm}) retiring: replaced")
        elif key.phase == "Published":
            key = _moved(key, "Withdrawn", now)  # an older candidate, superseded
        out.append(key)
    return out
