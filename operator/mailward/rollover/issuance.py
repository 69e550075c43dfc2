"""Certificates from a cert-manager issuer for keys mailward holds (`spec.tls.issuerRef`).

mailward generates the current key and, at once, the next one; the next key's TLSA record is
published beside the current one for a whole certificate lifetime before a renewal moves to it
(rotationPolicy Always), so no validating sender ever meets an unknown key. A certificate is
asked for with a CertificateRequest (adapters/certificate_requests.py) whose name and key wait
in the serving Secret's annotation until cert-manager answers, so a restart resumes the wait.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from mailward.adapters.certificate_requests import CertificateRequests, RequestOutcome
from mailward.adapters.serving_secret import KeyMaterial, ServingState
from mailward.api.base import parse_duration
from mailward.api.certificates import TLSSpec
from mailward.conditions import Verdict
from mailward.parts import ReconcileContext
from mailward.reconcile import CERTIFICATE_READY
from mailward.rollover import keys
from mailward.rollover.machine import Decision
from mailward.tlsrpt.rua import collector_host

log = logging.getLogger("mailward.issuance")

_NAME_MAX = 253


@dataclass(frozen=True)
class Issuance:
    """What the issuer source needs from outside: the requests API."""

    requests: CertificateRequests


@dataclass(frozen=True)
class Progress:
    """How the certificate for the key being bootstrapped is coming along."""

    state: Literal["Issued", "Pending", "Failed", "None"]
    message: str = ""
    material: KeyMaterial | None = None

    def verdict(self) -> Verdict:
        if self.state == "Failed":
            return Verdict(CERTIFICATE_READY, "False", "IssuanceFailed", self.message)
        return Verdict(CERTIFICATE_READY, "Unknown", "Issuing", self.message or "requesting")


@dataclass(frozen=True)
class Offer:
    digest: str
    material: KeyMaterial
    # A valid certificate for this key is at hand.
    certified: bool


def certificate_names(ctx: ReconcileContext) -> list[str]:
    """The MX hosts, and the collector's host when the default TLSRPT mailbox is used (the
    collector serves the domain's certificate for it)."""
    names = [mx.host for mx in ctx.spec.mx]
    if not ctx.spec.tls_rpt.rua:
        names.append(collector_host(ctx.spec.domain))
    return list(dict.fromkeys(names))


def request_name(maildomain: str, digest: str, now: datetime) -> str:
    suffix = f"-{digest[:10]}-{int(now.timestamp())}"
    return maildomain[: _NAME_MAX - len(suffix)] + suffix


def certified(material: KeyMaterial | None, now: datetime, lead: timedelta) -> bool:
    """The material's chain belongs to its key and stays valid for at least `lead`."""
    if material is None or not material.chain_pem:
        return False
    try:
        chain = keys.load_chain(material.chain_pem)
        key = keys.key_from_pem(material.key_pem)
    except ValueError:
        return False
    return keys.chain_matches_key(chain, key) and chain[0].not_valid_after_utc - now > lead


class IssuerSource:
    def __init__(
        self, issuance: Issuance, ctx: ReconcileContext, owner: dict[str, object], now: datetime
    ) -> None:
        assert ctx.spec.tls is not None
        assert ctx.spec.tls.issuer_ref is not None
        self._requests = issuance.requests
        self._ctx = ctx
        self._tls: TLSSpec = ctx.spec.tls
        self._owner = owner
        self._now = now
        self._renew_before = timedelta(seconds=parse_duration(self._tls.renew_before))

    # -- the request in flight ---------------------------------------------------------------

    async def prepare(self, state: ServingState) -> tuple[ServingState, Progress]:
        """Collects the answer to a request in flight; at the very start, asks for the first
        certificate (the key waits in `next` until it is issued)."""
        state, progress = await self._collect(state)
        if state.served is not None or progress.state == "Issued":
            return state, progress
        if state.pending_request is not None:
            return state, progress
        if progress.state == "Failed":
            return state, progress
        first = state.next or KeyMaterial(keys.key_to_pem(self._new_key()))
        state = replace(state, next=first)
        state = await self._ask(state, first)
        return state, Progress("Pending", "certificate requested")

    async def _collect(self, state: ServingState) -> tuple[ServingState, Progress]:
        if state.pending_request is None:
            return state, Progress("None")
        name, digest = state.pending_request
        outcome: RequestOutcome = await self._requests.outcome(self._ctx.namespace, name)
        where = f"CertificateRequest {self._ctx.namespace}/{name}"
        if outcome.state == "Pending":
            return state, Progress("Pending", f"{where}: {outcome.message}")
        state = replace(state, pending_request=None)
        if outcome.state != "Issued":
            message = f"{where}: {outcome.state}: {outcome.message or 'no reason given'}"
            log.warning("%s", message)
            return state, Progress("Failed", message)
        chain = outcome.chain_pem
        if self._ctx.spec.dane.enabled and outcome.ca_pem and outcome.ca_pem not in chain:
            # The issuing CA in the chain lets a `2 1 1` record match (RFC 7671 §5.2.2).
            chain = chain.rstrip(b"\n") + b"\n" + outcome.ca_pem
        await self._requests.delete(self._ctx.namespace, name)
        if state.served is not None and state.served.spki_sha256 == digest:
            issued = replace(state.served, chain_pem=chain)
            return replace(state, served=issued), Progress("Issued", material=issued)
        if state.next is not None and state.next.spki_sha256 == digest:
            issued = replace(state.next, chain_pem=chain)
            if state.served is None:  # the first certificate: bootstrapped by the part
                return replace(state, next=None), Progress("Issued", material=issued)
            return replace(state, next=issued), Progress("Issued", material=issued)
        return state, Progress("Failed", f"{where}: issued for a key mailward no longer holds")

    async def _ask(self, state: ServingState, material: KeyMaterial) -> ServingState:
        key = keys.key_from_pem(material.key_pem)
        digest = keys.key_digest(key)
        name = request_name(self._ctx.name, digest, self._now)
        csr = keys.csr_pem(key, certificate_names(self._ctx))
        issuer = self._tls.issuer_ref
        assert issuer is not None
        await self._requests.create(
            self._ctx.namespace, name, self._owner, csr, issuer, self._tls.duration
        )
        log.info(
            "%s/%s: requested %s for key %s", self._ctx.namespace, self._ctx.name, name, digest[:16]
        )
        return replace(state, pending_request=(name, digest))

    def _new_key(self) -> keys.PrivateKey:
        return keys.generate_key(self._tls.private_key.algorithm)

    # -- what the rollover asks --------------------------------------------------------------

    def next_offer(self, state: ServingState) -> Offer | None:
        """The next key (made now if there is none), and whether it has a certificate."""
        record = state.record
        if record.switched_at is not None and record.verified_at is None:
            return None  # the last switch is being verified: no new key yet
        material = state.next or KeyMaterial(keys.key_to_pem(self._new_key()))
        return Offer(
            material.spki_sha256, material, certified(material, self._now, self._renew_before)
        )

    def renewal_due(self, state: ServingState) -> bool:
        return not certified(state.served, self._now, self._renew_before)

    def rotation_due(self, state: ServingState) -> bool:
        return self._tls.private_key.rotation_policy == "Always" and self.renewal_due(state)

    async def certify_next(self, state: ServingState, digest: str) -> ServingState:
        if state.pending_request is not None:
            return state
        material = state.next
        if material is None or material.spki_sha256 != digest:
            return state
        return await self._ask(state, material)

    async def renew_current(self, state: ServingState, decision: Decision) -> ServingState:
        """A renewal that keeps the key: due, and no switch will take its place now."""
        if state.pending_request is not None or state.served is None:
            return state
        if not self.renewal_due(state):
            return state
        switching = self.rotation_due(state) and decision.safe
        if switching:
            return state
        return await self._ask(state, state.served)
