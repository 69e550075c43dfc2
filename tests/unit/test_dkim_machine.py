"""The DKIM rotation's state machine (dkim/machine.py), step by step, as a table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailward.api.dkim import KeyType, SelectorPhase
from mailward.dkim.machine import ManagedKey, Timing, in_dns, published, step

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMING = Timing(rotate_after=3600.0, retire_after=600.0)
BOTH: tuple[KeyType, ...] = ("ed25519", "rsa")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def key(selector: str, phase: SelectorPhase, since: float = 0) -> ManagedKey:
    algorithm: KeyType = "ed25519" if selector.startswith("e") else "rsa"
    return ManagedKey(selector=selector, algorithm=algorithm, phase=phase, since=at(since))


def phases(keys: tuple[ManagedKey, ...]) -> dict[str, str]:
    return {k.selector: k.phase for k in keys}


CASES = [
    # (what, keys, wanted, visible, now, phases after, generate, next transition)
    ("nothing yet: one key per type", [], BOTH, frozenset(), 0, {}, ("ed25519", "rsa"), None),
    (
        "published, the resolver does not return it yet: it waits",
        [key("e1", "Published"), key("r1", "Published")],
        BOTH,
        frozenset(),
        5,
        {"e1": "Published", "r1": "Published"},
        (),
        None,
    ),
    (
        "published, resolver not reachable: nothing gated moves",
        [key("e1", "Published")],
        ("ed25519",),
        None,
        5,
        {"e1": "Published"},
        (),
        None,
    ),
    (
        "the resolver returns one of two: only that one signs",
        [key("e1", "Published"), key("r1", "Published")],
        BOTH,
        frozenset({"r1"}),
        5,
        {"e1": "Published", "r1": "Active"},
        (),
        at(5 + 3600),
    ),
    (
        "active and not due: nothing, wake at the rotation",
        [key("e1", "Active", 100)],
        ("ed25519",),
        frozenset({"e1"}),
        200,
        {"e1": "Active"},
        (),
        at(3700),
    ),
    (
        "rotation due: a new key is asked for, the old one keeps signing",
        [key("e1", "Active", 0)],
        ("ed25519",),
        frozenset({"e1"}),
        3600,
        {"e1": "Active"},
        ("ed25519",),
        None,
    ),
    (
        "the new key is returned: it signs, the old one retires at once",
        [key("e1", "Active", 0), key("e2", "Published", 3600)],
        ("ed25519",),
        frozenset({"e1", "e2"}),
        3700,
        {"e1": "Retiring", "e2": "Active"},
        (),
        at(3700 + 600),
    ),
    (
        "retiring within retireAfter: still published",
        [key("e1", "Retiring", 3700), key("e2", "Active", 3700)],
        ("ed25519",),
        frozenset({"e1", "e2"}),
        4299,
        {"e1": "Retiring", "e2": "Active"},
        (),
        at(4300),
    ),
    (
        "retireAfter passed: withdrawn",
        [key("e1", "Retiring", 3700), key("e2", "Active", 3700)],
        ("ed25519",),
        frozenset({"e1", "e2"}),
        4300,
        {"e1": "Withdrawn", "e2": "Active"},
        (),
        at(7300),
    ),
    (
        "withdrawn, the resolver still returns it (cached): kept",
        [key("e1", "Withdrawn", 4300), key("e2", "Active", 3700)],
        ("ed25519",),
        frozenset({"e1", "e2"}),
        4310,
        {"e1": "Withdrawn", "e2": "Active"},
        (),
        at(7300),
    ),
    (
        "withdrawn and gone from the resolver: forgotten",
        [key("e1", "Withdrawn", 4300), key("e2", "Active", 3700)],
        ("ed25519",),
        frozenset({"e2"}),
        4400,
        {"e2": "Active"},
        (),
        at(7300),
    ),
    (
        "withdrawn, resolver not reachable: kept",
        [key("e1", "Withdrawn", 4300)],
        (),
        None,
        4400,
        {"e1": "Withdrawn"},
        (),
        None,
    ),
    (
        "a type no longer wanted: its active key retires, its published one goes",
        [key("r1", "Active", 0), key("r2", "Published", 10), key("e1", "Active", 0)],
        ("ed25519",),
        frozenset({"r1", "r2", "e1"}),
        20,
        {"r1": "Retiring", "r2": "Withdrawn", "e1": "Active"},
        (),
        at(620),
    ),
    (
        "two published of a type (a crash between writes): the newer seen one signs",
        [key("e1", "Published", 0), key("e2", "Published", 5)],
        ("ed25519",),
        frozenset({"e1", "e2"}),
        10,
        {"e1": "Withdrawn", "e2": "Active"},
        (),
        at(3610),
    ),
]


@pytest.mark.parametrize(
    ("keys", "wanted", "visible", "now", "after", "generate", "due"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_step(
    keys: list[ManagedKey],
    wanted: tuple[KeyType, ...],
    visible: frozenset[str] | None,
    now: float,
    after: dict[str, str],
    generate: tuple[KeyType, ...],
    due: datetime | None,
) -> None:
    decision = step(keys, wanted, visible, TIMING, at(now))
    assert phases(decision.keys) == after
    assert decision.generate == generate
    assert decision.next_transition == due


def test_a_full_rotation_never_leaves_a_type_without_a_signing_key_once_one_signed() -> None:
    keys: tuple[ManagedKey, ...] = ()
    counter = 0
    signing_history = []
    for now in range(0, 3 * 3600, 60):
        in_dns_now = frozenset(k.selector for k in in_dns(keys))
        decision = step(keys, ("ed25519",), in_dns_now, TIMING, at(now))
        keys = decision.keys
        for algorithm in decision.generate:
            counter += 1
            keys += (published(f"e{counter}", algorithm, at(now)),)
        active = [k.selector for k in keys if k.phase == "Active"]
        assert len(active) <= 1
        signing_history.append(active[0] if active else None)
    first = signing_history.index("e1")
    assert None not in signing_history[first:]
    assert {"e1", "e2", "e3"} <= set(signing_history)
    # A retired key is published for retireAfter after it stopped signing, then withdrawn.
    assert all(
        k.phase != "Retiring" or at(3 * 3600) - k.since <= timedelta(seconds=660) for k in keys
    )


def test_in_dns_is_every_key_but_the_withdrawn() -> None:
    keys = [
        key("e1", "Published"),
        key("e2", "Active"),
        key("r1", "Retiring"),
        key("r2", "Withdrawn"),
    ]
    assert [k.selector for k in in_dns(keys)] == ["e1", "e2", "r1"]
