"""The TLSRPT collector's Kubernetes objects, rendered purely from the MailDomains it serves.

One collector per namespace serves every MailDomain of that namespace: the certificate it
offers on STARTTLS and HTTPS is each domain's own (`spec.tls.secretName`), and Secret volumes
cannot cross namespaces. It is a ConfigMap with its configuration (the domains, the rua mailbox
hosts, the certificates), a StatefulSet of one replica (the SQLite file lives on a
PersistentVolumeClaim; one writer), a Service for the internet side (SMTP, HTTPS), one for
the operator (the evaluation API), which must not be exposed with the first, and a
NetworkPolicy that keeps the API port to the operator's namespace.

Every object is owned by all the MailDomains it serves (owner references without `controller`):
the garbage collector removes the collector only once the last of them is gone, and the volume
claim stays behind (`Retain`), because the stored reports are evidence. The pod template
carries a hash of the configuration, so a changed configuration rolls the pod.

With `MAILWARD_TLSRPT_HOST_NETWORK` the collector runs on the node's network and binds the
addresses its domains publish for `tlsrpt.<domain>` (`spec.dns.tlsRptCollector.addresses`):
SMTP on 25, HTTPS on 443, the API on 9108. A namespace none of whose domains publishes one gets
no collector, and the tlsrpt part says so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from mailward.api.v1alpha1 import HostTarget, MailDomainSpec
from mailward.owner import Owner
from mailward.render.certificates import serving_secret_name
from mailward.render.mta_objects import CONFIG_HASH_ANNOTATION
from mailward.render.pods import (
    Listener,
    ProbeTiming,
    container_ports,
    http_probe,
    listener_security,
    pod_security,
)
from mailward.tlsrpt.config import Certificate, CollectorConfig, Listen
from mailward.tlsrpt.rua import collector_host

NAME = "mailward-tlsrpt"
API_SERVICE = f"{NAME}-api"
CONFIG_KEY = "collector.json"
CONFIG_DIR = "/etc/mailward-tlsrpt"
TLS_DIR = "/etc/mailward-tlsrpt/tls"
DATA_DIR = "/var/lib/mailward-tlsrpt"
# The Service answers on 25 and 443; in the pod's own network namespace the container listens
# above 1024 and needs no capability. On the host network it binds 25 and 443 itself.
SMTP_PORT = 25
HTTPS_PORT = 443
CONTAINER_SMTP_PORT = 2525
CONTAINER_HTTPS_PORT = 8443
API_PORT = 9108
WILDCARD = "0.0.0.0"
RUN_AS_USER = 65532
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "mailward"}


@dataclass(frozen=True)
class CollectorSettings:
    """Operator-level configuration of the collectors (`MAILWARD_TLSRPT_*` variables)."""

    image: str = "ghcr.io/mailward/operator:0.1.0"
    storage: str = "1Gi"
    # None: SQLite on the volume. Otherwise a Secret whose `url` key holds a PostgreSQL URL.
    database_secret: str | None = None
    retention_days: int = 400
    # LoadBalancer gives the SMTP/HTTPS side an address of its own for `tlsrpt.<domain>`.
    service_type: Literal["ClusterIP", "LoadBalancer", "NodePort"] = "ClusterIP"
    # The operator's namespace: the only one whose pods may reach the API port. None: any.
    operator_namespace: str | None = None
    # On the node's network, binding the addresses published for tlsrpt.<domain>.
    host_network: bool = False


@dataclass(frozen=True)
class ServedDomain:
    """A MailDomain the collector serves: its object's name and uid (the owner) and spec."""

    name: str
    uid: str
    spec: MailDomainSpec
    # For a domain attached to a MailServer (no spec.mx): the fleet's MX hosts, as the MTA
    # part found them (status.mailServer.hosts).
    fleet_mx_hosts: tuple[str, ...] = ()

    def mx_hosts(self) -> list[str]:
        return [m.host for m in self.spec.mx] or list(self.fleet_mx_hosts)


def _mailbox_domains(specs: Sequence[MailDomainSpec]) -> list[str]:
    hosts: set[str] = set()
    for spec in specs:
        for uri in spec.tls_rpt.rua or [f"mailto:tlsrpt@{collector_host(spec.domain)}"]:
            if uri.startswith("mailto:"):
                hosts.add(uri.rpartition("@")[2].lower())
    return sorted(hosts)


class NoCollectorAddress(ValueError):
    """On the host network, no served MailDomain publishes an address for tlsrpt.<domain>."""


@dataclass(frozen=True)
class Listeners:
    """Where the collector binds: its ports and, on the host network, its addresses."""

    addresses: tuple[str, ...]
    smtp: int
    https: int
    api: int = API_PORT

    def ports(self) -> list[Listener]:
        return [
            Listener("smtp", self.smtp, self.addresses),
            Listener("https", self.https, self.addresses),
            Listener("api", self.api, self.addresses),
        ]

    def listen(self, port: int) -> Listen:
        first, *rest = self.addresses or (WILDCARD,)
        return Listen(address=first, extra_addresses=rest, port=port)


def collector_listeners(specs: Sequence[MailDomainSpec], settings: CollectorSettings) -> Listeners:
    """The pod's own network: high ports on the wildcard. The host network: the public ports on
    the union of the served domains' `spec.dns.tlsRptCollector.addresses`."""
    if not settings.host_network:
        return Listeners((), CONTAINER_SMTP_PORT, CONTAINER_HTTPS_PORT)
    published = (
        a
        for spec in specs
        if spec.dns and spec.dns.tls_rpt_collector
        for a in spec.dns.tls_rpt_collector.addresses or ()
    )
    addresses = tuple(sorted(set(published)))
    if not addresses:
        # The message becomes every served domain's condition: it must not change when a
        # sibling MailDomain appears, or each domain rewrites its status at its next pass.
        raise NoCollectorAddress(
            "the TLSRPT collector runs on the host network, but no MailDomain of this namespace "
            "publishes spec.dns.tlsRptCollector.addresses for it to bind: "
            "no collector is deployed"
        )
    return Listeners(addresses, SMTP_PORT, HTTPS_PORT)


def _secret_volume(secret: str) -> str:
    return f"tls-{hashlib.sha256(secret.encode()).hexdigest()[:10]}"


def served_secrets(served: Sequence[ServedDomain]) -> list[str]:
    """The Secrets the collector serves: each domain's own certificate (mailward's copy)."""
    return sorted({serving_secret_name(d.name) for d in served if d.spec.tls is not None})


def collector_config(
    served: Sequence[ServedDomain], settings: CollectorSettings, listeners: Listeners
) -> CollectorConfig:
    specs = sorted((d.spec for d in served), key=lambda s: s.domain)
    secrets = served_secrets(served)
    mx_hosts = {d.spec.domain: d.mx_hosts() for d in served}
    return CollectorConfig(
        hostname=collector_host(specs[0].domain) if specs else NAME,
        domains=[s.domain for s in specs],
        mailbox_domains=_mailbox_domains(specs),
        # A DANE report names the MX host as policy-domain (tlsrpt/attribution.py).
        mx_hosts={domain: hosts for domain, hosts in sorted(mx_hosts.items()) if hosts},
        smtp=listeners.listen(listeners.smtp),
        https=listeners.listen(listeners.https),
        api=listeners.listen(listeners.api),
        certificates=[
            Certificate(
                cert_file=f"{TLS_DIR}/{_secret_volume(name)}/tls.crt",
                key_file=f"{TLS_DIR}/{_secret_volume(name)}/tls.key",
            )
            for name in secrets
        ],
        database=f"sqlite:///{DATA_DIR}/reports.db",
        retention_days=settings.retention_days,
    )


def config_text(config: CollectorConfig) -> str:
    return json.dumps(config.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True)


def _metadata(name: str, namespace: str, owners: Sequence[ServedDomain]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": dict(LABELS),
        # Every domain it serves owns it, none as its controller: the garbage collector
        # removes it with the last one.
        "ownerReferences": [
            Owner(namespace, owner.name, owner.uid).reference(controller=False)
            for owner in sorted(owners, key=lambda o: (o.name, o.uid))
        ],
    }


def render_configmap(config: CollectorConfig, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {CONFIG_KEY: config_text(config) + "\n"},
    }


# Readiness and liveness ask the API's /healthz: the process serves HTTP on its listener.
READINESS = ProbeTiming(period=10, timeout=3, failures=3)
LIVENESS = ProbeTiming(period=20, timeout=5, failures=3)


def render_statefulset(
    config: CollectorConfig,
    secrets: Sequence[str],
    settings: CollectorSettings,
    metadata: dict[str, Any],
    listeners: Listeners,
) -> dict[str, Any]:
    config_hash = hashlib.sha256(config_text(config).encode()).hexdigest()[:16]
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": NAME}}]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "data", "mountPath": DATA_DIR},
    ]
    for secret in sorted(set(secrets)):
        volume = _secret_volume(secret)
        # Optional: one MailDomain's missing Secret must not keep the pod, and with it every
        # other domain's reports, from starting; the collector loads the files when they come.
        volumes.append({"name": volume, "secret": {"secretName": secret, "optional": True}})
        mounts.append({"name": volume, "mountPath": f"{TLS_DIR}/{volume}", "readOnly": True})
    env: list[dict[str, Any]] = []
    if settings.database_secret:
        env.append(
            {
                "name": "MAILWARD_TLSRPT_DATABASE",
                "valueFrom": {"secretKeyRef": {"name": settings.database_secret, "key": "url"}},
            }
        )
    host = listeners.addresses[0] if settings.host_network else None
    security = listener_security(RUN_AS_USER, listeners.ports(), settings.host_network)
    container: dict[str, Any] = {
        "name": "collector",
        "image": settings.image,
        "args": ["collect-reports", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}"],
        "ports": container_ports(listeners.ports()),
        "env": env,
        "volumeMounts": mounts,
        "readinessProbe": http_probe("/healthz", "api", host, READINESS),
        "livenessProbe": http_probe("/healthz", "api", host, LIVENESS),
        # Bounded by the intake limits; the limit makes a bug an OOM kill, not a node problem.
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": security,
    }
    pod: dict[str, Any] = {
        # The collector reads files only; it never talks to the API server.
        "automountServiceAccountToken": False,
        # It stops at SIGTERM; a report cut short is sent again by its sender (RFC 8460 §5.3).
        "terminationGracePeriodSeconds": 30,
        "securityContext": pod_security(security, RUN_AS_USER),
        "containers": [container],
        "volumes": volumes,
    }
    if settings.host_network:
        pod = {"hostNetwork": True, **pod}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata,
        "spec": {
            "serviceName": NAME,
            "replicas": 1,
            "selector": {"matchLabels": dict(LABELS)},
            # The reports are evidence: deleting the collector keeps its volume.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {
                    "labels": dict(LABELS),
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
                },
                "spec": pod,
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": settings.storage}},
                    },
                }
            ],
        },
    }


def render_services(settings: CollectorSettings, metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """The internet side (SMTP, HTTPS) and the operator's side (the API), kept apart so that
    exposing the first (a LoadBalancer for `tlsrpt.<domain>`) never exposes the second."""
    public: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": settings.service_type,
            "selector": dict(LABELS),
            "ports": [
                {"name": "smtp", "port": SMTP_PORT, "targetPort": "smtp"},
                {"name": "https", "port": HTTPS_PORT, "targetPort": "https"},
            ],
        },
    }
    if settings.service_type != "ClusterIP":
        # Keep the sender's address: the rate limits are per sending address.
        public["spec"]["externalTrafficPolicy"] = "Local"
    internal = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {**metadata, "name": API_SERVICE},
        "spec": {
            "type": "ClusterIP",
            "selector": dict(LABELS),
            "ports": [{"name": "api", "port": API_PORT, "targetPort": "api"}],
        },
    }
    return [public, internal]


def render_network_policy(
    settings: CollectorSettings, metadata: dict[str, Any], listeners: Listeners
) -> dict[str, Any]:
    """Reports from anywhere; the evaluation API only from the operator's namespace. Ingress
    only: egress (DNS for DKIM keys, a PostgreSQL server anywhere) is the cluster's policy.
    Policies add up, so a monitoring namespace is let in by a policy of its own. (A pod on the
    host network is outside every NetworkPolicy: there the host's firewall must do this.)"""
    api_rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": API_PORT}]}
    if settings.operator_namespace:
        api_rule["from"] = [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": settings.operator_namespace}
                }
            }
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": {"matchLabels": dict(LABELS)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "ports": [
                        {"protocol": "TCP", "port": listeners.smtp},
                        {"protocol": "TCP", "port": listeners.https},
                    ]
                },
                api_rule,
            ],
        },
    }


def render_collector(
    namespace: str, served: Sequence[ServedDomain], settings: CollectorSettings
) -> list[dict[str, Any]]:
    """ConfigMap, StatefulSet, Services and NetworkPolicy of the collector serving `served` in
    `namespace`; NoCollectorAddress when it would have nothing to bind."""
    specs = [d.spec for d in served]
    listeners = collector_listeners(specs, settings)
    config = collector_config(served, settings, listeners)
    secrets = served_secrets(served)

    def metadata() -> dict[str, Any]:
        return _metadata(NAME, namespace, served)

    return [
        render_configmap(config, metadata()),
        render_statefulset(config, secrets, settings, metadata(), listeners),
        *render_services(settings, metadata()),
        render_network_policy(settings, metadata(), listeners),
    ]


def public_target(ips: Sequence[str], hostnames: Sequence[str]) -> HostTarget | None:
    """Where `tlsrpt.<domain>` points for a load balancer that reports these addresses or names
    (some clouds give a host name only): its addresses, else a CNAME to its first name."""
    try:
        if ips:
            return HostTarget(addresses=sorted(set(ips))[:8])
        if hostnames:
            return HostTarget(cname=hostnames[0].lower().rstrip("."))
    except ValidationError:
        return None
    return None
