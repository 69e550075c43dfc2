"""The scheduler follows kopf peering (adapters/peering_watch.py): paused on standby, resumed
when this replica becomes the active one, also when a peer's record runs out silently."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Mapping
from typing import Any

from mailward.adapters.peering_watch import follow
from mailward.peering import Peering

ME = Peering(name="mailward", namespaces=(), identity="pod-a", priority=10, lifetime=20)


def record(priority: int, seconds_ago: float, lifetime: int = 20) -> dict[str, Any]:
    seen = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lastseen": seen.isoformat(), "lifetime": lifetime}


class PeeringObject:
    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def body(self) -> dict[str, Any]:
        return {"metadata": {"name": "mailward"}, "status": dict(self.status)}

    async def list(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        assert path == "apis/kopf.dev/v1/clusterkopfpeerings"
        assert params["fieldSelector"] == "metadata.name=mailward"
        return {"items": [self.body()], "metadata": {"resourceVersion": "1"}}

    async def watch(self, path: str, params: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.events.get()


def test_standby_while_a_higher_peer_lives_active_once_its_record_runs_out() -> None:
    async def scenario() -> list[bool]:
        peering = PeeringObject({"pod-a": record(10, 0)})
        changes: list[bool] = []
        task = asyncio.create_task(follow(peering, ME, changes.append, recheck_seconds=0.01))
        await asyncio.sleep(0.05)
        # A peer with a higher priority appears: this replica pauses.
        peering.status["pod-b"] = record(20, 0, lifetime=1)
        peering.events.put_nowait({"type": "MODIFIED", "object": peering.body()})
        await asyncio.sleep(0.05)
        # It is killed: nothing changes in the object, its record runs out after 1 s.
        await asyncio.sleep(1.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return changes

    assert asyncio.run(scenario()) == [True, False, True]


def test_not_active_before_its_own_record_is_written() -> None:
    async def scenario() -> list[bool]:
        peering = PeeringObject({})
        changes: list[bool] = []
        task = asyncio.create_task(follow(peering, ME, changes.append, recheck_seconds=0.01))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return changes

    assert asyncio.run(scenario()) == [False]
