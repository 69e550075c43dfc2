"""pytest plugin: what the DNS publishing tests need around the shared stack.

A MailDomain per test under the signed test zone `example.test` (`<random>.example.test`, so tests
never share names), its TLS Secret from the session CA, a DNSProvider + TSIG Secret pointing at
the stack's BIND, and a reader of BIND's log that counts the UPDATE messages it received.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.name
import dns.rdatatype
import pytest

from mailward.render.dns_records import RRset
from mailward_localstack.controlplane import wait_established
from mailward_localstack.dns import DNSStack
from mailward_localstack.pki import IssuedCert, LocalCA
from tests.fixtures_operator import Kube
from tests.manifests import tls_secret_manifest as tls_secret_manifest
from tests.net import addr

REPO = Path(__file__).resolve().parents[1]
ZONE = "example.test"
SIGNER_TYPES = {"RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "DNSKEY", "CDS", "CDNSKEY", "SOA"}
# BIND logs one "signer ... approved" line per UPDATE message whose TSIG verified, and a
# "tsig verify failure" line per UPDATE (or transfer) with a bad signature.
_UPDATE_APPROVED = re.compile(r"update-security: .* approved")


@dataclass
class PublishSetup:
    namespace: str
    domain: str
    cert: IssuedCert
    manifest: dict[str, Any]


def bind_updates(stack: DNSStack) -> int:
    """UPDATE messages BIND has accepted for processing (TSIG verified) since it started."""
    text = stack.authoritative.process.log_file.read_text(errors="replace")
    return len(_UPDATE_APPROVED.findall(text))


def zone_rrsets(stack: DNSStack) -> dict[tuple[str, str], RRset]:
    """The zone as served now, by AXFR, without what the signer maintains."""
    zone = stack.authoritative.axfr(ZONE)
    found: dict[tuple[str, str], RRset] = {}
    for name, node in zone.nodes.items():
        absolute = name.derelativize(dns.name.from_text(ZONE)).to_text()
        for rdataset in node.rdatasets:
            rdtype = dns.rdatatype.to_text(rdataset.rdtype)
            if rdtype in SIGNER_TYPES or rdtype.startswith("TYPE"):
                continue
            data = tuple(sorted(r.to_text() for r in rdataset))
            found[(absolute, rdtype)] = RRset(absolute, rdtype, rdataset.ttl, data)
    return found


def tsig_secret_manifest(
    namespace: str, secret: str, name: str = "local-bind-tsig"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"secret": base64.b64encode(secret.encode()).decode()},
    }


def dns_provider_manifest(
    stack: DNSStack, namespace: str, name: str = "local-bind"
) -> dict[str, Any]:
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "DNSProvider",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "rfc2136": {
                "nameserver": {
                    "host": stack.authoritative.address,
                    "port": stack.authoritative.port,
                },
                "tsigKeyName": stack.tsig.name,
                "tsigAlgorithm": stack.tsig.algorithm,
                "tsigSecretRef": {"name": "local-bind-tsig", "key": "secret"},
            }
        },
    }


def maildomain_manifest(namespace: str, domain: str, name: str = "example") -> dict[str, Any]:
    return {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "domain": domain,
            "mx": [
                {"host": f"mx1.{domain}", "priority": 10, "addresses": [addr(25)]},
                {"host": f"mx2.{domain}", "priority": 20, "addresses": [addr(26), "::1"]},
            ],
            "tls": {"secretName": "mx-tls"},
            "dns": {
                "providerRef": {"kind": "DNSProvider", "name": "local-bind"},
                "dmarc": {"rua": [f"mailto:dmarc@{domain}"]},
                "dkim": [{"selector": "s1", "keyType": "ed25519", "publicKey": "A" * 44}],
                "srv": {"submissions": {"target": f"mx1.{domain}", "port": 465}},
                "mtaStsEndpoint": {"addresses": [addr(80)]},
            },
            "dane": {"enabled": True},
            "mtaSts": {"mode": "enforce", "maxAge": 604800},
            "tlsRpt": {"rua": [f"mailto:tlsrpt@{domain}"]},
        },
    }


@pytest.fixture
def publish_setup(
    kube: Kube, namespace: str, dns_stack: DNSStack, local_ca: LocalCA
) -> Callable[..., PublishSetup]:
    """Create the TLS Secret, TSIG Secret and DNSProvider; return the MailDomain to apply."""

    def make(*, tsig_secret: str | None = None, apply: bool = True) -> PublishSetup:
        domain = f"t{uuid.uuid4().hex[:10]}.{ZONE}"
        cert = local_ca.issue_server_cert([f"mx1.{domain}", f"mx2.{domain}"])
        kube.apply(tls_secret_manifest(namespace, cert, "mx-tls"))
        kube.apply(tsig_secret_manifest(namespace, tsig_secret or dns_stack.tsig.secret))
        kube.apply(dns_provider_manifest(dns_stack, namespace))
        manifest = maildomain_manifest(namespace, domain)
        if apply:
            kube.apply(manifest)
        return PublishSetup(namespace, domain, cert, manifest)

    return make


@pytest.fixture(scope="session")
def dnsendpoint_crd(kube: Kube) -> None:
    """external-dns' DNSEndpoint CRD (reduced copy kept in tests/crds)."""
    kube.kubectl(
        "apply", "-f", str(REPO / "tests" / "crds" / "externaldns.k8s.io_dnsendpoints.yaml")
    )
    wait_established(kube.kubeconfig, "dnsendpoints.externaldns.k8s.io")
