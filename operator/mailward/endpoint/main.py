"""`mailward serve-policies`: the policy endpoint fed by watches on the API server.

Sources: every MailDomain of the cluster (read-only), and the `kubernetes.io/tls` Secrets of the
endpoint's own namespace (the certificates for `mta-sts.<domain>` / `autoconfig.<domain>`, the
same Secrets the Ingress objects name). A change to either is served as soon as the watch
delivers it; nothing restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

from mailward.adapters.kube_watch import KubeHTTP, Object, Reflector
from mailward.api.v1alpha1 import API_GROUP, API_VERSION, PLURAL
from mailward.endpoint.catalog import SiteCache, build_catalog
from mailward.endpoint.certificates import CertificateIndex, ServerCertificate, pair_from_secret
from mailward.endpoint.server import Address, Limits, PolicyServer
from mailward.settings import pod_namespace

log = logging.getLogger("mailward.endpoint")

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_NAMESPACE = "mailward-system"


def own_namespace() -> str:
    """The namespace the endpoint runs in: $POD_NAMESPACE, the service account's, or a default."""
    if namespace := pod_namespace():
        return namespace
    with contextlib.suppress(OSError):
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return DEFAULT_NAMESPACE


def parse_address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True)
class EndpointConfig:
    https: tuple[Address, ...]
    http: tuple[Address, ...]
    admin: Address | None
    tls_namespace: str
    tls_selector: str | None = None
    limits: Limits = field(default_factory=Limits)


class _CertificateCache:
    """Contexts by Secret version: a watch event for one Secret reloads that one only."""

    def __init__(self) -> None:
        self._by_version: dict[tuple[str, str], ServerCertificate | None] = {}

    def index(self, secrets: list[Object]) -> CertificateIndex:
        fresh: dict[tuple[str, str], ServerCertificate | None] = {}
        for secret in secrets:
            meta = secret.get("metadata") or {}
            key = (str(meta.get("uid")), str(meta.get("resourceVersion")))
            fresh[key] = (
                self._by_version[key] if key in self._by_version else pair_from_secret(secret)
            )
        self._by_version = fresh
        return CertificateIndex.build(c for c in fresh.values() if c is not None)


async def serve(config: EndpointConfig, stop: asyncio.Event) -> None:
    sources = {"maildomains"} | ({"secrets"} if config.https else set())
    server = PolicyServer(limits=config.limits, required_sources=frozenset(sources))
    metrics = server.metrics
    site_cache: SiteCache = {}
    certificates = _CertificateCache()

    def domains_changed(objects: list[Object]) -> None:
        server.set_catalog(build_catalog(objects, site_cache))
        metrics.updates.labels("maildomains").inc()

    def secrets_changed(objects: list[Object]) -> None:
        server.sni.index = certificates.index(objects)
        metrics.certificates.set(len(server.sni.index.by_name))
        metrics.updates.labels("secrets").inc()

    kube = KubeHTTP.from_environment()
    reflectors = [
        Reflector(
            kube,
            f"apis/{API_GROUP}/{API_VERSION}/{PLURAL}",
            domains_changed,
            name="maildomains",
            on_error=metrics.source_errors.labels("maildomains").inc,
        )
    ]
    if config.https:
        params = {"fieldSelector": "type=kubernetes.io/tls"}
        if config.tls_selector:
            params["labelSelector"] = config.tls_selector
        reflectors.append(
            Reflector(
                kube,
                f"api/v1/namespaces/{config.tls_namespace}/secrets",
                secrets_changed,
                name="secrets",
                params=params,
                on_error=metrics.source_errors.labels("secrets").inc,
            )
        )
    tasks = [asyncio.create_task(r.run(), name=r.name) for r in reflectors]

    async def mark_synced(reflector: Reflector) -> None:
        await reflector.synced.wait()
        server.sources_synced.add(reflector.name)
        log.info("%s: first sync done", reflector.name)

    tasks += [asyncio.create_task(mark_synced(r)) for r in reflectors]
    try:
        await server.start(https=config.https, http=config.http, admin=config.admin)
        log.info(
            "serving policies: https %s, http %s, admin %s",
            config.https,
            config.http,
            config.admin,
        )
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop()
        await kube.close()


def run(config: EndpointConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    asyncio.run(main())
    return 0
