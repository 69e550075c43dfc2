"""The operator's parts, built once at start-up from its settings and handed to the handlers.

Nothing here reads the environment or decides anything: it wires the adapters (the API server,
DNS, cert-manager) into the parts in their reconcile order.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailward.adapters.certificate_requests import KubeCertificateRequests
from mailward.adapters.dkim_keys import KubeDKIMKeyStore
from mailward.adapters.dkim_resolver import DKIMResolver
from mailward.adapters.dns_kube import KubeProviderResolver
from mailward.adapters.endpoint_keys import KubeMTAEndpoints
from mailward.adapters.events import KubeEventPoster
from mailward.adapters.kube import KubeCustomObjects, KubeSecretObserver, load_client_config
from mailward.adapters.maildomains import KubeMailDomainReader, MailDomainDirectory
from mailward.adapters.mailservers import (
    KubeFleetPods,
    KubeMailServerDirectory,
    WatchedMailServers,
)
from mailward.adapters.nameservers import NameserverObserver
from mailward.adapters.observed import LevelApplier, ObservedObjects
from mailward.adapters.policy_endpoint import EndpointFetcher
from mailward.adapters.recent_providers import RecentProviders
from mailward.adapters.serving_secret import KubeServingSecrets
from mailward.adapters.status_writer import KubeStatusWriter
from mailward.adapters.workloads import KubeWorkloadClient
from mailward.api.mailserver import MAILSERVER_KIND, MAILSERVER_PLURAL
from mailward.domains import DomainReconciler
from mailward.fleet import FleetController
from mailward.parts import Part, ReconcileContext
from mailward.parts.certificate import CertificatePart
from mailward.parts.compliance import CompliancePart, ComplianceRunner
from mailward.parts.dkim import DKIMPart
from mailward.parts.dns import DNSPart
from mailward.parts.mta import MTAPart
from mailward.parts.mtasts import MTASTSPart
from mailward.parts.policy_certificate import PolicyCertificatePart
from mailward.parts.tlsrpt import TLSRptPart
from mailward.provider_handlers import RETRY_FACTOR, ProviderReconciler
from mailward.rollover.issuance import Issuance
from mailward.scheduler import Scheduler
from mailward.settings import OperatorSettings


@dataclass
class Runtime:
    settings: OperatorSettings
    scheduler: Scheduler
    # What the cluster holds of mailward's objects: run its watches (`observed.run`).
    observed: ObservedObjects
    # Every MailDomain as kopf's watch shows it (fed by handlers.py).
    directory: MailDomainDirectory
    domains: DomainReconciler
    fleets: FleetController
    provider_status: ProviderReconciler
    # MailServers and namespace labels as kopf's watches show them (fed by fleet_handlers.py).
    mail_servers: WatchedMailServers


# The API client is blocking: every call runs in one of these threads (handlers.py sets the
# loop's default executor), and each thread keeps a connection to the API server.
API_THREADS = 32
# How long the passes share a provider's resolution (adapters/recent_providers.py): a provider's
# edit is seen at once, a rotated TSIG Secret within this.
PROVIDER_REUSE_SECONDS = 10.0


def build(settings: OperatorSettings, *, standby: bool = False) -> Runtime:
    """Everything the handlers use; `standby`: the scheduler starts paused (peering)."""
    load_client_config(connections=API_THREADS)
    events = KubeEventPoster()
    reconcile = settings.reconcile
    observed = ObservedObjects()
    directory = MailDomainDirectory()
    mail_servers = WatchedMailServers(KubeMailServerDirectory())
    applier = LevelApplier(observed)
    resolver = KubeProviderResolver()
    providers = RecentProviders(resolver, seconds=PROVIDER_REUSE_SECONDS)
    scheduler = Scheduler(paused=standby)
    compliance = ComplianceRunner(settings.compliance, KubeStatusWriter(), events)
    domains: DomainReconciler | None = None

    def track_compliance(ctx: ReconcileContext, now: bool) -> None:
        assert domains is not None
        domains.track_compliance(ctx, now)

    def nameservers() -> NameserverObserver:
        # A zone's authoritative servers, found through the resolver the compliance checks use.
        return NameserverObserver(
            settings.compliance.resolver, port=settings.compliance.resolver_port
        )

    def dkim_resolver() -> DKIMResolver:
        # The rotation's gate: what a validating resolver returns (docs/dkim.md); by default
        # the compliance checks' resolver.
        address, port = settings.dkim_resolver
        return DKIMResolver(address, port=port)

    policy = settings.policy
    tlsrpt = settings.tlsrpt
    parts: list[Part] = [
        # The certificate first: no MTA pod is rendered for a Secret that is missing.
        CertificatePart(
            KubeServingSecrets(),
            Issuance(KubeCertificateRequests()),
            nameservers,
            KubeMTAEndpoints(),
            reconcile.tls_secret_retry_seconds,
            reconcile.tls_secret_retry_max_seconds,
        ),
        # The DKIM keys before the MTA (which signs with the Active ones) and DNS (which
        # publishes them).
        DKIMPart(KubeDKIMKeyStore(), dkim_resolver),
        # Then who serves the domain: for an attached domain, the fleet's hosts become the MX
        # every later part publishes (or the pass stops when the fleet refuses it).
        MTAPart(
            KubeWorkloadClient(applier=applier),
            reconcile.mta_retry_seconds,
            reconcile.mta_retry_max_seconds,
            settings.mta_resolver,
            settings.mta_image,
            mail_servers,
        ),
        # With a cert-manager issuer, the policy host's certificate before the endpoint is
        # asked to serve it.
        PolicyCertificatePart(
            KubeServingSecrets(),
            KubeCertificateRequests(),
            policy.endpoint.namespace if policy.manage_objects else None,
        ),
        MTASTSPart(
            EndpointFetcher(policy.endpoint_url, policy.ca_file) if policy.endpoint_url else None,
            applier if policy.manage_objects else None,
            policy.endpoint,
            retry_seconds=reconcile.policy_retry_seconds,
        ),
        # Before the DNS part: the collector's public address goes into tlsrpt.<domain>.
        TLSRptPart.build(
            tlsrpt, reconcile.tlsrpt_retry_seconds, applier=applier, domains=directory
        ),
        DNSPart(providers, reconcile.dns_retry_seconds, reconcile.dns_retry_max_seconds),
        CompliancePart(compliance, track_compliance),
    ]
    domains = DomainReconciler(
        parts,
        KubeStatusWriter(),
        KubeMailDomainReader(),
        compliance,
        scheduler,
        events,
        resync_seconds=reconcile.resync_seconds,
        concurrency=reconcile.concurrency,
        compliance_concurrency=4 * settings.compliance.concurrency,
        selects_for_compliance=settings.compliance.selects,
    )
    fleets = FleetController(
        applier=applier,
        workloads=KubeWorkloadClient(applier=applier),
        directory=mail_servers,
        pods=KubeFleetPods(),
        providers=providers,
        secrets=KubeSecretObserver(),
        status_writer=KubeStatusWriter(kind=MAILSERVER_KIND, plural=MAILSERVER_PLURAL),
        resolver=settings.mta_resolver,
        default_image=settings.mta_image,
    )
    provider_status = ProviderReconciler(
        resolver,
        KubeCustomObjects(),
        scheduler,
        resync_seconds=reconcile.resync_seconds,
        retry_seconds=RETRY_FACTOR * reconcile.dns_retry_seconds,
        changed=providers.forget,
    )
    observed.on_drift(domains.repair)
    return Runtime(
        settings, scheduler, observed, directory, domains, fleets, provider_status, mail_servers
    )


__all__ = ["Runtime", "build"]
