"""The parts of a MailDomain, each reconciled on its own and reporting its own condition.

As in cert-manager, where one small controller per concern writes one condition, every part
(certificate, DNS records, MTA, policy endpoint, ...) is an object with `reconcile` and `release`.
The handler runs them in order, shares what one part learnt with the next through
`ctx.findings` (typed: the certificate read by the first is what the DNS part pins in TLSA
records), and derives `Ready` from their verdicts. A part never writes to the API server's
status itself: it returns the status fields it owns, and the handler writes everything at once,
only if something changed.

A part reports trouble in one way: a verdict on its own condition and `retry_after`. An
exception that escapes a part is contained by the handler (`run_parts`): it becomes that
part's condition, with the exception as its message, and a retry; the later parts still run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from cryptography import x509

from mailward.api.v1alpha1 import HostTarget, MailDomainSpec, MailDomainStatus, MXHost
from mailward.conditions import Verdict
from mailward.render.dkim import DKIMSigning


@dataclass(frozen=True)
class ServedPolicy:
    """The MTA-STS policy the endpoint serves for the domain, as the policy part fetched it
    (or last saw it served); `id` None: nothing is served."""

    id: str | None


@dataclass(frozen=True)
class ReleaseHold:
    """Why and how much longer a deletion must wait before the parts release."""

    message: str
    delay: float


@dataclass
class Findings:
    """What one part found in a pass that a later part needs. Each field has one writer."""

    # Certificate part: the served chain (leaf first).
    certificate_chain: tuple[x509.Certificate, ...] = ()
    # Certificate part: MX host → SPKI SHA-256 digests to pin as `3 1 1` (the rollover's
    # current, next and previous key). None: the keys are not known in this pass.
    tlsa_digests: dict[str, list[str]] | None = None
    # Certificate part, with `spec.dane.issuerRecord`: MX host → the issuing CAs' digests.
    tlsa_issuer_digests: dict[str, list[str]] | None = None
    # Policy part. None: no policy part ran, the DNS part announces the spec's policy id.
    served_policy: ServedPolicy | None = None
    # TLSRPT part: the namespace collector's own public address (a LoadBalancer's), where the
    # DNS part points `tlsrpt.<domain>` unless `spec.dns.tlsRptCollector` says otherwise.
    tlsrpt_collector_target: HostTarget | None = None
    # DKIM part: the keys the domain's MTA signs with (the MTA part renders the signer).
    dkim_signing: DKIMSigning | None = None
    # DNS and MTA parts: what the world sees of the domain changed in this pass, so the
    # compliance checks probe at once rather than at the next interval.
    records_changed: bool = False
    # Policy part (plan/mtasts_changes.py): the MX hosts to publish (spec.mx, or during an MX
    # change under `enforce` the earlier ones until the policy naming both aged). None: spec.mx.
    mx_hosts: tuple[MXHost, ...] | None = None
    # Policy part: a withdrawal (mode `none`) ended: the `_mta-sts` record goes.
    sts_withdrawn: bool = False
    # Policy part, while deleting: how long the deletion still waits for the withdrawal (RFC
    # 8461 §8.3; delay 0: no longer). None: the part did not run in this pass.
    release_hold: ReleaseHold | None = None


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
    findings: Findings = field(default_factory=Findings)
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


@runtime_checkable
class HoldsRelease(Protocol):
    """A part that can hold a deletion back before any part releases (domains.py): while
    `holds_release` is True, the deletion runs passes until the part's `release_hold` in one
    says 0, or, when a pass stopped before the part, until `deletion_hold` says 0."""

    def holds_release(self, status: MailDomainStatus) -> bool: ...

    def deletion_hold(self, ctx: ReconcileContext) -> ReleaseHold: ...


class Part(Protocol):
    name: str
    # The condition this part decides: where a failure that escapes it is reported.
    condition: str

    async def reconcile(self, ctx: ReconcileContext) -> PartResult: ...

    async def release(self, ctx: ReconcileContext) -> None: ...
