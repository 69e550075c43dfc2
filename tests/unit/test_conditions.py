"""Conditions follow the API conventions; an unchanged verdict changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailward.conditions import (
    Verdict,
    apply_verdicts,
    compliance_view,
    parse_status,
    progress_verdicts,
    ready_from,
    reconciler_view,
    started_verdicts,
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


# --- Reconciling and Stalled: what kstatus, Flux and `kubectl wait` read ----------------------

DNS_OK = Verdict("DNSReady", "True", "Published", "3 RRsets")
MTA_ROLLING = Verdict("MTAReady", "False", "MTARollingOut", "0/1 updated")
DNS_REFUSED = Verdict("DNSReady", "False", "UpdateRefused", "bad TSIG", stalled=True)
DONE = Verdict("Ready", "True", "Reconciled", "all parts True")


def _by_type(verdicts: list[Verdict]) -> dict[str, tuple[str, str]]:
    return {v.type: (v.status, v.reason) for v in verdicts}


@pytest.mark.parametrize(
    ("parts", "ready", "reconciling", "stalled"),
    [
        ([DNS_OK], ("True", "Reconciled"), ("False", "Reconciled"), ("False", "Reconciled")),
        (
            [MTA_ROLLING, DNS_OK],
            ("False", "MTARollingOut"),
            ("True", "MTARollingOut"),
            ("False", "MTARollingOut"),
        ),
        # A stalled part wins over one still in progress: retrying alone will not finish.
        (
            [MTA_ROLLING, DNS_REFUSED],
            ("False", "UpdateRefused"),
            ("False", "UpdateRefused"),
            ("True", "UpdateRefused"),
        ),
        # Also over one that is Unknown (a fleet not ready yet): Ready is False, not Unknown.
        (
            [Verdict("MTAReady", "Unknown", "MailServerNotReady", "x"), DNS_REFUSED],
            ("False", "UpdateRefused"),
            ("False", "UpdateRefused"),
            ("True", "UpdateRefused"),
        ),
        (
            [Verdict("MTAReady", "Unknown", "MailServerInvalid", "x", stalled=True)],
            ("False", "MailServerInvalid"),
            ("False", "MailServerInvalid"),
            ("True", "MailServerInvalid"),
        ),
    ],
)
def test_ready_reconciling_and_stalled_from_the_parts(
    parts: list[Verdict],
    ready: tuple[str, str],
    reconciling: tuple[str, str],
    stalled: tuple[str, str],
) -> None:
    summary = ready_from(parts, DONE)
    found = _by_type([summary, *progress_verdicts(summary, parts)])
    assert found == {"Ready": ready, "Reconciling": reconciling, "Stalled": stalled}


def test_the_stalled_message_names_the_part() -> None:
    summary = ready_from([DNS_REFUSED], DONE)
    stalled = _by_type_full(progress_verdicts(summary, [DNS_REFUSED]))["Stalled"]
    assert stalled.message == "DNSReady: bad TSIG"


def _by_type_full(verdicts: list[Verdict]) -> dict[str, Verdict]:
    return {v.type: v for v in verdicts}


def test_work_started_on_a_new_resource_is_in_progress_not_ready() -> None:
    found = _by_type(started_verdicts([], 1))
    assert found == {
        "Reconciling": ("True", "Progressing"),
        "Stalled": ("False", "Progressing"),
        "Ready": ("Unknown", "Progressing"),
    }


def test_work_started_on_an_edited_resource_keeps_its_ready() -> None:
    current = apply_verdicts([], [DONE], generation=1, now=T0)
    found = _by_type(started_verdicts(current, 2))
    assert "Ready" not in found
    assert found["Reconciling"] == ("True", "Progressing")
    after = apply_verdicts(current, started_verdicts(current, 2), generation=2, now=T0)
    assert [(c.type, c.status) for c in after] == [
        ("Ready", "True"),
        ("Reconciling", "True"),
        ("Stalled", "False"),
    ]
