"""pytest plugin: a DNS stack whose zone `rollover.test` also has a BIND secondary.

For DANE rollover tests (issue #14): a change must reach *every* authoritative server of a zone
before a key switch, and a resolver keeps answers for their whole TTL. This stack is separate from
the session's `dns_stack`, on addresses of its own:

- the primary (BIND, signing, RFC 2136 + TSIG, `ns1.rollover.test`) on `addr(153)`,
- the validating resolver (Unbound, caching answers for their whole TTL: `cache-max-ttl` is
  Unbound's default of a day) on `addr(154)`,
- the secondary (BIND, `ns2.rollover.test`, rndc on port 953 of its own address) on `addr(155)`,

all on port 53. `single.test` is a zone of the same stack without a secondary (served by the
primary alone, as every zone of `dns_stack` is).

`secondary_dns_stack` (session) starts the stack the first time a test asks for it. Tests should
take `rollover_dns` instead: the same stack, but after the test every zone it left held is
released and the secondary has caught up, so a failed test cannot leave the next one a lagging
secondary. Hold a zone with `with stack.secondary.held(ROLLOVER_ZONE): ...`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from mailward_localstack._process import stop_all
from mailward_localstack.dns import DNSStack, SecondaryDNS, ZoneSpec
from tests.fixtures_dns import DNS_PORT, _dns_prerequisites
from tests.net import addr

PRIMARY_ADDRESS = addr(153)
RESOLVER_ADDRESS = addr(154)
SECONDARY_ADDRESS = addr(155)

ROLLOVER_ZONE = "rollover.test"
"""Served by the primary (`ns1.rollover.test`) and the secondary (`ns2.rollover.test`)."""
SINGLE_ZONE = "single.test"
"""Served by the primary alone."""

RESOLVER_CACHE_MAX_TTL = 86400
"""Unbound's own default: answers are cached for their TTL (the session's resolver caps at 5 s)."""

SECONDARY_ZONES: tuple[ZoneSpec, ...] = (
    ZoneSpec(ROLLOVER_ZONE, secondary=True),
    ZoneSpec(SINGLE_ZONE),
)


def secondary_of(stack: DNSStack) -> SecondaryDNS:
    """The stack's secondary (typed: the fixture's stack always has one)."""
    assert stack.secondary is not None, "this DNS stack has no secondary"
    return stack.secondary


def _secondary_prerequisites() -> str | None:
    """Why the stack cannot run here, or None."""
    reason = _dns_prerequisites()
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    if reason is None and shutil.which("rndc", path=path) is None:
        reason = "rndc not installed (scripts/install-system-deps.sh)"
    return reason


@pytest.fixture(scope="session")
def secondary_dns_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DNSStack]:
    """Primary, secondary and long-caching resolver; `rollover.test` is on both servers.

    `.authoritative` (primary), `.secondary`, `.resolver`, `.tsig`. Shared by the session: use
    names of your own, and prefer `rollover_dns`, which undoes holds.
    """
    reason = _secondary_prerequisites()
    if reason:
        pytest.skip(reason)
    state_dir = tmp_path_factory.mktemp("dns-secondary-stack")
    stack = DNSStack.create(
        state_dir,
        auth_address=PRIMARY_ADDRESS,
        resolver_address=RESOLVER_ADDRESS,
        secondary_address=SECONDARY_ADDRESS,
        zones=SECONDARY_ZONES,
        auth_port=DNS_PORT,
        resolver_port=DNS_PORT,
        secondary_port=DNS_PORT,
        resolver_cache_max_ttl=RESOLVER_CACHE_MAX_TTL,
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        stop_all(state_dir)


@pytest.fixture
def rollover_dns(secondary_dns_stack: DNSStack) -> Iterator[DNSStack]:
    """`secondary_dns_stack`, with every zone released and caught up after the test."""
    yield secondary_dns_stack
    secondary = secondary_of(secondary_dns_stack)
    for zone in sorted(secondary.held_zones):
        secondary.release(zone)
    for zone in secondary.zones:
        secondary.wait_synced(zone, timeout=10)
