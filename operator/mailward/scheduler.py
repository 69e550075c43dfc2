"""One scheduler for the periodic work of every object, instead of kopf tasks per object.

A kopf timer or daemon is one asyncio task (plus stopper, logger, patch) per object and handler:
at 10,000 MailDomains that is 20,000 tasks that mostly sleep. Here, as in client-go's delaying
queue, every periodic job waits in a heap ordered by due time, ONE task sleeps until the earliest
is due, and a bounded number of jobs of each kind run at once.

- A job is keyed by (kind of job, object): `JobKey`. A key is pending at most once; scheduling it
  again keeps the earlier of the two times (earliest wins, as `AddAfter` of client-go).
- A job's runs fall on a phase of its interval taken from a stable hash of (kind, uid), so 10k
  jobs registered together (the operator starting) are spread evenly over the interval and stay
  spread, rather than firing in one burst and again in bursts every interval.
- A job never runs twice at once for one key: scheduling it while it runs is kept, and applied
  once the run ends.
- Each kind has its own bound (`JobKind.concurrency`): minutes-long compliance probes never hold
  back the resync of other objects.
- `pause()` / `resume()` for kopf peering (a standby replica must not work); runs missed while
  paused are not caught up in a burst: the active replica did them.

Time comes from `clock` and waiting from `sleep` (both injectable), so tests drive it without
real time.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Upper bounds (seconds) of the lateness histogram, Prometheus-style (cumulative when exported).
LATENESS_BUCKETS = (0.1, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, math.inf)


@dataclass(frozen=True)
class ObjectKey:
    namespace: str
    name: str
    uid: str  # what the phase is hashed from: stable across restarts and renames


@dataclass(frozen=True)
class JobKind:
    name: str
    concurrency: int  # at most this many jobs of this kind run at once

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"{self.name}: concurrency must be at least 1")


@dataclass(frozen=True)
class JobKey:
    kind: JobKind
    obj: ObjectKey


Job = Callable[[JobKey], Awaitable[None]]


def phase(key: JobKey) -> float:
    """Where in its interval the runs of `key` fall, in [0, 1). Python's `hash()` is salted per
    process, so a digest: the same object keeps its slot across operator restarts."""
    text = f"{key.kind.name}\0{key.obj.uid}".encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def next_on_phase(key: JobKey, interval: float, after: float) -> float:
    """The first time at or after `after` that falls on the phase of `key`."""
    offset = phase(key) * interval
    return after + (offset - after) % interval


@dataclass(frozen=True)
class KindStats:
    registered: int
    queued: int  # waiting for their time or a free slot (not running)
    overdue: int  # of those, already due: the backlog
    running: int
    started: int
    failed: int
    max_lateness: float  # the most a run started after its due time, since the last reset
    # (upper bound, runs that started at most that late), cumulative like a Prometheus histogram
    lateness: tuple[tuple[float, int], ...]
    lateness_sum: float


@dataclass
class _Registration:
    job: Job
    interval: float


@dataclass
class _Pending:
    due: float
    order: int  # matches the heap entry that stands for it; older heap entries are stale
    # The key runs: this entry goes on the heap when the run ends, not before.
    parked: bool


@dataclass
class _Lane:
    """The jobs of one kind: their heap, their pending entries, their runs."""

    kind: JobKind
    heap: list[tuple[float, int, JobKey]] = field(default_factory=list)
    pending: dict[JobKey, _Pending] = field(default_factory=dict)
    running: dict[JobKey, asyncio.Task[None]] = field(default_factory=dict)
    registered: int = 0
    started: int = 0
    failed: int = 0
    max_lateness: float = 0.0
    lateness_counts: list[int] = field(default_factory=lambda: [0] * len(LATENESS_BUCKETS))
    lateness_sum: float = 0.0

    @property
    def has_room(self) -> bool:
        return len(self.running) < self.kind.concurrency

    def observe_lateness(self, seconds: float) -> None:
        self.max_lateness = max(self.max_lateness, seconds)
        self.lateness_sum += seconds
        self.lateness_counts[bisect.bisect_left(LATENESS_BUCKETS, seconds)] += 1


class Scheduler:
    def __init__(
        self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep, paused: bool = False
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._paused = paused
        self._lanes: dict[JobKind, _Lane] = {}
        self._registrations: dict[JobKey, _Registration] = {}
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None

    # -- what the handlers call -------------------------------------------------------------

    def every(self, key: JobKey, interval: float, job: Job) -> None:
        """Run `job(key)` every `interval` seconds, on the phase of `key`. Idempotent: calling
        it again (each resume or update) replaces the job, and with a new interval moves the
        next run to the new phase if that is earlier."""
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        known = self._registrations.get(key)
        self._registrations[key] = _Registration(job, interval)
        if known is not None and known.interval == interval:
            return
        lane = self._lane(key.kind)
        if known is None:
            lane.registered += 1
        self._enqueue(lane, key, next_on_phase(key, interval, self._clock()))

    def schedule(self, key: JobKey, at: float) -> bool:
        """Run `key` at `at` (the scheduler's clock) unless it is already due earlier; False when
        `key` is not registered (its object is gone) or nothing changed."""
        if key not in self._registrations:
            return False
        return self._enqueue(self._lane(key.kind), key, at)

    def run_now(self, key: JobKey) -> bool:
        """Run `key` as soon as a slot is free (after its current run, if it runs)."""
        return self.schedule(key, self._clock())

    def forget(self, key: JobKey) -> None:
        """The object is gone: drop its job, and stop its run if one is under way."""
        if self._registrations.pop(key, None) is None:
            return
        lane = self._lane(key.kind)
        lane.registered -= 1
        lane.pending.pop(key, None)  # its heap entry is now stale and skipped
        task = lane.running.get(key)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def forget_object(self, obj: ObjectKey) -> None:
        """Every job of the object (on delete)."""
        for key in [k for k in self._registrations if k.obj == obj]:
            self.forget(key)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the waiting task on the running event loop."""
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="mailward scheduler")
            self._dispatcher.add_done_callback(_report_dispatcher_end)

    async def stop(self, grace: float = 10.0) -> set[JobKey]:
        """Stop waiting and cancel the runs; wait for them at most `grace` seconds. Returns
        the keys whose run had not ended by then."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None
        runs = {task: key for lane in self._lanes.values() for key, task in lane.running.items()}
        for task in runs:
            task.cancel()
        if not runs:
            return set()
        _, still_running = await asyncio.wait(runs, timeout=grace)
        return {runs[task] for task in still_running}

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self, *, cancel_running: bool = True) -> None:
        """Start nothing until `resume()`. kopf stops a standby replica's daemons; the runs here
        are cancelled likewise (unless `cancel_running` is False), as the active replica now
        does the same work."""
        self._paused = True
        if cancel_running:
            for lane in self._lanes.values():
                for task in lane.running.values():
                    task.cancel()
        self._wake.set()

    def resume(self) -> None:
        """Start jobs again. Those that fell due while paused move to their next phase: a
        replica taking over re-lists and reconciles everything anyway, and 10k overdue jobs
        must not start as one burst."""
        if not self._paused:
            return
        self._paused = False
        now = self._clock()
        for lane in self._lanes.values():
            for key, pending in lane.pending.items():
                if pending.due < now:
                    interval = self._registrations[key].interval
                    pending.due = next_on_phase(key, interval, now)
            self._rebuild_heap(lane)
        self._wake.set()

    # -- introspection (metrics, tests) ------------------------------------------------------

    @property
    def kinds(self) -> Iterable[JobKind]:
        return tuple(self._lanes)

    def due_at(self, key: JobKey) -> float | None:
        pending = self._lane(key.kind).pending.get(key)
        return None if pending is None else pending.due

    def is_running(self, key: JobKey) -> bool:
        return key in self._lane(key.kind).running

    def stats(self, kind: JobKind, *, reset_max_lateness: bool = False) -> KindStats:
        lane = self._lane(kind)
        now = self._clock()
        cumulative = itertools.accumulate(lane.lateness_counts)
        result = KindStats(
            registered=lane.registered,
            queued=len(lane.pending),
            overdue=sum(1 for p in lane.pending.values() if p.due <= now),
            running=len(lane.running),
            started=lane.started,
            failed=lane.failed,
            max_lateness=lane.max_lateness,
            lateness=tuple(zip(LATENESS_BUCKETS, cumulative, strict=True)),
            lateness_sum=lane.lateness_sum,
        )
        if reset_max_lateness:
            lane.max_lateness = 0.0
        return result

    # -- internals ----------------------------------------------------------------------------

    def _lane(self, kind: JobKind) -> _Lane:
        lane = self._lanes.get(kind)
        if lane is None:
            lane = self._lanes[kind] = _Lane(kind)
        return lane

    def _enqueue(self, lane: _Lane, key: JobKey, at: float) -> bool:
        """Earliest wins: a key already pending at `at` or earlier stays as it is."""
        pending = lane.pending.get(key)
        if pending is not None and pending.due <= at:
            return False
        parked = key in lane.running
        order = next(self._order)
        lane.pending[key] = _Pending(at, order, parked)
        if not parked:
            heapq.heappush(lane.heap, (at, order, key))
            self._compact(lane)
            self._wake.set()
        return True

    def _compact(self, lane: _Lane) -> None:
        # Rescheduled and forgotten keys leave stale entries; rebuild before they dominate.
        if len(lane.heap) > 2 * len(lane.pending) + 1024:
            self._rebuild_heap(lane)

    def _rebuild_heap(self, lane: _Lane) -> None:
        lane.heap = []
        for key, pending in lane.pending.items():
            if not pending.parked:
                pending.order = next(self._order)
                lane.heap.append((pending.due, pending.order, key))
        heapq.heapify(lane.heap)

    async def _dispatch(self) -> None:
        """The one waiting task: start what is due, sleep until the next due time or a change."""
        while True:
            self._wake.clear()
            if self._paused:
                await self._wake.wait()
                continue
            now = self._clock()
            next_due: float | None = None
            for lane in self._lanes.values():
                self._start_due(lane, now)
                # A full lane wakes us when a run ends, not at its next due time.
                if lane.has_room and lane.heap:
                    due = lane.heap[0][0]
                    next_due = due if next_due is None else min(next_due, due)
            await self._nap(None if next_due is None else next_due - now)

    def _start_due(self, lane: _Lane, now: float) -> None:
        while lane.heap:
            due, order, key = lane.heap[0]
            pending = lane.pending.get(key)
            if pending is None or pending.order != order:
                heapq.heappop(lane.heap)  # stale: forgotten, rescheduled or parked since
                continue
            if due > now or not lane.has_room:
                return
            heapq.heappop(lane.heap)
            del lane.pending[key]
            lane.started += 1
            lane.observe_lateness(max(0.0, now - due))
            job = self._registrations[key].job
            lane.running[key] = asyncio.create_task(self._run(lane, key, job, now))

    async def _run(self, lane: _Lane, key: JobKey, job: Job, started: float) -> None:
        try:
            await job(key)
        except asyncio.CancelledError:
            raise
        except Exception:  # one object's trouble must not end the others' schedule
            lane.failed += 1
            logger.exception("%s of %s/%s failed", key.kind.name, key.obj.namespace, key.obj.name)
        finally:
            if lane.running.get(key) is asyncio.current_task():
                del lane.running[key]
            self._after_run(lane, key, started)
            self._wake.set()

    def _after_run(self, lane: _Lane, key: JobKey, started: float) -> None:
        registration = self._registrations.get(key)
        if registration is None:
            lane.pending.pop(key, None)
            return
        interval = registration.interval
        # The next phase at least half an interval after this start: a run that started late
        # (a backlog) skips a slot rather than running again right away.
        self._enqueue(
            lane, key, next_on_phase(key, interval, max(self._clock(), started + interval / 2))
        )
        pending = lane.pending[key]
        if pending.parked:  # a re-schedule made while it ran, or the one just made
            pending.parked = False
            pending.order = next(self._order)
            heapq.heappush(lane.heap, (pending.due, pending.order, key))

    async def _nap(self, seconds: float | None) -> None:
        if seconds is None:
            await self._wake.wait()
            return
        sleeper: asyncio.Future[object] = asyncio.ensure_future(self._sleep(max(0.0, seconds)))
        waker: asyncio.Future[object] = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()


def _report_dispatcher_end(task: asyncio.Task[None]) -> None:
    # Without its one waiting task no periodic job runs again: that must not pass silently.
    error = None if task.cancelled() else task.exception()
    if error is not None:
        logger.error("the scheduler stopped: no periodic job runs any more", exc_info=error)
