"""The TLSA rollover as a pure function: (what was recorded, what was observed, now) → next step.

Per MailDomain there is one record (`RolloverRecord`, kept with the keys in the serving Secret
so that a restart resumes where it was) of up to three keys:

- `current`: the key served now; its `3 1 1` record is always published;
- `next`: the key served after the next switch, published beside `current` long before it is
  used (RFC 7671 §8.1). cert-manager's issuer source generates it at once, so it ages for a whole
  certificate lifetime; a user-kept Secret offers it when someone puts a new key there;
- `previous`: the key served before the last switch, kept in DNS until every endpoint serves the
  new one and a grace period passed (so a rollback never breaks DANE either).

A switch happens only when `next` was seen on every authoritative server, with a valid RRSIG, at
least `2 x TTL_max + margin` ago, where TTL_max is the largest of the TLSA TTL, the TTLs seen
and the RRSIG's original TTL (RFC 4035 §5.3.3). Nothing here talks to the network: the part
gathers `Observation`s through the adapters and acts on the `Decision`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

Phase = Literal[
    "Publishing",  # the desired TLSA RRset is not yet on every authoritative server
    "Aging",  # the next key's record is published; waiting two TTLs before it may be served
    "Issuing",  # a switch is due and the next key has aged: waiting for its certificate
    "Verifying",  # switched: waiting until every endpoint presents the new key
    "Retiring",  # verified: the previous key's record stays for a grace period
    "RolledBack",  # the endpoints did not present the new key in time: the old one is served
    "Stable",  # nothing to do
]


class _Record(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class KeyEntry(_Record):
    spki_sha256: str
    # When an RRset holding this key's record was first seen on every authoritative server.
    published_at: datetime | None = None
    served_since: datetime | None = None


class RolloverRecord(_Record):
    current: KeyEntry | None = None
    next: KeyEntry | None = None
    previous: KeyEntry | None = None
    # Since when the desired RRset has been waiting to be seen everywhere (None: it is).
    publishing_since: datetime | None = None
    # The largest TTL (RRset or RRSIG original TTL) seen on the authoritative servers.
    ttl_max: int = 0
    switched_at: datetime | None = None
    verified_at: datetime | None = None
    rolled_back_at: datetime | None = None
    rollback_reason: str | None = None

    def digests(self) -> list[str]:
        return [e.spki_sha256 for e in (self.current, self.next, self.previous) if e is not None]


@dataclass(frozen=True)
class Timing:
    tlsa_ttl: int
    # Beyond two TTLs, for resolvers that cache a little longer than told and for clock skew.
    margin: float
    # How long a published RRset may take to reach every authoritative server before it is
    # reported as stuck (publishing goes on; nothing switches meanwhile).
    propagation_timeout: float
    # How long the endpoints may take to present a new key (Secret volume sync, reload).
    verify_timeout: float
    # How long the previous key's record stays after every endpoint presents the new key.
    retire_after: float
    # After a rollback, how long before the same switch is tried again.
    retry_after_rollback: float
    # False when DANE is off: no record pins a key, so a key can be served at once.
    gated: bool = True


@dataclass(frozen=True)
class Propagation:
    """What the authoritative servers serve, from the adapter (adapters/nameservers.py)."""

    # The TLSA digests every authoritative server serves for every MX host, identical
    # everywhere and validly signed; None when they disagree, lag or fail to validate.
    agreed: frozenset[str] | None
    ttl_max: int = 0
    # Which server lags or fails and why, for the status (None when `agreed` is set).
    problem: str | None = None


@dataclass(frozen=True)
class Observation:
    # The key the source offers as the next one (a user's new key; cert-manager's pre-made
    # next key), or None.
    offered_next: str | None
    # A switch to the next key is wanted: a user put a new key in the Secret, or a rotation is
    # due (interval, request).
    rotation_wanted: bool
    # The certificate for the next key is at hand (user source: always; issuer: once issued).
    next_certificate_ready: bool
    propagation: Propagation
    # The keys the MTA endpoints present (each endpoint's SPKI digest), None if not probed.
    presented: frozenset[str] | None = None


@dataclass(frozen=True)
class Decision:
    record: RolloverRecord
    phase: Phase
    # The digests the TLSA RRset of every MX host should hold.
    publish: tuple[str, ...]
    # Whether a rotation now would be safe, and why (the `RotationSafe` condition).
    safe: bool
    reason: str
    message: str
    # When the next step is due by the clock alone (the part's retry); None: waits on the world.
    next_transition: datetime | None = None
    # The part must obtain a certificate for the next key (issuer source).
    request_next_certificate: bool = False
    # Said once, in an Event, by the part (a switch, a rollback, a retirement).
    happened: list[str] = field(default_factory=list)


def aged_at(entry: KeyEntry, record: RolloverRecord, timing: Timing) -> datetime | None:
    """When `entry` may be served: two TTLs plus the margin after it was published."""
    if entry.published_at is None:
        return None
    ttl = max(timing.tlsa_ttl, record.ttl_max)
    return entry.published_at + timedelta(seconds=2 * ttl + timing.margin)


def _seconds(delta: float) -> timedelta:
    return timedelta(seconds=delta)


def step(record: RolloverRecord, seen: Observation, timing: Timing, now: datetime) -> Decision:
    """One reconcile's worth of the rollover; `record` must have a current key."""
    if record.current is None:
        raise ValueError("a rollover needs a current key")
    happened: list[str] = []
    rec = _take_offer(record, seen.offered_next)
    rec, verify_note = _verify(rec, seen.presented, timing, now)
    if verify_note:
        happened.append(verify_note)
    rec, retired = _retire(rec, timing, now)
    if retired:
        happened.append(retired)
    # After the key set changed: the RRset that must be seen everywhere is the new one.
    rec = _note_propagation(rec, seen.propagation, now, timing)
    if _may_switch(rec, seen, timing, now):
        if seen.next_certificate_ready:
            rec = _switch(rec, now)
            happened.append(_switched_note(rec))
        else:
            decision = _describe(rec, seen, timing, now)
            return Decision(
                rec,
                "Issuing",
                decision.publish,
                decision.safe,
                decision.reason,
                decision.message,
                None,
                request_next_certificate=True,
                happened=happened,
            )
    decision = _describe(rec, seen, timing, now)
    return Decision(
        rec,
        decision.phase,
        decision.publish,
        decision.safe,
        decision.reason,
        decision.message,
        decision.next_transition,
        happened=happened,
    )


def _take_offer(rec: RolloverRecord, offered: str | None) -> RolloverRecord:
    """The source's next key becomes `next`; a withdrawn or replaced offer replaces it."""
    assert rec.current is not None
    if offered == rec.current.spki_sha256:
        offered = None
    if rec.switched_at is not None and rec.verified_at is None:
        return rec  # a switch is being verified: the offer waits
    have = rec.next.spki_sha256 if rec.next is not None else None
    if offered == have:
        return rec
    if offered is not None and rec.previous is not None and offered == rec.previous.spki_sha256:
        # Going back to the previous key (it is still published): it keeps its age.
        return rec.model_copy(update={"next": rec.previous, "previous": None})
    return rec.model_copy(update={"next": KeyEntry(spki_sha256=offered) if offered else None})


def _note_propagation(
    rec: RolloverRecord, propagation: Propagation, now: datetime, timing: Timing
) -> RolloverRecord:
    desired = frozenset(rec.digests())
    if not timing.gated or propagation.agreed == desired:
        update: dict[str, object] = {"publishing_since": None}
        if timing.gated:
            update["ttl_max"] = max(rec.ttl_max, propagation.ttl_max)
        for role in ("current", "next", "previous"):
            entry: KeyEntry | None = getattr(rec, role)
            if entry is not None and entry.published_at is None:
                update[role] = entry.model_copy(update={"published_at": now})
        return rec.model_copy(update=update)
    if rec.publishing_since is None:
        return rec.model_copy(update={"publishing_since": now})
    return rec


def _verify(
    rec: RolloverRecord, presented: frozenset[str] | None, timing: Timing, now: datetime
) -> tuple[RolloverRecord, str | None]:
    if rec.switched_at is None or rec.verified_at is not None:
        return rec, None
    assert rec.current is not None
    if presented is not None and presented == {rec.current.spki_sha256}:
        return rec.model_copy(update={"verified_at": now}), (
            f"every endpoint presents key {rec.current.spki_sha256[:16]}…"
        )
    if now < rec.switched_at + _seconds(timing.verify_timeout):
        return rec, None
    seen = ", ".join(sorted(d[:16] + "…" for d in presented)) if presented else "nothing"
    reason = (
        f"the endpoints did not present key {rec.current.spki_sha256[:16]}… within "
        f"{timing.verify_timeout:.0f} s (they present {seen})"
    )
    back = rec.model_copy(
        update={
            "current": rec.previous.model_copy(update={"served_since": now})
            if rec.previous
            else rec.current,
            "next": rec.current.model_copy(update={"served_since": None}),
            "previous": None,
            "switched_at": None,
            "verified_at": None,
            "rolled_back_at": now,
            "rollback_reason": reason,
        }
    )
    return back, f"rolled back: {reason}"


def _retire(
    rec: RolloverRecord, timing: Timing, now: datetime
) -> tuple[RolloverRecord, str | None]:
    if rec.previous is None or rec.verified_at is None:
        return rec, None
    if now < rec.verified_at + _seconds(timing.retire_after):
        return rec, None
    note = f"retired key {rec.previous.spki_sha256[:16]}…"
    return rec.model_copy(update={"previous": None, "switched_at": None, "verified_at": None}), note


def _may_switch(rec: RolloverRecord, seen: Observation, timing: Timing, now: datetime) -> bool:
    if not seen.rotation_wanted or rec.next is None:
        return False
    if rec.switched_at is not None or rec.previous is not None:
        return False  # the last switch is still being verified or retired
    if rec.rolled_back_at is not None and now < rec.rolled_back_at + _seconds(
        timing.retry_after_rollback
    ):
        return False
    if not timing.gated:
        return True
    ready = aged_at(rec.next, rec, timing)
    return ready is not None and now >= ready


def _switched_note(rec: RolloverRecord) -> str:
    assert rec.current is not None
    return (
        f"switched to key {rec.current.spki_sha256[:16]}… (published since "
        f"{_when(rec.current.published_at)})"
    )


def _switch(rec: RolloverRecord, now: datetime) -> RolloverRecord:
    assert rec.current is not None
    assert rec.next is not None
    return rec.model_copy(
        update={
            "previous": rec.current,
            "current": rec.next.model_copy(update={"served_since": now}),
            "next": None,
            "switched_at": now,
            "verified_at": None,
            "rolled_back_at": None,
            "rollback_reason": None,
        }
    )


@dataclass(frozen=True)
class _Described:
    phase: Phase
    publish: tuple[str, ...]
    safe: bool
    reason: str
    message: str
    next_transition: datetime | None


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "never"


def _describe(rec: RolloverRecord, seen: Observation, timing: Timing, now: datetime) -> _Described:
    publish = tuple(sorted(rec.digests())) if timing.gated else ()
    transition: datetime | None = None
    if rec.switched_at is not None and rec.verified_at is None:
        phase: Phase = "Verifying"
        transition = rec.switched_at + _seconds(timing.verify_timeout)
    elif rec.previous is not None and rec.verified_at is not None:
        phase = "Retiring"
        transition = rec.verified_at + _seconds(timing.retire_after)
    elif rec.publishing_since is not None:
        phase = "Publishing"
    elif rec.rolled_back_at is not None and now < rec.rolled_back_at + _seconds(
        timing.retry_after_rollback
    ):
        phase = "RolledBack"
        transition = rec.rolled_back_at + _seconds(timing.retry_after_rollback)
    elif rec.next is not None and (ready := aged_at(rec.next, rec, timing)) and now < ready:
        phase = "Aging"
        transition = ready
    else:
        phase = "Stable"
    safe, reason, message = _safety(rec, seen, timing, now)
    return _Described(phase, publish, safe, reason, message, transition)


def _safety(
    rec: RolloverRecord, seen: Observation, timing: Timing, now: datetime
) -> tuple[bool, str, str]:
    """Whether a key change now would keep DANE working, and why (not)."""
    if not timing.gated:
        return True, "NotPinned", "DANE is off: no TLSA record pins a key"
    if rec.publishing_since is not None:
        waited = (now - rec.publishing_since).total_seconds()
        problem = seen.propagation.problem or "not every authoritative server agrees yet"
        if waited > timing.propagation_timeout:
            return False, "PropagationTimeout", f"after {waited:.0f} s: {problem}"
        return False, "NotPropagated", problem
    if rec.switched_at is not None and rec.verified_at is None:
        return False, "Verifying", "a switch is being verified on the endpoints"
    if rec.next is None:
        return False, "NoNextKey", "no next key is published yet"
    ready = aged_at(rec.next, rec, timing)
    if ready is None or now < ready:
        ttl = max(timing.tlsa_ttl, rec.ttl_max)
        return (
            False,
            "WaitingForTTL",
            f"the next key's TLSA record is published since {_when(rec.next.published_at)}; "
            f"it may be served from {_when(ready)} (2 x TTL {ttl} s + {timing.margin:.0f} s)",
        )
    return (
        True,
        "NextKeyPublished",
        f"the next key {rec.next.spki_sha256[:16]}… is published on every authoritative "
        f"server since {_when(rec.next.published_at)}",
    )
