"""DNS providers resolved in the last few seconds, shared by the passes that run meanwhile.

Resolving a provider reads its DNSProvider (or ClusterDNSProvider) and its TSIG Secret: two GETs
for every pass of every MailDomain. At 1,000 domains converging at once they were the largest
share of the operator's API requests (py-spy: a fifth of the busy samples). Every domain of a
cluster usually names the same one or two providers, so a resolution is reused for
`seconds`, and passes that miss at the same moment share one read.

The bound keeps reconciliation level-based: a provider's spec or a rotated TSIG Secret is read
again within `seconds` at the latest, and at once when the provider itself changes (the provider
handlers call `forget`). A failed resolution is never kept: the next pass asks again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from mailward.adapters.dns_kube import ProviderResolver
from mailward.adapters.dns_provider import DNSProvider
from mailward.api.v1alpha1 import ProviderReference

ProviderKey = tuple[str, str, str]  # kind, namespace ("" for a ClusterDNSProvider), name


@dataclass(frozen=True)
class _Resolved:
    provider: DNSProvider
    at: float


def provider_key(ref: ProviderReference, namespace: str) -> ProviderKey:
    return (ref.kind, "" if ref.kind == "ClusterDNSProvider" else namespace, ref.name)


class RecentProviders:
    def __init__(
        self,
        resolver: ProviderResolver,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._seconds = seconds
        self._clock = clock
        self._resolved: dict[ProviderKey, _Resolved] = {}
        self._reading: dict[ProviderKey, asyncio.Lock] = {}

    async def resolve(self, ref: ProviderReference, namespace: str) -> DNSProvider:
        key = provider_key(ref, namespace)
        recent = self._recent(key)
        if recent is not None:
            return recent
        async with self._reading.setdefault(key, asyncio.Lock()):
            # Another pass may have read it while this one waited.
            recent = self._recent(key)
            if recent is not None:
                return recent
            provider = await self._resolver.resolve(ref, namespace)
            self._resolved[key] = _Resolved(provider, self._clock())
            return provider

    def _recent(self, key: ProviderKey) -> DNSProvider | None:
        recent = self._resolved.get(key)
        if recent is not None and self._clock() - recent.at < self._seconds:
            return recent.provider
        return None

    def forget(self, ref: ProviderReference, namespace: str) -> None:
        """The provider changed: the next pass reads it again."""
        self._resolved.pop(provider_key(ref, namespace), None)
