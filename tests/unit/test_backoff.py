"""Look-again delays grow per object, stop at their ceiling, and start over after success."""

from __future__ import annotations

from mailward.parts.backoff import Backoff


def test_delays_double_up_to_the_ceiling_per_object() -> None:
    backoff = Backoff(1.0, 8.0)
    assert [backoff.next("a") for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    # Another object starts at the base: one broken domain does not slow the others.
    assert backoff.next("b") == 1.0


def test_a_success_starts_over() -> None:
    backoff = Backoff(2.0, 300.0)
    backoff.next("a")
    backoff.next("a")
    backoff.reset("a")
    assert backoff.next("a") == 2.0


def test_a_ceiling_below_the_base_is_the_base() -> None:
    assert Backoff(30.0, 10.0).next("a") == 30.0
