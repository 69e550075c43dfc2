"""Which key every MTA endpoint presents after STARTTLS (port 25), as a DANE client sees it.

After a switch the rollover waits until every endpoint presents the new key: Secret volumes
reach the pods after the kubelet's next sync, and each pod reloads Postfix when they do. An
endpoint that cannot be reached counts as not presenting it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from kubernetes import client

from mailward.compliance.observations import Endpoint
from mailward.compliance.smtpprobe import ProbeError
from mailward.compliance.tlsprobe import handshake
from mailward.rollover.keys import certificate_digest

SMTP_PORT = 25
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class PresentedKey:
    endpoint: str
    # The leaf's SPKI SHA-256, or None with `problem` set.
    spki_sha256: str | None
    problem: str = ""


def _context() -> ssl.SSLContext:
    # Only the presented key matters here; whether it is trusted is what DANE decides.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def presented_key(host: str, address: str, port: int = SMTP_PORT) -> PresentedKey:
    endpoint = Endpoint(host, address, port)
    where = f"{host} ({address}:{port})"
    try:
        result = handshake(endpoint, _context())
    except (ProbeError, ssl.SSLError, OSError) as error:
        return PresentedKey(where, None, f"{type(error).__name__}: {error}")
    if not result.chain:
        return PresentedKey(where, None, "no certificate presented")
    leaf = x509.load_der_x509_certificate(result.chain[0])
    return PresentedKey(where, certificate_digest(leaf))


async def presented_keys(endpoints: Sequence[tuple[str, str]]) -> list[PresentedKey]:
    """One STARTTLS handshake per (host, address), concurrently."""
    return list(
        await asyncio.gather(
            *(asyncio.to_thread(presented_key, host, address) for host, address in endpoints)
        )
    )


def digests_of(keys: Sequence[PresentedKey]) -> frozenset[str]:
    """What the machine compares with the current key; an unreachable endpoint adds a value no
    key has, so the set can only equal {current} when every endpoint presents it."""
    return frozenset(k.spki_sha256 or UNREACHABLE for k in keys)


class MTAEndpoints(Protocol):
    async def of(
        self, namespace: str, maildomain: str, hosts: Sequence[tuple[str, Sequence[str]]]
    ) -> list[tuple[str, str]]: ...


class KubeMTAEndpoints:
    """Where a DANE client reaches the MTA: every MX host at every published address; for MX
    hosts without addresses (pods on the pod network, behind a load balancer), every pod of the
    MailDomain's MTA at its pod IP, so that each pod is checked, not one picked by a Service."""

    def __init__(self, api: client.CoreV1Api | None = None) -> None:
        self._api: Any = api or client.CoreV1Api()

    async def of(
        self, namespace: str, maildomain: str, hosts: Sequence[tuple[str, Sequence[str]]]
    ) -> list[tuple[str, str]]:
        published = [(host, address) for host, addresses in hosts for address in addresses]
        if published:
            return published
        selector = f"mailward.io/maildomain={maildomain},app.kubernetes.io/name=mailward-mta"
        pods = await asyncio.to_thread(
            self._api.list_namespaced_pod, namespace, label_selector=selector
        )
        first = hosts[0][0] if hosts else maildomain
        return [(first, pod.status.pod_ip) for pod in pods.items if pod.status.pod_ip]
