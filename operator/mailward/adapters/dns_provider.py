"""The one small interface every DNS provider offers the DNS part, and the errors it raises.

A provider reads what is in DNS, plans with `mailward.plan.records` and applies the plan; the
part only turns the outcome into a condition. Errors are sorted by what a person (or the retry
loop) can do about them: fix credentials, wait for the server, or just plan again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailward.plan.records import Key, Owner, Plan
from mailward.render.dns_records import RRset


class ProviderError(Exception):
    """Base of the errors below; the message is for a person and never holds a secret."""


class ProviderUnreachable(ProviderError):
    """No answer, a refused connection, a timeout or SERVFAIL: retried with backoff."""


class UpdateRefused(ProviderError):
    """The server answered and said no (TSIG, policy, zone not served): a person must act."""


class ConcurrentChange(ProviderError):
    """The data changed between reading and updating (a prerequisite failed): plan again."""


class RecordTypeUnsupported(ProviderError):
    """Raised by nothing: providers list unsupported records in `PublishResult.unpublished`."""


@dataclass
class PublishResult:
    zone: str
    plan: Plan
    # UPDATE messages (or API writes) this call sent; 0 when the zone already matched.
    writes: int = 0
    # `<name> <type>: why` of desired records this provider cannot publish.
    unpublished: list[str] = field(default_factory=list)
    # The owned RRsets after the change, as published.
    managed: tuple[RRset, ...] = ()


class DNSProvider(Protocol):
    """Publishes the records of one MailDomain, owning exactly what it created."""

    description: str

    async def publish(
        self,
        owner: Owner,
        domain: str,
        desired: Sequence[RRset],
        keep_if_owned: frozenset[Key] = frozenset(),
    ) -> PublishResult:
        """Bring the owner's records to `desired`; conflicts are reported, never overwritten;
        RRsets in `keep_if_owned` that are already published stay as they are."""
        ...

    async def release(self, owner: Owner, domain: str) -> PublishResult:
        """Remove every record the owner created, and nothing else."""
        ...

    async def verify(self) -> str:
        """That the provider can be used (the server answers, the key is accepted), said for a
        person; raises ProviderUnreachable or UpdateRefused like `publish`."""
        ...
