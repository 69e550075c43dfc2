"""The operator's configuration: one typed model, read once at start-up and handed down.

The chart's values reach the operator container as `MAILWARD_*` variables
(charts/mailward/templates/deployment.yaml). This module is the only one that reads the
environment; everything else receives the plain values it needs. A wrong value stops the
operator at start-up with the variable's name and the reason, never halfway through a reconcile.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mailward.api.mta import DEFAULT_MTA_IMAGE
from mailward.render.policy_objects import EndpointSettings
from mailward.render.resolver import ResolverSettings, parse_forwarders, parse_trust_anchors
from mailward.render.tlsrpt_objects import CollectorSettings

RESOLV_CONF = Path("/etc/resolv.conf")


class SettingsError(ValueError):
    """A variable of the operator's environment is wrong; the message names it."""


@dataclass(frozen=True)
class ReconcileSettings:
    """How often the operator looks again at what it does not watch (chart: `reconcile.*`)."""

    # Every object is reconciled again this often: DNS records drift without any change to it.
    resync_seconds: float = 300.0
    tls_secret_retry_seconds: float = 30.0
    tls_secret_retry_max_seconds: float = 300.0
    mta_retry_seconds: float = 15.0
    mta_retry_max_seconds: float = 300.0
    dns_retry_seconds: float = 5.0
    dns_retry_max_seconds: float = 300.0
    policy_retry_seconds: float = 2.0
    tlsrpt_retry_seconds: float = 60.0
    # MailDomain passes that run at once (domains.py).
    concurrency: int = 16


@dataclass(frozen=True)
class ComplianceSettings:
    """The outside checks (chart: `compliance.*`)."""

    resolver: str = "127.0.0.1"
    resolver_port: int = 53
    cafile: str | None = None
    concurrency: int = 8
    heartbeat_seconds: float = 6 * 3600
    # Only objects carrying this label (key=value) are probed; empty: every MailDomain.
    label_selector: str = ""

    def selects(self, labels: Mapping[str, str]) -> bool:
        if not self.label_selector:
            return True
        key, _, value = self.label_selector.partition("=")
        return labels.get(key.strip()) == value.strip()


@dataclass(frozen=True)
class PolicySettings:
    """The MTA-STS policy endpoint (chart: `policyEndpoint.*`)."""

    # Where each served policy is fetched before DNS announces its id; None: not fetched.
    endpoint_url: str | None = None
    ca_file: str | None = None
    # The operator applies the endpoint's objects (Deployment, Service, Ingresses).
    manage_objects: bool = False
    endpoint: EndpointSettings = field(default_factory=EndpointSettings)


@dataclass(frozen=True)
class TLSRptSettings:
    """The TLSRPT collectors (chart: `tlsrpt.*`)."""

    # The collectors' API, asked for each domain's report summary; None: not asked.
    collector_url: str | None = None
    # The operator deploys one collector per namespace.
    deploy: bool = False
    collector: CollectorSettings = field(default_factory=CollectorSettings)


@dataclass(frozen=True)
class OperatorSettings:
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    mta_image: str = DEFAULT_MTA_IMAGE
    mta_resolver: ResolverSettings = field(default_factory=ResolverSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    tlsrpt: TLSRptSettings = field(default_factory=TLSRptSettings)
    compliance: ComplianceSettings = field(default_factory=ComplianceSettings)
    # The validating resolver whose answers gate each DKIM rotation step (parts/dkim.py):
    # address and port; by default the compliance checks' resolver.
    dkim_resolver: tuple[str, int] = ("127.0.0.1", 53)
    # host:port of the Prometheus endpoint; None: not served.
    metrics_address: str | None = None


BOOLEAN_WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


class _Environment(BaseModel):
    """The variables as the chart sets them; each field's alias is the variable's name."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    resync: float = Field(300, alias="MAILWARD_RESYNC_SECONDS", gt=0)
    tls_retry: float = Field(30, alias="MAILWARD_TLS_SECRET_RETRY_SECONDS", gt=0)
    tls_retry_max: float = Field(300, alias="MAILWARD_TLS_SECRET_RETRY_MAX_SECONDS", gt=0)
    mta_retry: float = Field(15, alias="MAILWARD_MTA_RETRY_SECONDS", gt=0)
    mta_retry_max: float = Field(300, alias="MAILWARD_MTA_RETRY_MAX_SECONDS", gt=0)
    dns_retry: float = Field(5, alias="MAILWARD_DNS_RETRY_SECONDS", gt=0)
    dns_retry_max: float = Field(300, alias="MAILWARD_DNS_RETRY_MAX_SECONDS", gt=0)
    policy_retry: float = Field(2, alias="MAILWARD_POLICY_RETRY_SECONDS", gt=0)
    tlsrpt_retry: float = Field(60, alias="MAILWARD_TLSRPT_RETRY_SECONDS", gt=0)
    concurrency: int = Field(16, alias="MAILWARD_RECONCILE_CONCURRENCY", ge=1, le=256)

    mta_image: str = Field("", alias="MAILWARD_MTA_IMAGE")
    mta_trust_anchors: str = Field("", alias="MAILWARD_MTA_RESOLVER_TRUST_ANCHORS")
    mta_forwarders: str = Field("", alias="MAILWARD_MTA_RESOLVER_FORWARDERS")

    policy_namespace: str = Field("", alias="MAILWARD_POLICY_NAMESPACE")
    policy_url: str = Field("", alias="MAILWARD_POLICY_ENDPOINT_URL")
    policy_ca_file: str = Field("", alias="MAILWARD_POLICY_CA_FILE")
    policy_image: str = Field("", alias="MAILWARD_POLICY_IMAGE")
    policy_replicas: int = Field(2, alias="MAILWARD_POLICY_REPLICAS", ge=1)
    policy_ingress_class: str = Field("", alias="MAILWARD_POLICY_INGRESS_CLASS")
    policy_cluster_issuer: str = Field("", alias="MAILWARD_POLICY_CLUSTER_ISSUER")
    policy_host_addresses: str = Field("", alias="MAILWARD_POLICY_HOST_NETWORK_ADDRESSES")

    tlsrpt_url: str = Field("", alias="MAILWARD_TLSRPT_COLLECTOR_URL")
    tlsrpt_deploy: str = Field("", alias="MAILWARD_TLSRPT_DEPLOY")
    tlsrpt_image: str = Field("", alias="MAILWARD_TLSRPT_IMAGE")
    tlsrpt_storage: str = Field("", alias="MAILWARD_TLSRPT_STORAGE")
    tlsrpt_database_secret: str = Field("", alias="MAILWARD_TLSRPT_DATABASE_SECRET")
    tlsrpt_retention_days: int = Field(400, alias="MAILWARD_TLSRPT_RETENTION_DAYS", ge=1)
    tlsrpt_service_type: Literal["", "ClusterIP", "LoadBalancer", "NodePort"] = Field(
        "", alias="MAILWARD_TLSRPT_SERVICE_TYPE"
    )
    tlsrpt_operator_namespace: str = Field("", alias="MAILWARD_TLSRPT_OPERATOR_NAMESPACE")
    tlsrpt_host_network: str = Field("", alias="MAILWARD_TLSRPT_HOST_NETWORK")

    compliance_resolver: str = Field("", alias="MAILWARD_COMPLIANCE_RESOLVER")
    dkim_resolver: str = Field("", alias="MAILWARD_DKIM_RESOLVER")
    resolver: str = Field("", alias="MAILWARD_RESOLVER")
    compliance_ca_file: str = Field("", alias="MAILWARD_COMPLIANCE_CA_FILE")
    ca_file: str = Field("", alias="MAILWARD_CA_FILE")
    compliance_concurrency: int = Field(8, alias="MAILWARD_COMPLIANCE_CONCURRENCY", ge=1)
    compliance_heartbeat: float = Field(21600, alias="MAILWARD_COMPLIANCE_HEARTBEAT_SECONDS", gt=0)
    compliance_label_selector: str = Field("", alias="MAILWARD_COMPLIANCE_LABEL_SELECTOR")

    metrics_address: str = Field("", alias="MAILWARD_METRICS_ADDRESS")

    @field_validator("tlsrpt_deploy", "tlsrpt_host_network")
    @classmethod
    def _boolean(cls, text: str) -> str:
        if text.lower() not in BOOLEAN_WORDS and text:
            raise ValueError(f"{text!r} is not one of {', '.join(BOOLEAN_WORDS)}")
        return text.lower()

    @field_validator("metrics_address")
    @classmethod
    def _host_port(cls, text: str) -> str:
        if text:
            _, sep, port = text.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{text!r} is not HOST:PORT")
        return text


def from_environment(env: Mapping[str, str]) -> OperatorSettings:
    """The settings the variables in `env` describe; SettingsError names a wrong one."""
    try:
        raw = _Environment.model_validate({k: v for k, v in env.items() if v != ""})
        return _settings(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise SettingsError(f"the operator's environment is invalid: {problems}") from None
    except ValueError as error:  # the renderers' own parsers name their variable
        raise SettingsError(f"the operator's environment is invalid: {error}") from None


def load() -> OperatorSettings:
    """The settings of this process (the container's environment)."""
    return from_environment(os.environ)


def _settings(raw: _Environment) -> OperatorSettings:
    endpoint_defaults, collector_defaults = EndpointSettings(), CollectorSettings()
    resolver = raw.compliance_resolver or raw.resolver or system_resolver() or "127.0.0.1"
    address, port = resolver, 53
    if resolver.count(":") == 1:
        address, _, port_text = resolver.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"MAILWARD_COMPLIANCE_RESOLVER: {resolver!r} is not ADDR[:PORT]")
        port = int(port_text)
    return OperatorSettings(
        reconcile=ReconcileSettings(
            resync_seconds=raw.resync,
            tls_secret_retry_seconds=raw.tls_retry,
            tls_secret_retry_max_seconds=raw.tls_retry_max,
            mta_retry_seconds=raw.mta_retry,
            mta_retry_max_seconds=raw.mta_retry_max,
            dns_retry_seconds=raw.dns_retry,
            dns_retry_max_seconds=raw.dns_retry_max,
            policy_retry_seconds=raw.policy_retry,
            tlsrpt_retry_seconds=raw.tlsrpt_retry,
            concurrency=raw.concurrency,
        ),
        mta_image=raw.mta_image or DEFAULT_MTA_IMAGE,
        mta_resolver=ResolverSettings(
            trust_anchors=parse_trust_anchors(raw.mta_trust_anchors),
            forwarders=parse_forwarders(raw.mta_forwarders),
        ),
        policy=PolicySettings(
            endpoint_url=raw.policy_url or None,
            ca_file=raw.policy_ca_file or None,
            manage_objects=bool(raw.policy_namespace),
            endpoint=EndpointSettings(
                namespace=raw.policy_namespace or endpoint_defaults.namespace,
                image=raw.policy_image or endpoint_defaults.image,
                replicas=raw.policy_replicas,
                ingress_class=raw.policy_ingress_class or None,
                cluster_issuer=raw.policy_cluster_issuer or None,
                host_addresses=addresses(
                    "MAILWARD_POLICY_HOST_NETWORK_ADDRESSES", raw.policy_host_addresses
                ),
            ),
        ),
        tlsrpt=TLSRptSettings(
            collector_url=raw.tlsrpt_url or None,
            deploy=BOOLEAN_WORDS.get(raw.tlsrpt_deploy, False),
            collector=CollectorSettings(
                image=raw.tlsrpt_image or collector_defaults.image,
                storage=raw.tlsrpt_storage or collector_defaults.storage,
                database_secret=raw.tlsrpt_database_secret or None,
                retention_days=raw.tlsrpt_retention_days,
                service_type=raw.tlsrpt_service_type or collector_defaults.service_type,
                operator_namespace=raw.tlsrpt_operator_namespace or None,
                host_network=BOOLEAN_WORDS.get(raw.tlsrpt_host_network, False),
            ),
        ),
        compliance=ComplianceSettings(
            resolver=address,
            resolver_port=port,
            cafile=raw.compliance_ca_file or raw.ca_file or None,
            concurrency=raw.compliance_concurrency,
            heartbeat_seconds=raw.compliance_heartbeat,
            label_selector=raw.compliance_label_selector,
        ),
        metrics_address=raw.metrics_address or None,
        dkim_resolver=(
            _address_port("MAILWARD_DKIM_RESOLVER", raw.dkim_resolver)
            if raw.dkim_resolver
            else (address, port)
        ),
    )


def _address_port(variable: str, text: str) -> tuple[str, int]:
    """`ADDR[:PORT]` (IPv4 or a name; port 53 by default)."""
    address, sep, port = text.partition(":")
    if sep and not port.isdigit():
        raise ValueError(f"{variable}: {text!r} is not ADDR[:PORT]")
    return address, int(port) if sep else 53


def addresses(variable: str, text: str) -> tuple[str, ...]:
    import ipaddress

    found = tuple(a.strip() for a in text.split(",") if a.strip())
    for address in found:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"{variable}: {address!r} is not an IP address") from None
    return found


def system_resolver() -> str | None:
    """The first nameserver of /etc/resolv.conf: where a process without configuration asks."""
    try:
        for line in RESOLV_CONF.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                return words[1]
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class CheckDefaults:
    """Defaults of `mailward check` from the user's environment (documented in its --help)."""

    resolver: str | None
    ca_file: str | None


def check_defaults() -> CheckDefaults:
    return CheckDefaults(
        resolver=os.environ.get("MAILWARD_RESOLVER") or None,
        ca_file=os.environ.get("MAILWARD_CA_FILE") or None,
    )


def collector_database_url() -> str | None:
    """The collector's PostgreSQL URL: it holds a password, so it comes from a Secret through
    the environment rather than from the collector's config file."""
    return os.environ.get("MAILWARD_TLSRPT_DATABASE") or None


def pod_id() -> str | None:
    """The pod's name as the downward API passes it (`POD_ID`): the replica's peering identity."""
    return os.environ.get("POD_ID") or None


def pod_namespace() -> str | None:
    """The namespace the downward API names (`POD_NAMESPACE`), if it does."""
    return os.environ.get("POD_NAMESPACE") or None
