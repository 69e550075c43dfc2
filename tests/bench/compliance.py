"""Benchmark: the compliance engine on 100 locally served mail domains, side by side with
checkdmarc's SPF and DMARC checks of the same domains in the same run.

    .venv/bin/python -m tests.bench.compliance [--domains 100] [--concurrency 16]

The lab: BIND with 100 DNSSEC-signed zones under `test.` and a validating Unbound; four real
Postfix MX hosts (25 domains each, one multi-name certificate per host) with SMTP on 25 and
SUBMISSIONS on 465; one HTTPS MTA-STS policy server for the 100 `mta-sts.` hosts. Every zone has
MX, TLSA, MTA-STS, TLSRPT, SPF, DMARC, DKIM and SRV records, so the engine does its full work:
DNSSEC, SMTP dialogue and STARTTLS injection per MX, the TLS enumeration (versions, suites and
server order, groups, ServerHello) on 25 and 465, DANE, the MTA-STS fetch, TLSRPT, SPF, DKIM,
DMARC, SRV. checkdmarc (`check_spf` + `check_dmarc`) asks the same resolver, with a thread pool
of the same size. Each tool runs in its own child process, so peak RSS is its own (the engine's
`openssl s_client` children are short-lived and not added). The engine does far more per
domain than checkdmarc: the pair shows the cost of a full outside check next to a DNS-only one.
Everything it starts is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mailward_localstack._process import stop_all
from mailward_localstack.dns import DNSStack, ZoneSpec
from mailward_localstack.pki import LocalCA
from tests.compliance_targets import PolicyRoute, PolicyServer, PostfixTarget, sts_policy
from tests.fixtures_compliance import _dkim_records, zone_records
from tests.net import addr

AUTH, RESOLVER = addr(203), addr(204)
MX_ADDRESSES = [addr(205), addr(206), addr(207), addr(208)]
POLICY = addr(209)


def _peak_rss() -> tuple[int, int]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own, children


def worker_engine(
    domains: list[str], resolver: str, cafile: str, concurrency: int
) -> dict[str, Any]:
    from mailward.compliance import Result, check_domain

    async def run() -> list[Any]:
        limit = asyncio.Semaphore(concurrency)
        return await asyncio.gather(
            *(check_domain(d, resolver=resolver, cafile=cafile, limit=limit) for d in domains)
        )

    start = time.monotonic()
    reports = asyncio.run(run())
    elapsed = time.monotonic() - start
    own, _children = _peak_rss()
    return {
        "elapsed": elapsed,
        "rss_kb": own,
        "compliant": sum(1 for r in reports if r.compliant),
        "errors": sum(1 for r in reports for c in r.checks if c.result is Result.ERROR),
        "checks_per_domain": len(reports[0].checks) if reports else 0,
    }


def worker_checkdmarc(domains: list[str], resolver: str, concurrency: int) -> dict[str, Any]:
    from checkdmarc.dmarc import check_dmarc
    from checkdmarc.spf import check_spf

    def one(domain: str) -> bool:
        spf = check_spf(domain, nameservers=[resolver], timeout=3.0)
        dmarc = check_dmarc(domain, nameservers=[resolver], timeout=3.0)
        return bool(spf.get("valid")) and bool(dmarc.get("valid"))

    start = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        valid = list(pool.map(one, domains))
    elapsed = time.monotonic() - start
    own, _children = _peak_rss()
    return {"elapsed": elapsed, "rss_kb": own, "valid": sum(valid)}


Lab = tuple[DNSStack, list[PostfixTarget], PolicyServer, LocalCA, list[str]]


def _build(base: Path, count: int) -> Lab:
    ca = LocalCA.create(base / "ca", "mailward bench CA")
    domains = [f"bench{i:03d}.test" for i in range(count)]
    groups = [domains[i :: len(MX_ADDRESSES)] for i in range(len(MX_ADDRESSES))]
    dkim = _dkim_records()
    zones: list[ZoneSpec] = []
    postfixes: list[PostfixTarget] = []
    for n, (address, members) in enumerate(zip(MX_ADDRESSES, groups, strict=True)):
        cert = ca.issue_server_cert([f"mx.{d}" for d in members], out_dir=base / "certs",
                                    basename=f"mx{n}")  # fmt: skip
        postfixes.append(PostfixTarget(f"bench{n}", address, f"mx.{members[0]}", cert, members))
        for d in members:
            tlsa = [f"3 1 1 {cert.spki_sha256()}", f"2 1 1 {ca.spki_sha256()}"]
            records = zone_records(d, address, tlsa, dkim=dkim, policy_address=POLICY)
            zones.append(ZoneSpec(d, records=records))
    policy_certs = {}
    routes = {}
    for d in domains:
        host = f"mta-sts.{d}"
        policy_certs[host] = ca.issue_server_cert([host], out_dir=base / "certs")
        routes[host] = PolicyRoute(body=sts_policy([f"mx.{d}"]))
    dns = DNSStack.create(base / "dns", auth_address=AUTH, resolver_address=RESOLVER, zones=zones)
    return dns, postfixes, PolicyServer(POLICY, routes, policy_certs), ca, domains


def _child(kind: str, args: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.bench.compliance", "--worker", kind, *args],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--worker", choices=["engine", "checkdmarc"])
    parser.add_argument("--resolver")
    parser.add_argument("--ca-file")
    parser.add_argument("--domain-list")
    args = parser.parse_args()
    if args.worker:
        domains = Path(args.domain_list).read_text().split()
        if args.worker == "engine":
            result = worker_engine(domains, args.resolver, args.ca_file, args.concurrency)
        else:
            result = worker_checkdmarc(domains, args.resolver, args.concurrency)
        print(json.dumps(result))
        return 0

    base = Path(tempfile.mkdtemp(prefix="mailward-bench-compliance-", dir="/var/tmp"))
    base.chmod(0o755)
    dns, postfixes, policy, ca, domains = _build(base, args.domains)
    started: list[PostfixTarget] = []
    policy_up = False
    try:
        t0 = time.monotonic()
        dns.start(timeout=600)
        for p in postfixes:
            p.start(base / "postfix")
            started.append(p)
        policy.start()
        policy_up = True
        print(f"lab up in {time.monotonic() - t0:.0f}s: {len(domains)} signed zones, "
              f"{len(postfixes)} Postfix MX, 1 policy server", file=sys.stderr)  # fmt: skip
        listing = base / "domains.txt"
        listing.write_text("\n".join(domains))
        common = ["--resolver", RESOLVER, "--domain-list", str(listing),
                  "--concurrency", str(args.concurrency)]  # fmt: skip
        engine = _child("engine", [*common, "--ca-file", str(ca.ca_file)])
        reference = _child("checkdmarc", common)
    finally:
        if policy_up:
            policy.stop()
        for p in started:
            p.stop()
        dns.stop()
        stop_all(base / "dns")
        shutil.rmtree(base, ignore_errors=True)

    n = len(domains)
    rows = [
        ("mailward check (full outside check)", engine, f"{engine['compliant']}/{n} compliant, "
         f"{engine['errors']} errors, {engine['checks_per_domain']} checks/domain"),
        ("checkdmarc check_spf+check_dmarc", reference,
         f"{reference['valid']}/{n} SPF+DMARC valid"),
    ]  # fmt: skip
    print(f"\n{n} domains, concurrency {args.concurrency}, same resolver, same run")
    print(f"{'tool':38} {'domains/min':>12} {'wall s':>8} {'peak RSS MiB':>13}  result")
    for name, r, note in rows:
        per_min = n / r["elapsed"] * 60
        print(f"{name:38} {per_min:12.0f} {r['elapsed']:8.1f} {r['rss_kb'] / 1024:13.1f}  {note}")
    print("(peak RSS of the tool's own process; the engine's short-lived `openssl s_client`")
    print(" children are not added: their ru_maxrss counts the Python parent's pages before exec)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
