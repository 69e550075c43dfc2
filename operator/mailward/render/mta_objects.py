"""The Kubernetes objects of a MailDomain's MTA, as plain manifests (pure).

One StatefulSet runs the MTA's pod (render/mta_pod.py: Postfix, its validating resolver and the
outbound TLS policy sidecars) with the rendered configuration (a ConfigMap). Its queue lives on
a PersistentVolumeClaim per pod, so a restarted pod finds the mail it had accepted. The
ConfigMap's digest is an annotation of the pod template: any configuration change rolls the
pods, and nothing else does.

Every object carries an owner reference to the MailDomain (garbage collection removes them with
it), the same labels, and is applied by server-side apply, so applying an unchanged manifest is
a no-op on the API server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailward.api.v1alpha1 import API_GROUP, API_VERSION, KIND, MailDomainSpec
from mailward.render.mta_pod import (
    MTAFiles,
    render_mta_config,
    render_mta_files,
    render_pod_spec,
)
from mailward.render.postfix import SMTP_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT
from mailward.render.resolver import ResolverSettings

Manifest = dict[str, Any]

CONFIG_HASH_ANNOTATION = f"{API_GROUP}/config-hash"

__all__ = ["CONFIG_HASH_ANNOTATION", "Owner", "mta_name", "render_mta_config", "render_mta_objects"]


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


def render_mta_objects(
    owner: Owner,
    spec: MailDomainSpec,
    accounts: list[str],
    resolver: ResolverSettings | None = None,
) -> list[Manifest]:
    """ConfigMap, headless and public Services, StatefulSet, PodDisruptionBudget, NetworkPolicy.

    On the host network the public Service still selects the pods, but reaches Postfix only
    where the MX addresses are the nodes' own: mail comes to the MX addresses directly.
    """
    files = render_mta_files(spec, accounts, resolver or ResolverSettings())
    name = mta_name(owner)
    configmap: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, f"{name}-config"),
        "data": files.data(),
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
    statefulset = _statefulset(owner, spec, files)
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


def _statefulset(owner: Owner, spec: MailDomainSpec, files: MTAFiles) -> Manifest:
    name = mta_name(owner)
    mta = spec.mta
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
                    "annotations": {CONFIG_HASH_ANNOTATION: files.digest()},
                },
                "spec": render_pod_spec(spec, files, f"{name}-config", selector(owner)),
            },
            "volumeClaimTemplates": [claim],
        },
    }
