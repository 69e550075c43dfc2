"""The Kubernetes objects of a MailDomain's MTA, as plain manifests (pure).

One StatefulSet runs Postfix with the rendered configuration (a ConfigMap) and two sidecars for
outbound TLS policy (docs/mta.md). Its queue lives on a PersistentVolumeClaim per pod, so a
restarted pod finds the mail it had accepted. The ConfigMap's digest is an annotation of the pod
template: any configuration change rolls the pods, and nothing else does.

Every object carries an owner reference to the MailDomain (garbage collection removes them with
it), the same labels, and is applied by server-side apply, so applying an unchanged manifest is
a no-op on the API server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailward.api.v1alpha1 import API_GROUP, API_VERSION, KIND, MailDomainSpec
from mailward.render.postfix import (
    SMTP_PORT,
    SUBMISSION_PORT,
    SUBMISSIONS_PORT,
    DomainConfig,
    MTALayout,
    MTAOptions,
    PostfixConfig,
    render_postfix,
)

Manifest = dict[str, Any]

CONFIG_DIR = "/etc/mailward/postfix"
TLS_DIR = "/etc/mailward/tls"
ACCOUNTS_DIR = "/etc/mailward/accounts"
CONFIG_HASH_ANNOTATION = f"{API_GROUP}/config-hash"
MTA_STS_RESOLVER_PORT = 8462
# Postfix's master process starts as root and drops to `postfix` per daemon; these are the
# capabilities it needs for that (no chroot, so no SYS_CHROOT).
POSTFIX_CAPABILITIES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "KILL",
    "NET_BIND_SERVICE",
    "SETGID",
    "SETUID",
]
NOBODY = 65534


@dataclass(frozen=True)
class Owner:
    """The MailDomain that owns the objects."""

    name: str
    namespace: str
    uid: str


def mta_name(owner: Owner) -> str:
    return f"{owner.name}-mta"


def labels(owner: Owner) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "mailward-mta",
        "app.kubernetes.io/instance": mta_name(owner),
        "app.kubernetes.io/managed-by": "mailward",
        f"{API_GROUP}/maildomain": owner.name,
    }


def selector(owner: Owner) -> dict[str, str]:
    return {"app.kubernetes.io/instance": mta_name(owner), "app.kubernetes.io/name": "mailward-mta"}


def domain_config(spec: MailDomainSpec, accounts: list[str]) -> DomainConfig:
    return DomainConfig(spec.domain, tuple(mx.host for mx in spec.mx), tuple(sorted(accounts)))


def mta_options(spec: MailDomainSpec) -> MTAOptions:
    return MTAOptions(
        message_size_limit=spec.mta.message_size_limit,
        hide_submission_client=spec.mta.hide_submission_client,
        mta_sts_fallback=spec.mta.mta_sts_fallback,
    )


def render_mta_config(spec: MailDomainSpec, accounts: list[str]) -> PostfixConfig:
    """The pod's Postfix configuration (the default `MTALayout` is the pod's file system)."""
    return render_postfix([domain_config(spec, accounts)], mta_options(spec), MTALayout())


def configmap_key(file_name: str) -> str:
    # ConfigMap keys cannot contain "/"; the volume's `items` put the file back in its place.
    return file_name.replace("/", "_")


def _metadata(owner: Owner, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner),
        "ownerReferences": [
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def render_mta_objects(owner: Owner, spec: MailDomainSpec, accounts: list[str]) -> list[Manifest]:
    """ConfigMap, headless and public Services, StatefulSet, PodDisruptionBudget, NetworkPolicy."""
    config = render_mta_config(spec, accounts)
    name = mta_name(owner)
    files = config.rendered_files()
    configmap: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, f"{name}-config"),
        "data": {configmap_key(f): text for f, text in sorted(files.items())},
    }
    ports = [
        {"name": "smtp", "port": SMTP_PORT, "targetPort": "smtp", "protocol": "TCP"},
        {
            "name": "submissions",
            "port": SUBMISSIONS_PORT,
            "targetPort": "submissions",
            "protocol": "TCP",
        },
        {
            "name": "submission",
            "port": SUBMISSION_PORT,
            "targetPort": "submission",
            "protocol": "TCP",
        },
    ]
    service: Manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, name),
        "spec": {
            "type": "LoadBalancer",
            # Postfix must see the client's own address: relay control, rate limits and logs
            # depend on it. `Local` keeps it (no SNAT to a node address).
            "externalTrafficPolicy": "Local",
            "selector": selector(owner),
            "ports": ports,
        },
    }
    headless: Manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, f"{name}-pods"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(owner),
            "ports": [{"name": "smtp", "port": SMTP_PORT, "targetPort": "smtp"}],
        },
    }
    statefulset = _statefulset(owner, spec, config, files)
    pdb: Manifest = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, name),
        # One pod at a time may be drained; with one replica the drain is not blocked forever
        # (the queue is on a volume and the sending MTAs retry, RFC 5321 §4.5.4.1).
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(owner)}},
    }
    network_policy: Manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(owner, name),
        "spec": {
            "podSelector": {"matchLabels": selector(owner)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "ports": [
                        {"protocol": "TCP", "port": p}
                        for p in (SMTP_PORT, SUBMISSIONS_PORT, SUBMISSION_PORT)
                    ]
                }
            ],
            "egress": [
                # DNS (the validating resolver), SMTP to other MTAs, HTTPS for MTA-STS policies.
                {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"ports": [{"protocol": "TCP", "port": 25}, {"protocol": "TCP", "port": 443}]},
            ],
        },
    }
    return [configmap, headless, service, statefulset, pdb, network_policy]


def _statefulset(
    owner: Owner, spec: MailDomainSpec, config: PostfixConfig, files: dict[str, str]
) -> Manifest:
    name = mta_name(owner)
    layout = MTALayout()
    mta = spec.mta
    restricted = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": NOBODY,
        "runAsGroup": NOBODY,
    }
    postfix_container = {
        "name": "postfix",
        "image": mta.image,
        "command": ["/usr/local/bin/mailward-mta-start"],
        "env": [
            {"name": "MAILWARD_CONFIG_DIR", "value": CONFIG_DIR},
            {"name": "MAILWARD_ACCOUNTS_DIR", "value": ACCOUNTS_DIR},
            {"name": "MAILWARD_SASLDB", "value": layout.sasldb_path},
        ],
        "ports": [
            {"name": "smtp", "containerPort": SMTP_PORT, "protocol": "TCP"},
            {"name": "submissions", "containerPort": SUBMISSIONS_PORT, "protocol": "TCP"},
            {"name": "submission", "containerPort": SUBMISSION_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"tcpSocket": {"port": "smtp"}, "periodSeconds": 10},
        "livenessProbe": {
            "tcpSocket": {"port": "smtp"},
            "initialDelaySeconds": 30,
            "periodSeconds": 30,
        },
        "resources": {
            "requests": {"cpu": mta.resources.cpu, "memory": mta.resources.memory},
            "limits": {"memory": mta.resources.memory},
        },
        "securityContext": {
            # Postfix's master must start as root (it binds port 25 and runs each daemon as
            # `postfix`); everything a root process could do beyond that is taken away.
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": POSTFIX_CAPABILITIES},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "queue", "mountPath": layout.queue_directory},
            {"name": "data", "mountPath": layout.data_directory},
            {"name": "state", "mountPath": "/var/lib/mailward"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "configMap": {
                "name": f"{name}-config",
                "items": [{"key": configmap_key(f), "path": f} for f in sorted(files)],
            },
        },
        {
            "name": "tls",
            "secret": {
                "secretName": spec.tls.secret_name,
                "defaultMode": 0o400,
                "items": [
                    {"key": "tls.key", "path": "tls.key"},
                    {"key": "tls.crt", "path": "tls.crt"},
                ],
            },
        },
        {"name": "data", "emptyDir": {}},
        {"name": "state", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    if mta.accounts_secret_name:
        postfix_container["volumeMounts"].append(  # type: ignore[attr-defined]
            {"name": "accounts", "mountPath": f"{ACCOUNTS_DIR}/{spec.domain}", "readOnly": True}
        )
        volumes.append(
            {
                "name": "accounts",
                "secret": {"secretName": mta.accounts_secret_name, "defaultMode": 0o400},
            }
        )
    containers = [postfix_container]
    if mta.mta_sts_fallback:
        containers += [
            {
                "name": "tls-policy",
                "image": mta.image,
                "command": [
                    "python3",
                    "/usr/local/lib/mailward/tlspolicy.py",
                    "--listen",
                    "127.0.0.1:8461",
                    "--sts",
                    f"127.0.0.1:{MTA_STS_RESOLVER_PORT}",
                ],
                "resources": {
                    "requests": {"cpu": "10m", "memory": "48Mi"},
                    "limits": {"memory": "96Mi"},
                },
                "securityContext": restricted,
            },
            {
                "name": "mta-sts-resolver",
                "image": mta.image,
                "command": ["mta-sts-daemon", "-c", "/etc/mta-sts-daemon.yml"],
                "resources": {
                    "requests": {"cpu": "10m", "memory": "64Mi"},
                    "limits": {"memory": "128Mi"},
                },
                "securityContext": restricted,
            },
        ]
    claim: dict[str, Any] = {
        "metadata": {"name": "queue", "labels": labels(owner)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": mta.storage.size}},
        },
    }
    if mta.storage.storage_class_name:
        claim["spec"]["storageClassName"] = mta.storage.storage_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(owner, name),
        "spec": {
            "replicas": mta.replicas,
            "serviceName": f"{name}-pods",
            "selector": {"matchLabels": selector(owner)},
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            # The queue holds accepted mail: never delete it with the StatefulSet or on scale-in.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {
                    "labels": labels(owner),
                    "annotations": {CONFIG_HASH_ANNOTATION: config.digest()},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    # postfix stop flushes nothing to lose, but lets running deliveries end.
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": containers,
                    "volumes": volumes,
                },
            },
            "volumeClaimTemplates": [claim],
        },
    }
