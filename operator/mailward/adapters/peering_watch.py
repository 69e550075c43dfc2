"""Following kopf peering for the work kopf does not pause: the scheduler's jobs.

kopf pauses a standby replica's watches and handlers; the scheduler (scheduler.py) was started
by a start-up handler and would go on running resyncs and compliance checks. This watch of the
peering object tells it when this replica is the active one (`peering.is_active`, kopf's rule).
A peer whose record runs out (a replica killed with SIGKILL) changes no object, so the verdict
is also taken again every few seconds from the last status seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from mailward.adapters.kube_watch import ObjectStream, list_and_watch
from mailward.peering import Peering, is_active

log = logging.getLogger("mailward.peering")

# How often the verdict is taken again without an event (records expire silently).
RECHECK_SECONDS = 2.0


def peering_path(me: Peering) -> str:
    if me.namespaces:
        # kopf keeps one KopfPeering per namespace it serves; the first one decides here, as
        # kopf pauses the whole operator on a conflict in any of them.
        return f"apis/kopf.dev/v1/namespaces/{me.namespaces[0]}/kopfpeerings"
    return "apis/kopf.dev/v1/clusterkopfpeerings"


async def follow(
    stream: ObjectStream,
    me: Peering,
    on_change: Callable[[bool], None],
    recheck_seconds: float = RECHECK_SECONDS,
) -> None:
    """Call `on_change(active)` whenever this replica's standing changes; until cancelled."""
    status: dict[str, Any] = {}
    active: bool | None = None

    def decide() -> None:
        nonlocal active
        now_active = is_active(status, me)
        if now_active != active:
            active = now_active
            log.info("this replica is %s", "active" if now_active else "on standby")
            on_change(now_active)

    def seen(obj: Mapping[str, Any]) -> None:
        nonlocal status
        if (obj.get("metadata") or {}).get("name") == me.name:
            status = dict(obj.get("status") or {})
            decide()

    def listed(items: list[dict[str, Any]]) -> None:
        for item in items:
            seen(item)

    def changed(event: str, obj: dict[str, Any]) -> None:
        if event != "DELETED":
            seen(obj)

    params = {"fieldSelector": f"metadata.name={me.name}"}
    watch = asyncio.create_task(
        list_and_watch(
            stream,
            peering_path(me),
            params,
            on_list=listed,
            on_event=changed,
            name="watch of the peering object",
        )
    )
    try:
        while not watch.done():
            await asyncio.sleep(recheck_seconds)
            decide()
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
