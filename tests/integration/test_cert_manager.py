"""CertificateRequests with the operator's own key, signed by real cert-manager on the real node.

What issue #14's TLSA rollover needs from cert-manager (docs: ../shared/research/tlsa-rollover.md
§3, option A): a key the operator holds, a `CertificateRequest` with its CSR (`spec.request`),
`issuerRef`, `duration` and `usages`, the built-in approver's `Approved`, then `Ready` with
`status.certificate` and `status.ca`, or a terminal failure. cert-manager runs as a pod
(tests/fixtures_certmanager.py); its CA issuers sign with the cluster's local CA. Each test
prints how long issuance took, from the create to the outcome.

Without cert-manager's webhook (see mailward_localstack/certmanager.py), a CSR whose signature
does not verify is accepted by the API server, approved, and then failed by the CA signer:
`Ready=False`, reason `Failed`. `InvalidRequest` is set only by external issuers.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from mailward_localstack.certmanager import (
    CLUSTER_ISSUER,
    CertManager,
    certificate_request_manifest,
    condition,
    csr_pem,
    issued_chain,
    request_outcome,
    spki_der,
    wait_for_certificate_request,
)
from mailward_localstack.controlplane import kubectl
from mailward_localstack.node import pod_processes
from mailward_localstack.stack import Stack

pytestmark = [pytest.mark.controlplane, pytest.mark.node]

NAMESPACE = "cm-requests"
NAMES = ["mx1.certs.example.test", "mx2.certs.example.test"]
USAGES = ["digital signature", "key encipherment", "server auth"]


@pytest.fixture(scope="module")
def namespace(cluster: Stack, cert_manager: CertManager) -> Iterator[str]:
    kubectl(cluster.kubeconfig, "create", "namespace", NAMESPACE)
    try:
        yield NAMESPACE
    finally:
        kubectl(cluster.kubeconfig, "delete", "namespace", NAMESPACE, "--wait=false", check=False)


def _request(
    stack: Stack, name: str, namespace: str, csr: bytes, ref: dict[str, str]
) -> tuple[dict[str, Any], float]:
    manifest = certificate_request_manifest(name, namespace, csr, ref, duration="1h", usages=USAGES)
    began = time.monotonic()
    kubectl(stack.kubeconfig, "create", "-f", "-", input=json.dumps(manifest))
    cr = wait_for_certificate_request(stack.kubeconfig, namespace, name, timeout=60)
    return cr, time.monotonic() - began


def _status_reason(cr: dict[str, Any], kind: str) -> tuple[str, str] | None:
    found = condition(cr, kind)
    return (found["status"], found.get("reason", "")) if found else None


def _check_issued(cr: dict[str, Any], key: ec.EllipticCurvePrivateKey, stack: Stack) -> None:
    # The built-in approver's reason, then the CA signer's.
    assert _status_reason(cr, "Approved") == ("True", "cert-manager.io"), cr["status"]
    assert _status_reason(cr, "Ready") == ("True", "Issued"), cr["status"]
    assert request_outcome(cr) == "Issued"

    chain = issued_chain(cr)
    leaf = chain[0]
    # The certificate is for the operator's key, not one cert-manager made.
    assert spki_der(leaf.public_key()) == spki_der(key.public_key())
    # It chains to the local CA, which status.ca names.
    leaf.verify_directly_issued_by(stack.ca.cert)
    ca_pem = base64.b64decode(cr["status"]["ca"])
    assert x509.load_pem_x509_certificate(ca_pem) == stack.ca.cert
    assert leaf.issuer == stack.ca.cert.subject
    # The names, the usages and the duration asked for.
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == NAMES
    key_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert key_usage.digital_signature
    assert key_usage.key_encipherment
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is False
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == dt.timedelta(hours=1), lifetime


def test_cluster_issuer_signs_the_operators_csr(
    cluster: Stack, cert_manager: CertManager, namespace: str
) -> None:
    assert cert_manager.issuer_ref == {
        "group": "cert-manager.io",
        "kind": "ClusterIssuer",
        "name": CLUSTER_ISSUER,
    }
    key = ec.generate_private_key(ec.SECP256R1())
    cr, took = _request(cluster, "mx-next", namespace, csr_pem(key, NAMES), cert_manager.issuer_ref)
    print(f"\n[cert-manager] ClusterIssuer: issued in {took:.2f}s (create to Ready)")
    _check_issued(cr, key, cluster)


def test_namespaced_issuer_signs_too(
    cluster: Stack, cert_manager: CertManager, namespace: str
) -> None:
    began = time.monotonic()
    ref = cert_manager.create_ca_issuer(namespace, "local-ca")
    print(f"\n[cert-manager] Issuer {namespace}/local-ca Ready in {time.monotonic() - began:.2f}s")
    assert ref == {"group": "cert-manager.io", "kind": "Issuer", "name": "local-ca"}
    key = ec.generate_private_key(ec.SECP256R1())
    cr, took = _request(cluster, "mx-issuer", namespace, csr_pem(key, NAMES), ref)
    print(f"[cert-manager] Issuer: issued in {took:.2f}s (create to Ready)")
    _check_issued(cr, key, cluster)


def test_a_csr_that_does_not_verify_fails(
    cluster: Stack, cert_manager: CertManager, namespace: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    good = x509.load_pem_x509_csr(csr_pem(key, NAMES))
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the signature's last byte: still DER, no longer a valid signature
    bad = x509.load_der_x509_csr(bytes(der))
    assert not bad.is_signature_valid
    cr, took = _request(
        cluster,
        "mx-bad-csr",
        namespace,
        bad.public_bytes(serialization.Encoding.PEM),
        cert_manager.issuer_ref,
    )
    print(f"\n[cert-manager] bad CSR: failed in {took:.2f}s (create to Ready=False)")
    assert request_outcome(cr) == "Failed", cr["status"]
    assert _status_reason(cr, "Approved") == ("True", "cert-manager.io"), cr["status"]
    assert _status_reason(cr, "Ready") == ("False", "Failed"), cr["status"]
    message = (condition(cr, "Ready") or {}).get("message", "")
    assert "Error generating certificate template" in message, message
    assert "verification" in message, message  # x509: ECDSA verification failure
    assert cr["status"].get("failureTime"), cr["status"]
    assert not cr["status"].get("certificate")
    assert condition(cr, "InvalidRequest") is None  # built-in issuers never set it


def test_the_controller_listens_on_its_loopback_address_only(
    cluster: Stack, cert_manager: CertManager
) -> None:
    """Every inet socket of the controller process has both ends in 127.0.0.0/8, and it
    listens on exactly its metrics and health addresses."""
    flag = f"--metrics-listen-address={cert_manager.addresses.metrics}"
    pids = [
        pid
        for pid in pod_processes(cluster.state_dir / "node")
        if flag.encode() in _read(Path(f"/proc/{pid}/cmdline")).split(b"\0")
    ]
    assert len(pids) == 1, pids
    inodes = {
        str(fd.readlink())[8:-1]
        for fd in Path(f"/proc/{pids[0]}/fd").iterdir()
        if str(fd.readlink()).startswith("socket:[")
    }
    ends = [
        (_address(columns[1]), _address(columns[2]), columns[3])
        for table in ("tcp", "tcp6", "udp", "udp6")
        for columns in (line.split() for line in _lines(Path(f"/proc/net/{table}")))
        if columns[9] in inodes
    ]
    assert ends
    assert all(a.startswith("127.") and b.startswith(("127.", "0.0.0.0:")) for a, b, _ in ends)
    listening = sorted(local for local, _, state in ends if state == "0A")  # TCP_LISTEN
    assert listening == [cert_manager.addresses.metrics, cert_manager.addresses.healthz]
    print(f"\n[cert-manager] controller sockets: {sorted({e[:2] for e in ends})}")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""  # the process ended meanwhile


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:]


def _address(hex_address: str) -> str:
    """`0100007F:1F90` -> `127.0.0.1:8080` (an IPv6 address stays hex, and fails the test)."""
    host, _, port = hex_address.partition(":")
    if len(host) != 8:
        return f"[{host}]:{int(port, 16)}"
    return ".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0)) + f":{int(port, 16)}"
