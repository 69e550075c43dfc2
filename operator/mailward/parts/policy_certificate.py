"""The policy certificate part: `mta-sts.<domain>` and `autoconfig.<domain>` get a certificate
from the domain's cert-manager issuer (`spec.tls.issuerRef`), in the Secret the policy endpoint
serves from (`mta-sts-<domain>` in its namespace).

MTA-STS senders check this certificate with PKIX (RFC 8461 §3.3), and no TLSA record pins it,
so unlike the MX hosts' keys it needs no rollover: every renewal takes a fresh key. A domain
whose certificates come from a Secret (`spec.tls.secretName`) brings this Secret itself, as
before (or an Ingress controller's cert-manager annotation does).

Condition `PolicyCertificateReady`. The Secret lives in another namespace than the MailDomain,
so no owner reference can hold it: `release` deletes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from mailward.adapters.certificate_requests import CertificateRequests
from mailward.adapters.serving_secret import KeyMaterial, ServingSecrets, ServingState
from mailward.api.base import parse_duration
from mailward.conditions import Verdict
from mailward.owner import Owner
from mailward.parts import Event, PartResult, ReconcileContext
from mailward.parts.backoff import Backoff
from mailward.render.policy_objects import policy_hosts, tls_secret_name
from mailward.rollover import keys
from mailward.rollover.issuance import certified, request_name

POLICY_CERTIFICATE_READY = "PolicyCertificateReady"
POLL_SECONDS = 5.0

log = logging.getLogger("mailward.policy_certificate")


class PolicyCertificatePart:
    name = "policy-certificate"
    condition = POLICY_CERTIFICATE_READY

    def __init__(
        self,
        secrets: ServingSecrets,
        requests: CertificateRequests,
        endpoint_namespace: str | None,
        *,
        retry_seconds: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._secrets = secrets
        self._requests = requests
        self._namespace = endpoint_namespace
        self._backoff = Backoff(retry_seconds, 3600.0)
        self._clock = clock

    async def reconcile(self, ctx: ReconcileContext) -> PartResult:
        tls = ctx.spec.tls
        if tls is None or tls.issuer_ref is None or self._namespace is None:
            return PartResult([])  # the Secret is someone else's, or no endpoint is managed
        now = self._clock()
        name = tls_secret_name(ctx.spec.domain)
        where = f"Secret {self._namespace}/{name}"
        renew_before = timedelta(seconds=parse_duration(tls.renew_before))
        original = await self._secrets.read(self._namespace, name)
        state, failure = await self._collect(ctx, original)
        if state.served is not None and certified(state.served, now, renew_before):
            await self._save(original, state, name)
            self._backoff.reset(ctx.uid)
            served = keys.load_chain(state.served.chain_pem)[0].not_valid_after_utc
            until = renew_before.total_seconds()
            ready = Verdict(POLICY_CERTIFICATE_READY, "True", "Issued",
                            f"{where} valid until {served:%Y-%m-%dT%H:%M:%SZ}")  # fmt: skip
            retry = max(1.0, (served - now).total_seconds() - until)
            return PartResult([ready], retry_after=retry)
        if failure is not None:
            await self._save(original, state, name)
            verdict = Verdict(POLICY_CERTIFICATE_READY, "False", "IssuanceFailed", failure)
            return PartResult(
                [verdict],
                retry_after=self._backoff.next(ctx.uid),
                events=[Event("Warning", "IssuanceFailed", failure)],
            )
        if state.pending_request is None:
            state = await self._ask(ctx, state, now)
        await self._save(original, state, name)
        pending = state.pending_request[0] if state.pending_request else "?"
        verdict = Verdict(
            POLICY_CERTIFICATE_READY,
            "Unknown",
            "Issuing",
            f"waiting for CertificateRequest {ctx.namespace}/{pending} for "
            f"{', '.join(policy_hosts(ctx.spec.domain))}",
        )
        return PartResult([verdict], retry_after=POLL_SECONDS)

    async def _collect(
        self, ctx: ReconcileContext, state: ServingState
    ) -> tuple[ServingState, str | None]:
        if state.pending_request is None:
            return state, None
        request, digest = state.pending_request
        outcome = await self._requests.outcome(ctx.namespace, request)
        if outcome.state == "Pending":
            return state, None
        state = replace(state, pending_request=None)
        what = f"CertificateRequest {ctx.namespace}/{request}"
        if outcome.state != "Issued":
            return state, f"{what}: {outcome.state}: {outcome.message or 'no reason given'}"
        await self._requests.delete(ctx.namespace, request)
        if state.next is None or state.next.spki_sha256 != digest:
            return state, f"{what}: issued for a key mailward no longer holds"
        issued = replace(state.next, chain_pem=outcome.chain_pem)
        return replace(state, served=issued, next=None), None

    async def _ask(self, ctx: ReconcileContext, state: ServingState, now: datetime) -> ServingState:
        tls = ctx.spec.tls
        assert tls is not None
        assert tls.issuer_ref is not None
        key = keys.generate_key(tls.private_key.algorithm)
        digest = keys.key_digest(key)
        request = request_name(f"{ctx.name}-policy", digest, now)
        owner = Owner(ctx.namespace, ctx.name, ctx.uid).reference()
        csr = keys.csr_pem(key, policy_hosts(ctx.spec.domain))
        await self._requests.create(ctx.namespace, request, owner, csr, tls.issuer_ref,
                                    tls.duration)  # fmt: skip
        return replace(state, next=KeyMaterial(keys.key_to_pem(key)),
                       pending_request=(request, digest))  # fmt: skip

    async def _save(self, original: ServingState, state: ServingState, name: str) -> None:
        assert self._namespace is not None
        same = (original.served, original.next, original.pending_request) == (
            state.served,
            state.next,
            state.pending_request,
        )
        if original.found and same:
            return
        await self._secrets.write(self._namespace, name, None, state)

    async def release(self, ctx: ReconcileContext) -> None:
        self._backoff.reset(ctx.uid)
        tls = ctx.spec.tls
        if tls is None or tls.issuer_ref is None or self._namespace is None:
            return
        await self._secrets.delete(self._namespace, tls_secret_name(ctx.spec.domain))
