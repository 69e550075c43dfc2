"""The rollover's decisions (rollover/machine.py) from recorded states and observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailward.rollover.machine import (
    Decision,
    KeyEntry,
    Observation,
    Propagation,
    RolloverRecord,
    Timing,
    step,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OLD, NEW, OTHER = "a" * 64, "b" * 64, "c" * 64
TIMING = Timing(
    tlsa_ttl=10,
    margin=5,
    propagation_timeout=60,
    verify_timeout=30,
    retire_after=20,
    retry_after_rollback=120,
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def seen(
    *,
    offered: str | None = NEW,
    wanted: bool = True,
    ready: bool = True,
    agreed: frozenset[str] | None = None,
    ttl: int = 10,
    problem: str | None = None,
    presented: frozenset[str] | None = None,
) -> Observation:
    return Observation(
        offered_next=offered,
        rotation_wanted=wanted,
        next_certificate_ready=ready,
        propagation=Propagation(agreed, ttl, problem),
        presented=presented,
    )


def stable_old() -> RolloverRecord:
    return RolloverRecord(current=KeyEntry(spki_sha256=OLD, published_at=T0, served_since=T0))


def run(record: RolloverRecord, observation: Observation, seconds: float) -> Decision:
    return step(record, observation, TIMING, at(seconds))


def test_a_new_key_is_published_then_aged_then_served_then_the_old_one_retired() -> None:
    both = frozenset({OLD, NEW})
    d = run(stable_old(), seen(agreed=frozenset({OLD})), 1)
    assert (d.phase, d.publish, d.safe) == ("Publishing", tuple(sorted(both)), False)
    assert d.record.current
    assert d.record.current.spki_sha256 == OLD
    # Seen everywhere at 3 s: may be served at 3 + 2 x 10 + 5 = 28 s.
    d = run(d.record, seen(agreed=both), 3)
    assert (d.phase, d.reason, d.next_transition) == ("Aging", "WaitingForTTL", at(28))
    d = run(d.record, seen(agreed=both), 27.9)
    assert d.phase == "Aging"
    assert d.record.current
    assert d.record.current.spki_sha256 == OLD
    d = run(d.record, seen(agreed=both), 28)
    assert d.phase == "Verifying"
    assert d.happened
    assert "switched" in d.happened[0]
    assert d.record.current
    assert d.record.current.spki_sha256 == NEW
    assert d.record.previous
    assert d.record.previous.spki_sha256 == OLD
    assert d.publish == tuple(sorted(both)), "the old key stays published while verifying"
    # The user's Secret now holds NEW, which is current: nothing is offered any more.
    d = run(d.record, seen(offered=None, agreed=both, presented=frozenset({OLD, NEW})), 35)
    assert d.phase == "Verifying", "one endpoint still presents the old key"
    d = run(d.record, seen(offered=None, agreed=both, presented=frozenset({NEW})), 40)
    assert (d.phase, d.next_transition) == ("Retiring", at(60))
    d = run(d.record, seen(offered=None, agreed=both), 60)
    assert d.happened == [f"retired key {OLD[:16]}…"]
    assert d.publish == (NEW,)
    assert d.phase == "Publishing"
    d = run(d.record, seen(offered=None, agreed=frozenset({NEW})), 62)
    assert (d.phase, d.reason) == ("Stable", "NoNextKey")


@pytest.mark.parametrize(
    ("agreed", "problem"),
    [
        (None, "ns2.example.test (127.0.0.2): serial 7, primary 8"),
        (frozenset({OLD}), None),
    ],
)
def test_a_record_not_seen_everywhere_never_switches(
    agreed: frozenset[str] | None, problem: str | None
) -> None:
    d = run(stable_old(), seen(agreed=agreed, problem=problem), 0)
    for second in (10, 30, 59, 3600):
        d = run(d.record, seen(agreed=agreed, problem=problem), second)
        assert d.record.current
        assert d.record.current.spki_sha256 == OLD
        assert d.phase == "Publishing"
        assert not d.safe
    assert d.reason == "PropagationTimeout"
    if problem:
        assert problem in d.message


def test_the_largest_ttl_seen_sets_the_wait() -> None:
    both = frozenset({OLD, NEW})
    d = run(stable_old(), seen(agreed=both, ttl=300), 0)
    assert d.next_transition == at(605), "RRSIG original TTL 300 s outweighs the spec's 10 s"
    assert run(d.record, seen(agreed=both, ttl=300), 604).phase == "Aging"


def test_no_switch_without_a_certificate_for_the_next_key() -> None:
    both = frozenset({OLD, NEW})
    d = run(stable_old(), seen(agreed=both, ready=False), 0)
    d = run(d.record, seen(agreed=both, ready=False), 30)
    assert (d.phase, d.request_next_certificate) == ("Issuing", True)
    assert d.record.current
    assert d.record.current.spki_sha256 == OLD
    d = run(d.record, seen(agreed=both, ready=True), 31)
    assert d.phase == "Verifying"


def test_no_switch_while_no_rotation_is_wanted() -> None:
    both = frozenset({OLD, NEW})
    d = run(stable_old(), seen(agreed=both, wanted=False), 0)
    d = run(d.record, seen(agreed=both, wanted=False), 3600)
    assert (d.phase, d.safe, d.reason) == ("Stable", True, "NextKeyPublished")
    assert d.record.current
    assert d.record.current.spki_sha256 == OLD


def test_endpoints_that_keep_the_old_key_roll_the_switch_back() -> None:
    both = frozenset({OLD, NEW})
    d = run(stable_old(), seen(agreed=both), 0)
    d = run(d.record, seen(agreed=both), 25)
    assert d.phase == "Verifying"
    d = run(d.record, seen(offered=None, agreed=both, presented=frozenset({OLD})), 54)
    assert d.phase == "Verifying"
    d = run(d.record, seen(offered=None, agreed=both, presented=frozenset({OLD})), 55)
    assert d.phase == "RolledBack"
    assert "rolled back" in d.happened[0]
    assert d.record.current
    assert d.record.current.spki_sha256 == OLD
    assert d.record.next
    assert d.record.next.spki_sha256 == NEW
    assert d.publish == tuple(sorted(both)), "both records stay: either key validates"
    # The user's Secret still offers NEW: tried again only after the pause.
    d = run(d.record, seen(agreed=both), 100)
    assert d.phase == "RolledBack"
    assert d.record.current.spki_sha256 == OLD
    d = run(d.record, seen(agreed=both), 175)
    assert d.phase == "Verifying"
    assert d.record.current.spki_sha256 == NEW


def test_a_replaced_offer_starts_aging_again() -> None:
    both = frozenset({OLD, NEW})
    d = run(stable_old(), seen(agreed=both), 0)
    d = run(d.record, seen(offered=OTHER, agreed=both), 20)
    assert d.record.next
    assert d.record.next.spki_sha256 == OTHER
    assert d.record.next.published_at is None
    assert d.phase == "Publishing"
    d = run(d.record, seen(offered=OTHER, agreed=frozenset({OLD, OTHER})), 22)
    assert (d.phase, d.next_transition) == ("Aging", at(47))


def test_without_dane_a_new_key_is_served_at_once() -> None:
    ungated = Timing(**{**TIMING.__dict__, "gated": False})
    d = step(stable_old(), seen(agreed=None), ungated, at(1))
    assert d.phase == "Verifying"
    assert d.publish == ()
    assert d.record.current
    assert d.record.current.spki_sha256 == NEW


def test_a_rollover_needs_a_current_key() -> None:
    with pytest.raises(ValueError, match="current key"):
        run(RolloverRecord(), seen(), 0)


def test_the_record_survives_its_wire_form() -> None:
    d = run(stable_old(), seen(agreed=frozenset({OLD, NEW})), 3)
    wire = d.record.model_dump_json(by_alias=True)
    assert "publishedAt" in wire
    assert RolloverRecord.model_validate_json(wire) == d.record
