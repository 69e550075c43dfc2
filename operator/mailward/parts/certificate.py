"""The certificate part: what the MX hosts serve, renewed, and a key change paced so that DANE
never breaks (RFC 7671 §8.1; rollover/machine.py decides, this part observes and acts).

Every pass:
1. reads mailward's serving Secret (keys, record) and the source: the user's Secret
   (`spec.tls.secretName`), or the keys mailward holds for a cert-manager issuer
   (`spec.tls.issuerRef`, certificates through CertificateRequests, rollover/issuance.py);
2. asks every authoritative server what TLSA records it serves (adapters/nameservers.py), and
   after a switch which key every MTA endpoint presents (adapters/endpoint_keys.py);
3. lets the machine decide, writes the serving Secret if anything changed, and tells the DNS
   part which digests to publish and which chain is served (`ctx.findings`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from kubernetes.client.exceptions import ApiException

from mailward.adapters.endpoint_keys import MTAEndpoints, digests_of, presented_keys
from mailward.adapters.kube import api_message
from mailward.adapters.nameservers import NameserverObserver, NameserverView, agreement
from mailward.adapters.serving_secret import (
    KeyMaterial,
    SecretChanged,
    ServingSecrets,
    ServingState,
)
from mailward.api.base import parse_duration
from mailward.api.certificates import CertificateStatus, KeyStatus, NameserverStatus
from mailward.api.v1alpha1 import MailDomainSpec
from mailward.conditions import Verdict
from mailward.owner import Owner
from mailward.parts import Event, PartResult, ReconcileContext
from mailward.parts.backoff import Backoff
from mailward.reconcile import CERTIFICATE_READY, certificate_verdict
from mailward.render.certificates import serving_secret_name
from mailward.render.dns_records import tlsa_name
from mailward.rollover import keys
from mailward.rollover import metrics as certificate_metrics
from mailward.rollover.issuance import Issuance, IssuerSource
from mailward.rollover.machine import (
    Decision,
    KeyEntry,
    Observation,
    Propagation,
    RolloverRecord,
    Timing,
    step,
)

ROTATION_SAFE = "RotationSafe"
# While the world is expected to change soon (propagation, a switch being verified, a
# certificate being issued), the part looks again this often.
POLL_SECONDS = 5.0
# A certificate this close to expiry with no safe rollover in reach is announced (Warning).
EXPIRY_WARNING = timedelta(days=14)

log = logging.getLogger("mailward.certificate")

NameserverFactory = Callable[[], NameserverObserver | None]


def parse_chain(pem: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM `tls.crt`, leaf first; ValueError if there is none or one is
    malformed."""
    return x509.load_pem_x509_certificates(pem)


def timing_for(spec: MailDomainSpec) -> Timing:
    rollover = spec.dane.rollover
    tlsa_ttl = spec.dns.ttl.tlsa if spec.dns else 600
    retire = parse_duration(rollover.retire_after) if rollover.retire_after else 2.0 * tlsa_ttl
    verify = parse_duration(rollover.verify_timeout)
    return Timing(
        tlsa_ttl=tlsa_ttl,
        margin=parse_duration(rollover.margin),
        propagation_timeout=parse_duration(rollover.propagation_timeout),
        verify_timeout=verify,
        retire_after=retire,
        retry_after_rollback=max(2 * verify, 600.0),
        # Without records in DNS there is nothing to wait for: no TLSA, no pinning.
        gated=spec.dane.enabled and spec.dns is not None,
    )


@dataclass(frozen=True)
class _Failure:
    verdict: Verdict
    retry: bool = True


class CertificatePart:
    name = "certificate"
    condition = CERTIFICATE_READY

    def __init__(
        self,
        secrets: ServingSecrets,
        issuance: Issuance | None,
        nameservers: NameserverFactory,
        endpoints: MTAEndpoints,
        retry_seconds: float,
        retry_max_seconds: float = 300.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._secrets = secrets
        self._issuance = issuance
        self._nameservers = nameservers
        self._endpoints = endpoints
        self._backoff = Backoff(retry_seconds, retry_max_seconds)
        self._clock = clock
        # The serving Secret as read (or last written) in the pass in progress, per MailDomain;
        # dropped when the pass ends, so nothing outlives it (handlers.py runs one pass per
        # object at a time).
        self._read: dict[str, ServingState] = {}

    async def reconcile(self, ctx: ReconcileContext) -> PartResult:
        tls = ctx.spec.tls
        if tls is None:
            # Only an attached domain has none: its MX hosts serve the fleet's certificate.
            verdict = Verdict(
                CERTIFICATE_READY,
                "True",
                "MailServerCertificate",
                "the MX hosts serve the certificate of the domain's MailServer",
            )
            return PartResult([verdict], status={"certificate": None})
        now = self._clock()
        name = serving_secret_name(ctx.name)
        try:
            state = await self._secrets.read(ctx.namespace, name)
            # What this pass read: written back only if the pass changed it.
            self._read[ctx.uid] = state
            if tls.secret_name is not None:
                result = await self._from_user_secret(ctx, state, tls.secret_name, now)
            else:
                result = await self._from_issuer(ctx, state, now)
        except SecretChanged as error:
            # Later parts must not act on keys this pass could not settle.
            verdict = Verdict(CERTIFICATE_READY, "Unknown", "ConcurrentChange", str(error))
            return PartResult([verdict], retry_after=1.0, blocking=True)
        except ApiException as error:
            # The API server refused or failed a read or write: said, and tried again.
            message = f"the API server answered {error.status} {error.reason}: {api_message(error)}"
            log.warning("%s/%s: %s", ctx.namespace, ctx.name, message)
            verdict = Verdict(CERTIFICATE_READY, "Unknown", "APIError", message)
            return PartResult([verdict], retry_after=self._backoff.next(ctx.uid), blocking=True)
        finally:
            self._read.pop(ctx.uid, None)
        return result

    # -- sources -----------------------------------------------------------------------------

    async def _from_user_secret(
        self, ctx: ReconcileContext, state: ServingState, secret_name: str, now: datetime
    ) -> PartResult:
        user = await self._secrets.read_user_secret(ctx.namespace, secret_name)
        verdict = certificate_verdict(user.observation)
        offered: KeyMaterial | None = None
        if verdict.status == "True" and user.pair is not None:
            offered, problem = _checked_pair(user.pair, f"Secret {secret_name!r}", ctx.spec)
            if problem:
                verdict = Verdict(CERTIFICATE_READY, "False", "TLSSecretInvalid", problem, True)
        if offered is None:
            if state.served is None:
                # Nothing to serve yet: no MTA pod is rendered for a missing certificate.
                retry = self._backoff.next(ctx.uid)
                return PartResult([verdict], retry_after=retry, blocking=True)
            # Keep serving what was served; say why nothing new is taken.
            return await self._rollover(ctx, state, None, now, source_problem=verdict)
        if state.served is None:
            state = await self._bootstrap(ctx, state, offered, now)
        return await self._rollover(ctx, state, offered, now)

    async def _from_issuer(
        self, ctx: ReconcileContext, state: ServingState, now: datetime
    ) -> PartResult:
        if self._issuance is None:
            verdict = Verdict(
                CERTIFICATE_READY,
                "False",
                "IssuerUnavailable",
                "spec.tls.issuerRef needs cert-manager's CertificateRequest API, which this "
                "operator was not started with",
                stalled=True,
            )
            return PartResult([verdict], blocking=True)
        source = IssuerSource(self._issuance, ctx, self._owner(ctx), now)
        state, progress = await source.prepare(state)
        if state.served is None:
            if progress.state != "Issued":
                await self._write_if_changed(ctx, state)
                verdict = progress.verdict()
                retry = POLL_SECONDS if progress.state == "Pending" else self._backoff.next(ctx.uid)
                return PartResult([verdict], retry_after=retry, blocking=True)
            assert progress.material is not None
            state = await self._bootstrap(ctx, state, progress.material, now)
        return await self._rollover(ctx, state, None, now, issuer=source)

    async def _bootstrap(
        self, ctx: ReconcileContext, state: ServingState, first: KeyMaterial, now: datetime
    ) -> ServingState:
        """The first key is served at once: no TLSA record pins anything yet."""
        digest = first.spki_sha256
        record = RolloverRecord(current=KeyEntry(spki_sha256=digest, served_since=now))
        state = replace(state, served=first, record=record)
        return await self._write(ctx, state)

    # -- the rollover ------------------------------------------------------------------------

    async def _rollover(
        self,
        ctx: ReconcileContext,
        state: ServingState,
        offered: KeyMaterial | None,
        now: datetime,
        *,
        source_problem: Verdict | None = None,
        issuer: IssuerSource | None = None,
    ) -> PartResult:
        assert state.served is not None
        timing = timing_for(ctx.spec)
        record = state.record
        if record.current is None or state.damaged:
            digest = state.served.spki_sha256
            record = RolloverRecord(current=KeyEntry(spki_sha256=digest, served_since=now))
        materials = _materials(state)
        assert record.current is not None
        current_digest = record.current.spki_sha256
        offered_digest: str | None = None
        rotation_wanted = False
        next_ready = False
        if offered is not None:
            offered_digest = offered.spki_sha256
            materials[offered_digest] = offered
            if offered_digest == current_digest and offered.chain_pem != state.served.chain_pem:
                # A renewal with the same key: served at once, DNS unchanged.
                state = replace(state, served=offered)
                materials[current_digest] = offered
            rotation_wanted = offered_digest != current_digest
            next_ready = True
        elif issuer is not None:
            offer = issuer.next_offer(state)
            if offer is not None:
                offered_digest = offer.digest
                materials[offer.digest] = offer.material
                rotation_wanted = issuer.rotation_due(state)
                next_ready = offer.certified
        views: list[NameserverView] = []
        propagation = Propagation(None, problem="DANE is off")
        if timing.gated:
            views, propagation = await self._observe_nameservers(ctx)
        presented: frozenset[str] | None = None
        if record.switched_at is not None and record.verified_at is None:
            hosts = [(mx.host, mx.addresses) for mx in ctx.spec.mx]
            endpoints = await self._endpoints.of(ctx.namespace, ctx.name, hosts)
            presented = digests_of(await presented_keys(endpoints))
        seen = Observation(offered_digest, rotation_wanted, next_ready, propagation, presented)
        decision = step(record, seen, timing, now)
        if decision.request_next_certificate and issuer is not None and offered_digest:
            state = await issuer.certify_next(state, offered_digest)
        elif issuer is not None and not decision.happened:
            state = await issuer.renew_current(state, decision)
        state = _place(state, decision.record, materials)
        state = await self._write_if_changed(ctx, state)
        return self._result(ctx, state, decision, views, source_problem, now)

    async def _observe_nameservers(
        self, ctx: ReconcileContext
    ) -> tuple[list[NameserverView], Propagation]:
        zone = ctx.status.dns.zone if ctx.status.dns else ""
        observer = self._nameservers()
        if not zone or observer is None:
            why = "the zone is not known yet" if observer else "no resolver configured"
            return [], Propagation(None, problem=why)
        owners = [tlsa_name(mx.host) + "." for mx in ctx.spec.mx]
        views = await observer.observe(zone, owners)
        return views, agreement(views, owners)

    # -- status ------------------------------------------------------------------------------

    def _result(
        self,
        ctx: ReconcileContext,
        state: ServingState,
        decision: Decision,
        views: Sequence[NameserverView],
        source_problem: Verdict | None,
        now: datetime,
    ) -> PartResult:
        assert state.served is not None
        chain = parse_chain(state.served.chain_pem)
        ctx.findings.certificate_chain = tuple(chain)
        ctx.findings.tlsa_digests = {mx.host: list(decision.publish) for mx in ctx.spec.mx}
        if ctx.spec.dane.issuer_record and decision.publish:
            held = (state.served, state.next, state.previous)
            issuers = issuer_digests(m.chain_pem for m in held if m is not None and m.chain_pem)
            ctx.findings.tlsa_issuer_digests = {mx.host: issuers for mx in ctx.spec.mx}
        not_after = chain[0].not_valid_after_utc
        served = (
            f"serving key {decision.record.current.spki_sha256[:16]}… until "  # type: ignore[union-attr]
            f"{not_after:%Y-%m-%dT%H:%M:%SZ}"
        )
        if source_problem is not None:
            ready = replace(source_problem, message=f"{source_problem.message}; still {served}")
        elif now >= not_after:
            ready = Verdict(CERTIFICATE_READY, "False", "CertificateExpired", served)
        else:
            ready = Verdict(CERTIFICATE_READY, "True", "Serving", served)
        safe = Verdict(
            ROTATION_SAFE, "True" if decision.safe else "False", decision.reason, decision.message
        )
        events = [Event("Normal", "KeyRollover", note) for note in decision.happened]
        if not_after - now < EXPIRY_WARNING and not decision.safe:  # also the metric below
            events.append(
                Event(
                    "Warning",
                    "CertificateExpiring",
                    f"the served certificate expires {not_after:%Y-%m-%dT%H:%M:%SZ} and no safe "
                    f"key rollover is in reach: {decision.reason}: {decision.message}",
                )
            )
        expiring = not_after - now < EXPIRY_WARNING
        certificate_metrics.record(
            ctx.namespace,
            ctx.name,
            ctx.spec.domain,
            not_after=not_after.timestamp(),
            safe=decision.safe,
            expiring=expiring,
        )
        renewal = None
        issuance = ctx.spec.tls.renew_before if ctx.spec.tls and ctx.spec.tls.issuer_ref else None
        if issuance:
            renewal = not_after - timedelta(seconds=parse_duration(issuance))
        status = CertificateStatus(
            source=ctx.spec.tls.source if ctx.spec.tls else "Secret",
            not_after=not_after,
            renewal_time=renewal,
            phase=decision.phase,
            next_transition_time=decision.next_transition,
            keys=_key_status(decision.record),
            nameservers=[_nameserver_status(v, decision.publish) for v in views][:16],
            last_rollback=decision.record.rollback_reason or "",
        )
        retry = _retry_after(decision, renewal, now)
        self._backoff.reset(ctx.uid)
        return PartResult(
            [ready, safe],
            status={
                "certificate": status.model_dump(mode="json", by_alias=True, exclude_none=True)
            },
            retry_after=retry,
            events=events,
        )

    # -- writes ------------------------------------------------------------------------------

    def _owner(self, ctx: ReconcileContext) -> dict[str, object]:
        return Owner(ctx.namespace, ctx.name, ctx.uid).reference()

    async def _write(self, ctx: ReconcileContext, state: ServingState) -> ServingState:
        name = serving_secret_name(ctx.name)
        version = await self._secrets.write(ctx.namespace, name, self._owner(ctx), state)
        written = replace(state, found=True, resource_version=version, damaged=None)
        self._read[ctx.uid] = written
        return written

    async def _write_if_changed(self, ctx: ReconcileContext, state: ServingState) -> ServingState:
        """Writes when the state differs from what was read (its resourceVersion guards it)."""
        if state.found and not state.damaged and _same(self._read.get(ctx.uid), state):
            return state
        return await self._write(ctx, state)

    async def release(self, ctx: ReconcileContext) -> None:
        """The serving Secret is owned by the MailDomain: garbage collection removes it."""
        self._backoff.reset(ctx.uid)
        certificate_metrics.forget(ctx.namespace, ctx.name, ctx.spec.domain)


def _same(a: ServingState | None, b: ServingState) -> bool:
    if a is None:
        return False
    return (a.record, a.served, a.next, a.previous, a.pending_request) == (
        b.record,
        b.served,
        b.next,
        b.previous,
        b.pending_request,
    )


def _checked_pair(
    pair: KeyMaterial, where: str, spec: MailDomainSpec
) -> tuple[KeyMaterial | None, str | None]:
    try:
        key = keys.key_from_pem(pair.key_pem)
        chain = parse_chain(pair.chain_pem)
    except ValueError as error:
        return None, f"tls.crt/tls.key of {where} (spec.tls.secretName) cannot be read: {error}"
    if not keys.chain_matches_key(chain, key):
        return None, f"tls.crt of {where} does not belong to its tls.key"
    return pair, None


def _materials(state: ServingState) -> dict[str, KeyMaterial]:
    found: dict[str, KeyMaterial] = {}
    for material in (state.previous, state.next, state.served):
        if material is not None:
            found[material.spki_sha256] = material
    return found


def _place(
    state: ServingState, record: RolloverRecord, materials: dict[str, KeyMaterial]
) -> ServingState:
    """The keys where the record says they are now (after a switch, rollback, retirement)."""

    def of(entry: KeyEntry | None) -> KeyMaterial | None:
        return materials.get(entry.spki_sha256) if entry is not None else None

    served = of(record.current) or state.served
    return replace(
        state, record=record, served=served, next=of(record.next), previous=of(record.previous)
    )


def issuer_digests(chains_pem: Iterable[bytes]) -> list[str]:
    """The keys of the CAs that issued these chains (each leaf's issuer, when the chain holds
    it): a `2 1 1` record for each keeps matching across a switch to another CA's certificate."""
    found: set[str] = set()
    for pem in chains_pem:
        try:
            chain = parse_chain(pem)
        except ValueError:
            continue
        issuer = next((c for c in chain[1:] if c.subject == chain[0].issuer), None)
        if issuer is not None:
            found.add(keys.certificate_digest(issuer))
    return sorted(found)


def _key_status(record: RolloverRecord) -> list[KeyStatus]:
    out = []
    for role in ("current", "next", "previous"):
        entry: KeyEntry | None = getattr(record, role)
        if entry is not None:
            out.append(
                KeyStatus(
                    role=role,
                    spki_sha256=entry.spki_sha256,
                    published_since=entry.published_at,
                    served_since=entry.served_since,
                )
            )
    return out


def _nameserver_status(view: NameserverView, desired: Sequence[str]) -> NameserverStatus:
    wanted = frozenset(desired)
    matches = not view.problem and all(d == wanted for d in view.digests.values())
    problem = view.problem or ""
    if not problem and not matches:
        served = "; ".join(
            f"{owner}: {len(d)} record(s)" for owner, d in sorted(view.digests.items())
        )
        problem = f"serves {served}, not the {len(wanted)} desired"
    return NameserverStatus(
        name=view.name,
        address=view.address,
        # The serial explains a server that lags; for one that serves what is desired it would
        # change with every write of anyone in the zone, and rewrite this status each pass.
        serial=None if matches else view.serial,
        matches=matches,
        problem=problem[:1024],
    )


def _retry_after(decision: Decision, renewal: datetime | None, now: datetime) -> float | None:
    waits: list[float] = []
    if decision.phase in ("Publishing", "Verifying", "Issuing"):
        waits.append(POLL_SECONDS)
    for moment in (decision.next_transition, renewal):
        if moment is not None:
            waits.append(max(1.0, (moment - now).total_seconds()))
    return min(waits) if waits else None
