"""The policy endpoint's Kubernetes objects, rendered purely.

One Deployment (`mailward serve-policies`, 2 replicas, a PodDisruptionBudget, so a node drain
never takes every policy offline) serves every MailDomain; it finds the policies by watching the
MailDomains itself, so a new domain needs no new pod. Per domain there is an Ingress for
`mta-sts.<domain>` and `autoconfig.<domain>` with its TLS Secret (the names are listed one by
one: BSI TR-03108 forbids wildcard certificates, and cert-manager's ingress-shim, when
configured, requests exactly these names). The same Secrets, in the endpoint's namespace, are
what the pods' own HTTPS listener serves by SNI, for clusters that expose the Service directly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NAME = "mailward-policy"
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "mailward"}
DOMAIN_ANNOTATION = "mailward.io/domain"
HTTPS_PORT = 8443
HTTP_PORT = 8080
ADMIN_PORT = 9090
# The image runs as this unprivileged user; ports above 1024, so no capability is needed.
RUN_AS_USER = 65532

Object = dict[str, Any]


@dataclass(frozen=True)
class EndpointSettings:
    """Operator-level configuration of the endpoint (`MAILWARD_POLICY_*` variables)."""

    namespace: str = "mailward-system"
    image: str = "ghcr.io/mailward/operator:0.1.0"
    replicas: int = 2
    ingress_class: str | None = None
    cluster_issuer: str | None = None
    extra_ingress_annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> EndpointSettings:
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            namespace=env.get("MAILWARD_POLICY_NAMESPACE", defaults.namespace),
            image=env.get("MAILWARD_POLICY_IMAGE", defaults.image),
            replicas=int(env.get("MAILWARD_POLICY_REPLICAS", defaults.replicas)),
            ingress_class=env.get("MAILWARD_POLICY_INGRESS_CLASS") or None,
            cluster_issuer=env.get("MAILWARD_POLICY_CLUSTER_ISSUER") or None,
        )


def policy_server_args(
    settings: EndpointSettings,
    *,
    https: str = f"0.0.0.0:{HTTPS_PORT}",
    http: str = f"0.0.0.0:{HTTP_PORT}",
    admin: str = f"0.0.0.0:{ADMIN_PORT}",
) -> list[str]:
    """The command line of the server; the demo and the tests run it with loopback addresses."""
    return [
        "serve-policies",
        "--https",
        https,
        "--http",
        http,
        "--admin",
        admin,
        "--tls-namespace",
        settings.namespace,
    ]


def _dns_label(prefix: str, domain: str) -> str:
    """A valid object name (≤ 63 characters) for a domain: readable, with a hash when long."""
    name = f"{prefix}-{domain.replace('.', '-')}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(domain.encode()).hexdigest()[:10]
    return f"{name[: 63 - 11].rstrip('-')}-{digest}"


def ingress_name(domain: str) -> str:
    return _dns_label("mta-sts", domain)


def tls_secret_name(domain: str) -> str:
    """The Secret with the certificate for `mta-sts.<domain>` and `autoconfig.<domain>`."""
    return _dns_label("mta-sts", domain)


def policy_hosts(domain: str) -> list[str]:
    return [f"mta-sts.{domain}", f"autoconfig.{domain}"]


def _meta(settings: EndpointSettings, name: str, **extra: Any) -> Object:
    return {"name": name, "namespace": settings.namespace, "labels": dict(LABELS), **extra}


def render_service_account(settings: EndpointSettings) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(settings, NAME),
    }


def render_rbac(settings: EndpointSettings) -> list[Object]:
    """Read-only: MailDomains cluster-wide, TLS Secrets in the endpoint's own namespace."""
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": settings.namespace}]
    cluster_name = f"{NAME}-{settings.namespace}"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": cluster_name, "labels": dict(LABELS)},
            "rules": [
                {
                    "apiGroups": ["mailward.io"],
                    "resources": ["maildomains"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_name, "labels": dict(LABELS)},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_name,
            },
            "subjects": subject,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(settings, NAME),
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(settings, NAME),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
            "subjects": subject,
        },
    ]


def render_deployment(settings: EndpointSettings) -> Object:
    probe_port = "admin"
    container: Object = {
        "name": "serve-policies",
        "image": settings.image,
        "args": policy_server_args(settings),
        "env": [
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            }
        ],
        "ports": [
            {"name": "https", "containerPort": HTTPS_PORT},
            {"name": "http", "containerPort": HTTP_PORT},
            {"name": "admin", "containerPort": ADMIN_PORT},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": probe_port},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": probe_port},
            "periodSeconds": 20,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": "20m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        # Certificates are loaded through short-lived files (ssl has no in-memory loader).
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(settings, NAME),
        "spec": {
            "replicas": settings.replicas,
            "selector": {"matchLabels": dict(LABELS)},
            # Never below the full count during a rollout: the policy must stay fetchable.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
                    ],
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": dict(LABELS)},
                        }
                    ],
                },
            },
        },
    }


def render_pdb(settings: EndpointSettings) -> Object:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(settings, NAME),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": dict(LABELS)}},
    }


def render_service(settings: EndpointSettings) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(settings, NAME),
        "spec": {
            "selector": dict(LABELS),
            "ports": [
                {"name": "https", "port": 443, "targetPort": "https"},
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "admin", "port": ADMIN_PORT, "targetPort": "admin"},
            ],
        },
    }


def render_shared_objects(settings: EndpointSettings, *, rbac: bool = True) -> list[Object]:
    """Everything that does not depend on the set of domains.

    The operator applies these without the RBAC objects (`rbac=False`): granting the endpoint
    list/watch on Secrets would need the operator to hold that right itself, so the RBAC comes
    with the installation (the chart) instead; the demo and the golden file include it.
    """
    return [
        render_service_account(settings),
        *(render_rbac(settings) if rbac else []),
        render_deployment(settings),
        render_pdb(settings),
        render_service(settings),
    ]


def render_ingress(domain: str, settings: EndpointSettings) -> Object:
    annotations = {DOMAIN_ANNOTATION: domain, **settings.extra_ingress_annotations}
    if settings.cluster_issuer:
        annotations["cert-manager.io/cluster-issuer"] = settings.cluster_issuer
    hosts = policy_hosts(domain)
    spec: Object = {
        "tls": [{"hosts": hosts, "secretName": tls_secret_name(domain)}],
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [
                        {
                            "path": path,
                            "pathType": "Exact",
                            "backend": {"service": {"name": NAME, "port": {"name": "http"}}},
                        }
                    ]
                },
            }
            for host, path in zip(
                hosts, ["/.well-known/mta-sts.txt", "/mail/config-v1.1.xml"], strict=True
            )
        ],
    }
    if settings.ingress_class:
        spec["ingressClassName"] = settings.ingress_class
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _meta(settings, ingress_name(domain), annotations=annotations),
        "spec": spec,
    }
