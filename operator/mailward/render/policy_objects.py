"""The policy endpoint's Kubernetes objects, rendered purely.

One Deployment (`mailward serve-policies`, 2 replicas, a PodDisruptionBudget, so a node drain
never takes every policy offline) serves every MailDomain; it finds the policies by watching the
MailDomains itself, so a new domain needs no new pod. Per domain there is an Ingress for
`mta-sts.<domain>` and `autoconfig.<domain>` with its TLS Secret (the names are listed one by
one: BSI TR-03108 forbids wildcard certificates, and cert-manager's ingress-shim, when
configured, requests exactly these names). The same Secrets, in the endpoint's namespace, are
what the pods' own HTTPS listener serves by SNI, for clusters that expose the Service directly.

With host-network addresses (`MAILWARD_POLICY_HOST_NETWORK_ADDRESSES`, the chart's
`policyEndpoint.hostNetwork.addresses`) the pods run on the nodes' network and serve HTTPS on
`<address>:443` themselves (RFC 8461 §3.3: senders fetch the policy there), HTTP on 80 and the
admin listener on 9090 of the same addresses: at most one pod per node, and a rollout stops an
old pod before it starts its replacement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mailward.render.pods import (
    Listener,
    ProbeTiming,
    container_ports,
    host_port,
    http_probe,
    listener_security,
    pod_security,
    required_node_anti_affinity,
)

NAME = "mailward-policy"
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "mailward"}
DOMAIN_ANNOTATION = "mailward.io/domain"
HTTPS_PORT = 8443
HTTP_PORT = 8080
ADMIN_PORT = 9090
# On the host network no Service maps the public ports: the server binds them itself.
HOST_HTTPS_PORT = 443
HOST_HTTP_PORT = 80
# The image runs as this unprivileged user (and as root with NET_BIND_SERVICE only when it
# binds 443 and 80 on the host network).
RUN_AS_USER = 65532
WILDCARD = "0.0.0.0"

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
    # Run on the nodes' network, bound to these addresses; empty: the pods' own network.
    host_addresses: tuple[str, ...] = ()

    @property
    def host_network(self) -> bool:
        return bool(self.host_addresses)

    def listeners(self) -> list[Listener]:
        """HTTPS and HTTP on every address, the admin listener on the first one."""
        if not self.host_network:
            return [
                Listener("https", HTTPS_PORT),
                Listener("http", HTTP_PORT),
                Listener("admin", ADMIN_PORT),
            ]
        return [
            Listener("https", HOST_HTTPS_PORT, self.host_addresses),
            Listener("http", HOST_HTTP_PORT, self.host_addresses),
            Listener("admin", ADMIN_PORT, self.host_addresses[:1]),
        ]


def policy_server_args(
    settings: EndpointSettings,
    *,
    https: str | None = None,
    http: str | None = None,
    admin: str | None = None,
) -> list[str]:
    """The command line of the server: its listeners from `settings`, unless given (the tests
    and the benchmark run it with loopback addresses)."""
    given = {"https": https, "http": http, "admin": admin}
    args = ["serve-policies"]
    for listener in settings.listeners():
        if given[listener.name] is not None:
            args += [f"--{listener.name}", str(given[listener.name])]
            continue
        for address in listener.addresses or (WILDCARD,):
            args += [f"--{listener.name}", host_port(address, listener.port)]
    return [*args, "--tls-namespace", settings.namespace]


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


# /readyz is ready once both watches (MailDomains, TLS Secrets) have synced: what is served is
# then complete. /healthz says the event loop answers.
READINESS = ProbeTiming(period=5, timeout=2, failures=2)
LIVENESS = ProbeTiming(period=20, timeout=5, failures=3)


def render_deployment(settings: EndpointSettings) -> Object:
    listeners = settings.listeners()
    host = settings.host_addresses[0] if settings.host_network else None
    security = listener_security(RUN_AS_USER, listeners, settings.host_network)
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
        "ports": container_ports(listeners),
        "readinessProbe": http_probe("/readyz", "admin", host, READINESS),
        "livenessProbe": http_probe("/healthz", "admin", host, LIVENESS),
        "resources": {
            "requests": {"cpu": "20m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
        "securityContext": security,
        # Certificates are loaded through short-lived files (ssl has no in-memory loader).
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod: Object = {
        "serviceAccountName": NAME,
        # The server watches MailDomains and its namespace's TLS Secrets with this token.
        "automountServiceAccountToken": True,
        # It stops at SIGTERM, closing its listeners and giving open requests 2 s; a sender
        # whose fetch is cut short retries (RFC 8461 §3.3).
        "terminationGracePeriodSeconds": 15,
        "securityContext": pod_security(security, RUN_AS_USER),
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": dict(LABELS)},
            }
        ],
    }
    # Never below the full count during a rollout: the policy must stay fetchable. On the host
    # network a surge pod would bind the addresses the old one holds on its node: the old pod
    # goes first, and no two pods share a node.
    rolling = {"maxUnavailable": 0, "maxSurge": 1}
    if settings.host_network:
        rolling = {"maxUnavailable": 1, "maxSurge": 0}
        pod = {"hostNetwork": True, **pod, "affinity": required_node_anti_affinity(LABELS)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(settings, NAME),
        "spec": {
            "replicas": settings.replicas,
            "selector": {"matchLabels": dict(LABELS)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": rolling},
            "template": {"metadata": {"labels": dict(LABELS)}, "spec": pod},
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
