"""The certificate part: the TLS Secret named in `spec.tls.secretName` exists and is usable."""

from __future__ import annotations

from mailward.adapters.kube import SecretObserver
from mailward.parts import PartResult, ReconcileContext
from mailward.reconcile import certificate_verdict


class CertificatePart:
    name = "certificate"

    def __init__(self, secrets: SecretObserver, retry_seconds: float) -> None:
        self._secrets = secrets
        self._retry_seconds = retry_seconds

    async def reconcile(self, ctx: ReconcileContext) -> PartResult:
        secret_name = ctx.spec.tls.secret_name
        observation = await self._secrets.observe_tls_secret(ctx.namespace, secret_name)
        verdict = certificate_verdict(observation)
        if verdict.status != "True":
            # Secrets are not watched (that would need list/watch on every Secret of the
            # cluster), so a missing one is looked for again after a while.
            return PartResult([verdict], retry_after=self._retry_seconds, blocking=True)
        return PartResult([verdict])

    async def release(self, ctx: ReconcileContext) -> None:
        """The Secret belongs to the user (or cert-manager): nothing to release."""
