"""A provider's resolution is shared for a few seconds: concurrent passes read it once, a later
pass reads it again, a failure is never kept, and `forget` makes the next pass read it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from mailward.adapters.dns_kube import ProviderNotFound
from mailward.adapters.dns_provider import DNSProvider
from mailward.adapters.recent_providers import RecentProviders
from mailward.api.v1alpha1 import ProviderReference
from mailward.provider_handlers import ProviderReconciler
from mailward.scheduler import Scheduler

CLUSTER = ProviderReference(kind="ClusterDNSProvider", name="local-bind")
LOCAL = ProviderReference(kind="DNSProvider", name="local-bind")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingResolver:
    """Answers a new provider object per read, after a pause; fails while `failing`."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, str, str]] = []
        self.failing = False

    async def resolve(self, ref: ProviderReference, namespace: str) -> DNSProvider:
        self.reads.append((ref.kind, namespace, ref.name))
        await asyncio.sleep(0.01)
        if self.failing:
            raise ProviderNotFound(f"{ref.kind} {ref.name} does not exist")
        return cast(DNSProvider, object())


def _recent() -> tuple[RecentProviders, CountingResolver, Clock]:
    resolver, clock = CountingResolver(), Clock()
    return RecentProviders(resolver, seconds=10, clock=clock), resolver, clock


def test_passes_at_the_same_moment_read_the_provider_once() -> None:
    recent, resolver, _ = _recent()

    async def many() -> list[Any]:
        return await asyncio.gather(*(recent.resolve(CLUSTER, f"ns{i}") for i in range(16)))

    providers = asyncio.run(many())
    assert len(resolver.reads) == 1
    assert all(p is providers[0] for p in providers)


def test_a_resolution_is_reused_within_the_bound_and_read_again_after_it() -> None:
    recent, resolver, clock = _recent()

    async def run() -> None:
        first = await recent.resolve(LOCAL, "mail")
        clock.now += 9.9
        assert await recent.resolve(LOCAL, "mail") is first
        assert len(resolver.reads) == 1
        clock.now += 0.2
        assert await recent.resolve(LOCAL, "mail") is not first
        assert len(resolver.reads) == 2

    asyncio.run(run())


def test_namespaced_providers_of_one_name_are_distinct_cluster_ones_are_not() -> None:
    recent, resolver, _ = _recent()

    async def run() -> None:
        await recent.resolve(LOCAL, "a")
        await recent.resolve(LOCAL, "b")
        await recent.resolve(CLUSTER, "a")
        await recent.resolve(CLUSTER, "b")

    asyncio.run(run())
    assert resolver.reads == [
        ("DNSProvider", "a", "local-bind"),
        ("DNSProvider", "b", "local-bind"),
        ("ClusterDNSProvider", "a", "local-bind"),
    ]


def test_a_failure_is_not_kept() -> None:
    recent, resolver, _ = _recent()
    resolver.failing = True

    async def run() -> None:
        with pytest.raises(ProviderNotFound):
            await recent.resolve(LOCAL, "mail")
        resolver.failing = False
        await recent.resolve(LOCAL, "mail")

    asyncio.run(run())
    assert len(resolver.reads) == 2


def test_a_changed_provider_is_read_again_at_once() -> None:
    recent, resolver, _ = _recent()

    async def run() -> None:
        await recent.resolve(CLUSTER, "mail")
        recent.forget(CLUSTER, "elsewhere")  # a cluster provider: any namespace names it
        await recent.resolve(CLUSTER, "mail")

    asyncio.run(run())
    assert len(resolver.reads) == 2


def test_a_deleted_provider_is_dropped_from_what_the_passes_share() -> None:
    recent, resolver, _ = _recent()
    reconciler = ProviderReconciler(
        resolver,
        cast(Any, None),
        Scheduler(),
        resync_seconds=300,
        retry_seconds=10,
        changed=recent.forget,
    )
    body = {"metadata": {"name": "local-bind", "namespace": "mail"}}

    async def run() -> None:
        await recent.resolve(LOCAL, "mail")
        reconciler.observe("dnsproviders", "MODIFIED", body)  # an ordinary event: kept
        await recent.resolve(LOCAL, "mail")
        assert len(resolver.reads) == 1
        reconciler.observe("dnsproviders", "DELETED", body)
        await recent.resolve(LOCAL, "mail")
        assert len(resolver.reads) == 2

    asyncio.run(run())
