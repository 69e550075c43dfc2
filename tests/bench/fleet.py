"""Benchmark: one MailServer fleet serving 1,000 attached MailDomains, each figure beside a
reference measured in the same run.

    .venv/bin/python -m tests.bench.fleet [--render-only] [--domains 1000] [--budget 840]

Rows:
- render: `render_mta_objects` of a two-host fleet (host network, one pod per host) for 10, 100
  and 1,000 domains, median of 9 runs; reference: the same render for 1 domain (the fixed
  cost), beside the size of the domain tables' ConfigMap (the API server takes up to 1 MiB);
- memory (real cluster): each fleet pod's pod-level cgroup (`memory.current`, on cgroup v1
  `memory.usage_in_bytes`; anon and file from `memory.stat`; peak) with 1,000 domains;
  reference: the same pods with 1 domain, read before the other 999 were attached. The
  operator's pod is read too (its peak is what 1,000 MailDomains cost it);
- attach: from `kubectl apply` of one more MailDomain until both hosts answer 250 to
  RCPT TO:<postmaster@that-domain> over STARTTLS (a `postfix reload`, no restart); reference:
  from a patch of the MailServer's `spec.messageSizeLimit` until both hosts announce the new
  SIZE in EHLO (a pod roll).

The cluster is `mailward_localstack` on 127.93.0.0/24 (state in .local/bench-fleet, wiped
first). The MailServer and its MailDomains have no `spec.dns` (records "by hand"); the
domains live in 20 namespaces of 50 (the TLSRPT part lists a domain's namespace per reconcile),
all allowed (`allowedDomains: {namespaces: {from: All}}`). What is not the fleet is kept quiet:
the production resync (300 s; the tests' 20 s would be 50 reconciles/s), compliance probes only
for a label the bench domains lack (1,000 full outside checks would measure the checks), an
hourly TLSRPT retry (no collector runs), no MTA-STS fetch per domain and no policy TLS Secrets
(with 1,000 of them the policy endpoint, limit 256Mi, was OOMKilled in a trial run, and each
failed fetch is retried every 15 s). The operator gets a 1Gi memory limit: at the chart's 256Mi
it was OOMKilled in that trial run, again after each restart (which resumes all 1,000 domains).
Needs root. It stops itself after `--budget` seconds; the cluster and the loopback aliases go in
any case.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import smtplib
import ssl
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from mailward.api.mailserver import MailServerSpec
from mailward.render.mta_objects import fleet_selector, render_mta_objects
from mailward.render.mta_server import MTAServer, fleet_server
from mailward.render.postfix import DomainConfig
from mailward_localstack._process import StackError, wait_until
from mailward_localstack.controlplane import kubectl
from mailward_localstack.stack import RELEASE_NAMESPACE, Stack, StackLayout
from tests.bench._cluster import (
    API,
    MIB,
    OPERATOR_PODS,
    Reading,
    apply,
    fresh_stack,
    jsonpath,
    manifest,
    operator_log,
    pod_memory,
    pods,
    say,
    secret,
    start_budget,
)

STATE = Path(__file__).resolve().parents[2] / ".local" / "bench-fleet"
LAYOUT = StackLayout(net="127.93.0")
SERVER_NS = "fleet-bench"
DOMAIN_NS = tuple(f"fleet-bench-{i:02d}" for i in range(20))
HOSTS = ("mx1.fleet.example.test", "mx2.fleet.example.test")
HOST_NUMBERS = (35, 36)  # .31 is the demo MailServer's (StackLayout.fleet_mx)
SENDER = "probe@sender.test"
SERVER = ("fleet", "-n", SERVER_NS)
OPERATOR_VALUES = {
    "reconcile": {"resyncSeconds": 300, "tlsrptRetrySeconds": 3600},
    "compliance": {"labelSelector": "bench.mailward.io/compliance=yes"},
    # Last in the container's env, so it wins over the chart's: no policy fetch per domain.
    "extraEnv": [{"name": "MAILWARD_POLICY_ENDPOINT_URL", "value": ""}],
}
OPERATOR_MEMORY = "1Gi"  # the chart's 256Mi: OOMKilled, over and over, with 1,000 MailDomains
SETTLE_SECONDS = 15.0  # between the last SMTP session and a memory reading


def domain(i: int) -> str:
    return f"d{i:04d}.example.test"


def server_spec(addresses: Sequence[str]) -> dict[str, Any]:
    hosts = [
        {"host": host, "priority": 10 * (n + 1), "addresses": [address]}
        for n, (host, address) in enumerate(zip(HOSTS, addresses, strict=True))
    ]
    spec = {"hosts": hosts, "replicas": 1, "hostNetwork": True, "tls": {"secretName": "fleet-tls"}}
    return {**spec, "allowedDomains": {"namespaces": {"from": "All"}}}


def bench_server() -> MTAServer:
    """The fleet as the renderers see it (the cluster's MailServer has the same name)."""
    spec = MailServerSpec.model_validate(server_spec(("192.0.2.1", "192.0.2.2")))
    return fleet_server("fleet", "bench", "uid", spec, "img")


def render_rows(repeat: int = 9) -> None:
    server = bench_server()
    render_mta_objects(server, [])  # warm-up: imports and caches out of the first row
    rows: list[tuple[int, float, int]] = []
    for count in (1, 10, 100, 1000):
        domains = [DomainConfig(domain(i), HOSTS) for i in range(count)]
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            objects = render_mta_objects(server, domains)
            times.append(time.perf_counter() - start)
        assert objects[0]["metadata"]["name"] == server.domains_configmap()
        rows.append((count, statistics.median(times), len(json.dumps(objects[0]).encode())))
    print(f"\nrender_mta_objects, 2 hosts, {len(objects)} objects, median of {repeat} runs")
    print(f"{'domains':>8} {'median ms':>10} {'x fixed':>8} {'tables ConfigMap bytes':>23}")
    for count, seconds, size in rows:
        note = "  (reference: fixed cost)" if count == 1 else ""
        print(f"{count:>8,} {seconds * 1e3:>10.2f} {seconds / rows[0][1]:>8.1f} {size:>23,}{note}")
    per_domain = (rows[-1][2] - rows[0][2]) / (rows[-1][0] - 1)
    print(f"tables: {per_domain:.0f} bytes/domain, so the 1 MiB ConfigMap limit comes at "
          f"about {MIB / per_domain:,.0f} domains")  # fmt: skip


# -- the cluster ---------------------------------------------------------------------------------


def maildomain(i: int) -> dict[str, Any]:
    meta = {"name": f"d{i:04d}", "namespace": DOMAIN_NS[i % len(DOMAIN_NS)]}
    spec = {"domain": domain(i), "mailServerRef": {"name": "fleet", "namespace": SERVER_NS}}
    return manifest(API, "MailDomain", meta, spec=spec)


def smtp(stack: Stack, host: int, tls: bool = True) -> smtplib.SMTP:
    session = smtplib.SMTP(LAYOUT.address(HOST_NUMBERS[host]), 25, timeout=10)
    vars(session)["_host"] = HOSTS[host]  # the name STARTTLS verifies
    session.ehlo("probe.sender.test")
    if tls:
        session.starttls(context=ssl.create_default_context(cafile=str(stack.ca.ca_file)))
        session.ehlo("probe.sender.test")
    return session


def accepts(stack: Stack, host: int, recipient: str) -> bool:
    with smtp(stack, host) as session:
        session.mail(SENDER)
        return session.rcpt(recipient)[0] == 250


def announces(stack: Stack, host: int, size: int) -> bool:
    with smtp(stack, host, tls=False) as session:
        return session.esmtp_features.get("size") == str(size)


def until_both(what: str, check: Callable[[int], bool], start: float, timeout: float) -> float:
    """Seconds from `start` until `check` held on both hosts (each polled until it does)."""
    done: dict[int, float] = {}

    def probe() -> bool:
        for host in (0, 1):
            if host not in done and check(host):
                done[host] = time.monotonic() - start
        return len(done) == 2

    wait_until(probe, timeout=timeout, what=what, interval=0.2)
    return max(done.values())


def show(label: str, readings: dict[str, Reading]) -> None:
    for pod, (current, anon, file, peak) in sorted(readings.items()):
        row = f"{label}, {pod}"
        print(f"{row:48} {current / MIB:>8.1f} {anon / MIB:>7.1f} {file / MIB:>7.1f} "
              f"{peak / MIB:>7.1f}", flush=True)  # fmt: skip


def fleet_memory(stack: Stack, fleet: dict[str, str], recipient: str) -> dict[str, Reading]:
    for host in (0, 1):  # the same traffic before each reading: one session per host
        accepts(stack, host, recipient)
    time.sleep(SETTLE_SECONDS)
    return {name: pod_memory(stack, uid) for name, uid in fleet.items()}


def ready_domains(stack: Stack) -> int:
    path = '{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}'
    return jsonpath(stack, "maildomains", "-A", path=path).split().count("True")


def diagnose(stack: Stack) -> None:
    """What the MailServer says and the operator's last words, on stderr (the log)."""
    say(jsonpath(stack, "mailserver", *SERVER, path="{.status}"))
    operator_log(stack)


def prepare(stack: Stack) -> dict[str, Any]:
    """More memory for the operator, the namespaces, the fleet's TLS Secret; the MailServer."""
    deployment = ("deployment/mailward", "-n", RELEASE_NAMESPACE)
    limit = f"--limits=memory={OPERATOR_MEMORY}"
    kubectl(stack.kubeconfig, "set", "resources", *deployment, "-c", "operator", limit)
    kubectl(stack.kubeconfig, "rollout", "status", *deployment, "--timeout=180s")
    names = (SERVER_NS, *DOMAIN_NS)
    apply(stack, [manifest("v1", "Namespace", {"name": ns}) for ns in names])
    apply(stack, [secret(SERVER_NS, "fleet-tls", stack.ca.issue_server_cert(list(HOSTS)))])
    spec = server_spec([LAYOUT.address(n) for n in HOST_NUMBERS])
    return manifest(API, "MailServer", {"name": "fleet", "namespace": SERVER_NS}, spec=spec)


def measure(stack: Stack, count: int, runs: int, rolls: int) -> None:
    server = prepare(stack)
    began = time.monotonic()
    apply(stack, [server, maildomain(0)])
    first, last = f"postmaster@{domain(0)}", f"postmaster@{domain(count - 1)}"
    until_both("the fleet serving 1 domain", partial(accepts, stack, recipient=first), began, 420)
    say(f"the fleet serves 1 domain {time.monotonic() - began:.0f}s after apply")
    selector = fleet_selector(bench_server())
    fleet = pods(stack, SERVER_NS, selector)
    one = fleet_memory(stack, fleet, first)
    print(f"\n{'pod memory, MiB':48} {'current':>8} {'anon':>7} {'file':>7} {'peak':>7}")
    show("fleet, 1 domain (reference)", one)

    began = time.monotonic()
    apply(stack, [maildomain(i) for i in range(1, count)], "--server-side")
    applied = time.monotonic() - began
    served = until_both("the last domain", partial(accepts, stack, recipient=last), began, 420)
    say(f"{count - 1} MailDomains applied in {applied:.0f}s, all served {served:.0f}s after")
    attached = partial(jsonpath, stack, "mailserver", *SERVER, path="{.status.attachedDomains}")

    def settled() -> bool:
        return attached() == str(count) and ready_domains(stack) >= count

    with contextlib.suppress(StackError):  # the operator finishes the burst (capped)
        wait_until(settled, timeout=240, what="the burst settled", interval=10)
    ready, shown = ready_domains(stack), attached()
    if shown != str(count):
        diagnose(stack)
    show(f"fleet, {count:,} domains", fleet_memory(stack, fleet, last))
    operator = pods(stack, RELEASE_NAMESPACE, OPERATOR_PODS)
    show(f"operator, {count:,} domains", {n: pod_memory(stack, u) for n, u in operator.items()})
    same = "the same pods" if pods(stack, SERVER_NS, selector) == fleet else "pods REPLACED"
    print(f"fleet: 2 host-network pods, {same} from 1 to {count} domains; status."
          f"attachedDomains {shown}, {ready}/{count} MailDomains Ready", flush=True)  # fmt: skip

    print(f"\n{'seconds until served on both hosts':44} {'each run':>8}")
    for i in range(count, count + runs):
        who = f"postmaster@{domain(i)}"
        start = time.monotonic()
        apply(stack, [maildomain(i)])
        took = until_both(who, partial(accepts, stack, recipient=who), start, 180)
        print(f"{f'apply MailDomain #{i + 1} (reload)':44} {took:>8.1f}", flush=True)
        time.sleep(2)
    for n in range(rolls):
        size = (26 + n) * MIB
        patch = json.dumps({"spec": {"messageSizeLimit": size}})
        start = time.monotonic()
        kubectl(stack.kubeconfig, "patch", "mailserver", *SERVER, "--type=merge", "-p", patch)
        took = until_both(f"SIZE {size}", partial(announces, stack, size=size), start, 300)
        print(f"{f'patch messageSizeLimit={size} (roll, ref.)':44} {took:>8.1f}", flush=True)


def cluster_rows(count: int, runs: int, rolls: int) -> None:
    addresses = [LAYOUT.address(n) for n in HOST_NUMBERS]
    with fresh_stack(STATE, LAYOUT, OPERATOR_VALUES, addresses) as stack:
        try:
            measure(stack, count, runs, rolls)
        except BaseException:
            with contextlib.suppress(Exception):
                say(jsonpath(stack, "mailserver", *SERVER, path="{.status}"))
            raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render-only", action="store_true", help="no cluster: the render rows")
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3, help="domains then attached one by one")
    parser.add_argument("--rolls", type=int, default=2, help="messageSizeLimit changes")
    parser.add_argument("--budget", type=int, default=840, help="seconds before it stops")
    args = parser.parse_args()
    render_rows()
    if args.render_only:
        return 0
    start_budget(args.budget)
    cluster_rows(args.domains, args.runs, args.rolls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
