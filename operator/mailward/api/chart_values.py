"""The Helm chart's values, as a model: the source of `charts/mailward/values.schema.json`.

Helm validates every install and upgrade against that schema, so a misspelt key or a string
where a number belongs is refused with the path of the value, before anything reaches the
cluster. Unknown keys are refused too (`extra="forbid"`): a value that is silently ignored is
the chart bug people lose most time over. The defaults here are the defaults of values.yaml; a
unit test holds the two together.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

JSONSchema = dict[str, Any]
Seconds = float


class _Values(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Image(_Values):
    """The operator's image (the policy endpoint and collectors run it too, unless set)."""

    repository: str = Field(default="ghcr.io/mailward/operator", min_length=1)
    tag: str = Field(default="", description="Empty: the chart's appVersion.")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class ServiceAccount(_Values):
    create: bool = True
    name: str = Field(default="", description="Empty: the release's full name.")


class CRDs(_Values):
    """mailward's CustomResourceDefinitions, installed and upgraded with the release."""

    install: bool = Field(
        default=True, description="Install and upgrade the CRDs with the chart (as templates)."
    )
    keep: bool = Field(
        default=True,
        description=(
            "Keep the CRDs on `helm uninstall` (helm.sh/resource-policy: keep): deleting a CRD "
            "deletes every MailDomain and MailServer with it."
        ),
    )


class Peering(_Values):
    """kopf peering: the replicas run active/standby (docs/ha.md)."""

    enabled: bool = Field(
        default=True,
        description=(
            "Replicas elect one active through a kopf.dev peering object. false: kopf runs "
            "standalone, and `replicas` must be 1."
        ),
    )
    name: str = Field(default="", description="The peering object's name. Empty: the full name.")
    lifetime_seconds: int = Field(
        default=20,
        ge=5,
        description=(
            "A replica that stopped renewing its peer record (SIGKILL, a lost node) is taken for "
            "dead after this; kopf's default is 60."
        ),
    )
    install_crds: bool = Field(
        default=True,
        description=(
            "Install kopf's peering CRD (with crds.install). false when another kopf operator's "
            "release already owns it: the CRDs kopf.dev are shared by every kopf operator."
        ),
    )


class Reconcile(_Values):
    """How often the operator looks again at what it does not watch."""

    resync_seconds: Seconds = Field(
        default=300, gt=0, description="Every resource is reconciled again this often (drift)."
    )
    tls_secret_retry_seconds: Seconds = Field(default=30, gt=0)
    tls_secret_retry_max_seconds: Seconds = Field(default=300, gt=0)
    mta_retry_seconds: Seconds = Field(default=15, gt=0)
    mta_retry_max_seconds: Seconds = Field(default=300, gt=0)
    dns_retry_seconds: Seconds = Field(default=5, gt=0)
    dns_retry_max_seconds: Seconds = Field(default=300, gt=0)
    policy_retry_seconds: Seconds = Field(default=2, gt=0)
    tlsrpt_retry_seconds: Seconds = Field(default=60, gt=0)
    concurrency: int = Field(
        default=16,
        ge=1,
        le=256,
        description="MailDomain passes that run at once; the others wait their turn (a burst "
        "of thousands after a start must not starve the health endpoint).",
    )


class Resolver(_Values):
    """The DNSSEC-validating Unbound in each MTA pod."""

    trust_anchors: str = Field(
        default="", description="DS or DNSKEY records, one per line. Empty: the root's."
    )
    forwarders: list[str] = Field(
        default_factory=list, description="IP or IP@port to forward to. Empty: full recursion."
    )


class MTA(_Values):
    image: str = Field(default="", description="Empty: mailward/mta:<appVersion>.")
    resolver: Resolver = Field(default_factory=Resolver)


class HostNetworkAddresses(_Values):
    addresses: list[str] = Field(default_factory=list)


class PolicyEndpoint(_Values):
    """The MTA-STS policy endpoint, managed by the operator in the release namespace."""

    enabled: bool = True
    image: str = Field(default="", description="Empty: the operator image.")
    replicas: int = Field(default=2, ge=1)
    ingress_class: str = ""
    cluster_issuer: str = Field(
        default="", description="cert-manager ClusterIssuer for mta-sts.<domain> certificates."
    )
    url: str = Field(default="", description="Empty: https://mailward-policy.<namespace>.svc.")
    ca_file: str = Field(
        default="", description="Trust for `url`, a path in the operator pod. Empty: system."
    )
    host_network: HostNetworkAddresses = Field(default_factory=HostNetworkAddresses)


class TLSRptCollector(_Values):
    """The TLSRPT collector the operator runs in each namespace with MailDomains."""

    enabled: bool = True
    image: str = Field(default="", description="Empty: the operator image.")
    storage: str = "1Gi"
    retention_days: int = Field(default=400, ge=1)
    database_secret: str = ""
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    url: str = ""
    host_network: bool = False


class Compliance(_Values):
    resolver: str = Field(default="", description="The validating resolver the probes ask.")
    ca_bundle: str = Field(default="", description="PEM CA certificates the probes trust.")
    concurrency: int = Field(default=8, ge=1, description="Probes at once, for all domains.")
    heartbeat_seconds: Seconds = Field(default=21600, gt=0)
    label_selector: str = Field(
        default="", description="Only MailDomains with these labels are probed. Empty: all."
    )


class ServiceMonitor(_Values):
    """A prometheus-operator ServiceMonitor for the operator, endpoint and collectors."""

    enabled: bool = False
    interval: str = "60s"
    labels: dict[str, str] = Field(default_factory=dict)


class Metrics(_Values):
    enabled: bool = Field(default=True, description="The operator serves /metrics.")
    port: int = Field(default=9090, ge=1, le=65535)
    service_monitor: ServiceMonitor = Field(default_factory=ServiceMonitor)


class GrafanaDashboard(_Values):
    """A ConfigMap with the dashboard, labelled for Grafana's dashboard sidecar."""

    enabled: bool = False
    labels: dict[str, str] = Field(default_factory=lambda: {"grafana_dashboard": "1"})


class ArgoCD(_Values):
    health_config_map: bool = Field(
        default=False,
        description=(
            "Render a ConfigMap whose data are the argocd-cm keys of mailward's health checks, "
            "to merge into argocd-cm."
        ),
    )


class ChartValues(_Values):
    """Values of the mailward chart."""

    image: Image = Field(default_factory=Image)
    image_pull_secrets: list[dict[str, str]] = Field(default_factory=list)
    watch_namespaces: list[str] = Field(default_factory=list, description="Empty: every namespace.")
    replicas: int = Field(
        default=2, ge=0, description="One active, the others on standby (needs peering.enabled)."
    )
    peering: Peering = Field(default_factory=Peering)
    pod_disruption_budget: bool = Field(
        default=True, description="With more than one replica: at most one evicted at a time."
    )
    health_endpoint: bool = Field(
        default=True,
        description=(
            "kopf's /healthz on bindAddress:8080 and the probes on it. false: neither (several "
            "replicas on one node's host network, which would all need that port)."
        ),
    )
    host_network: bool = False
    bind_address: str = "0.0.0.0"
    extra_env: list[dict[str, Any]] = Field(default_factory=list)
    service_account: ServiceAccount = Field(default_factory=ServiceAccount)
    crds: CRDs = Field(default_factory=CRDs)
    reconcile: Reconcile = Field(default_factory=Reconcile)
    mta: MTA = Field(default_factory=MTA)
    policy_endpoint: PolicyEndpoint = Field(default_factory=PolicyEndpoint)
    tlsrpt_collector: TLSRptCollector = Field(default_factory=TLSRptCollector)
    compliance: Compliance = Field(default_factory=Compliance)
    metrics: Metrics = Field(default_factory=Metrics)
    grafana_dashboard: GrafanaDashboard = Field(default_factory=GrafanaDashboard)
    argocd: ArgoCD = Field(default_factory=ArgoCD)
    resources: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"},
        }
    )
    pod_security_context: dict[str, Any] = Field(
        default_factory=lambda: {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    )
    security_context: dict[str, Any] = Field(
        default_factory=lambda: {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] = Field(default_factory=dict)
    pod_annotations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_replica_without_peering(self) -> ChartValues:
        # The chart's template says the same to helm (values.schema.json cannot).
        if self.replicas > 1 and not self.peering.enabled:
            raise ValueError("replicas > 1 needs peering.enabled: standalone replicas all work")
        return self


def values_schema() -> JSONSchema:
    """JSON Schema (draft 7, as helm reads it) with every model inlined."""
    raw = ChartValues.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, JSONSchema] = raw.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = definitions[node["$ref"].rsplit("/", 1)[-1]]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return {k: inline(v) for k, v in node.items() if k not in ("title", "default")}

    schema: JSONSchema = inline(raw)
    return {"$schema": "http://json-schema.org/draft-07/schema#", **schema}


def values_schema_text() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=True) + "\n"
