"""The parts' contract (domains.run_parts): a part's failure is contained, becomes its own
condition and a retry, and the other parts run."""

from __future__ import annotations

import asyncio

from mailward.api.v1alpha1 import MailDomainStatus
from mailward.conditions import Verdict
from mailward.domains import run_parts
from mailward.parts import Part, PartResult, ReconcileContext
from mailward.parts.backoff import Backoff
from mailward.reconcile import parse_spec

SPEC = parse_spec(
    {"domain": "example.test", "mx": [{"host": "mx.example.test"}], "tls": {"secretName": "t"}}
)


class Recording:
    def __init__(self, name: str, condition: str, *, raises: bool = False, blocking: bool = False):
        self.name, self.condition = name, condition
        self.raises, self.blocking = raises, blocking
        self.ran = 0

    async def reconcile(self, ctx: ReconcileContext) -> PartResult:
        self.ran += 1
        if self.raises:
            raise KeyError("no such thing")
        verdict = Verdict(self.condition, "True", "Fine", f"{self.name} is fine")
        return PartResult([verdict], status={self.name: {"ok": True}}, blocking=self.blocking)

    async def release(self, ctx: ReconcileContext) -> None:
        return None


def _ctx() -> ReconcileContext:
    return ReconcileContext("example", "ns", "uid-1", 1, SPEC, MailDomainStatus())


def test_a_raising_part_becomes_its_condition_and_the_later_parts_run() -> None:
    first, broken, last = (
        Recording("first", "FirstReady"),
        Recording("broken", "BrokenReady", raises=True),
        Recording("last", "LastReady"),
    )
    parts: list[Part] = [first, broken, last]
    outcome = asyncio.run(run_parts(parts, _ctx(), Backoff(5, 300)))
    assert (first.ran, broken.ran, last.ran) == (1, 1, 1)
    by_type = {v.type: v for v in outcome.verdicts}
    assert by_type["BrokenReady"].status == "False"
    assert by_type["BrokenReady"].reason == "PartFailed"
    assert "KeyError" in by_type["BrokenReady"].message
    assert "no such thing" in by_type["BrokenReady"].message
    assert by_type["LastReady"].status == "True"
    assert outcome.retry_after == 5
    assert [e.reason for r in outcome.results for e in r.events] == ["PartFailed"]
    # The status fields of the parts that worked are there to be written.
    assert [list(r.status) for r in outcome.results] == [["first"], [], ["last"]]


def test_the_retry_of_a_part_that_keeps_failing_backs_off_and_resets() -> None:
    broken = Recording("broken", "BrokenReady", raises=True)
    failures = Backoff(5, 300)
    delays = [asyncio.run(run_parts([broken], _ctx(), failures)).retry_after for _ in range(4)]
    assert delays == [5, 10, 20, 40]
    broken.raises = False
    assert asyncio.run(run_parts([broken], _ctx(), failures)).retry_after is None
    broken.raises = True
    assert asyncio.run(run_parts([broken], _ctx(), failures)).retry_after == 5


def test_a_blocking_part_ends_the_pass() -> None:
    gate, after = Recording("gate", "GateReady", blocking=True), Recording("after", "AfterReady")
    asyncio.run(run_parts([gate, after], _ctx(), Backoff(5, 300)))
    assert after.ran == 0


def test_changed_fields_name_the_status_fields_and_conditions() -> None:
    from mailward.domains import changed_fields

    before = {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "DNSReady", "status": "True"}],
        "dns": {"zone": "example.test"},
    }
    after = {
        "observedGeneration": 1,
        "conditions": [
            {"type": "Ready", "status": "False"},
            {"type": "DNSReady", "status": "True"},
        ],
        "certificate": {"phase": "Stable"},
        "dns": {"zone": "example.test"},
    }
    assert changed_fields(before, after) == ["certificate", "conditions[Ready]"]
