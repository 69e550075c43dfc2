"""MTA-STS changes in a safe order (RFC 8461 §8.1, §8.3), decided purely.

Senders cache a policy for its max_age (RFC 8461 §5.1) and keep using it, even after the
`_mta-sts` record is gone. Two changes therefore take time:

- **Withdrawal** (`spec.mtaSts.mode: none`, or the MailDomain deleted): serve a `mode: none`
  policy under a new id, announce that id, and remove the `_mta-sts` record (or let the deletion
  finish) only when every earlier policy has expired in the senders' caches: the time it was
  last served plus its max_age (§8.3), or the user's shorter `spec.mtaSts.agingSeconds`.
- **MX change under `enforce`**: a sender holding the old policy refuses an MX host the policy
  does not name (§4.1). So first serve a policy naming the old and the new hosts, wait until the
  old policy aged out, then move the MX records; the old names leave the policy once the MX
  records moved and their TTL passed (resolvers may still hand out the old MX until then).

Everything needed survives a restart in `status.mtaSts` (api/status.py): what was served and
since when, until when earlier policies may be cached, the MX hosts the DNS part may publish and
the names the policy keeps. A pass after a restart reads them and reaches the same decision.
`plan` is level-based: current status + spec + what is served now + the clock → what to serve,
what to publish, and the status to record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailward.api.status import MTASTSStatus, PublishedMX
from mailward.api.v1alpha1 import MailDomainSpec, mx_pattern_matches
from mailward.render.mta_sts import PolicyFacts, policy_id, policy_patterns
from mailward.render.mta_sts import served_policy as served_text

# The phases, which the part turns into the reason of `MTASTSReady`.
SERVING = "Serving"
PENDING = "Pending"  # the endpoint does not serve the desired text yet
WITHDRAWING = "Withdrawing"
WITHDRAWN = "Withdrawn"
MX_CHANGE_AGING = "MXChangeAging"  # the policy names old and new MX hosts; the MX waits
MX_MOVED = "MXMoved"  # the MX records moved; the old names leave the policy after their TTL
PROMOTED = "PromotedToEnforce"  # an Event: testing is served as enforce

# Phases worth an Event when they begin (the start and the end of each change).
ANNOUNCED_PHASES = frozenset({WITHDRAWING, WITHDRAWN, MX_CHANGE_AGING, MX_MOVED})


@dataclass(frozen=True)
class Served:
    """What the endpoint answered with 200: the id of the bytes, and their fields (None when
    the text is not a valid policy)."""

    id: str
    facts: PolicyFacts | None


@dataclass(frozen=True)
class ChangeInputs:
    spec: MailDomainSpec
    recorded: MTASTSStatus | None
    # None: no policy was fetched in this pass (no answer, 404, another status).
    served: Served | None
    now: datetime
    deleting_since: datetime | None = None
    # DNSReady was True in the last status written (the pass that moved the MX published it).
    dns_ready: bool = False
    # The reason of MTASTSReady in the last status written: an Event when the phase changes.
    previous_phase: str | None = None
    # The collector's MTA-STS (`sts`) sessions of the last 7 days, (successful, failed), from
    # status.tlsRpt; None: no collector, or no report counted them.
    sts_sessions: tuple[int, int] | None = None


@dataclass(frozen=True)
class ChangePlan:
    desired: str  # the text the endpoint should serve (render/mta_sts.served_policy)
    phase: str
    message: str
    status: MTASTSStatus  # to record
    mx_hosts: tuple[PublishedMX, ...]  # what the DNS part publishes as the MX hosts
    announce: bool  # publish `_mta-sts`; False once a withdrawal ended
    until: datetime | None = None  # when the running change takes its next step
    # While deleting: seconds until the deletion may finish (0: now).
    release_after: float | None = None
    events: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)

    def seconds_left(self, now: datetime) -> float | None:
        if self.until is None:
            return None
        return max(0.0, (self.until - now).total_seconds())


def published_mx(spec: MailDomainSpec) -> tuple[PublishedMX, ...]:
    return tuple(
        PublishedMX(host=mx.host, priority=mx.priority, addresses=list(mx.addresses))
        for mx in spec.mx
    )


def _hosts(entries: tuple[PublishedMX, ...]) -> frozenset[str]:
    return frozenset(e.host for e in entries)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _capped(end: datetime, start: datetime, aging: int | None) -> datetime:
    """`end`, or earlier when the user's bound `spec.mtaSts.agingSeconds` ends sooner."""
    return end if aging is None else min(end, start + timedelta(seconds=aging))


def record_served(recorded: MTASTSStatus, served: Served | None, now: datetime) -> MTASTSStatus:
    """The status after seeing `served`: a new id starts a new policy; the one it replaced may
    stay in caches for its max_age from now (the last moment it may have been served)."""
    current = recorded
    if served is not None and served.id != recorded.policy_id:
        expire = recorded.earlier_policies_expire
        enforce_expire = recorded.earlier_enforce_expires
        if recorded.policy_id and recorded.mode in ("enforce", "testing") and recorded.max_age:
            until = now + timedelta(seconds=recorded.max_age)
            expire = _later(expire, until)
            if recorded.mode == "enforce":
                enforce_expire = _later(enforce_expire, until)
        facts = served.facts
        current = recorded.model_copy(
            update={
                "policy_id": served.id,
                "mode": facts.mode if facts else None,
                "max_age": facts.max_age if facts else None,
                "served_since": now,
                "earlier_policies_expire": expire,
                "earlier_enforce_expires": enforce_expire,
            }
        )
    elif served is not None and served.facts is not None and recorded.mode is None:
        # A status written before these fields existed: learn the served policy's mode and
        # max_age now, so that a later withdrawal or MX change waits for it.
        current = recorded.model_copy(
            update={
                "mode": served.facts.mode,
                "max_age": served.facts.max_age,
                "served_since": recorded.served_since or now,
            }
        )
    for name in ("earlier_policies_expire", "earlier_enforce_expires"):
        moment = getattr(current, name)
        if moment is not None and moment <= now:
            current = current.model_copy(update={name: None})
    return current


def _promotion(inputs: ChangeInputs, rec: MTASTSStatus) -> tuple[datetime | None, str]:
    """`testing` → `enforce` (spec.mtaSts.promoteAfterSeconds): since when enforce is served
    (None: not), and a note for the condition. Promoted once the testing policy was served for
    the configured time and the last 7 days of reports count MTA-STS sessions and no failed
    one; it stays promoted while the spec says `testing` (a failure afterwards shows in
    TLSReportsHealthy, and `mode: enforce` or removing the field decides)."""
    spec, now = inputs.spec, inputs.now
    after = spec.mta_sts.promote_after_seconds
    if inputs.deleting_since is not None or spec.mta_sts.mode != "testing" or after is None:
        return None, ""
    if rec.promoted_time is not None:
        return rec.promoted_time, f"promoted to enforce at {_when(rec.promoted_time)}"
    if rec.mode != "testing" or rec.served_since is None:
        return None, ""
    due = rec.served_since + timedelta(seconds=after)
    ok, failed = inputs.sts_sessions or (0, 0)
    reports = f"{ok} MTA-STS sessions succeeded and {failed} failed in the last 7 days' reports"
    if now >= due and ok > 0 and failed == 0:
        return (
            now,
            f"promoted to enforce: testing served since {_when(rec.served_since)}; {reports}",
        )
    return None, f"enforce from {_when(due)} if the reports then show no failure ({reports})"


def _mx_ttl(spec: MailDomainSpec) -> int:
    """How long resolvers may hand out the old MX records after they moved (0: by hand)."""
    return spec.dns.ttl.default if spec.dns is not None else 0


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def plan(inputs: ChangeInputs) -> ChangePlan:
    spec, now, served = inputs.spec, inputs.now, inputs.served
    aging = spec.mta_sts.aging_seconds
    deleting = inputs.deleting_since is not None
    rec = record_served(inputs.recorded or MTASTSStatus(), served, now)
    desired_mx = published_mx(spec)
    held = tuple(rec.mx_hosts) if rec.mx_hosts is not None else desired_mx
    kept = kept_before = tuple(rec.kept_mx)
    promotion_event: tuple[str, str] | None = None
    moved_time = rec.mx_moved_time
    mx_hosts = desired_mx
    mx_phase: tuple[str, str, datetime] | None = None  # (phase, message, until)

    if deleting:
        mx_hosts, kept = held, ()  # the MX stays where it is; the withdrawal names spec.mx
    elif _hosts(held) != _hosts(desired_mx):
        old_names = ", ".join(sorted(_hosts(held)))
        new_names = ", ".join(sorted(_hosts(desired_mx)))
        facts = served.facts if served else None
        covered = facts is not None and all(
            any(mx_pattern_matches(p, h) for p in facts.mx) for h in _hosts(desired_mx)
        )
        if served is None or facts is None:
            mx_hosts = held  # nothing known about what senders may cache: wait
        elif (
            not kept
            and rec.earlier_enforce_expires is None
            and (facts.mode != "enforce" or covered)
        ):
            pass  # no sender can hold an enforced policy that refuses a new host: move now
        else:
            if not kept:
                wanted = set(policy_patterns(spec))
                kept = tuple(p for p in facts.mx if p not in wanted)
            transitional = served_text(spec, kept, [e.host for e in held], deleting=False)
            if served.id == policy_id(transitional) and rec.served_since is not None:
                cached = rec.earlier_enforce_expires or rec.served_since
                end = _capped(cached, rec.served_since, aging)
                if now < end:
                    mx_hosts = held
                    message = (
                        f"policy {served.id} names the MX hosts {old_names} and {new_names}; "
                        f"the MX records move to {new_names} at {_when(end)}, when senders' "
                        "copies of the earlier policy expired"
                    )
                    mx_phase = (MX_CHANGE_AGING, message, end)
                else:  # aged: the MX records move in this pass (mx_hosts = desired)
                    message = (
                        f"the MX records move to {new_names}; policy {served.id} names "
                        f"{old_names} too until resolvers forgot the old MX records"
                    )
                    # Look again at once: the next pass sees whether DNS published the move.
                    mx_phase = (MX_MOVED, message, now + timedelta(seconds=1))
            else:
                mx_hosts = held
    elif kept:
        # The MX records name spec.mx: the old names go once resolvers forgot the old MX.
        if moved_time is None and inputs.dns_ready:
            moved_time = now
        ttl = _mx_ttl(spec)
        if moved_time is not None:
            end = _capped(moved_time + timedelta(seconds=ttl), moved_time, aging)
            if now >= end:
                kept, moved_time = (), None
            else:
                message = (
                    f"the MX records name {', '.join(sorted(_hosts(desired_mx)))}; the policy "
                    f"stops naming {', '.join(kept)} at {_when(end)} (the MX TTL of {ttl} s)"
                )
                mx_phase = (MX_MOVED, message, end)
        else:
            message = f"waiting for the MX records to name {', '.join(_hosts(desired_mx))}"
            mx_phase = (MX_MOVED, message, now + timedelta(seconds=ttl))
    if not kept:
        moved_time = None

    promoted_time, promotion_note = _promotion(inputs, rec)
    if promoted_time is not None and rec.promoted_time is None:
        promotion_event = (PROMOTED, promotion_note)
    # Exactly what the endpoint renders from the status recorded below (endpoint/catalog.py).
    desired = served_text(
        spec,
        kept,
        [e.host for e in mx_hosts],
        deleting=deleting,
        promoted=promoted_time is not None,
    )
    desired_id = policy_id(desired)
    withdrawing = deleting or spec.mta_sts.mode == "none"
    rec = rec.model_copy(
        update={
            "mx_hosts": list(mx_hosts),
            "kept_mx": list(kept),
            "mx_moved_time": moved_time,
            "promoted_time": promoted_time,
        }
    )
    host = f"mta-sts.{spec.domain}"

    release_after: float | None = None
    deletion_end: datetime | None = None
    if deleting and inputs.deleting_since is not None:
        # Counted from deletionTimestamp: the endpoint serves the withdrawal from then on (it
        # reads the timestamp itself), and the deletion ends within a bound the user sees.
        since = inputs.deleting_since
        cached_until = rec.earlier_policies_expire
        if rec.mode in ("enforce", "testing") and rec.max_age:
            cached_until = _later(cached_until, since + timedelta(seconds=rec.max_age))
        deletion_end = _capped(cached_until or since, since, aging)
        release_after = max(0.0, (deletion_end - now).total_seconds())

    phase, announce = SERVING, True
    until: datetime | None = None
    if served is None or served.id != desired_id:
        served_id = served.id if served else None
        message = f"{host} serves {served_id or 'nothing'}; waiting for policy {desired_id}"
        phase = PENDING
        if deletion_end is not None and now < deletion_end:
            message += f"; the deletion finishes at {_when(deletion_end)} at the latest"
    elif withdrawing:
        start = rec.served_since or now
        end = deletion_end or _capped(rec.earlier_policies_expire or start, start, aging)
        bound = "spec.mtaSts.agingSeconds" if aging is not None else "the earlier policy's max_age"
        if now < end:
            phase, until = WITHDRAWING, end
            what = "the deletion finishes" if deleting else "the `_mta-sts` record goes"
            message = (
                f"{host} serves mode none (policy {desired_id}) until {_when(end)} ({bound}); "
                f"{what} then (RFC 8461 §8.3)"
            )
        else:
            phase, announce = WITHDRAWN, deleting
            message = (
                f"MTA-STS withdrawn: no sender holds an earlier policy any more ({bound}); "
                + ("the records go with the MailDomain" if deleting else "no `_mta-sts` record")
            )
    elif mx_phase is not None:
        phase, message, until = mx_phase
    else:
        message = f"{host} serves policy {desired_id}{promotion_note and '; ' + promotion_note}"
    rec = rec.model_copy(update={"until": until})
    events = [promotion_event] if promotion_event else []
    if phase in ANNOUNCED_PHASES and phase != inputs.previous_phase:
        events.append((phase, message))
    if kept_before and not kept and not deleting:
        names = ", ".join(kept_before)
        events.append(("MXChangeDone", f"the policy no longer names {names}: MX change complete"))
    return ChangePlan(
        desired=desired,
        phase=phase,
        message=message,
        status=rec,
        mx_hosts=mx_hosts,
        announce=announce,
        until=until,
        release_after=release_after,
        events=events,
    )
