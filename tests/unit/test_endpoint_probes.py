"""Endpoint probes shared between the domains of one round: coalesced, and never kept longer.

The probe is a fake that counts its calls: this tests the sharing logic, not the network
(tests/integration/test_compliance_lab.py probes real endpoints).
"""

from __future__ import annotations

import asyncio

from mailward.compliance.endpoint_probes import EndpointProbes, ProbeWindow
from mailward.compliance.observations import Endpoint

MX1 = Endpoint("mx1.fleet.test", "127.0.0.31", 25)
MX2 = Endpoint("mx2.fleet.test", "127.0.0.32", 25)
ROUND = 3240.0  # 0.9 of an hour's interval, as the compliance runner passes it


class FakeProbe:
    """Counts its calls; each returns a new result, or raises, once the test opens the gate."""

    def __init__(self, *, gated: bool = False, error: Exception | None = None) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.error = error

    async def __call__(self) -> str:
        self.calls += 1
        call = self.calls
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return f"result-{call}"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_requests_for_one_endpoint_await_one_probe() -> None:
    async def main() -> None:
        window: ProbeWindow[Endpoint, str] = ProbeWindow(Clock())
        probe = FakeProbe(gated=True)
        waiting = [asyncio.ensure_future(window.get(MX1, ROUND, probe)) for _ in range(50)]
        await asyncio.sleep(0)
        probe.gate.set()
        assert await asyncio.gather(*waiting) == ["result-1"] * 50
        assert (probe.calls, window.probes, window.joined) == (1, 1, 49)

    asyncio.run(main())


def test_a_result_is_shared_within_the_window_and_probed_again_after_it() -> None:
    async def main() -> None:
        clock = Clock()
        window: ProbeWindow[Endpoint, str] = ProbeWindow(clock)
        probe = FakeProbe()
        assert await window.get(MX1, ROUND, probe) == "result-1"
        clock.now = ROUND - 1
        assert await window.get(MX1, ROUND, probe) == "result-1"
        # A caller with a shorter window (a shorter interval) does not take the older result.
        assert await window.get(MX1, ROUND / 2, probe) == "result-2"
        clock.now = ROUND / 2 + ROUND
        assert await window.get(MX1, ROUND, probe) == "result-3"
        assert await window.get(MX2, ROUND, probe) == "result-4"  # another endpoint
        assert (window.probes, window.shared) == (4, 1)

    asyncio.run(main())


def test_a_result_is_dropped_once_older_than_its_window() -> None:
    async def main() -> None:
        clock = Clock()
        window: ProbeWindow[Endpoint, str] = ProbeWindow(clock)
        probe = FakeProbe()
        await window.get(MX1, ROUND, probe)
        await window.get(MX2, ROUND, probe)
        assert len(window) == 2
        # Its domains are gone: the next probe of another endpoint drops what expired.
        clock.now = ROUND
        await window.get(Endpoint("mx3.fleet.test", "127.0.0.33", 25), 10.0, probe)
        assert len(window) == 1

    asyncio.run(main())


def test_a_failed_probe_reaches_its_waiters_only() -> None:
    async def main() -> None:
        window: ProbeWindow[Endpoint, str] = ProbeWindow(Clock())
        probe = FakeProbe(gated=True, error=ConnectionRefusedError("refused"))
        waiting = [asyncio.ensure_future(window.get(MX1, ROUND, probe)) for _ in range(5)]
        await asyncio.sleep(0)
        probe.gate.set()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(o, ConnectionRefusedError) for o in outcomes)
        assert probe.calls == 1  # the refusing host was asked once, not five times in a row
        # The next request (the domain's retry) probes again: a failure is never kept.
        probe.error = None
        assert await window.get(MX1, ROUND, probe) == "result-2"

    asyncio.run(main())


def test_an_incomplete_result_reaches_its_waiters_only() -> None:
    async def main() -> None:
        window: ProbeWindow[Endpoint, str] = ProbeWindow(Clock())
        probe = FakeProbe(gated=True)

        def complete(result: str) -> bool:
            return result != "result-1"  # the first probe was rate-limited, say

        waiting = [asyncio.ensure_future(window.get(MX1, ROUND, probe, complete)) for _ in range(3)]
        await asyncio.sleep(0)
        probe.gate.set()
        assert await asyncio.gather(*waiting) == ["result-1"] * 3
        assert len(window) == 0
        assert await window.get(MX1, ROUND, probe, complete) == "result-2"
        assert await window.get(MX1, ROUND, probe, complete) == "result-2"
        assert probe.calls == 2

    asyncio.run(main())


def test_a_cancelled_waiter_does_not_cancel_the_probe_of_the_others() -> None:
    async def main() -> None:
        window: ProbeWindow[Endpoint, str] = ProbeWindow(Clock())
        probe = FakeProbe(gated=True)
        first = asyncio.ensure_future(window.get(MX1, ROUND, probe))
        second = asyncio.ensure_future(window.get(MX1, ROUND, probe))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        probe.gate.set()
        assert await second == "result-1"
        assert first.cancelled()
        assert probe.calls == 1

    asyncio.run(main())


def test_no_window_shares_nothing() -> None:
    async def main() -> None:
        window: ProbeWindow[Endpoint, str] = ProbeWindow(Clock())
        probe = FakeProbe()
        results = await asyncio.gather(*(window.get(MX1, 0.0, probe) for _ in range(3)))
        assert sorted(results) == ["result-1", "result-2", "result-3"]
        assert len(window) == 0

    asyncio.run(main())


def test_a_probe_left_in_flight_by_a_closed_event_loop_is_not_awaited_by_the_next() -> None:
    window: ProbeWindow[Endpoint, str] = ProbeWindow(Clock())
    stuck = FakeProbe(gated=True)

    async def leave_in_flight() -> None:
        waiter = asyncio.ensure_future(window.get(MX1, ROUND, stuck))
        await asyncio.sleep(0)
        assert not waiter.done()  # asyncio.run cancels the waiter and the probe on return

    asyncio.run(leave_in_flight())
    assert asyncio.run(window.get(MX1, ROUND, FakeProbe())) == "result-1"


def test_endpoint_probes_keep_tls_and_injection_apart() -> None:
    probes = EndpointProbes(clock=Clock())
    assert probes.tls is not probes.injection
    assert (probes.probes, probes.shared) == (0, 0)
