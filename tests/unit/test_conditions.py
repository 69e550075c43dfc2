"""Conditions follow the API conventions; an unchanged verdict changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailward.conditions import (
    Verdict,
    apply_verdicts,
    compliance_view,
    parse_status,
    reconciler_view,
    status_document,
)

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_new_condition_gets_the_transition_time_and_generation() -> None:
    (ready,) = apply_verdicts([], [Verdict("Ready", "False", "Pending", "x")], generation=3, now=T0)
    assert ready.last_transition_time == T0
    assert ready.observed_generation == 3


def test_same_status_keeps_the_transition_time_but_updates_generation_and_reason() -> None:
    first = apply_verdicts([], [Verdict("Ready", "False", "A", "one")], generation=1, now=T0)
    later = T0 + timedelta(minutes=5)
    (ready,) = apply_verdicts(
        first, [Verdict("Ready", "False", "B", "two")], generation=2, now=later
    )
    assert ready.last_transition_time == T0
    assert (ready.reason, ready.message, ready.observed_generation) == ("B", "two", 2)


def test_flip_moves_the_transition_time() -> None:
    first = apply_verdicts([], [Verdict("Ready", "False", "A", "")], generation=1, now=T0)
    later = T0 + timedelta(minutes=5)
    (ready,) = apply_verdicts(first, [Verdict("Ready", "True", "Ok", "")], generation=1, now=later)
    assert ready.last_transition_time == later


def test_other_condition_types_are_kept_and_ready_sorts_first() -> None:
    first = apply_verdicts([], [Verdict("DNSReady", "True", "Published", "")], generation=1, now=T0)
    both = apply_verdicts(first, [Verdict("Ready", "True", "Ok", "")], generation=1, now=T0)
    assert [c.type for c in both] == ["Ready", "DNSReady"]


def test_status_read_back_from_the_api_compares_equal() -> None:
    conditions = apply_verdicts([], [Verdict("Ready", "True", "Ok", "m")], generation=4, now=T0)
    written = status_document(
        parse_status({"observedGeneration": 4}).model_copy(update={"conditions": conditions})
    )
    # What the API server returns: the same JSON, possibly with fields we do not know about.
    stored = {**written, "somethingElse": {"kept": True}}
    assert status_document(parse_status(stored)) == written
    assert written["conditions"][0]["lastTransitionTime"] == "2026-11-27T12:00:00Z"


def test_the_two_writers_split_the_status_without_overlap() -> None:
    document = {
        "observedGeneration": 3,
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "Compliant", "status": "False"},
            {"type": "TLSReportsHealthy", "status": "True"},
        ],
        "dns": {"provider": "DNSProvider/x"},
        "compliance": {"profile": "tr-03108"},
    }
    mine, theirs = reconciler_view(document), compliance_view(document)
    assert [c["type"] for c in mine["conditions"]] == ["Ready", "TLSReportsHealthy"]
    assert "compliance" not in mine
    assert theirs == {
        "conditions": [{"type": "Compliant", "status": "False"}],
        "compliance": {"profile": "tr-03108"},
    }
    # Together they are the whole status: nothing is left unwritten.
    merged_types = {c["type"] for c in mine["conditions"] + theirs["conditions"]}
    assert merged_types == {c["type"] for c in document["conditions"]}
    assert set(mine) | set(theirs) == set(document)
