"""The parts of a MailDomain, each reconciled on its own and reporting its own condition.

As in cert-manager, where one small controller per concern writes one condition, every part
(certificate, DNS records, MTA, policy endpoint, ...) is an object with `reconcile` and `release`.
The handler runs them in order, shares what one part learnt with the next through the context
(the certificate read by the first is what the DNS part pins in TLSA records), and derives
`Ready` from their verdicts. A part never writes to the API server's status itself: it returns
the status fields it owns, and the handler writes everything at once, only if something changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from mailward.api.v1alpha1 import MailDomainSpec, MailDomainStatus, MXHost
from mailward.conditions import Verdict

# Fact (bool) a part sets when it changed what the world sees of the domain in this pass (the DNS
# part after an UPDATE): the compliance part then probes at once, not at the next interval.
RECORDS_CHANGED = "compliance.records_changed"
# Fact (api.v1alpha1.HostTarget) the tlsrpt part sets when the namespace's collector has a
# public address of its own (a LoadBalancer's): where the DNS part points `tlsrpt.<domain>`
# unless `spec.dns.tlsRptCollector` says otherwise.
TLSRPT_COLLECTOR_TARGET = "tlsrpt.collector_target"


@dataclass(frozen=True)
class FleetAttachment:
    """The MailServer that serves an attached domain, as the MTA part found it."""

    namespace: str
    name: str
    hosts: tuple[MXHost, ...]


@dataclass
class Event:
    type: str  # "Normal" or "Warning"
    reason: str
    message: str


class ReleasePending(Exception):
    """A part could not release yet and asks to be tried again after `delay` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass
class ReconcileContext:
    """What every part may read about the MailDomain being reconciled."""

    name: str
    namespace: str
    uid: str
    generation: int
    # The MTA part replaces `mx` of an attached domain with its fleet's hosts (no addresses:
    # those records are the fleet's), so the later parts publish and serve them as the MX.
    spec: MailDomainSpec
    status: MailDomainStatus
    # Facts one part found and a later part needs, e.g. the served certificate chain.
    facts: dict[str, Any] = field(default_factory=dict)
    # Set by the MTA part when a MailServer serves the domain.
    fleet: FleetAttachment | None = None
    # While the MailDomain is being deleted: since when (its deletionTimestamp).
    deleting_since: datetime | None = None
    # What a part's release wants said about the deletion, posted by the handler.
    release_events: list[Event] = field(default_factory=list)


@dataclass
class PartResult:
    verdicts: list[Verdict]
    # Top-level status fields this part owns (e.g. {"dns": {...}}), in their wire form.
    status: dict[str, Any] = field(default_factory=dict)
    # Ask to be run again after this many seconds, although nothing in the spec changed.
    retry_after: float | None = None
    events: list[Event] = field(default_factory=list)
    # Later parts depend on this one: stop the pass here.
    blocking: bool = False


class Part(Protocol):
    name: str

    async def reconcile(self, ctx: ReconcileContext) -> PartResult: ...

    async def release(self, ctx: ReconcileContext) -> None: ...
