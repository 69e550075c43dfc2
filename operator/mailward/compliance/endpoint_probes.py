"""Observations of an MX endpoint shared by every domain it serves, for at most one interval.

A MailServer's hosts serve hundreds of domains; the TLS observation of an endpoint (dozens of
handshakes: protocols, ciphers, groups, certificate) and the STARTTLS injection probe say the same
for each of them. The compliance runner checks every domain once per interval, so an endpoint is
probed once per interval and the result applied to each domain checked in that window. What is
shared is gathered data, never a verdict: each domain is judged on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class EndpointProbes:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._results: dict[tuple[str, Any], tuple[float, Any]] = {}
        self._inflight: dict[tuple[str, Any], asyncio.Lock] = {}
        self.probes = 0
        self.shared = 0

    async def get(
        self,
        kind: str,
        endpoint: Any,
        max_age: float,
        probe: Callable[[], Awaitable[T]],
        keep: Callable[[T], bool] = lambda _: True,
    ) -> T:
        """The result of `probe` for (`kind`, `endpoint`) no older than `max_age` seconds; a
        probe already running for it is waited for, not repeated. A result `keep` refuses (a
        probe that could not complete: a refused or rate-limited connection) is returned to
        this caller only; the next one probes again."""
        key = (kind, endpoint)
        lock = self._inflight.setdefault(key, asyncio.Lock())
        async with lock:
            now = self._clock()
            cached = self._results.get(key)
            if cached is not None and now - cached[0] < max_age:
                self.shared += 1
                result: T = cached[1]
                return result
            value = await probe()
            self.probes += 1
            if keep(value):
                self._results[key] = (self._clock(), value)
            self._prune(now, max_age)
            return value

    def _prune(self, now: float, max_age: float) -> None:
        # Endpoints no domain points at any more drop out after a few intervals.
        stale = [k for k, (t, _) in self._results.items() if now - t > 4 * max_age]
        for key in stale:
            self._results.pop(key, None)
            self._inflight.pop(key, None)
