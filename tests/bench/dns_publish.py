"""Benchmark: publish the records of 1,000 MailDomains through RFC 2136 to a real BIND (DNSSEC,
signing every update), side by side with a naive publisher in the same run.

    .venv/bin/python -m tests.bench.dns_publish [--domains 1000]

Rows:
- mailward: per domain, one after the other, read the zone (IXFR on a kept copy), plan, ONE
  UPDATE with the registry and the prerequisites (what the operator does at each reconcile);
- mailward, as the operator runs it: the same for other names, every domain of a block published
  at once like kopf's concurrent reconciles, the blocking work bounded by asyncio's default
  thread pool (min(32, CPUs + 4) threads) exactly as in the operator;
- mailward, second pass: the first row's domains again, nothing changed (reads only, no UPDATE);
- naive: one UPDATE message per record, one after the other, no prerequisites, no ownership, for
  the same record set under other names of the same zone.

Needs root (BIND on port 53 of a loopback alias). Addresses: `tests.net.addr(200/201)`, so it can
run beside a test session of the same MAILWARD_TEST_NET. Everything it starts is stopped at the
end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.update

from mailward.adapters import dns_rfc2136
from mailward.adapters.dns_rfc2136 import RFC2136Config, RFC2136Provider
from mailward.api.v1alpha1 import MailDomainSpec
from mailward.plan.records import Owner
from mailward.render.dns_records import RRset, desired_rrsets
from mailward_localstack._process import stop_all
from mailward_localstack.dns import DNSStack, ZoneSpec
from tests.net import addr

ZONE = "bench.test"
BLOCK = 100
# asyncio.to_thread's default executor (ThreadPoolExecutor): what bounds the operator's
# concurrent publishes.
POOL = min(32, (os.cpu_count() or 1) + 4)


def spec_for(domain: str, index: int) -> MailDomainSpec:
    return MailDomainSpec.model_validate(
        {
            "domain": domain,
            "mx": [
                {
                    "host": f"mx.{domain}",
                    "addresses": [f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"],
                }
            ],
            "tls": {"secretName": "mx-tls"},
            "dns": {"providerRef": {"name": "bench"}, "dmarc": {"rua": [f"mailto:d@{domain}"]}},
            "tlsRpt": {"rua": [f"mailto:tlsrpt@{domain}"]},
        }
    )


def records_of(domain: str, index: int) -> list[RRset]:
    digest = f"{index:064x}"
    return desired_rrsets(
        spec_for(domain, index),
        tlsa_spki_sha256={f"mx.{domain}": [digest]},
        sts_policy_id=f"id{index}",
    )


def count_records(rrsets: list[RRset]) -> int:
    return sum(len(r.rdata) for r in rrsets)


async def mailward_pass(
    provider: RFC2136Provider, indexes: range, *, prefix: str = "m", concurrent: bool = False
) -> tuple[float, int, int]:
    sent_before = dns_rfc2136.UPDATES_SENT.sent
    records = 0

    async def publish(i: int) -> None:
        nonlocal records
        domain = f"{prefix}{i}.{ZONE}"
        result = await provider.publish(
            Owner("bench", f"{prefix}{i}", f"uid-{prefix}{i}"), domain, records_of(domain, i)
        )
        records += sum(len(r.rdata) for r in result.plan.create)
        records += sum(len(new.rdata) for _, new in result.plan.update)

    start = time.perf_counter()
    if concurrent:
        await asyncio.gather(*(publish(i) for i in indexes))
    else:
        for i in indexes:
            await publish(i)
    return time.perf_counter() - start, dns_rfc2136.UPDATES_SENT.sent - sent_before, records


def naive_pass(config: RFC2136Config, indexes: range) -> tuple[float, int, int]:
    key = config.tsig_key()
    messages = records = 0
    start = time.perf_counter()
    for i in indexes:
        domain = f"n{i}.{ZONE}"
        for rrset in records_of(domain, i):
            rdtype = dns.rdatatype.from_text(rrset.type)
            for text in rrset.rdata:
                update = dns.update.UpdateMessage(ZONE, keyring=key, keyname=key.name)
                update.add(
                    rrset.name, rrset.ttl, dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
                )
                response = dns_rfc2136._exchange_tcp(config, update)
                if response.rcode() != dns.rcode.NOERROR:
                    raise RuntimeError(
                        f"naive UPDATE refused: {dns.rcode.to_text(response.rcode())}"
                    )
                messages += 1
                records += 1
    return time.perf_counter() - start, messages, records


def _add(a: tuple[float, int, int], b: tuple[float, int, int]) -> tuple[float, int, int]:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--domains", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailward-bench-dns-") as tmp:
        state = Path(tmp)
        stack = DNSStack.create(
            state,
            auth_address=addr(200),
            resolver_address=addr(201),
            zones=[ZoneSpec(ZONE)],
        )
        try:
            stack.authoritative.start(timeout=60)
            tsig = stack.tsig
            config = RFC2136Config(
                stack.authoritative.address, 53, tsig.name, tsig.algorithm, tsig.secret, "bench"
            )
            provider = RFC2136Provider(config, "bench")
            per_domain = count_records(records_of(f"m0.{ZONE}", 0))
            print(
                f"{args.domains} domains, {per_domain} records each "
                f"(+1 registry RRset for mailward), BIND signing every update (DNSSEC)"
            )
            # Interleaved blocks, so that both runs see the same zone size and machine load.
            first, together, naive = (0.0, 0, 0), (0.0, 0, 0), (0.0, 0, 0)
            for start in range(0, args.domains, BLOCK):
                block = range(start, min(start + BLOCK, args.domains))
                first = _add(first, asyncio.run(mailward_pass(provider, block)))
                together = _add(
                    together,
                    asyncio.run(mailward_pass(provider, block, prefix="c", concurrent=True)),
                )
                naive = _add(naive, naive_pass(config, block))
            second = asyncio.run(mailward_pass(provider, range(args.domains)))
        finally:
            stack.authoritative.stop()
            stop_all(state)
    header = f"{'run':<42}{'UPDATE msgs':>12}{'records':>10}{'seconds':>10}{'records/s':>12}"
    print(header)
    print("-" * len(header))
    for label, (seconds, messages, records) in (
        ("mailward (one UPDATE per domain)", first),
        (f"mailward, {POOL} at a time (as the operator)", together),
        ("mailward, second pass (no change)", second),
        ("naive (one UPDATE per record)", naive),
    ):
        rate = f"{records / seconds:,.0f}" if records else "-"
        print(f"{label:<42}{messages:>12,}{records:>10,}{seconds:>10.1f}{rate:>12}")


if __name__ == "__main__":
    main()
