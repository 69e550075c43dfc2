"""This process's place in kopf peering, for work that kopf does not pause.

kopf pauses a standby replica's watches, handlers, timers and daemons, but not what the
operator starts itself (a task from a startup handler, a scheduler of its own): such work must
ask whether this replica is the active one. `mailward run --peering` records here who this
process is in the peering (`CURRENT`); `is_active` applies kopf's rule (kopf 1.45,
kopf/_core/engines/peering.py process_peering_event) to the peering object's `status`:

- a peer whose record ran out (`lastseen + lifetime` in the past) does not count;
- a live peer with a higher priority pauses this one, and so does one with the same priority
  (kopf pauses every replica then);
- mandatory peering starts paused; kopf resumes on the first look at the object that shows no
  live peer above, which may come a moment before its own record is written: this rule waits
  for the record too (stricter, never active where kopf is not).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# kopf's assumption for a record without a lifetime (a broken or foreign peer).
_DEFAULT_LIFETIME = 60


@dataclass(frozen=True)
class Peering:
    """Who this process is in the peering object `name` (kopf.dev/v1)."""

    name: str
    namespaces: tuple[str, ...]  # empty: ClusterKopfPeering, else a KopfPeering in each
    identity: str  # kopf's: POD_ID, the pod's name
    priority: int
    lifetime: int


# Set by `mailward run --peering` before kopf starts; None: standalone, always active.
CURRENT: Peering | None = None


def _parse_time(text: str) -> datetime.datetime:
    when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def live_peers(status: Mapping[str, Any], now: datetime.datetime | None = None) -> dict[str, int]:
    """identity -> priority of the records in `status` that have not run out."""
    now = now or datetime.datetime.now(datetime.UTC)
    live = {}
    for identity, record in status.items():
        if not isinstance(record, Mapping) or "lastseen" not in record:
            continue
        lifetime = datetime.timedelta(seconds=int(record.get("lifetime", _DEFAULT_LIFETIME)))
        if _parse_time(str(record["lastseen"])) + lifetime > now:
            live[identity] = int(record.get("priority", 0))
    return live


def is_active(
    status: Mapping[str, Any],
    me: Peering,
    now: datetime.datetime | None = None,
) -> bool:
    """Whether kopf runs this replica, by the peering object's `status` (see the module)."""
    if me.identity not in status:
        return False
    others = {k: v for k, v in live_peers(status, now).items() if k != me.identity}
    return all(priority < me.priority for priority in others.values())
