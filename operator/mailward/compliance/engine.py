"""The compliance engine: probe one domain from outside and judge it against a profile.

Gathering and judging are separate steps: `gather.Gatherer` asks DNS, SMTP, TLS and HTTPS and
keeps what they said as `DomainObservations`; `checks.judge()` turns those into one result per
catalog check, without I/O. `check_domain()` does both for one domain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from mailward.compliance.catalog import DEFAULT_PROFILE, PROFILES
from mailward.compliance.checks import judge
from mailward.compliance.dnsprobe import DNSClient, ValidatingResolverClient
from mailward.compliance.endpoint_probes import EndpointProbes
from mailward.compliance.gather import Gatherer
from mailward.compliance.model import Report
from mailward.compliance.observations import DomainObservations


class Engine:
    def __init__(
        self,
        dns: DNSClient,
        *,
        cafile: str | None = None,
        limit: asyncio.Semaphore | None = None,
        shared: EndpointProbes | None = None,
        shared_max_age: float = 0.0,
    ) -> None:
        self.dns = dns
        self.gatherer = Gatherer(
            dns, cafile=cafile, limit=limit, shared=shared, shared_max_age=shared_max_age
        )

    async def check(
        self,
        domain: str,
        profile: str = DEFAULT_PROFILE,
        record: Callable[[DomainObservations], None] | None = None,
    ) -> Report:
        """Gather and judge; `record` is handed the observations before they are judged."""
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
        domain = domain.lower().rstrip(".")
        started = datetime.now(UTC).replace(microsecond=0)
        t0 = time.monotonic()
        report = Report(domain, profile, getattr(self.dns, "address", "?"), started, 0.0)
        if isinstance(self.dns, ValidatingResolverClient) and not await self.dns.reachable():
            report.fatal = f"the resolver {self.dns.address} does not answer"
            report.duration_seconds = time.monotonic() - t0
            return report
        obs = await self.gatherer.gather(domain)
        if record is not None:
            record(obs)
        report.fatal = fatal(obs)
        report.checks = judge(obs, profile)
        report.duration_seconds = time.monotonic() - t0
        return report


def fatal(obs: DomainObservations) -> str | None:
    """Why the domain as a whole cannot be judged, if it cannot."""
    if obs.mx_answer.rcode == "NXDOMAIN":
        return f"{obs.domain} does not exist (NXDOMAIN)"
    if obs.mx_answer.timed_out:
        return f"no answer for the MX of {obs.domain}"
    return None


async def check_domain(
    domain: str,
    *,
    resolver: str,
    port: int = 53,
    profile: str = DEFAULT_PROFILE,
    cafile: str | None = None,
    limit: asyncio.Semaphore | None = None,
    shared: EndpointProbes | None = None,
    shared_max_age: float = 0.0,
    record: Callable[[DomainObservations], None] | None = None,
) -> Report:
    """One domain, one fresh DNS cache; endpoint observations from `shared` when another
    domain served by the same endpoint was checked less than `shared_max_age` seconds ago."""
    engine = Engine(
        ValidatingResolverClient(resolver, port),
        cafile=cafile,
        limit=limit,
        shared=shared,
        shared_max_age=shared_max_age,
    )
    return await engine.check(domain, profile, record)
