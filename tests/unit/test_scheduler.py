"""The scheduler of periodic jobs, driven by a fake clock: no real time passes in these tests."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from mailward.scheduler import JobKey, JobKind, ObjectKey, Scheduler, next_on_phase, phase

RESYNC = JobKind("resync", concurrency=1)
HOUR = 3600.0
# Long enough that a registration's first phase is not reached unless a test gets there.
NEVER = 1e9


class FakeClock:
    """`now` and `sleep` for the scheduler; time moves only when a test calls `advance`."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wakeup: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.now + seconds, wakeup)
        self._sleepers.append(entry)
        try:
            await wakeup
        finally:
            self._sleepers.remove(entry)

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for at, wakeup in list(self._sleepers):
            if at <= self.now and not wakeup.done():
                wakeup.set_result(None)
        await settle()


async def settle() -> None:
    """Let every task that can run do so: a fixed number of loop turns (a start and a run take
    a few each), not a time."""
    for _ in range(1000):
        await asyncio.sleep(0)


def key(n: int, kind: JobKind = RESYNC) -> JobKey:
    return JobKey(kind, ObjectKey("ns", f"d{n}", f"uid-{n}"))


class Recorder:
    """A job that notes its runs and, when gated, waits for the test to let it finish."""

    def __init__(self, gated: bool = False) -> None:
        self.runs: list[JobKey] = []
        self.active: set[JobKey] = set()
        self.most_at_once = 0
        self.cancelled: list[JobKey] = []
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()

    async def __call__(self, k: JobKey) -> None:
        self.runs.append(k)
        self.active.add(k)
        self.most_at_once = max(self.most_at_once, len(self.active))
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(k)
            raise
        finally:
            self.active.discard(k)


def run(test: Callable[[Scheduler, FakeClock], Coroutine[Any, Any, None]]) -> None:
    """Run `test` against a started scheduler on a fake clock, and stop it afterwards."""

    async def main() -> None:
        clock = FakeClock()
        scheduler = Scheduler(clock=clock, sleep=clock.sleep)
        scheduler.start()
        try:
            await test(scheduler, clock)
        finally:
            assert await scheduler.stop(grace=1.0) == set()

    asyncio.run(main())


def test_jobs_run_in_due_order() -> None:
    async def test(scheduler: Scheduler, clock: FakeClock) -> None:
        job = Recorder()
        for n in (1, 2, 3):
            scheduler.every(key(n), NEVER, job)
        scheduler.schedule(key(1), 30)
        scheduler.schedule(key(2), 10)
        scheduler.schedule(key(3), 20)
        await clock.advance(15)
        assert job.runs == [key(2)]
        await clock.advance(100)
        assert job.runs == [key(2), key(3), key(1)]

    run(test)


def test_the_earliest_time_wins_for_a_key_scheduled_twice() -> None:
    async def test(scheduler: Scheduler, clock: FakeClock) -> None:
        job = Recorder()
        scheduler.every(key(1), NEVER, job)
        assert scheduler.schedule(key(1), 50)
        assert scheduler.schedule(key(1), 20)
        assert not scheduler.schedule(key(1), 80)
        assert scheduler.due_at(key(1)) == 20
        await clock.advance(100)
        assert job.runs == [key(1)]  # once: at 20, not again at 50 or 80
        assert scheduler.stats(RESYNC).lateness_sum == 80  # started at 100, due at 20

    run(test)


def test_a_periodic_job_runs_on_its_phase_every_interval() -> None:
    async def test(scheduler: Scheduler, clock: FakeClock) -> None:
        job = Recorder()
        scheduler.every(key(1), HOUR, job)
        first = scheduler.due_at(key(1))
        assert first == next_on_phase(key(1), HOUR, 0.0)
        assert first is not None
        await clock.advance(first)
        assert job.runs == [key(1)]
        assert scheduler.due_at(key(1)) == first + HOUR
        await clock.advance(HOUR)
        assert job.runs == [key(1)] * 2

    run(test)


def test_a_job_is_never_started_twice_for_one_key_and_a_reschedule_waits_for_the_run() -> None:
    async def test(scheduler: Scheduler, clock: FakeClock) -> None:
        job = Recorder(gated=True)
        scheduler.every(key(1), NEVER, job)
        scheduler.every(key(2), NEVER, job)
        scheduler.run_now(key(1))
        await settle()
        assert scheduler.is_running(key(1))
        # Asked again while it runs (a spec change, say): kept, but not started beside it.
        assert scheduler.run_now(key(1))
        await clock.advance(10)
        assert job.runs == [key(1)]
        job.gate.set()
        await settle()
        assert job.runs == [key(1), key(1)]
        assert job.most_at_once == 1

    run(test)


def test_at_most_the_kinds_concurrency_runs_at_once() -> None:
    compliance = JobKind("compliance", concurrency=3)

    async def test(scheduler: Scheduler, clock: FakeClock) -> None:
        slow, quick = Recorder(gated=True), Recorder()
        for n in range(10):
            scheduler.every(key(n, compliance), NEVER, slow)
            scheduler.run_now(key(n, compliance))
        scheduler.every(key(99), NEVER, quick)
        scheduler.run_now(key(99))
        await settle()
        assert len(slow.active) == 3
        assert scheduler.stats(compliance).running == 3
        assert scheduler.stats(compliance).overdue == 7
        # Another kind is not held back by a full lane.
        assert quick.runs == [key(99)]
        slow.gate.set()
        await settle()
        assert len(set(slow.runs)) == 10
        assert slow.most_at_once == 3

    run(test)


def test_ten_thousand_jobs_spread_evenly_over_their_interval() -> None:
    scheduler = Scheduler(clock=lambda: 0.0)
    rng = random.Random(15)
    job = Recorder()
    buckets: Counter[int] = Counter()
    for n in range(10_000):
        uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        k = JobKey(RESYNC, ObjectKey("ns", f"d{n}", uid))
        scheduler.every(k, HOUR, job)
        due = scheduler.due_at(k)
        assert due is not None
        assert 0 <= due < HOUR
        buckets[int(due // 60)] += 1
    # 60 one-minute buckets, 166.7 expected in each: no burst, no hole.
    assert len(buckets) == 60
    assert max(buckets.values()) < 1.3 * 10_000 / 60
    assert min(buckets.values()) > 0.7 * 10_000 / 60


def test_the_phase_is_stable_and_differs_between_kinds_of_one_object() -> None:
    compliance = JobKind("compliance", concurrency=8)
    assert phase(key(1)) == phase(JobKey(RESYNC, ObjectKey("other", "renamed", "uid-1")))
    assert phase(key(1)) != phase(key(1, compliance))
    assert next_on_phase(key(1), HOUR, 10 * HOUR + 1) >= 10 * HOUR + 1


def test_a_late_start_skips_a_slot_rather_than_running_again_at_once() -> None:
    async def test(scheduler: Scheduler, clock: FakeClock) -> None:
        job = Recorder()
        scheduler.every(key(1), HOUR, job)
        first = scheduler.due_at(key(1))
        assert first is not None
        await clock.advance(first + 0.8 * HOUR)  # started 0.8 interval late (a backlog)
        assert job.runs == [key(1)]
        assert scheduler.due_at(key(1)) == pytest.approx(first + 2 * HOUR)
        assert scheduler.stats(RESYNC, reset_max_lateness=True).max_lateness == 0.8 * HOUR
        assert scheduler.stats(RESYNC).max_lateness == 0.0
        buckets = dict(scheduler.stats(RESYNC).lateness)
        assert (buckets[900.0], buckets[3600.0]) == (0, 1)

    run(test)


def test_a_failing_job_is_counted_and_stays_scheduled() -> None:
    async def test(scheduler: Scheduler, clock: FakeClock) -> None:
        async def broken(_: JobKey) -> None:
            raise RuntimeError("the API server said no")

        scheduler.every(key(1), HOUR, broken)
        await clock.advance(HOUR)
        stats = scheduler.stats(RESYNC)
        assert (stats.started, stats.failed, stats.queued) == (1, 1, 1)

    run(test)


def test_a_forgotten_job_never_runs_and_a_running_one_is_stopped() -> None:
    async def test(scheduler: Scheduler, clock: FakeClock) -> None:
        job = Recorder(gated=True)
        scheduler.every(key(1), HOUR, job)
        scheduler.every(key(2), HOUR, job)
        scheduler.forget(key(1))
        assert not scheduler.run_now(key(1))  # gone: a late request changes nothing
        scheduler.run_now(key(2))
        await settle()
        scheduler.forget_object(key(2).obj)
        await settle()
        assert job.cancelled == [key(2)]
        await clock.advance(2 * HOUR)
        assert job.runs == [key(2)]
        stats = scheduler.stats(RESYNC)
        assert (stats.registered, stats.queued, stats.running) == (0, 0, 0)

    run(test)


def test_a_paused_scheduler_starts_nothing_and_does_not_catch_up_in_a_burst() -> None:
    async def test(scheduler: Scheduler, clock: FakeClock) -> None:
        job = Recorder(gated=True)
        scheduler.every(key(0), NEVER, job)
        scheduler.run_now(key(0))
        await settle()
        for n in range(1, 100):
            scheduler.every(key(n), HOUR, Recorder())
        scheduler.pause()
        await settle()
        assert job.cancelled == [key(0)]  # a standby replica does no work
        await clock.advance(3 * HOUR)
        assert scheduler.stats(RESYNC).started == 1
        scheduler.resume()
        await settle()
        # What fell due while paused moved to its next phase instead of starting all at once.
        assert scheduler.stats(RESYNC).started == 1
        assert scheduler.stats(RESYNC).overdue == 0
        await clock.advance(HOUR)
        assert scheduler.stats(RESYNC).started == 100

    run(test)


def test_a_scheduler_created_paused_waits_for_resume() -> None:
    async def main() -> None:
        clock = FakeClock()
        scheduler = Scheduler(clock=clock, sleep=clock.sleep, paused=True)
        scheduler.start()
        job = Recorder()
        scheduler.every(key(1), HOUR, job)
        await clock.advance(2 * HOUR)
        assert job.runs == []
        scheduler.resume()
        await settle()
        assert job.runs == []  # overdue while paused: moved to its next phase
        scheduler.run_now(key(1))
        await settle()
        assert job.runs == [key(1)]
        assert await scheduler.stop() == set()

    asyncio.run(main())


def test_stop_cancels_the_runs_and_reports_those_that_do_not_end() -> None:
    async def main() -> None:
        clock = FakeClock()
        scheduler = Scheduler(clock=clock, sleep=clock.sleep)
        scheduler.start()
        polite = Recorder(gated=True)
        release = asyncio.Event()

        async def stubborn(_: JobKey) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await release.wait()  # ignores the cancellation until the test lets it go

        scheduler.every(key(1), NEVER, polite)
        scheduler.every(key(2, JobKind("other", 1)), NEVER, stubborn)
        scheduler.run_now(key(1))
        scheduler.run_now(key(2, JobKind("other", 1)))
        await settle()
        assert await scheduler.stop(grace=0.01) == {key(2, JobKind("other", 1))}
        assert polite.cancelled == [key(1)]
        release.set()
        await settle()
        # Stopped: nothing starts any more, whatever falls due.
        await clock.advance(NEVER)
        assert polite.runs == [key(1)]

    asyncio.run(main())


def test_registering_again_changes_the_interval_but_not_a_pending_earlier_run() -> None:
    async def test(scheduler: Scheduler, clock: FakeClock) -> None:
        job = Recorder()
        scheduler.every(key(1), 24 * HOUR, job)
        daily = scheduler.due_at(key(1))
        scheduler.every(key(1), 24 * HOUR, job)  # every update handler: no change
        assert scheduler.due_at(key(1)) == daily
        scheduler.every(key(1), HOUR, job)  # shortened: the next run comes within the hour
        hourly = scheduler.due_at(key(1))
        assert hourly is not None
        assert hourly < HOUR
        scheduler.every(key(1), 24 * HOUR, job)  # lengthened: the earlier run stays
        assert scheduler.due_at(key(1)) == hourly
        assert scheduler.stats(RESYNC).registered == 1

    run(test)
