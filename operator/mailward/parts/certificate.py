"""The certificate part: the TLS Secret named in `spec.tls.secretName` exists and is usable."""

from __future__ import annotations

from cryptography import x509

from mailward.adapters.kube import SecretObserver
from mailward.conditions import Verdict
from mailward.parts import PartResult, ReconcileContext
from mailward.parts.backoff import Backoff
from mailward.reconcile import CERTIFICATE_READY, certificate_verdict

# ctx.facts key: the served chain (leaf first) as parsed `x509.Certificate`s; the DNS part pins
# the leaf's key in TLSA records.
CERTIFICATE_CHAIN = "certificate.chain"


def parse_chain(pem: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM `tls.crt`, leaf first; ValueError if there is none or one is
    malformed."""
    return x509.load_pem_x509_certificates(pem)


class CertificatePart:
    name = "certificate"

    def __init__(
        self, secrets: SecretObserver, retry_seconds: float, retry_max_seconds: float = 300.0
    ) -> None:
        self._secrets = secrets
        self._backoff = Backoff(retry_seconds, retry_max_seconds)

    async def reconcile(self, ctx: ReconcileContext) -> PartResult:
        if ctx.spec.tls is None:
            # Only an attached domain has none: its MX hosts serve the fleet's certificate.
            verdict = Verdict(
                CERTIFICATE_READY,
                "True",
                "MailServerCertificate",
                "the MX hosts serve the certificate of the domain's MailServer",
            )
            return PartResult([verdict])
        secret_name = ctx.spec.tls.secret_name
        observation = await self._secrets.observe_tls_secret(ctx.namespace, secret_name)
        verdict = certificate_verdict(observation)
        if verdict.status != "True":
            # Secrets are not watched (that would need list/watch on every Secret of the
            # cluster), so a missing one is looked for again after a while.
            return PartResult([verdict], retry_after=self._backoff.next(ctx.uid), blocking=True)
        try:
            ctx.facts[CERTIFICATE_CHAIN] = parse_chain(observation.certificate_pem)
        except ValueError as error:
            invalid = Verdict(
                CERTIFICATE_READY,
                "False",
                "TLSSecretInvalid",
                f"tls.crt of Secret {secret_name!r} (spec.tls.secretName) is not a PEM "
                f"certificate chain: {error}",
                stalled=True,
            )
            return PartResult([invalid], retry_after=self._backoff.next(ctx.uid), blocking=True)
        self._backoff.reset(ctx.uid)
        return PartResult([verdict])

    async def release(self, ctx: ReconcileContext) -> None:
        """The Secret belongs to the user (or cert-manager): nothing to release."""
        self._backoff.reset(ctx.uid)
