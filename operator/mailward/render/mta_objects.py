"""The Kubernetes objects of an MTA fleet, as plain manifests (pure).

Each group of the fleet (render/mta_server.py) is one StatefulSet running the MTA's pod
(render/mta_pod.py: Postfix, its validating resolver and the outbound TLS policy sidecars)
with its rendered configuration (a ConfigMap per group), a headless and a public Service, a
PodDisruptionBudget and a NetworkPolicy. The queue lives on a PersistentVolumeClaim per pod,
so a restarted pod finds the mail it had accepted. The configuration's digest is an annotation
of the pod template: a change of the fleet's own settings rolls the pods, and nothing else does.

The domain tables (which domains, which mailboxes) are one ConfigMap for the whole fleet,
outside that digest: a domain attached or detached reaches the running pods by the kubelet's
update of the volume and a `postfix reload`, without a restart.

Every object carries an owner reference to the resource that asked for the fleet (a MailServer,
or a MailDomain with an MTA of its own), the same labels, and is applied by server-side apply,
so applying an unchanged manifest is a no-op on the API server.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from mailward.api.mta import DEFAULT_MTA_IMAGE
from mailward.api.v1alpha1 import API_GROUP, MailDomainSpec
from mailward.owner import Owner
from mailward.render.dkim import DKIMSigning
from mailward.render.mta_pod import MTAFiles, render_domain_files, render_mta_files, render_pod_spec
from mailward.render.mta_server import MTAServer, ServerGroup, own_mta_server
from mailward.render.postfix import (
    SMTP_PORT,
    SUBMISSION_PORT,
    SUBMISSIONS_PORT,
    DomainConfig,
    files_digest,
)
from mailward.render.resolver import ResolverSettings

Manifest = dict[str, Any]

CONFIG_HASH_ANNOTATION = f"{API_GROUP}/config-hash"
# On the pods (not the template): the digest of the domain tables they were last given. Writing
# it makes the kubelet sync the pod at once, which refreshes the ConfigMap volume without
# waiting for its periodic sync; the StatefulSet controller ignores pod annotations.
DOMAINS_HASH_ANNOTATION = f"{API_GROUP}/domains-hash"
COMPONENT = "mailward-mta"
PART_OF = "app.kubernetes.io/part-of"


def labels(server: MTAServer, group: ServerGroup | None = None) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": COMPONENT,
        "app.kubernetes.io/instance": group.name if group else server.base_name,
        PART_OF: server.base_name,
        "app.kubernetes.io/managed-by": "mailward",
        f"{API_GROUP}/{server.owner.kind.lower()}": server.owner.name,
    }


def selector(group: ServerGroup) -> dict[str, str]:
    return {"app.kubernetes.io/instance": group.name, "app.kubernetes.io/name": COMPONENT}


def fleet_selector(server: MTAServer) -> str:
    """A label selector (string form) for every pod of the fleet."""
    return f"app.kubernetes.io/name={COMPONENT},{PART_OF}={server.base_name}"


def _metadata(server: MTAServer, name: str, group: ServerGroup | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": server.namespace,
        "labels": labels(server, group),
        "ownerReferences": [server.owner.reference()],
    }


def domains_digest(
    domains: Sequence[DomainConfig], passwords: Mapping[str, Mapping[str, str]] | None = None
) -> str:
    """What the fleet's pods must reload for: the tables and the accounts."""
    accounts = {
        f"accounts/{fleet_accounts_key(d, local)}": password
        for d, entries in (passwords or {}).items()
        for local, password in entries.items()
    }
    return files_digest({**render_domain_files(domains), **accounts})


def own_mta_domain(spec: MailDomainSpec, accounts: Sequence[str]) -> DomainConfig:
    """The one domain a MailDomain's own MTA serves."""
    return DomainConfig(spec.domain, tuple(mx.host for mx in spec.mx), tuple(sorted(accounts)))


def render_own_mta_objects(
    owner: Owner,
    spec: MailDomainSpec,
    accounts: Sequence[str],
    resolver: ResolverSettings | None = None,
    default_image: str = DEFAULT_MTA_IMAGE,
    dkim: DKIMSigning | None = None,
) -> list[Manifest]:
    """The objects of a MailDomain's own MTA: a fleet of one group serving that domain; with
    `dkim`, the pods sign submitted mail with its keys (render/dkim.py)."""
    server = own_mta_server(owner.name, owner.namespace, owner.uid, spec, default_image)
    if dkim is not None:
        server = replace(server, options=replace(server.options, dkim=dkim))
    return render_mta_objects(server, [own_mta_domain(spec, accounts)], resolver)


def fleet_accounts_key(domain: str, local: str) -> str:
    # Secret keys allow `[-._a-zA-Z0-9]`; host names have no `_`, so the first `_` splits.
    return f"{domain}_{local}"


def render_fleet_accounts(
    server: MTAServer, passwords: Mapping[str, Mapping[str, str]]
) -> Manifest:
    """The fleet's copy of its domains' accounts (`passwords`: domain → local part → password),
    in its own namespace, where its pods can mount it (a Secret volume cannot cross namespaces).
    The MTA image's start script builds the SASL database from it."""
    data = {
        fleet_accounts_key(domain, local): base64.b64encode(password.encode()).decode()
        for domain, accounts in sorted(passwords.items())
        for local, password in sorted(accounts.items())
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(server, str(server.accounts_secret)),
        "data": data,
    }


def render_fleet_dkim_keys(
    server: MTAServer, signing: DKIMSigning, private: Mapping[str, str]
) -> Manifest:
    """The fleet's copy of its domains' Active DKIM keys (`<domain>_<selector>.key`), in its own
    namespace, where its signer can mount them (render/dkim.py)."""
    data = {
        key.secret_key: base64.b64encode(private[key.secret_key].encode()).decode()
        for key in signing.keys
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(server, signing.secret_name),
        "data": dict(sorted(data.items())),
    }


def fleet_dkim_secret(server: MTAServer) -> str:
    return f"{server.base_name}-dkim"


def render_mta_objects(
    server: MTAServer,
    domains: Sequence[DomainConfig],
    resolver: ResolverSettings | None = None,
    passwords: Mapping[str, Mapping[str, str]] | None = None,
    dkim_keys: Mapping[str, str] | None = None,
) -> list[Manifest]:
    """The domain tables' ConfigMap, then per group: ConfigMap, headless and public Services,
    StatefulSet, PodDisruptionBudget, NetworkPolicy. A fleet that signs (`options.dkim`) gets
    its copy of the domains' signing keys (`dkim_keys`: Secret item → private key) first.

    On the host network the public Service still selects the pods, but reaches Postfix only
    where the addresses are the nodes' own: mail comes to the MX addresses directly.
    """
    tables: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(server, server.domains_configmap()),
        "data": render_domain_files(domains),
    }
    objects = [tables]
    if server.is_fleet:
        objects.append(render_fleet_accounts(server, passwords or {}))
        if server.options.dkim is not None:
            objects.append(render_fleet_dkim_keys(server, server.options.dkim, dkim_keys or {}))
    for group in server.groups:
        objects += _group_objects(server, group, resolver or ResolverSettings())
    return objects


def _group_objects(
    server: MTAServer, group: ServerGroup, resolver: ResolverSettings
) -> list[Manifest]:
    files = render_mta_files(server, group, resolver)
    name = group.name
    configmap: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(server, f"{name}-config", group),
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
        "metadata": _metadata(server, name, group),
        "spec": {
            "type": "LoadBalancer",
            # Postfix must see the client's own address: relay control, rate limits and logs
            # depend on it. `Local` keeps it (no SNAT to a node address).
            "externalTrafficPolicy": "Local",
            "selector": selector(group),
            "ports": ports,
        },
    }
    headless: Manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(server, f"{name}-pods", group),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(group),
            "ports": [{"name": "smtp", "port": SMTP_PORT, "targetPort": "smtp"}],
        },
    }
    statefulset = _statefulset(server, group, files)
    pdb: Manifest = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(server, name, group),
        # One pod at a time may be drained; with one replica the drain is not blocked forever
        # (the queue is on a volume and the sending MTAs retry, RFC 5321 §4.5.4.1).
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(group)}},
    }
    network_policy: Manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(server, name, group),
        "spec": {
            "podSelector": {"matchLabels": selector(group)},
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


def _statefulset(server: MTAServer, group: ServerGroup, files: MTAFiles) -> Manifest:
    name = group.name
    # volumeClaimTemplates are immutable: their labels stay what the first release applied
    # (no `part-of`), or an upgrade could never apply the StatefulSet again.
    claim_labels = {k: v for k, v in labels(server, group).items() if k != PART_OF}
    claim: dict[str, Any] = {
        "metadata": {"name": "queue", "labels": claim_labels},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": server.storage_size}},
        },
    }
    if server.storage_class:
        claim["spec"]["storageClassName"] = server.storage_class
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(server, name, group),
        "spec": {
            "replicas": server.replicas,
            "serviceName": f"{name}-pods",
            "selector": {"matchLabels": selector(group)},
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            # The queue holds accepted mail: never delete it with the StatefulSet or on scale-in.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {
                    "labels": labels(server, group),
                    "annotations": {CONFIG_HASH_ANNOTATION: files.digest()},
                },
                "spec": render_pod_spec(server, group, files, f"{name}-config", selector(group)),
            },
            "volumeClaimTemplates": [claim],
        },
    }
