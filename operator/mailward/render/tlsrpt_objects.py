"""The TLSRPT collector's Kubernetes objects, rendered purely from the MailDomains it serves.

One collector serves every MailDomain: a ConfigMap with its configuration (the domains, the
rua mailbox hosts, the certificates), a StatefulSet of one replica (the SQLite file lives on a
PersistentVolumeClaim; one writer), and a Service with SMTP, HTTPS and the internal API. The pod
template carries a hash of the configuration, so a changed configuration rolls the pod.

The certificate served on STARTTLS and HTTPS is each domain's own (`spec.tls.secretName`),
mounted from a Secret volume per domain. Secret volumes cannot cross namespaces, so the
renderer takes the Secrets as they are named in the collector's namespace.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mailward.api.v1alpha1 import MailDomainSpec
from mailward.tlsrpt.config import Certificate, CollectorConfig, Listen
from mailward.tlsrpt.rua import collector_host

NAME = "mailward-tlsrpt"
CONFIG_KEY = "collector.json"
CONFIG_DIR = "/etc/mailward-tlsrpt"
TLS_DIR = "/etc/mailward-tlsrpt/tls"
DATA_DIR = "/var/lib/mailward-tlsrpt"
SMTP_PORT = 25
HTTPS_PORT = 443
API_PORT = 9108
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "mailward"}


@dataclass(frozen=True)
class CollectorSettings:
    namespace: str
    image: str
    storage: str = "1Gi"
    # None: SQLite on the volume. Otherwise a Secret whose `url` key holds a PostgreSQL URL.
    database_secret: str | None = None
    retention_days: int = 400


def _mailbox_domains(specs: Sequence[MailDomainSpec]) -> list[str]:
    hosts: set[str] = set()
    for spec in specs:
        for uri in spec.tls_rpt.rua or [f"mailto:tlsrpt@{collector_host(spec.domain)}"]:
            if uri.startswith("mailto:"):
                hosts.add(uri.rpartition("@")[2].lower())
    return sorted(hosts)


def _secret_volume(secret: str) -> str:
    return f"tls-{hashlib.sha256(secret.encode()).hexdigest()[:10]}"


def collector_config(
    specs: Sequence[MailDomainSpec], settings: CollectorSettings
) -> CollectorConfig:
    specs = sorted(specs, key=lambda s: s.domain)
    secrets = sorted({s.tls.secret_name for s in specs})
    return CollectorConfig(
        hostname=collector_host(specs[0].domain) if specs else NAME,
        domains=[s.domain for s in specs],
        mailbox_domains=_mailbox_domains(specs),
        smtp=Listen(port=SMTP_PORT),
        https=Listen(port=HTTPS_PORT),
        api=Listen(port=API_PORT),
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


def render_configmap(config: CollectorConfig, settings: CollectorSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": settings.namespace, "labels": dict(LABELS)},
        "data": {CONFIG_KEY: config_text(config) + "\n"},
    }


def render_statefulset(
    config: CollectorConfig, secrets: Sequence[str], settings: CollectorSettings
) -> dict[str, Any]:
    config_hash = hashlib.sha256(config_text(config).encode()).hexdigest()[:16]
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": NAME}}]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "data", "mountPath": DATA_DIR},
    ]
    for secret in sorted(set(secrets)):
        volume = _secret_volume(secret)
        volumes.append({"name": volume, "secret": {"secretName": secret}})
        mounts.append({"name": volume, "mountPath": f"{TLS_DIR}/{volume}", "readOnly": True})
    env: list[dict[str, Any]] = []
    if settings.database_secret:
        env.append(
            {
                "name": "MAILWARD_TLSRPT_DATABASE",
                "valueFrom": {"secretKeyRef": {"name": settings.database_secret, "key": "url"}},
            }
        )
    container: dict[str, Any] = {
        "name": "collector",
        "image": settings.image,
        "args": ["collect-reports", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}"],
        "ports": [
            {"name": "smtp", "containerPort": SMTP_PORT},
            {"name": "https", "containerPort": HTTPS_PORT},
            {"name": "api", "containerPort": API_PORT},
        ],
        "env": env,
        "volumeMounts": mounts,
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "api"}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "api"}, "periodSeconds": 30},
        # Bounded by the intake limits; the limit makes a bug an OOM kill, not a node problem.
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": NAME, "namespace": settings.namespace, "labels": dict(LABELS)},
        "spec": {
            "serviceName": NAME,
            "replicas": 1,
            "selector": {"matchLabels": dict(LABELS)},
            "template": {
                "metadata": {
                    "labels": dict(LABELS),
                    "annotations": {"mailward.io/config-hash": config_hash},
                },
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
                    "containers": [container],
                    "volumes": volumes,
                },
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


def render_service(settings: CollectorSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": settings.namespace, "labels": dict(LABELS)},
        "spec": {
            "selector": dict(LABELS),
            "ports": [
                {"name": "smtp", "port": SMTP_PORT, "targetPort": "smtp"},
                {"name": "https", "port": HTTPS_PORT, "targetPort": "https"},
                {"name": "api", "port": API_PORT, "targetPort": "api"},
            ],
        },
    }


def render_collector(
    specs: Sequence[MailDomainSpec], settings: CollectorSettings
) -> list[dict[str, Any]]:
    """ConfigMap, StatefulSet and Service for a collector serving `specs`."""
    config = collector_config(specs, settings)
    secrets = [s.tls.secret_name for s in specs]
    return [
        render_configmap(config, settings),
        render_statefulset(config, secrets, settings),
        render_service(settings),
    ]
