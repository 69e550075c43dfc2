"""bench-scale's disturbances: something breaks while the MailDomains converge, and afterwards
every domain's records are compared with what mailward wants (tests/zones.py).

- `kill-active`: two operator replicas (kopf peering); the active one's process gets SIGKILL.
  The takeover is timed until the killed replica's peering record is gone or ranks below the
  standby's, as test_ha does.
- `apiserver`: the API server stopped and started again on the same port (etcd keeps its data).
- `bind`: the authoritative BIND stopped for 60 s (`interrupt`/`resume` keep keys and journals).

Each starts once `--disturb-at` of the domains are ready and runs in a thread of its own, so the
bench keeps watching meanwhile; the API server's own outage shows as LISTs that fail.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from mailward.api.v1alpha1 import MXHost
from mailward.parts import Findings
from mailward.reconcile import parse_spec
from mailward_localstack.stack import Stack
from tests import replicas
from tests.bench._cluster import say
from tests.zones import zone_differences

KINDS = ("kill-active", "apiserver", "bind")
BIND_DOWN_SECONDS = 60
APISERVER_DOWN_SECONDS = 10
TAKEOVER_TIMEOUT = 120


@dataclass
class Disturbance:
    kind: str
    stack: Stack
    began: float | None = None
    ended: float | None = None
    what: str = ""
    error: str = ""
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self, ready: int, count: int) -> None:
        self.began = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, args=(ready, count), name=f"disturb {self.kind}", daemon=True
        )
        self._thread.start()

    @property
    def done(self) -> bool:
        return self.ended is not None

    def _run(self, ready: int, count: int) -> None:
        try:
            self.what = self._disturb()
        except Exception as error:  # reported in the bench's table, never hidden
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self.ended = time.monotonic()
        say(f"disturbance {self.kind} at {ready:,}/{count:,} ready: {self.what or self.error}")

    def _disturb(self) -> str:
        if self.kind == "kill-active":
            pods = replicas.running_pods(self.stack)
            if len(pods) < 2:
                raise RuntimeError(f"{len(pods)} replica running: no standby to take over")
            active = replicas.active(self.stack, set(pods))
            (standby, *_) = sorted(set(pods) - {active})
            os.kill(replicas.operator_process(self.stack, pods[active]), signal.SIGKILL)
            killed = time.monotonic()
            return f"SIGKILL to the active replica; {self._takeover(active, standby, killed)}"
        if self.kind == "apiserver":
            down = self.stack.plane.restart_apiserver(down_seconds=APISERVER_DOWN_SECONDS)
            return f"API server restarted, {down:.1f} s without an answer"
        if self.kind == "bind":
            server = self.stack.dns.authoritative
            server.interrupt()
            try:
                time.sleep(BIND_DOWN_SECONDS)
            finally:
                server.resume()
            return f"BIND stopped for {BIND_DOWN_SECONDS} s"
        raise ValueError(f"no disturbance {self.kind!r}; one of {', '.join(KINDS)}")

    def _takeover(self, killed: str, standby: str, at: float) -> str:
        """As test_ha times it: until the killed replica's peering record is gone or ranks
        below the standby's (the standby then resumes its handlers)."""
        while time.monotonic() - at < TAKEOVER_TIMEOUT:
            records = replicas.peers(self.stack)
            if killed not in records or int(records[killed]["priority"]) < int(
                records[standby]["priority"]
            ):
                return f"the standby took over {time.monotonic() - at:.1f} s after the kill"
            time.sleep(0.2)
        raise RuntimeError(f"the killed replica still ranked first after {TAKEOVER_TIMEOUT} s")


def zones_as_desired(
    stack: Stack, specs: Iterable[tuple[dict[str, object], str]], zones: Iterable[str]
) -> list[str]:
    """Every domain's records against desired_for; `specs` are (spec, the fleet's MX host).

    The bench's domains are attached to fleets (the MX is the fleet's host, its TLSA the
    fleet's), get no policy from the endpoint (the policy id is the rendered one) and name no
    collector address: so their desired records follow from the spec and the MX host alone."""
    held = {name: stack.dns.authoritative.axfr(name) for name in zones}
    differences: list[str] = []
    for raw, mx in specs:
        spec = parse_spec(raw)
        spec = spec.model_copy(update={"mx": [MXHost(host=mx, priority=10)]})
        zone = held[spec.domain.split(".", 1)[1]]
        differences += zone_differences(zone, spec, Findings())
    return differences
