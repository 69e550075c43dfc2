"""The MailServer controller: one MTA fleet for every MailDomain it allows.

One pass, given the MailServer and the MailDomains that name it (from the operator's index of
MailDomains, no list per pass):
1. decide which domains may attach (attachment.py; the same decision the domains' own MTA part
   takes and reports);
2. render the fleet (render/mta_server.py, render/mta_objects.py) and apply it; the domain
   tables are a ConfigMap outside the pod template's digest, and the pods are annotated with the
   tables' digest so the kubelet refreshes the volume at once and Postfix reloads;
3. publish each host's A/AAAA and TLSA records once (render/dns_records.fleet_host_rrsets);
4. decide the conditions and write the status if it changed.

Every step's failure becomes its condition; none stops the status write.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, cast

from pydantic import ValidationError

from mailward.adapters.apply import ObjectApplier
from mailward.adapters.dns_kube import ProviderNotFound, ProviderResolver
from mailward.adapters.dns_provider import ProviderError, UpdateRefused
from mailward.adapters.kube import SecretObserver
from mailward.adapters.mailservers import MailServerDirectory
from mailward.adapters.status_writer import RECONCILER, StatusWriter
from mailward.adapters.workloads import WorkloadClient
from mailward.api.dkim import KeyType
from mailward.api.mailserver import MAILSERVER_KIND, MailServerSpec, MailServerStatus
from mailward.attachment import ServerKey, decide
from mailward.conditions import (
    READY,
    Verdict,
    apply_verdicts,
    progress_verdicts,
    ready_from,
    started_verdicts,
    utcnow,
)
from mailward.owner import Owner
from mailward.parts.certificate import parse_chain
from mailward.parts.mta import MTA_READY, mta_verdict
from mailward.reconcile import (
    certificate_verdict,
    describe_validation_error,
    invalid_spec_verdicts,
)
from mailward.render.dkim import DKIMSigning, SigningKey, key_file
from mailward.render.dkim import secret_name as dkim_secret
from mailward.render.dns_records import fleet_host_rrsets, spki_sha256
from mailward.render.mta_objects import (
    DOMAINS_HASH_ANNOTATION,
    domains_digest,
    fleet_dkim_secret,
    fleet_selector,
    render_mta_objects,
)
from mailward.render.mta_server import MTAServer, fleet_server
from mailward.render.postfix import DomainConfig
from mailward.render.resolver import ResolverSettings

log = logging.getLogger("mailward.fleet")

DNS_READY = "DNSReady"
CERTIFICATE_READY = "CertificateReady"


@dataclass(frozen=True, order=True)
class AttachingDomain:
    """A MailDomain that names a MailServer (an entry of the operator's index)."""

    namespace: str
    name: str
    domain: str
    # `spec.mta.accountsSecretName`: submission accounts the fleet serves for the domain.
    accounts_secret: str | None = None
    # (selector, algorithm) of the DKIM keys the domain signs with (`status.dkim`), whose
    # private halves are in its DKIM Secret (parts/dkim.py).
    dkim: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class MailServerObject:
    namespace: str
    name: str
    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]

    @property
    def key(self) -> ServerKey:
        return ServerKey(self.namespace, self.name)


@dataclass
class FleetOutcome:
    verdicts: list[Verdict]
    attached: list[AttachingDomain] = field(default_factory=list)
    refused: list[AttachingDomain] = field(default_factory=list)
    pods: int = 0
    ready_pods: int = 0
    # SHA-256 of the domain tables applied (passwords are not in it: it goes to the status).
    tables_digest: str = ""
    # Ask for another pass after this many seconds although nothing changed.
    retry_after: float | None = None


class FleetPods(Protocol):
    async def annotate(self, namespace: str, selector: str, key: str, value: str) -> int:
        """Set `key: value` on every pod matching `selector` that lacks it; how many changed."""
        ...


class FleetController:
    def __init__(
        self,
        *,
        applier: ObjectApplier,
        workloads: WorkloadClient,
        directory: MailServerDirectory,
        pods: FleetPods,
        providers: ProviderResolver,
        secrets: SecretObserver,
        status_writer: StatusWriter,
        resolver: ResolverSettings,
        default_image: str,
        retry_seconds: float = 5.0,
    ) -> None:
        self._applier = applier
        self._workloads = workloads
        self._directory = directory
        self._pods = pods
        self._providers = providers
        self._secrets = secrets
        self._status_writer = status_writer
        self._resolver = resolver
        self._default_image = default_image
        self._retry_seconds = retry_seconds

    async def reconcile(
        self,
        server: MailServerObject,
        candidates: Sequence[AttachingDomain],
        namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> FleetOutcome:
        """`namespace_labels`: the candidates' namespaces' labels as watched; a namespace
        missing there is read from the API server."""
        current = MailServerStatus.model_validate(server.status or {})
        try:
            spec = MailServerSpec.model_validate(server.spec)
        except ValidationError as error:
            message = describe_validation_error(error, prefix="spec")
            outcome = FleetOutcome(invalid_spec_verdicts(message))
        else:
            if current.observed_generation != server.generation:
                conditions = apply_verdicts(
                    current.conditions,
                    started_verdicts(current.conditions, server.generation),
                    generation=server.generation,
                    now=utcnow(),
                )
                began = current.model_copy(
                    update={"observed_generation": server.generation, "conditions": conditions}
                )
                await self._write_status(server, current, began)
                current = began
            outcome = await self._reconcile(server, spec, candidates, namespace_labels or {})
        await self._write_status(server, current, self._status_after(server, current, outcome))
        return outcome

    async def _reconcile(
        self,
        server: MailServerObject,
        spec: MailServerSpec,
        candidates: Sequence[AttachingDomain],
        namespace_labels: Mapping[str, Mapping[str, str]],
    ) -> FleetOutcome:
        attached, refused = await self._admit(server, spec, candidates, namespace_labels)
        fleet = fleet_server(server.name, server.namespace, server.uid, spec, self._default_image)
        hosts = tuple(h.host for h in spec.hosts)
        passwords = await self._passwords(attached)
        signing, dkim_keys = await self._dkim_keys(fleet, attached)
        if signing is not None:
            fleet = replace(fleet, options=replace(fleet.options, dkim=signing))
        domains = [
            DomainConfig(d.domain, hosts, tuple(sorted(passwords.get(d.domain, {}))))
            for d in attached
        ]
        outcome = FleetOutcome([], attached, refused)
        verdicts = [await self._apply(fleet, domains, passwords, outcome, dkim_keys)]
        verdicts += await self._publish(server, spec)
        serving = Verdict(
            READY,
            "True",
            "Serving",
            f"{len(attached)} domain(s) on {', '.join(hosts)}"
            + (f"; {len(refused)} refused" if refused else ""),
        )
        ready = ready_from(verdicts, serving)
        if ready.status != "True":
            outcome.retry_after = self._retry_seconds
        outcome.verdicts = [ready, *progress_verdicts(ready, verdicts), *verdicts]
        return outcome

    async def _admit(
        self,
        server: MailServerObject,
        spec: MailServerSpec,
        candidates: Sequence[AttachingDomain],
        namespace_labels: Mapping[str, Mapping[str, str]],
    ) -> tuple[list[AttachingDomain], list[AttachingDomain]]:
        """The domains that may attach, and those refused; one domain per name (the first by
        namespace and name keeps it: two MailDomains cannot both own a domain's mailboxes)."""
        labels: dict[str, Mapping[str, str] | None] = dict(namespace_labels)
        attached: list[AttachingDomain] = []
        refused: list[AttachingDomain] = []
        seen: set[str] = set()
        for candidate in sorted(candidates):
            if candidate.namespace not in labels:
                labels[candidate.namespace] = await self._directory.namespace_labels(
                    candidate.namespace
                )
            decision = decide(candidate.namespace, server.key, spec, labels[candidate.namespace])
            if not decision.allowed or candidate.domain in seen:
                refused.append(candidate)
                continue
            seen.add(candidate.domain)
            attached.append(candidate)
        return attached, refused

    async def _passwords(self, attached: Sequence[AttachingDomain]) -> dict[str, dict[str, str]]:
        """domain → local part → password, from each domain's accounts Secret in its own
        namespace (a missing one is the domain's MTAReady condition, not the fleet's)."""
        found: dict[str, dict[str, str]] = {}
        for domain in attached:
            if domain.accounts_secret is None:
                continue
            accounts = await self._directory.accounts(domain.namespace, domain.accounts_secret)
            if accounts:
                found[domain.domain] = accounts
        return found

    async def _dkim_keys(
        self, fleet: MTAServer, attached: Sequence[AttachingDomain]
    ) -> tuple[DKIMSigning | None, dict[str, str]]:
        """The attached domains' Active DKIM keys (from their status) and their private halves
        (from each domain's DKIM Secret, read by name like the accounts), to be copied into the
        fleet's namespace: a Secret volume cannot reach across namespaces."""
        keys: list[SigningKey] = []
        private: dict[str, str] = {}
        for domain in attached:
            if not domain.dkim:
                continue
            items = await self._directory.accounts(domain.namespace, dkim_secret(domain.name))
            for selector, algorithm in domain.dkim:
                pem = (items or {}).get(key_file(selector))
                if pem is None or algorithm not in ("ed25519", "rsa"):
                    continue  # the domain's next pass repairs it; unsigned meanwhile
                item = f"{domain.domain}_{selector}.key"
                keys.append(SigningKey(domain.domain, selector, cast(KeyType, algorithm), item))
                private[item] = pem
        if not keys:
            return None, {}
        return DKIMSigning(fleet_dkim_secret(fleet), tuple(keys)), private

    async def _apply(
        self,
        fleet: MTAServer,
        domains: Sequence[DomainConfig],
        passwords: Mapping[str, Mapping[str, str]],
        outcome: FleetOutcome,
        dkim_keys: Mapping[str, str] | None = None,
    ) -> Verdict:
        objects = render_mta_objects(fleet, domains, self._resolver, passwords, dkim_keys)
        outcome.tables_digest = domains_digest(domains)
        try:
            for manifest in objects:
                await self._applier.apply(manifest)
            # The kubelet refreshes a ConfigMap volume when it syncs the pod: an annotation
            # change makes that happen now rather than within its periodic sync (about 1 min).
            await self._pods.annotate(
                fleet.namespace,
                fleet_selector(fleet),
                DOMAINS_HASH_ANNOTATION,
                domains_digest(domains, passwords)[:16],
            )
            observations = [
                (group.name, await self._workloads.observe_statefulset(fleet.namespace, group.name))
                for group in fleet.groups
            ]
        except Exception as error:
            log.warning("MailServer %s/%s: %s", fleet.namespace, fleet.owner.name, error)
            return Verdict(MTA_READY, "False", "ApplyFailed", str(error)[:1000])
        outcome.pods = sum(o.replicas for _, o in observations)
        outcome.ready_pods = sum(o.ready_replicas for _, o in observations)
        for name, observed in observations:
            verdict = mta_verdict(observed, name)
            if verdict.status != "True":
                return verdict
        return Verdict(
            MTA_READY, "True", "MTARunning", f"{outcome.ready_pods}/{outcome.pods} pods ready"
        )

    async def _publish(self, server: MailServerObject, spec: MailServerSpec) -> list[Verdict]:
        observation = await self._secrets.observe_tls_secret(server.namespace, spec.tls.secret_name)
        certificate = certificate_verdict(observation)
        certificate = Verdict(
            CERTIFICATE_READY,
            certificate.status,
            certificate.reason,
            certificate.message.replace("spec.tls.secretName", "spec.tls.secretName of the fleet"),
        )
        if spec.dns is None:
            return [
                certificate,
                Verdict(DNS_READY, "True", "NotManaged", "spec.dns is not set"),
            ]
        digests: list[str] = []
        if certificate.status == "True" and spec.dane:
            try:
                digests = [spki_sha256(parse_chain(observation.certificate_pem)[0])]
            except ValueError as error:
                return [
                    Verdict(CERTIFICATE_READY, "False", "TLSSecretInvalid", str(error)),
                    Verdict(DNS_READY, "Unknown", "WaitingForCertificate", "no key to pin"),
                ]
        elif spec.dane:
            return [
                certificate,
                Verdict(DNS_READY, "Unknown", "WaitingForCertificate", "no key to pin yet"),
            ]
        ref = spec.dns.provider_ref
        owner = Owner(server.namespace, server.name, server.uid, kind=MAILSERVER_KIND)
        written = 0
        try:
            provider = await self._providers.resolve(ref, server.namespace)
            for host in spec.hosts:
                desired = fleet_host_rrsets(
                    host.host,
                    host.addresses,
                    ttl=spec.dns.ttl,
                    tlsa_ttl=spec.dns.tlsa_ttl,
                    tlsa_spki_sha256=digests,
                )
                result = await provider.publish(owner, host.host, desired)
                written += result.writes
                if result.plan.conflicts:
                    taken = ", ".join(c.describe() for c in result.plan.conflicts)
                    return [
                        certificate,
                        Verdict(
                            DNS_READY, "False", "RecordConflict", f"not ours: {taken}", stalled=True
                        ),
                    ]
        except ProviderNotFound as error:
            return [certificate, Verdict(DNS_READY, "False", "ProviderNotFound", str(error))]
        except UpdateRefused as error:
            refused = Verdict(DNS_READY, "False", "UpdateRefused", str(error), stalled=True)
            return [certificate, refused]
        except ProviderError as error:
            return [certificate, Verdict(DNS_READY, "False", "PublishFailed", str(error))]
        names = ", ".join(h.host for h in spec.hosts)
        message = f"{provider.description}: A/AAAA" + (" and TLSA" if digests else "")
        if written:
            log.info("MailServer %s/%s: %d UPDATE(s)", server.namespace, server.name, written)
        return [certificate, Verdict(DNS_READY, "True", "Published", f"{message} for {names}")]

    async def release(self, server: MailServerObject) -> None:
        """Withdraw the hosts' records; the objects go with their owner reference."""
        try:
            spec = MailServerSpec.model_validate(server.spec)
        except ValidationError:
            return
        if spec.dns is None:
            return
        ref = spec.dns.provider_ref
        owner = Owner(server.namespace, server.name, server.uid, kind=MAILSERVER_KIND)
        provider = await self._providers.resolve(ref, server.namespace)
        for host in spec.hosts:
            await provider.release(owner, host.host)

    @staticmethod
    def _status_after(
        server: MailServerObject, current: MailServerStatus, outcome: FleetOutcome
    ) -> MailServerStatus:
        conditions = apply_verdicts(
            current.conditions, outcome.verdicts, generation=server.generation, now=utcnow()
        )
        return current.model_copy(
            update={
                "observed_generation": server.generation,
                "conditions": conditions,
                "attached_domains": len(outcome.attached),
                "refused_domains": len(outcome.refused),
                "replicas": outcome.pods,
                "ready_replicas": outcome.ready_pods,
                "domains_digest": outcome.tables_digest or current.domains_digest,
            }
        )

    async def _write_status(
        self, server: MailServerObject, current: MailServerStatus, desired: MailServerStatus
    ) -> None:
        document = desired.model_dump(mode="json", by_alias=True, exclude_none=True)
        if document == current.model_dump(mode="json", by_alias=True, exclude_none=True):
            return
        await self._status_writer.apply_status(
            server.namespace, server.name, document, field_manager=RECONCILER
        )
