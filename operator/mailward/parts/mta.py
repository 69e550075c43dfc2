"""The MTA part: who serves the domain's mail, and `MTAReady`.

A domain with `spec.mx` runs an MTA of its own: the part renders its objects as a fleet of one
domain (render/mta_server.py, render/mta_objects.py), applies them by server-side apply, and
reads the StatefulSet's status back. StatefulSets are not watched by the operator, so while the
MTA is not ready yet the part asks to be run again after a short delay.

A domain with `spec.mailServerRef` is served by that MailServer's fleet: the part decides
whether it may attach (attachment.py) and stops the pass with the reason if not, so nothing is
published for a domain no fleet accepts; if it may, the later parts see the fleet's hosts as
the domain's MX (`ctx.fleet`, `ctx.spec.mx`).

Configuration (settings.py): the pods' validating resolver (render/resolver.py) and the image
of MailDomains that name none (`spec.mta.image`).
"""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from mailward.adapters.kube import api_message
from mailward.adapters.mailservers import MailServerDirectory
from mailward.adapters.workloads import StatefulSetObservation, WorkloadClient
from mailward.api.mta import DEFAULT_MTA_IMAGE
from mailward.api.v1alpha1 import MXHost
from mailward.attachment import MAILSERVER_NOT_FOUND, ServerKey, decide
from mailward.conditions import Verdict
from mailward.owner import Owner
from mailward.parts import Event, FleetAttachment, PartResult, ReconcileContext
from mailward.parts.backoff import Backoff
from mailward.render.mta_objects import render_own_mta_objects
from mailward.render.resolver import ResolverSettings

MTA_READY = "MTAReady"
FLEET_RETRY_MAX_SECONDS = 20.0


def mta_verdict(observed: StatefulSetObservation, name: str) -> Verdict:
    """`MTAReady` from the StatefulSet's status (by the kstatus rules for StatefulSets)."""
    what = f"StatefulSet {name}"
    if not observed.found:
        return Verdict(MTA_READY, "Unknown", "MTAPending", f"{what} does not exist yet")
    if observed.observed_generation < observed.generation:
        return Verdict(
            MTA_READY,
            "Unknown",
            "MTAPending",
            f"{what}: generation {observed.generation} not yet observed by its controller",
        )
    counts = f"{observed.ready_replicas}/{observed.replicas} ready"
    if observed.updated_replicas < observed.replicas or (
        observed.update_revision and observed.current_revision != observed.update_revision
    ):
        return Verdict(
            MTA_READY,
            "False",
            "MTARollingOut",
            f"{what}: {observed.updated_replicas}/{observed.replicas} updated, {counts}",
        )
    if observed.ready_replicas < observed.replicas:
        return Verdict(MTA_READY, "False", "MTANotReady", f"{what}: {counts}")
    return Verdict(MTA_READY, "True", "MTARunning", f"{what}: {counts}")


class MTAPart:
    name = "mta"
    condition = MTA_READY

    def __init__(
        self,
        workloads: WorkloadClient,
        retry_seconds: float = 15.0,
        retry_max_seconds: float = 300.0,
        resolver: ResolverSettings | None = None,
        default_image: str = DEFAULT_MTA_IMAGE,
        mail_servers: MailServerDirectory | None = None,
    ) -> None:
        self._workloads = workloads
        self._mail_servers = mail_servers
        self._default_image = default_image
        # The trust anchor and upstream of every MTA pod's resolver (operator-level settings).
        self._resolver = resolver or ResolverSettings()
        self._backoff = Backoff(retry_seconds, retry_max_seconds)

    async def reconcile(self, ctx: ReconcileContext) -> PartResult:
        if ctx.spec.mail_server_ref is not None:
            return await self._attach(ctx)
        spec = ctx.spec
        if not spec.mta.enabled:
            return PartResult(
                [Verdict(MTA_READY, "True", "MTANotManaged", "spec.mta.enabled is false")],
                status={"mailServer": None},
            )
        accounts: list[str] = []
        if spec.mta.accounts_secret_name:
            keys = await self._workloads.secret_keys(ctx.namespace, spec.mta.accounts_secret_name)
            if keys is None:
                message = (
                    f"Secret {spec.mta.accounts_secret_name!r} (spec.mta.accountsSecretName) "
                    "does not exist"
                )
                return PartResult(
                    [Verdict(MTA_READY, "False", "AccountsSecretNotFound", message)],
                    retry_after=self._backoff.next(ctx.uid),
                )
            accounts = keys
        owner = Owner(ctx.namespace, ctx.name, ctx.uid)
        objects = render_own_mta_objects(
            owner,
            spec,
            accounts,
            self._resolver,
            self._default_image,
            dkim=ctx.findings.dkim_signing,
        )
        for manifest in objects:
            try:
                await self._workloads.apply(manifest)
            except ApiException as error:
                # The API server's refusal (an immutable field, a quota, a webhook) is the
                # condition's message; the rest of the pass and the status write go on.
                what = f"{manifest['kind']} {manifest['metadata']['name']}"
                message = f"the API server refused {what}: {api_message(error)}"
                return PartResult(
                    [Verdict(MTA_READY, "False", "ApplyRefused", message, stalled=True)],
                    status={"mailServer": None},
                    retry_after=self._backoff.next(ctx.uid),
                )
        statefulset = next(o for o in objects if o["kind"] == "StatefulSet")
        name = statefulset["metadata"]["name"]
        observed = await self._workloads.observe_statefulset(ctx.namespace, name)
        verdict = mta_verdict(observed, name)
        events = []
        previous = next((c for c in ctx.status.conditions if c.type == MTA_READY), None)
        if verdict.status == "True" and (previous is None or previous.status != "True"):
            events.append(Event("Normal", verdict.reason, verdict.message))
            # The MTA answers now: what an outside probe sees changed, so check it at once.
            ctx.findings.records_changed = True
        retry = None
        if verdict.status == "True":
            self._backoff.reset(ctx.uid)
        else:
            retry = self._backoff.next(ctx.uid)
        return PartResult([verdict], status={"mailServer": None}, retry_after=retry, events=events)

    async def _attach(self, ctx: ReconcileContext) -> PartResult:
        ref = ctx.spec.mail_server_ref
        assert ref is not None
        assert self._mail_servers is not None
        key = ServerKey(ref.namespace or ctx.namespace, ref.name)
        observed = await self._mail_servers.mail_server(key.namespace, key.name)
        labels = await self._mail_servers.namespace_labels(ctx.namespace)
        attachment = decide(ctx.namespace, key, observed.spec, labels, server_found=observed.found)
        if not attachment.allowed or observed.spec is None:
            # A fleet that does not exist yet may come; one that refuses the namespace, or has
            # an invalid spec, changes its mind only when a person edits it.
            waiting = attachment.reason == MAILSERVER_NOT_FOUND
            verdict = Verdict(
                MTA_READY, "False", attachment.reason, attachment.message, stalled=not waiting
            )
            previous = next((c for c in ctx.status.conditions if c.type == MTA_READY), None)
            events = []
            if previous is None or previous.reason != attachment.reason:
                events.append(Event("Warning", attachment.reason, attachment.message))
            # Stop here: no record may point at a fleet that does not serve the domain.
            return PartResult(
                [verdict],
                status={"mailServer": None},
                retry_after=self._backoff.next(ctx.uid),
                events=events,
                blocking=True,
            )
        hosts = tuple(MXHost(host=h.host, priority=h.priority) for h in observed.spec.hosts)
        ctx.fleet = FleetAttachment(key.namespace, key.name, hosts)
        ctx.spec = ctx.spec.model_copy(update={"mx": list(hosts)})
        attachment_status = {
            "mailServer": {
                "namespace": key.namespace,
                "name": key.name,
                "hosts": [h.host for h in hosts],
            }
        }
        secret = ctx.spec.mta.accounts_secret_name
        if secret and await self._workloads.secret_keys(ctx.namespace, secret) is None:
            message = f"Secret {secret!r} (spec.mta.accountsSecretName) does not exist"
            verdict = Verdict(MTA_READY, "False", "AccountsSecretNotFound", message)
            return PartResult(
                [verdict], status=attachment_status, retry_after=self._backoff.next(ctx.uid)
            )
        if not observed.ready:
            verdict = Verdict(
                MTA_READY,
                "Unknown",
                "MailServerNotReady",
                f"{key.describe()} serves the domain once ready: {observed.ready_message}",
            )
            # A fleet comes up in about a minute and nothing tells the domain when: look again
            # soon, whatever the backoff has grown to.
            retry = min(self._backoff.next(ctx.uid), FLEET_RETRY_MAX_SECONDS)
            return PartResult([verdict], status=attachment_status, retry_after=retry)
        self._backoff.reset(ctx.uid)
        names = ", ".join(h.host for h in hosts)
        verdict = Verdict(MTA_READY, "True", "AttachedToMailServer", f"{key.describe()} ({names})")
        previous = next((c for c in ctx.status.conditions if c.type == MTA_READY), None)
        if previous is None or previous.status != "True":
            # The fleet answers for the domain now: probe it from outside at once.
            ctx.findings.records_changed = True
        return PartResult([verdict], status=attachment_status)

    async def release(self, ctx: ReconcileContext) -> None:
        """The objects carry owner references: the garbage collector removes them."""
        self._backoff.reset(ctx.uid)
