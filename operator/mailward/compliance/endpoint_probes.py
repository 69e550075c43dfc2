"""Observations of an MX endpoint shared by every domain it serves, for one checking round.

A MailServer's hosts serve hundreds of domains; the TLS observation of an endpoint (dozens of
handshakes: protocols, ciphers, groups, certificate) and the STARTTLS injection probe depend on
the endpoint (address, port, the name sent as SNI), not on the domain. So within a round (a
freshness window the caller passes, below its own check interval) an endpoint is probed once and
the observation handed to each domain checked in that window. What is shared is gathered data,
never a verdict: each domain is judged on its own.

Level-based, not a cache that replaces re-checking:
- a result is used only while it is younger than the caller's window, counted from when its
  probe began, and dropped once older than the window of the round that probed it;
- requests for an endpoint whose probe is in flight await that probe (coalescing), whatever it
  ends with; a failed or incomplete probe (an exception, or a result `keep` refuses: a refused
  or rate-limited connection) reaches only those waiters and is never kept for later callers,
  whose retry must really probe again.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mailward.compliance.observations import Endpoint, InjectionObservation, TLSObservation

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Clock = Callable[[], float]


def _always(_: object) -> bool:
    return True


@dataclass(frozen=True)
class _Observed(Generic[V]):
    value: V
    probed_at: float  # when the probe began: the observation is at least this old
    expires_at: float  # probed_at + the window of the round that probed it


class ProbeWindow(Generic[K, V]):
    """One kind of probe, keyed by what it probes; results live for one window."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._observed: dict[K, _Observed[V]] = {}
        self._in_flight: dict[K, asyncio.Future[V]] = {}
        # (expires_at, order, key): drops results in expiry order without scanning them all.
        self._expiry: list[tuple[float, int, K]] = []
        self._order = itertools.count()
        self.probes = 0  # probes started
        self.shared = 0  # answers taken from a finished probe of the window
        self.joined = 0  # answers that awaited a probe already in flight

    def __len__(self) -> int:
        """How many results are held (for tests and metrics)."""
        return len(self._observed)

    async def get(
        self,
        key: K,
        max_age: float,
        probe: Callable[[], Awaitable[V]],
        keep: Callable[[V], bool] = _always,
    ) -> V:
        """`probe()`'s result for `key`, from a probe begun less than `max_age` seconds ago if
        there is one; a probe in flight for `key` is awaited, not repeated. `max_age <= 0`
        shares nothing."""
        if max_age <= 0:
            self.probes += 1
            return await probe()
        now = self._clock()
        self._drop_expired(now)
        observed = self._observed.get(key)
        if observed is not None and now - observed.probed_at < max_age:
            self.shared += 1
            return observed.value
        running = self._in_flight.get(key)
        # A done future here is a probe task cancelled before it ran (its loop closing).
        if running is None or running.done():
            running = asyncio.ensure_future(self._probe(key, now, max_age, probe, keep))
            # Every waiter may be cancelled (a domain's check stopped); the probe still ends,
            # and its failure must not be logged as "never retrieved".
            running.add_done_callback(_retrieve)
            self._in_flight[key] = running
            self.probes += 1
        else:
            self.joined += 1
        # Shielded: one waiter cancelled does not cancel the probe the others await.
        return await asyncio.shield(running)

    async def _probe(
        self,
        key: K,
        began: float,
        window: float,
        probe: Callable[[], Awaitable[V]],
        keep: Callable[[V], bool],
    ) -> V:
        try:
            value = await probe()
        finally:
            if self._in_flight.get(key) is asyncio.current_task():
                del self._in_flight[key]
        if keep(value):
            self._observed[key] = _Observed(value, began, began + window)
            heapq.heappush(self._expiry, (began + window, next(self._order), key))
        return value

    def _drop_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, _, key = heapq.heappop(self._expiry)
            observed = self._observed.get(key)
            # A newer result of the same key has its own entry further down the heap.
            if observed is not None and observed.expires_at == expires_at:
                del self._observed[key]


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class EndpointProbes:
    """The endpoint probes that gathering shares between the domains of one round."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.tls: ProbeWindow[Endpoint, TLSObservation] = ProbeWindow(clock)
        self.injection: ProbeWindow[Endpoint, InjectionObservation] = ProbeWindow(clock)

    @property
    def probes(self) -> int:
        return self.tls.probes + self.injection.probes

    @property
    def shared(self) -> int:
        """Answers that did not probe: from a finished probe of the window or one in flight."""
        windows = (self.tls, self.injection)
        return sum(w.shared + w.joined for w in windows)
