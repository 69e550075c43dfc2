"""MailDomain manifests shared by the unit tier (pydantic) and the API-server tier (CRD + CEL).

Each invalid case names the field path that the rejection must mention, so both tiers prove the
same thing: a person reading the error knows which field to fix.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailward_localstack.pki import IssuedCert

Manifest = dict[str, Any]


def valid_maildomain(name: str = "example", namespace: str = "default") -> Manifest:
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "domain": "example.test",
            "mx": [
                {"host": "mx1.example.test", "priority": 10, "addresses": ["127.77.0.25"]},
                {"host": "mx2.example.test", "priority": 20, "addresses": ["::1"]},
            ],
            "tls": {"secretName": "mx-example-test-tls"},
            "dns": {"providerRef": {"kind": "DNSProvider", "name": "local-bind"}},
            "dane": {"enabled": True},
            "mtaSts": {"mode": "enforce", "maxAge": 604800},
            "tlsRpt": {"rua": ["mailto:tlsrpt@example.test", "https://reports.example.test/v1"]},
            "compliance": {"profile": "tr-03108", "interval": "30m"},
        },
    }


def minimal_maildomain(name: str = "minimal", namespace: str = "default") -> Manifest:
    """Only the required fields: everything else comes from defaults."""
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "domain": "minimal.test",
            "mx": [{"host": "mx.minimal.test"}],
            "tls": {"secretName": "mx-minimal-test-tls"},
        },
    }


@dataclass(frozen=True)
class InvalidCase:
    id: str
    mutate: Callable[[dict[str, Any]], None]
    field: str
    # Where only the API server can tell (transition rules need the old object) or only the
    # operator's model can (full URI grammar): "both", "apiserver" or "model".
    tier: str = "both"

    def manifest(self, name: str = "invalid", namespace: str = "default") -> Manifest:
        body = valid_maildomain(name, namespace)
        self.mutate(body["spec"])
        return body


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        node: Any = spec
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        node: Any = spec
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return mutate


def _duplicate_mx(spec: dict[str, Any]) -> None:
    spec["mx"].append(copy.deepcopy(spec["mx"][0]))


def _many_mx(spec: dict[str, Any]) -> None:
    spec["mx"] = [{"host": f"mx{i}.example.test"} for i in range(11)]


def _host_network_without_addresses(spec: dict[str, Any]) -> None:
    for entry in spec["mx"]:
        entry.pop("addresses", None)
    spec["mta"] = {"hostNetwork": True}


INVALID_CASES: list[InvalidCase] = [
    InvalidCase("domain-uppercase", _set("domain", "Example.TEST"), "spec.domain"),
    InvalidCase("domain-underscore", _set("domain", "ex_ample.test"), "spec.domain"),
    InvalidCase("domain-single-label", _set("domain", "localhost"), "spec.domain"),
    InvalidCase("domain-trailing-dot", _set("domain", "example.test."), "spec.domain"),
    InvalidCase("domain-label-too-long", _set("domain", "a" * 64 + ".test"), "spec.domain"),
    InvalidCase(
        "domain-too-long", _set("domain", ".".join(["a" * 60] * 5) + ".test"), "spec.domain"
    ),
    InvalidCase("domain-ip-literal", _set("domain", "192.0.2.1"), "spec.domain"),
    InvalidCase("domain-missing", _delete("domain"), "spec.domain"),
    InvalidCase("mx-empty", _set("mx", []), "spec.mx"),
    InvalidCase("mx-too-many", _many_mx, "spec.mx"),
    InvalidCase("mx-duplicate-host", _duplicate_mx, "spec.mx"),
    InvalidCase("mx-host-ip-literal", _set("mx.0.host", "192.0.2.1"), "spec.mx[0].host"),
    InvalidCase("mx-host-wildcard", _set("mx.0.host", "*.example.test"), "spec.mx[0].host"),
    InvalidCase("mx-priority-too-high", _set("mx.0.priority", 70000), "spec.mx[0].priority"),
    InvalidCase("mx-priority-negative", _set("mx.0.priority", -1), "spec.mx[0].priority"),
    InvalidCase(
        "mx-address-invalid", _set("mx.0.addresses", ["999.1.1.1"]), "spec.mx[0].addresses[0]"
    ),
    InvalidCase(
        "mx-address-duplicate",
        _set("mx.0.addresses", ["127.0.0.1", "127.0.0.1"]),
        "spec.mx[0].addresses",
    ),
    InvalidCase(
        "mx-addresses-too-many",
        _set("mx.0.addresses", [f"192.0.2.{i}" for i in range(9)]),
        "spec.mx[0].addresses",
    ),
    InvalidCase("tls-missing", _delete("tls"), "spec.tls"),
    InvalidCase(
        "tls-secret-name-invalid", _set("tls.secretName", "Bad_Name"), "spec.tls.secretName"
    ),
    InvalidCase("tls-secret-and-issuer", _set("tls.issuerRef", {"name": "ca"}), "spec.tls"),
    InvalidCase(
        "tls-issuer-kind-unknown",
        _set("tls", {"issuerRef": {"name": "ca", "kind": "Vault"}}),
        "spec.tls.issuerRef.kind",
    ),
    InvalidCase("tls-duration-too-short", _set("tls.duration", "30m"), "spec.tls.duration"),
    InvalidCase(
        "tls-renew-before-not-shorter",
        _set("tls", {"issuerRef": {"name": "ca"}, "duration": "1h", "renewBefore": "2h"}),
        "spec.tls",
    ),
    InvalidCase(
        "dane-rollover-margin-invalid",
        _set("dane", {"rollover": {"margin": "5 minutes"}}),
        "spec.dane.rollover.margin",
    ),
    InvalidCase(
        "dns-provider-kind-unknown",
        _set("dns.providerRef.kind", "Route53"),
        "spec.dns.providerRef.kind",
    ),
    InvalidCase(
        "dns-provider-name-missing", _delete("dns.providerRef.name"), "spec.dns.providerRef.name"
    ),
    InvalidCase(
        "dns-tlsrpt-collector-both",
        _set("dns.tlsRptCollector", {"addresses": ["192.0.2.26"], "cname": "c.example.test"}),
        "spec.dns.tlsRptCollector",
    ),
    InvalidCase(
        "dns-tlsrpt-collector-address-invalid",
        _set("dns.tlsRptCollector", {"addresses": ["192.0.2.300"]}),
        "spec.dns.tlsRptCollector.addresses[0]",
    ),
    InvalidCase("dane-enabled-not-boolean", _set("dane.enabled", "yes"), "spec.dane.enabled"),
    InvalidCase("mta-sts-mode-unknown", _set("mtaSts.mode", "strict"), "spec.mtaSts.mode"),
    InvalidCase("mta-sts-max-age-too-large", _set("mtaSts.maxAge", 31557601), "spec.mtaSts.maxAge"),
    InvalidCase("mta-sts-max-age-negative", _set("mtaSts.maxAge", -1), "spec.mtaSts.maxAge"),
    InvalidCase(
        "tlsrpt-rua-http",
        _set("tlsRpt.rua", ["http://reports.example.test/"]),
        "spec.tlsRpt.rua[0]",
    ),
    InvalidCase(
        "tlsrpt-rua-unencoded-comma",
        _set("tlsRpt.rua", ["mailto:a@example.test,mailto:b@example.test"]),
        "spec.tlsRpt.rua[0]",
    ),
    InvalidCase(
        "tlsrpt-rua-too-many",
        _set("tlsRpt.rua", [f"mailto:r{i}@example.test" for i in range(5)]),
        "spec.tlsRpt.rua",
    ),
    InvalidCase(
        "compliance-profile-unknown", _set("compliance.profile", "pci"), "spec.compliance.profile"
    ),
    InvalidCase(
        "compliance-interval-too-short",
        _set("compliance.interval", "30s"),
        "spec.compliance.interval",
    ),
    InvalidCase(
        "compliance-interval-not-a-duration",
        _set("compliance.interval", "1 day"),
        "spec.compliance.interval",
    ),
    InvalidCase("unknown-field", _set("smtpBanner", "hello"), "spec.smtpBanner"),
    InvalidCase(
        "mta-host-network-without-addresses",
        _host_network_without_addresses,
        "spec.mta.hostNetwork",
    ),
    InvalidCase(
        "tlsrpt-rua-mailbox-misplaced-dots",
        _set("tlsRpt.rua", ["mailto:..reports@example.test"]),
        "spec.tlsRpt.rua[0]",
        tier="model",
    ),
]


def tls_secret_manifest(namespace: str, cert: IssuedCert, name: str) -> Manifest:
    """A `kubernetes.io/tls` Secret holding `cert`'s chain and key."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {
            "tls.crt": base64.b64encode(cert.chain_file.read_bytes()).decode(),
            "tls.key": base64.b64encode(cert.key_file.read_bytes()).decode(),
        },
    }
