"""The MTA-STS change planner (plan/mtasts_changes.py): withdrawal and MX change in a safe order.

`Sim` plays the operator's passes against an endpoint that serves what the real one serves (the
spec, `status.mtaSts.keptMx`, deletionTimestamp: render/mta_sts.served_policy), one pass after
the other, the status of each pass fed into the next, on a clock the test moves.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mailward.api.status import MTASTSStatus
from mailward.api.v1alpha1 import MailDomainSpec
from mailward.endpoint.catalog import site_for
from mailward.plan.mtasts_changes import (
    MX_CHANGE_AGING,
    MX_MOVED,
    PENDING,
    SERVING,
    WITHDRAWING,
    WITHDRAWN,
    ChangeInputs,
    ChangePlan,
    Served,
    plan,
)
from mailward.reconcile import parse_spec
from mailward.render.mta_sts import PolicyFacts, parse_policy, policy_id, render_policy
from tests.manifests import valid_maildomain

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def spec_body(*, hosts: tuple[str, ...] = ("mx1.example.test",), **mta_sts: Any) -> Any:
    body = copy.deepcopy(valid_maildomain()["spec"])
    body["mx"] = [{"host": h, "priority": 10 * (i + 1)} for i, h in enumerate(hosts)]
    body["mtaSts"] = {"mode": "enforce", "maxAge": 600, **mta_sts}
    body["dns"]["ttl"] = {"default": 120}
    return body


def spec_with(**fields: Any) -> MailDomainSpec:
    return parse_spec(spec_body(**fields))


def served(text: str) -> Served:
    return Served(policy_id(text), parse_policy(text))


@dataclass
class Sim:
    """Passes of the part, each fed the status the previous one recorded; what is served comes
    from the policy endpoint's own catalog (endpoint/catalog.py) reading the same object."""

    body: dict[str, Any]
    now: datetime = T0
    status: MTASTSStatus | None = None
    phase: str | None = None
    deleting_since: datetime | None = None
    dns_ready: bool = True
    endpoint_up: bool = True
    sts_sessions: tuple[int, int] | None = None
    history: list[ChangePlan] = field(default_factory=list)

    @property
    def spec(self) -> MailDomainSpec:
        return parse_spec(self.body)

    def serving(self) -> str:
        meta: dict[str, Any] = {"name": "example", "namespace": "default", "uid": "u"}
        if self.deleting_since is not None:
            meta["deletionTimestamp"] = self.deleting_since.isoformat()
        status = self.status.model_dump(mode="json", by_alias=True) if self.status else {}
        site = site_for({"metadata": meta, "spec": self.body, "status": {"mtaSts": status}})
        assert site is not None
        return site.policy

    def step(self, after: float = 0.0) -> ChangePlan:
        self.now += timedelta(seconds=after)
        result = plan(
            ChangeInputs(
                spec=self.spec,
                recorded=self.status,
                served=served(self.serving()) if self.endpoint_up else None,
                now=self.now,
                deleting_since=self.deleting_since,
                dns_ready=self.dns_ready,
                previous_phase=self.phase,
                sts_sessions=self.sts_sessions,
            )
        )
        self.status, self.phase = result.status, result.phase
        self.history.append(result)
        return result

    def settle(self) -> ChangePlan:
        """Passes until the endpoint serves what is desired (the endpoint follows the status)."""
        for _ in range(4):
            result = self.step(1)
            if result.phase != PENDING:
                return result
        raise AssertionError(f"never settled: {self.history[-1]}")


def hosts(result: ChangePlan) -> list[str]:
    return [entry.host for entry in result.mx_hosts]


def reasons(result: ChangePlan) -> list[str]:
    return [reason for reason, _ in result.events]


# -- withdrawal ----------------------------------------------------------------------------------


def test_mode_none_serves_the_withdrawal_for_the_old_max_age_then_drops_the_record() -> None:
    sim = Sim(spec_body())
    first = sim.settle()
    assert (first.phase, first.announce) == (SERVING, True)
    enforced_id = first.status.policy_id

    sim.body = spec_body(mode="none", maxAge=86400)
    started = sim.step(5)
    assert started.phase == WITHDRAWING
    assert started.status.policy_id != enforced_id  # the new id is announced at the start
    assert started.announce is True
    assert started.until == sim.now + timedelta(seconds=600)  # the OLD policy's max_age
    assert reasons(started) == [WITHDRAWING]
    assert "RFC 8461 §8.3" in started.message

    still = sim.step(599)
    assert (still.phase, still.announce, still.events) == (WITHDRAWING, True, [])
    assert still.seconds_left(sim.now) == pytest.approx(1.0)

    done = sim.step(1)
    assert (done.phase, done.announce) == (WITHDRAWN, False)
    assert reasons(done) == [WITHDRAWN]
    assert done.status.earlier_policies_expire is None
    again = sim.step(3600)
    assert (again.phase, again.announce, again.events) == (WITHDRAWN, False, [])


def test_the_users_shorter_bound_ends_the_withdrawal_sooner() -> None:
    sim = Sim(spec_body(maxAge=604800))
    sim.settle()
    sim.body = spec_body(mode="none", agingSeconds=30)
    started = sim.step(1)
    assert started.until == sim.now + timedelta(seconds=30)
    assert "spec.mtaSts.agingSeconds" in started.message
    assert sim.step(29).phase == WITHDRAWING
    assert sim.step(1).phase == WITHDRAWN


def test_the_longest_earlier_max_age_counts() -> None:
    """RFC 8461 §8.3: older policies may have been served with a greater max_age."""
    sim = Sim(spec_body(maxAge=3600))
    sim.settle()
    sim.body = spec_body(maxAge=60)
    assert sim.settle().phase == SERVING
    sim.body = spec_body(mode="none")
    started = sim.step(10)
    # The 3600 s policy was last served 11 s ago: it may be cached for 3589 s more.
    assert started.until == T0 + timedelta(seconds=1 + 1 + 3600)


def test_a_status_from_before_these_fields_learns_the_served_policy() -> None:
    """An operator upgraded under a served policy: status.mtaSts has only policyId."""
    sim = Sim(spec_body())
    sim.status = MTASTSStatus(policy_id=policy_id(sim.serving()))
    learnt = sim.step(1)
    assert (learnt.status.mode, learnt.status.max_age) == ("enforce", 600)
    sim.body = spec_body(mode="none")
    assert sim.step(1).until == sim.now + timedelta(seconds=600)


def test_a_domain_that_never_enforced_has_no_record_and_no_wait() -> None:
    sim = Sim(spec_body(mode="none"))
    result = sim.settle()
    assert (result.phase, result.announce, result.until) == (WITHDRAWN, False, None)


def test_back_to_enforce_during_a_withdrawal_announces_the_policy_again() -> None:
    sim = Sim(spec_body())
    sim.settle()
    sim.body = spec_body(mode="none")
    assert sim.step(1).phase == WITHDRAWING
    sim.body = spec_body()
    result = sim.step(1)
    assert (result.phase, result.announce) == (SERVING, True)


# -- deletion ------------------------------------------------------------------------------------


def test_deletion_waits_for_the_withdrawal_counted_from_deletion() -> None:
    sim = Sim(spec_body())
    sim.settle()
    sim.deleting_since = sim.now + timedelta(seconds=1)
    started = sim.step(2)
    assert started.phase == WITHDRAWING
    assert parse_policy(sim.serving()) == PolicyFacts("none", 600, ("mx1.example.test",))
    assert started.status.policy_id == policy_id(sim.serving())
    # Counted from the moment the withdrawal was seen served, 1 s after deletionTimestamp.
    assert started.release_after == pytest.approx(600.0)
    assert "the deletion finishes" in started.message
    assert sim.step(599).release_after == pytest.approx(1.0)
    done = sim.step(1)
    assert (done.phase, done.release_after) == (WITHDRAWN, 0.0)
    assert reasons(done) == [WITHDRAWN]


def test_deletion_is_bounded_even_when_the_endpoint_never_answers() -> None:
    sim = Sim(spec_body(maxAge=600, agingSeconds=45))
    sim.settle()
    sim.endpoint_up = False
    sim.deleting_since = sim.now
    waiting = sim.step(1)
    assert waiting.phase == PENDING
    assert waiting.release_after == pytest.approx(44.0)
    assert "at the latest" in waiting.message
    assert sim.step(44).release_after == 0.0


def test_deleting_a_domain_that_never_served_a_policy_waits_for_nothing() -> None:
    sim = Sim(spec_body(), endpoint_up=False, deleting_since=T0)
    assert sim.step(0).release_after == 0.0


# -- MX change under enforce ---------------------------------------------------------------------


def test_mx_change_under_enforce_names_both_then_moves_then_drops_the_old_name() -> None:
    sim = Sim(spec_body(hosts=("mx1.example.test",)))
    sim.settle()
    sim.body = spec_body(hosts=("mx2.example.test",))

    # The endpoint names the MX hosts still published (status.mtaSts.mxHosts) beside the
    # spec's at once, before the operator even saw the change.
    both = parse_policy(sim.serving())
    assert both is not None
    assert both.mx == ("mx2.example.test", "mx1.example.test")

    aging = sim.step(1)
    assert aging.phase == MX_CHANGE_AGING
    assert aging.status.kept_mx == ["mx1.example.test"]
    assert hosts(aging) == ["mx1.example.test"]  # the MX RRset has not moved
    assert aging.until == sim.now + timedelta(seconds=600)
    assert reasons(aging) == [MX_CHANGE_AGING]
    assert hosts(sim.step(599)) == ["mx1.example.test"]

    moved = sim.step(1)
    assert moved.phase == MX_MOVED
    assert hosts(moved) == ["mx2.example.test"]  # moved while the policy still names both
    assert moved.status.kept_mx == ["mx1.example.test"]
    assert reasons(moved) == [MX_MOVED]

    seen = sim.step(1)  # DNSReady True after the move: the MX TTL (120 s) runs from here
    assert seen.status.mx_moved_time == sim.now
    assert seen.until == sim.now + timedelta(seconds=120)
    assert sim.step(119).status.kept_mx == ["mx1.example.test"]
    dropped = sim.step(1)
    assert dropped.status.kept_mx == []
    assert reasons(dropped) == ["MXChangeDone"]
    assert sim.settle().phase == SERVING
    assert parse_policy(sim.serving()) == PolicyFacts("enforce", 600, ("mx2.example.test",))


def test_mx_change_waits_for_dns_to_publish_the_move() -> None:
    sim = Sim(spec_body(hosts=("mx1.example.test",), agingSeconds=0))
    sim.settle()
    sim.body = spec_body(hosts=("mx2.example.test",), agingSeconds=0)
    assert sim.step(1).phase == MX_MOVED
    sim.dns_ready = False
    for _ in range(3):
        assert sim.step(60).status.kept_mx == ["mx1.example.test"]
    sim.dns_ready = True
    assert sim.step(1).status.kept_mx == []  # agingSeconds 0 shortens the TTL wait too


@pytest.mark.parametrize(
    ("before", "after", "patterns"),
    [
        pytest.param({"mode": "testing"}, {"mode": "testing"}, None, id="testing-refuses-nothing"),
        pytest.param({}, {}, ["*.example.test"], id="wildcard-covers-the-new-host"),
    ],
)
def test_mx_moves_at_once_when_no_cached_policy_refuses_it(
    before: dict[str, Any], after: dict[str, Any], patterns: list[str] | None
) -> None:
    extra = {"mxPatterns": patterns} if patterns else {}
    sim = Sim(spec_body(hosts=("mx1.example.test",), **before, **extra))
    sim.settle()
    sim.body = spec_body(hosts=("mx2.example.test",), **after, **extra)
    result = sim.step(1)
    assert hosts(result) == ["mx2.example.test"]
    assert result.status.kept_mx == []
    assert sim.settle().phase == SERVING


def test_adding_an_mx_host_under_enforce_waits_too() -> None:
    sim = Sim(spec_body(hosts=("mx1.example.test",)))
    sim.settle()
    sim.body = spec_body(hosts=("mx1.example.test", "mx2.example.test"))
    aging = sim.step(1)
    assert aging.phase == MX_CHANGE_AGING
    assert hosts(aging) == ["mx1.example.test"]
    assert hosts(sim.step(600)) == ["mx1.example.test", "mx2.example.test"]


def test_nothing_moves_while_the_endpoint_cannot_be_asked() -> None:
    sim = Sim(spec_body(hosts=("mx1.example.test",)))
    sim.settle()
    sim.endpoint_up = False
    sim.body = spec_body(hosts=("mx2.example.test",))
    assert hosts(sim.step(10_000)) == ["mx1.example.test"]


def test_a_pass_after_a_restart_reaches_the_same_decision() -> None:
    """Level-based: the same status, spec, served policy and clock give the same plan."""
    sim = Sim(spec_body(hosts=("mx1.example.test",)))
    sim.settle()
    sim.body = spec_body(hosts=("mx2.example.test",))
    sim.step(1)
    recorded = sim.status
    inputs = ChangeInputs(
        spec=sim.spec,
        recorded=recorded,
        served=served(sim.serving()),
        now=sim.now + timedelta(seconds=300),
        dns_ready=True,
        previous_phase=MX_CHANGE_AGING,
    )
    # A new process knows only the status (round-tripped through its wire form).
    reread = MTASTSStatus.model_validate(recorded.model_dump(mode="json", by_alias=True))
    assert plan(inputs) == plan(ChangeInputs(**{**inputs.__dict__, "recorded": reread}))
    assert plan(inputs).phase == MX_CHANGE_AGING


# -- testing → enforce -----------------------------------------------------------------------------


def test_testing_is_promoted_to_enforce_after_the_time_with_clean_reports() -> None:
    sim = Sim(spec_body(mode="testing", promoteAfterSeconds=3600))
    first = sim.settle()
    assert "enforce from" in first.message
    sim.sts_sessions = (120, 0)
    assert sim.step(3500).status.promoted_time is None  # not yet: served 3502 s of 3600
    promoted = sim.step(100)
    assert promoted.status.promoted_time == sim.now
    assert reasons(promoted) == ["PromotedToEnforce"]
    assert "120 MTA-STS sessions succeeded and 0 failed" in promoted.events[0][1]
    final = sim.settle()
    assert final.phase == SERVING
    assert parse_policy(sim.serving()) == PolicyFacts("enforce", 600, ("mx1.example.test",))
    assert final.status.mode == "enforce"
    # Stays promoted across passes; `mode: enforce` in the spec serves the same bytes.
    assert sim.step(86400).status.promoted_time is not None
    before = sim.serving()
    sim.body = spec_body(mode="enforce", promoteAfterSeconds=3600)
    assert sim.step(1).status.promoted_time is None
    assert sim.serving() == before


@pytest.mark.parametrize(
    ("sessions", "after", "why"),
    [
        pytest.param((120, 1), 3600, "one failed session", id="a-failure"),
        pytest.param((0, 0), 3600, "no MTA-STS session reported", id="no-sessions"),
        pytest.param(None, 3600, "no collector", id="no-reports"),
        pytest.param((120, 0), None, "not asked for", id="not-configured"),
    ],
)
def test_no_promotion_without_clean_reports(
    sessions: tuple[int, int] | None, after: int | None, why: str
) -> None:
    extra = {"promoteAfterSeconds": after} if after is not None else {}
    sim = Sim(spec_body(mode="testing", **extra), sts_sessions=sessions)
    sim.settle()
    result = sim.step(86400 * 30)
    assert result.status.promoted_time is None, why
    assert parse_policy(sim.serving()).mode == "testing"  # type: ignore[union-attr]


# -- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        (
            render_policy("enforce", ["mx1.a.test", "*.b.test"], 86400),
            PolicyFacts("enforce", 86400, ("mx1.a.test", "*.b.test")),
        ),
        ("version: STSv1\nmode: none\nmax_age: 0\n", PolicyFacts("none", 0, ())),
        (
            "version: STSv1\r\nmode: testing\r\nmode: none\r\nmax_age: 5\r\n",
            PolicyFacts("testing", 5, ()),
        ),
        ("version: STSv2\r\nmode: enforce\r\nmax_age: 5\r\n", None),
        ("version: STSv1\r\nmode: strict\r\nmax_age: 5\r\n", None),
        ("version: STSv1\r\nmode: enforce\r\nmax_age: -1\r\n", None),
        ("<html>not found</html>", None),
    ],
)
def test_parse_policy(text: str, facts: PolicyFacts | None) -> None:
    assert parse_policy(text) == facts
