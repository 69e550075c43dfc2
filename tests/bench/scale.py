"""Benchmark: N MailDomains at once on a few shared MailServer fleets, their DNS published through
the local BIND, each figure printed beside its goal (issue #15).

    .venv/bin/python -m tests.bench.scale [--domains 1000] [--fleets 4] [--idle-seconds 600]
        [--compliance] [--operator-memory 3Gi] [--converge-timeout 1200] [--budget 3000]
        [--concurrency N] [--disturb kill-active|apiserver|bind [--disturb-at 0.25]]

Rows:
- converge: the N MailDomains applied at once (server-side apply from this process, 16 at a
  time) until every one has Ready=True and DNSReady=True for its generation, watched by one LIST
  per second (from the API server's watch cache), not N GETs; per-domain time-to-Ready (from its
  own apply to the first LIST that shows it ready) p50/p90/max and the total from the first
  apply. Goal: 60 s at 1,000 (at other N the time is stated, no verdict);
- memory: the operator pod's cgroup peak (`memory.peak`, on cgroup v1 `memory.max_usage_in_bytes`
  of the pod-level cgroup: the operator container over all its restarts, plus the pause
  process), and the highest `memory.current` of the operator container sampled every second;
  beside its memory limit, restarts and OOM kills. Goal: 300 MiB at 10,000;
- idle writes: after convergence, `--idle-seconds` of nothing; then the mutating requests (create,
  update, patch, delete, deletecollection) the operator's ServiceAccount sent in that time, from
  the API server's audit log (Metadata level, `ControlPlane(audit=True)`), leases of the leader
  election (coordination.k8s.io leases, kopf.dev kopfpeerings) left out and counted apart. Goal
  0; each remaining write is listed by verb, resource, subresource and field manager. The
  operator's writes while converging are listed the same way (per domain);
- disturbance (`--disturb`, tests/bench/disturb.py): once `--disturb-at` of the domains are
  ready, the active replica is SIGKILLed (two replicas then), the API server restarted, or BIND
  stopped for a minute; the row gives the takeover (the killed replica no longer ranks first), the
  time from the end of the disturbance until all are ready, and every domain's records compared
  with the desired ones after convergence (tests/zones.py). Goal: all recover, 0 differences;
- compliance (`--compliance`, off by default: the engine is known to check about 31 domains a
  minute): the domains carry the compliance label and `spec.compliance.interval: 5m`; the row is
  how many have a `status.compliance.lastChecked` within the 5 minutes after convergence (the
  chart's `compliance.heartbeatSeconds` is set to 60 for the run, so that every check, even one
  with an unchanged result, moves `lastChecked`; its status writes then show in the idle rows).
  Goal: all N. Without `--compliance` no domain is probed (the chart's label selector).

Setup: the stack (`mailward_localstack`) on 127.93.0.0/24, state in .local/bench-scale (wiped
first), with the audit log on and four more signed zones under `test.` (`scale0.test` ...). One
MailServer per zone, `fleet<k>` in namespace `scale-fleets`: one host `mx.scale<k>.test` on its
own loopback address (host network, one pod), a TLS Secret from the local CA, its records
published through the `ClusterDNSProvider local-bind` (RFC 2136 + TSIG to the stack's BIND). The
domains `dNNNNN.scale<k>.test` (domain i attaches to fleet i mod 4) live in 10 namespaces and
publish through the same `ClusterDNSProvider`; their TLSRPT rua is given (no collector is asked
for) and MTA-STS policies are not fetched from the policy endpoint (no policy TLS Secrets: the
fleet bench saw the endpoint OOMKilled with 1,000 of them). The operator runs with the
production retry and resync periods (300 s) and a memory limit (`--operator-memory`, default
3Gi) high enough to measure rather than to be killed; the limit is printed.

Needs root. It stops itself after `--budget` seconds; whatever happened (OOM kills, a stuck
operator, the budget), it prints what it measured up to then, and the cluster and the loopback
aliases go in any case.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mailward_localstack.controlplane import AUDIT_ENV, kubectl
from mailward_localstack.dns import ZoneSpec
from mailward_localstack.stack import RELEASE_NAMESPACE, Stack, StackLayout
from tests.bench._cluster import (
    API,
    MIB,
    Api,
    Stopped,
    apply,
    cgroup_memory,
    container_cgroup,
    fresh_stack,
    manifest,
    oom_kills,
    operator_log,
    operator_pod,
    pod_cgroup,
    say,
    secret,
    start_budget,
)
from tests.bench.disturb import KINDS, Disturbance, zones_as_desired

STATE = Path(__file__).resolve().parents[2] / ".local" / "bench-scale"
NET = "127.93.0"
FLEET_NS = "scale-fleets"
DOMAIN_NS = tuple(f"scale-{i:02d}" for i in range(10))
FIRST_HOST = 35  # fleet k's MX host on .35+k (.31 is the demo MailServer's, .44 the policy's)
PROVIDER = {"kind": "ClusterDNSProvider", "name": "local-bind"}
SCALE_LABEL = ("bench.mailward.io/scale", "yes")
COMPLIANCE_LABEL = ("bench.mailward.io/compliance", "yes")
COMPLIANCE_WINDOW = 300.0  # spec.compliance.interval of the bench domains: 5m
MANAGER = "mailward-bench"
OPERATOR_USER = f"system:serviceaccount:{RELEASE_NAMESPACE}:mailward"
ELECTION = {("coordination.k8s.io", "leases"), ("kopf.dev", "kopfpeerings")}
ELECTION |= {("kopf.dev", "clusterkopfpeerings")}
APPLIERS = 16
GOAL_SECONDS = 60.0
GOAL_MEMORY_MIB = 300
GOAL_MEMORY_AT = 10_000


# -- what is applied -----------------------------------------------------------------------------


def zone(k: int) -> str:
    return f"scale{k}.test"


def mx_host(k: int) -> str:
    return f"mx.{zone(k)}"


@dataclass(frozen=True)
class Domain:
    index: int
    fleets: int

    @property
    def name(self) -> str:
        return f"d{self.index:05d}"

    @property
    def namespace(self) -> str:
        return DOMAIN_NS[self.index % len(DOMAIN_NS)]

    @property
    def fleet(self) -> int:
        return self.index % self.fleets

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def path(self) -> str:
        return f"/apis/{API}/namespaces/{self.namespace}/maildomains/{self.name}"

    def manifest(self, compliance: bool) -> dict[str, Any]:
        labels = dict([SCALE_LABEL, COMPLIANCE_LABEL] if compliance else [SCALE_LABEL])
        spec: dict[str, Any] = {
            "domain": f"{self.name}.{zone(self.fleet)}",
            "mailServerRef": {"name": f"fleet{self.fleet}", "namespace": FLEET_NS},
            "dns": {"providerRef": PROVIDER},
            "tlsRpt": {"rua": [f"mailto:tlsrpt@{zone(self.fleet)}"]},
        }
        if compliance:
            spec["compliance"] = {"interval": "5m"}
        meta = {"name": self.name, "namespace": self.namespace, "labels": labels}
        return manifest(API, "MailDomain", meta, spec=spec)


def mail_server(layout: StackLayout, k: int) -> dict[str, Any]:
    host = {"host": mx_host(k), "priority": 10, "addresses": [layout.address(FIRST_HOST + k)]}
    spec = {
        "hosts": [host],
        "replicas": 1,
        "hostNetwork": True,
        "tls": {"secretName": f"fleet{k}-tls"},
        "dns": {"providerRef": PROVIDER},
        "allowedDomains": {"namespaces": {"from": "All"}},
    }
    return manifest(API, "MailServer", {"name": f"fleet{k}", "namespace": FLEET_NS}, spec=spec)


def operator_values(memory: str, compliance: bool, concurrency: int | None) -> dict[str, Any]:
    values: dict[str, Any] = {
        # The chart's (production) periods; the stack's defaults are the demo's short retries.
        "reconcile": {"resyncSeconds": 300, "mtaRetrySeconds": 15, "tlsrptRetrySeconds": 60},
        "compliance": {"labelSelector": "=".join(COMPLIANCE_LABEL)},
        # Last in the container's env, so it wins over the chart's: no policy fetch per domain.
        "extraEnv": [{"name": "MAILWARD_POLICY_ENDPOINT_URL", "value": ""}],
        "resources": {"limits": {"memory": memory}},
    }
    if compliance:
        values["compliance"]["heartbeatSeconds"] = 60
    if concurrency is not None:
        values["reconcile"]["concurrency"] = concurrency
    return values


# -- what is watched -----------------------------------------------------------------------------


def _status_of(body: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in body.get("status", {}).get("conditions", []):
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def is_ready(body: dict[str, Any]) -> bool:
    generation = body["metadata"].get("generation")
    ready, dns = _status_of(body, "Ready"), _status_of(body, "DNSReady")
    return (
        ready.get("status") == "True"
        and dns.get("status") == "True"
        and ready.get("observedGeneration") == generation
    )


@dataclass
class OperatorWatch:
    """The operator's memory every second and its pod every five, in a thread of its own."""

    stack: Stack
    api: Api
    max_current: int = 0
    peak: int = 0
    oom_kills: int = 0
    restarts: int = 0
    last_termination: str = ""
    limit: str = "?"
    errors: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="operator-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        pod, container, tick = None, None, 0
        while not self._stop.wait(0 if tick == 0 else 1.0):
            try:
                if tick % 5 == 0 or container is None:
                    found = operator_pod(self.api)
                    if found is not None:
                        self.restarts, self.limit = found.restarts, found.memory_limit
                        self.last_termination = found.last_termination or self.last_termination
                        pod = pod_cgroup(self.stack, found.uid)
                        container = container_cgroup(pod, found.container_id)
                tick += 1
                if container is not None and pod is not None:
                    self.max_current = max(self.max_current, cgroup_memory(container)[0])
                    self.peak = max(self.peak, cgroup_memory(pod)[3])
                    self.oom_kills = max(self.oom_kills, oom_kills(pod))
            except Exception as error:  # a container between restarts has no cgroup: next tick
                self.errors[type(error).__name__] += 1
                container = None

    def line(self) -> str:
        return (
            f"operator memory {self.max_current / MIB:.0f} MiB (peak {self.peak / MIB:.0f}), "
            f"restarts {self.restarts}{f' ({self.last_termination})' if self.restarts else ''}"
        )


# -- the audit log -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    at: float  # epoch seconds the API server received it
    user: str
    verb: str
    group: str
    resource: str
    subresource: str
    manager: str
    namespace: str
    name: str
    code: int


def audit_writes(log: Path, since: float) -> Iterator[Write]:
    """Every logged request from `since` on, from the log and its rotated copies."""
    for path in sorted(log.parent.glob("audit*.log")):
        if path.stat().st_mtime < since:
            continue
        with path.open() as lines:
            for line in lines:
                event = json.loads(line)
                at = datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
                if at < since:
                    continue
                ref = event.get("objectRef") or {}
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(event["requestURI"]).query)
                yield Write(
                    at=at,
                    user=event.get("user", {}).get("username", ""),
                    verb=event["verb"],
                    group=ref.get("apiGroup", ""),
                    resource=ref.get("resource", ""),
                    subresource=ref.get("subresource", ""),
                    manager=query.get("fieldManager", [""])[0],
                    namespace=ref.get("namespace", ""),
                    name=ref.get("name", ""),
                    code=int((event.get("responseStatus") or {}).get("code", 0)),
                )


def breakdown(writes: list[Write], began: float, per: int = 0, limit: int = 25) -> None:
    """(verb, resource, subresource, field manager): count, first and last second of each."""
    groups: dict[tuple[str, str, str, str], list[Write]] = {}
    for write in writes:
        resource = f"{write.resource}.{write.group}" if write.group else write.resource
        key = (write.verb, resource, write.subresource or "-", write.manager or "-")
        groups.setdefault(key, []).append(write)
    head = f"  {'verb':8} {'resource':36} {'subresource':11} {'field manager':24} {'count':>7}"
    print(head + (f" {'/domain':>8}" if per else f" {'first s':>8} {'last s':>7} {'objects':>7}"))
    rows = sorted(groups.items(), key=lambda item: -len(item[1]))
    for (verb, resource, sub, manager), found in rows[:limit]:
        row = f"  {verb:8} {resource:36} {sub:11} {manager:24} {len(found):>7}"
        if per:
            row += f" {len(found) / per:>8.2f}"
        else:
            objects = len({(w.namespace, w.name) for w in found})
            first, last = found[0].at - began, found[-1].at - began
            row += f" {first:>8.0f} {last:>7.0f} {objects:>7}"
        print(row)
    if len(rows) > limit:
        rest = sum(len(found) for _, found in rows[limit:])
        print(f"  ... {len(rows) - limit} more kinds, {rest} writes")


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Results:
    """What was measured so far: the summary prints it whatever stopped the run."""

    count: int
    compliance: bool
    applied: float | None = None  # seconds to apply all
    ready: dict[tuple[str, str], float] = field(default_factory=dict)  # per-domain seconds
    total: float | None = None  # first apply until all ready (None: not all)
    waited: float = 0.0
    idle: tuple[int, int, float, bool] | None = None  # writes, election writes, seconds, converged
    checked: tuple[int, int] | None = None  # checked within the window, checked at all
    ready_at: dict[tuple[str, str], float] = field(default_factory=dict)  # monotonic, per domain
    disturbance: Disturbance | None = None
    zones: list[str] | None = None  # differences from the desired records (None: not compared)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def converge_row(results: Results) -> tuple[str, str, str]:
    n = results.count
    times = list(results.ready.values())
    spread = (
        f"p50 {percentile(times, 0.5):.1f} / p90 {percentile(times, 0.9):.1f} / "
        f"max {max(times):.1f} s"
        if times
        else "none Ready"
    )
    if results.total is not None:
        measured = f"all {n:,} in {results.total:.1f} s ({spread})"
        verdict = "met" if results.total <= GOAL_SECONDS else "MISSED"
    else:
        measured = f"{len(times):,}/{n:,} after {results.waited:.0f} s, then stopped ({spread})"
        verdict = "MISSED"
    return measured, f"{GOAL_SECONDS:.0f} s at 1,000", verdict if n == 1000 else "-"


def memory_row(results: Results, watch: OperatorWatch) -> tuple[str, str, str]:
    peak = max(watch.peak, watch.max_current) / MIB
    measured = (
        f"pod cgroup peak {watch.peak / MIB:.0f} MiB, container max {watch.max_current / MIB:.0f}"
        f" MiB, at {results.count:,}; limit {watch.limit}, restarts {watch.restarts}"
        f"{f' ({watch.last_termination})' if watch.restarts else ''}, OOM kills {watch.oom_kills}"
    )
    if results.count >= GOAL_MEMORY_AT:
        verdict = "met" if peak <= GOAL_MEMORY_MIB else "MISSED"
    else:
        verdict = f"MISSED already at {results.count:,}" if peak > GOAL_MEMORY_MIB else "-"
    if watch.restarts:  # no incarnation held all N for long: the peak is a lower bound
        verdict += " (lower bound: restarted)"
    return measured, f"{GOAL_MEMORY_MIB} MiB at 10,000", verdict


def operator_warnings(api: Api) -> Counter[str]:
    """The kubelet's Warning events about the operator's pod (probes failed, kills)."""
    path = f"/api/v1/namespaces/{RELEASE_NAMESPACE}/events"
    counts: Counter[str] = Counter()
    for event in api.list(path):
        involved = event.get("involvedObject", {})
        if involved.get("kind") != "Pod" or not involved.get("name", "").startswith("mailward-"):
            continue
        if involved["name"].startswith("mailward-policy") or event.get("type") != "Warning":
            continue
        message = str(event.get("message", "")).split(":")[0]
        counts[f"{event.get('reason')}: {message}"] += int(event.get("count") or 1)
    return counts


def disturbance_row(results: Results) -> tuple[str, str, str]:
    disturbance = results.disturbance
    assert disturbance is not None
    if disturbance.began is None:
        return f"{disturbance.kind}: never started", "", "MISSED"
    what = disturbance.what or disturbance.error or "still running"
    after = sorted(at for at in results.ready_at.values() if at > disturbance.began)
    parts = [what]
    if disturbance.ended is not None and results.total is not None and after:
        parts.append(f"all ready {max(0.0, after[-1] - disturbance.ended):.1f} s after it ended")
    if results.zones is None:
        parts.append("zones not compared")
        verdict = "MISSED"
    else:
        parts.append(f"{len(results.zones)} differences from the desired records")
        verdict = "met" if not results.zones and results.total is not None else "MISSED"
    return "; ".join(parts), "recovers, nothing lost or duplicated", verdict


def summary(results: Results, watch: OperatorWatch, warnings: Counter[str]) -> None:
    rows = [("MailDomains Ready + DNSReady", *converge_row(results))]
    if results.disturbance is not None:
        rows.append((f"disturbance: {results.disturbance.kind}", *disturbance_row(results)))
    rows.append(("operator peak memory", *memory_row(results, watch)))
    if results.idle is None:
        rows.append(("idle mutating requests", "not measured (stopped before)", "0", "-"))
    else:
        writes, election, seconds, converged = results.idle
        measured = f"{writes:,} in {seconds:.0f} s (+{election} election leases, not counted)"
        if not converged:
            measured += "; NOT idle: not all domains were Ready"
        rows.append(("idle mutating requests", measured, "0", "met" if writes == 0 else "MISSED"))
    if results.compliance:
        if results.checked is None:
            rows.append(("compliance checks in 5 min", "not measured (stopped before)", "", "-"))
        else:
            within, ever = results.checked
            measured = f"{within:,}/{results.count:,} ({ever:,} checked at all by then)"
            goal = f"all {results.count:,}"
            verdict = "met" if within == results.count else "MISSED"
            rows.append(("compliance checks in 5 min", measured, goal, verdict))
    print(f"\n{'scale, ' + format(results.count, ',') + ' MailDomains':30} {'measured':96} "
          f"{'goal':20} verdict")  # fmt: skip
    for label, measured, goal, verdict in rows:
        print(f"{label:30} {measured:96} {goal:20} {verdict}", flush=True)
    print("memory: the pod-level cgroup's peak (v2 memory.peak, v1 memory.max_usage_in_bytes: all "
          "the container's incarnations) and the container cgroup's memory.current sampled "
          "every second (the current incarnation's)")  # fmt: skip
    told = ", ".join(f"{what} x{count}" for what, count in warnings.most_common())
    print(f"operator pod warnings (kubelet): {told or 'none'}", flush=True)


class Bench:
    def __init__(self, stack: Stack, args: argparse.Namespace, results: Results) -> None:
        self.stack, self.args, self.results = stack, args, results
        self.api = Api(stack)
        self.watch = OperatorWatch(stack, self.api)
        self.domains = [Domain(i, args.fleets) for i in range(args.domains)]

    def prepare(self) -> None:
        """Namespaces, the fleets' Secrets and MailServers; until every fleet is Ready."""
        layout, fleets = self.stack.layout, range(self.args.fleets)
        names = (FLEET_NS, *DOMAIN_NS)
        apply(self.stack, [manifest("v1", "Namespace", {"name": ns}) for ns in names])
        certs = [self.stack.ca.issue_server_cert([mx_host(k)]) for k in fleets]
        apply(self.stack, [secret(FLEET_NS, f"fleet{k}-tls", certs[k]) for k in fleets])
        began = time.monotonic()
        apply(self.stack, [mail_server(layout, k) for k in fleets])
        path = f"/apis/{API}/namespaces/{FLEET_NS}/mailservers"
        while True:
            servers = self.api.list(path)
            ready = [s for s in servers if _status_of(s, "Ready").get("status") == "True"]
            if len(ready) == self.args.fleets:
                break
            if time.monotonic() - began > 420:
                raise RuntimeError(f"fleets not Ready after 420 s: {json.dumps(servers)[:2000]}")
            time.sleep(2)
        say(f"{self.args.fleets} fleets Ready {time.monotonic() - began:.0f}s after apply")

    def apply_domains(self) -> dict[tuple[str, str], float]:
        started: dict[tuple[str, str], float] = {}

        def one(domain: Domain) -> None:
            started[domain.key] = time.monotonic()
            body = domain.manifest(self.args.compliance)
            self.api.server_side_apply(domain.path, body, MANAGER)

        with ThreadPoolExecutor(APPLIERS) as pool:
            list(pool.map(one, self.domains))
        return started

    def converge(self, deadline: float) -> float:
        """Apply, then one LIST a second until all are ready or `deadline`; the end time."""
        results = self.results
        first = time.monotonic()
        started = self.apply_domains()
        results.applied = time.monotonic() - first
        say(f"{len(started):,} MailDomains applied in {results.applied:.1f}s")
        shown = 0.0
        disturbance = results.disturbance
        while True:
            listed = time.monotonic()
            try:
                bodies = self.maildomains()
            except Exception as error:  # the API server away (--disturb apiserver)
                bodies = []
                if listed - shown >= 5:
                    shown = listed
                    say(f"listing the MailDomains failed: {type(error).__name__}: {error}")
            for body in bodies:
                key = (body["metadata"]["namespace"], body["metadata"]["name"])
                if key not in results.ready and key in started and is_ready(body):
                    results.ready[key] = listed - started[key]
                    results.ready_at[key] = listed
            due = self.args.disturb_at * results.count
            if disturbance is not None and disturbance.began is None and len(results.ready) >= due:
                disturbance.start(len(results.ready), results.count)
            results.waited = time.monotonic() - first
            if len(results.ready) == results.count:
                results.total = listed - first
                say(f"all {results.count:,} ready {results.total:.1f}s after the first apply")
                return time.monotonic()
            if listed - shown >= 15:
                shown = listed
                say(f"{len(results.ready):,}/{results.count:,} ready after {results.waited:.0f}s;"
                    f" {self.watch.line()}")  # fmt: skip
            if time.monotonic() >= deadline:
                say(f"stopped waiting: {len(results.ready):,}/{results.count:,} ready")
                operator_log(self.stack, 30)
                return time.monotonic()
            time.sleep(max(0.0, 1.0 - (time.monotonic() - listed)))

    def compare_zones(self) -> None:
        specs = [(d.manifest(False)["spec"], mx_host(d.fleet)) for d in self.domains]
        zones = [zone(k) for k in range(self.args.fleets)]
        self.results.zones = differences = zones_as_desired(self.stack, specs, zones)
        print(f"\nzones: {len(self.domains):,} domains compared with the desired records, "
              f"{len(differences)} differences", flush=True)  # fmt: skip
        for line in differences[:20]:
            print(f"  {line}")

    def maildomains(self) -> list[dict[str, Any]]:
        return self.api.list(f"/apis/{API}/maildomains", "=".join(SCALE_LABEL))

    def compliance(self, window_start: float) -> None:
        """At the end of the 5 minutes after convergence: who has a lastChecked in them."""
        wall_start = time.time() - (time.monotonic() - window_start)
        time.sleep(max(0.0, window_start + COMPLIANCE_WINDOW - time.monotonic()))
        bodies = self.maildomains()
        stamps = [
            datetime.fromisoformat(c["lastChecked"]).timestamp()
            for b in bodies
            if (c := b.get("status", {}).get("compliance")) and c.get("lastChecked")
        ]
        within = sum(1 for at in stamps if wall_start <= at <= wall_start + COMPLIANCE_WINDOW)
        self.results.checked = (within, len(stamps))
        print(f"\ncompliance: {within:,}/{self.results.count:,} domains with a lastChecked in "
              f"the {COMPLIANCE_WINDOW:.0f} s after convergence, {len(stamps):,} checked at "
              f"all (goal: all {self.results.count:,})", flush=True)  # fmt: skip

    def idle(self, converged_at: float, converged: bool) -> None:
        wall_start = time.time() - (time.monotonic() - converged_at)
        time.sleep(max(0.0, converged_at + self.args.idle_seconds - time.monotonic()))
        wall_end = time.time()
        time.sleep(2)  # the last events reach the log
        log = self.stack.plane.audit_log
        every = [w for w in audit_writes(log, wall_start) if w.at <= wall_end]
        mine = [w for w in every if w.user == OPERATOR_USER]
        election = [w for w in mine if (w.group, w.resource) in ELECTION]
        writes = [w for w in mine if (w.group, w.resource) not in ELECTION]
        seconds = wall_end - wall_start
        self.results.idle = (len(writes), len(election), seconds, converged)
        state = "after convergence" if converged else "after the wait stopped (NOT converged)"
        print(f"\nidle: the operator's mutating requests in the {seconds:.0f} s {state}: "
              f"{len(writes):,} (goal 0); leases, not counted: {len(election)}")  # fmt: skip
        if writes:
            breakdown(writes, wall_start)
        others = Counter(
            f"{w.user} {w.verb} {w.resource}{'/' + w.subresource if w.subresource else ''}"
            for w in every
            if w.user != OPERATOR_USER
        )
        listed = ", ".join(f"{what} {count}" for what, count in others.most_common(8))
        print(f"  other users' writes meanwhile (not the goal's): {listed or 'none'}")

    def convergence_writes(self, began_wall: float, until_wall: float) -> None:
        log = self.stack.plane.audit_log
        writes = [
            w
            for w in audit_writes(log, began_wall)
            if w.at <= until_wall and w.user == OPERATOR_USER
        ]
        plain = [w for w in writes if (w.group, w.resource) not in ELECTION]
        print(f"\nconverging: the operator's mutating requests from the first apply until all "
              f"were ready (or the wait stopped): {len(plain):,}, "
              f"{len(plain) / self.results.count:.1f} per domain")  # fmt: skip
        breakdown(plain, began_wall, per=self.results.count)

    def run(self, budget_end: float) -> None:
        self.prepare()
        self.watch.start()
        reserve = self.args.idle_seconds + 120
        deadline = min(time.monotonic() + self.args.converge_timeout, budget_end - reserve)
        began_wall = time.time()
        converged_at = self.converge(deadline)
        converged = self.results.total is not None
        measured, goal, verdict = converge_row(self.results)
        print(f"\nMailDomains Ready + DNSReady: {measured}; goal {goal} {verdict}", flush=True)
        print(f"  applied in {self.results.applied:.1f} s ({APPLIERS} at a time, server-side); "
              f"{self.watch.line()}", flush=True)  # fmt: skip
        self.convergence_writes(began_wall, time.time())
        if self.results.disturbance is not None and converged:
            self.compare_zones()
        if self.args.compliance:
            self.compliance(converged_at)
        self.idle(converged_at, converged)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--fleets", type=int, default=4, help="MailServers (and zones), 1..8")
    parser.add_argument("--idle-seconds", type=int, default=600)
    parser.add_argument("--compliance", action="store_true", help="probe every domain, 5m")
    parser.add_argument("--operator-memory", default="3Gi", help="the operator's memory limit")
    parser.add_argument(
        "--concurrency", type=int, help="reconcile.concurrency (default: the chart's)"
    )
    parser.add_argument("--disturb", choices=KINDS, help="break something midway (disturb.py)")
    parser.add_argument(
        "--disturb-at", type=float, default=0.25, help="share of domains ready before it"
    )
    parser.add_argument("--converge-timeout", type=int, default=1200)
    parser.add_argument("--budget", type=int, default=3000, help="seconds before it stops")
    parser.add_argument(
        "--operator-log", type=Path, help="keep the operator's log there (the cluster goes)"
    )
    args = parser.parse_args()
    if not 1 <= args.fleets <= 8:
        parser.error("--fleets must be 1..8")
    began = time.monotonic()
    start_budget(args.budget)
    budget_end = began + args.budget
    zones = tuple(ZoneSpec(zone(k)) for k in range(args.fleets))
    layout = StackLayout(net=NET, extra_zones=zones)
    addresses = [layout.address(FIRST_HOST + k) for k in range(args.fleets)]
    results = Results(args.domains, args.compliance)
    values = operator_values(args.operator_memory, args.compliance, args.concurrency)
    if args.disturb == "kill-active":
        # The chart's default; the stack runs one. On the host network of one node the two
        # would both bind bindAddress's health and metrics ports: as in test_ha, neither serves
        # them (no liveness probe then).
        values.update({"replicas": 2, "healthEndpoint": False})
        values["metrics"] = {"enabled": False}
    say(f"{args.domains:,} MailDomains on {args.fleets} fleets; operator memory limit "
        f"{args.operator_memory}; budget {args.budget}s")  # fmt: skip
    with contextlib.ExitStack() as cleanup:
        os.environ[AUDIT_ENV] = "1"  # `stack.up` starts the control plane: the audit log on
        stack = cleanup.enter_context(fresh_stack(STATE, layout, values, addresses))
        bench = Bench(stack, args, results)
        if args.disturb:
            results.disturbance = Disturbance(args.disturb, stack)
        cleanup.callback(bench.watch.stop)
        try:
            bench.run(budget_end)
        except Stopped as stopped:
            say(f"{stopped}: printing what was measured")
        finally:
            warnings: Counter[str] = Counter()
            with contextlib.suppress(Exception):
                warnings = operator_warnings(bench.api)
            if args.operator_log:
                with contextlib.suppress(Exception):
                    logs = ("logs", "-n", RELEASE_NAMESPACE, "deploy/mailward", "--tail=-1")
                    args.operator_log.write_text(kubectl(stack.kubeconfig, *logs, check=False))
            summary(results, bench.watch, warnings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
