"""The policy endpoint's HTTP(S) server: aiohttp's low-level server, one handler, no routing table.

RFC 8461 §3.3 and what follows from it here:
- the policy is answered 200 with `text/plain`; nothing is ever redirected (a sender must not
  follow a 3xx), an unknown host or path is 404;
- `Cache-Control: no-store`, so no proxy on the way hands out a policy the operator replaced;
- GET and HEAD only; a request body is never read (405 or 400, and the connection is closed);
- request heads are bounded (line, field and header count), every connection has an absolute
  deadline (slowloris), TLS handshakes have their own, and keep-alive is short;
- the Host header must be a DNS name and, over TLS, one the connection's certificate names
  (421 otherwise); nothing from the request (query string with the client's address, path,
  headers) is ever echoed: error bodies are constant strings.
Health and Prometheus metrics live on a separate plain-HTTP listener for the kubelet and the
scraper, never reachable through the Ingress.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mailward.endpoint.catalog import (
    EMPTY,
    POLICY_PREFIX,
    Catalog,
    parse_host_header,
)
from mailward.endpoint.certificates import SNISelector

log = logging.getLogger(__name__)

SERVER_HEADER = "mailward"
Address = tuple[str, int]


@dataclass(frozen=True)
class Limits:
    """Bounds on what one client can make the server hold."""

    connection_seconds: float = 10.0
    handshake_seconds: float = 5.0
    keepalive_seconds: float = 5.0
    max_line_size: int = 4096
    max_field_size: int = 4096
    max_headers: int = 32
    backlog: int = 1024


class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mailward_policy_requests",
            "Requests answered, by document kind and status code.",
            ["kind", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mailward_policy_request_seconds",
            "Time from a parsed request to its response.",
            ["kind"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0),
            registry=self.registry,
        )
        self.domains = Gauge(
            "mailward_policy_domains",
            "Mail domains whose policy is served.",
            registry=self.registry,
        )
        self.withdrawing = Gauge(
            "mailward_policy_withdrawing_domains",
            "Mail domains served with mode none while their MailDomain is deleted.",
            registry=self.registry,
        )
        self.certificates = Gauge(
            "mailward_policy_certificate_names",
            "Host names with a server certificate.",
            registry=self.registry,
        )
        self.updates = Counter(
            "mailward_policy_source_updates",
            "Changes applied from the API server, by source.",
            ["source"],
            registry=self.registry,
        )
        self.source_errors = Counter(
            "mailward_policy_source_errors",
            "Failed lists or broken watches, by source.",
            ["source"],
            registry=self.registry,
        )
        self.expired_connections = Counter(
            "mailward_policy_connections_expired",
            "Connections closed at their deadline (slow or idle clients).",
            registry=self.registry,
        )
        self.unknown_sni = Counter(
            "mailward_policy_tls_unknown_name",
            "TLS handshakes refused: no certificate for the requested name.",
            registry=self.registry,
        )


class _BoundedServer(web.Server):
    """aiohttp's low-level server with an absolute deadline per connection.

    aiohttp bounds the size of a request head but not how long a client may take to send it;
    without a deadline, a few thousand slowloris connections would hold the server forever.
    """

    def __init__(
        self, handler: Any, *, connection_seconds: float, metrics: Metrics, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self._connection_seconds = connection_seconds
        self._metrics = metrics
        self._deadlines: dict[RequestHandler, asyncio.TimerHandle] = {}

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        loop = asyncio.get_running_loop()
        self._deadlines[handler] = loop.call_later(
            self._connection_seconds, self._expire, transport
        )

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        timer = self._deadlines.pop(handler, None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(handler, exc)

    def _expire(self, transport: asyncio.Transport) -> None:
        self._metrics.expired_connections.inc()
        transport.abort()


_NO_STORE = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Server": SERVER_HEADER,
}


def _error(status: int, text: str, *, close: bool = False, **extra: str) -> web.Response:
    response = web.Response(
        status=status,
        text=text + "\n",
        content_type="text/plain",
        headers={**_NO_STORE, **extra},
    )
    if close:
        response.force_close()
    return response


@dataclass
class PolicyServer:
    """The serving state (catalog, certificates) and the listeners."""

    limits: Limits = field(default_factory=Limits)
    metrics: Metrics = field(default_factory=Metrics)
    catalog: Catalog = EMPTY
    sources_synced: set[str] = field(default_factory=set)
    required_sources: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.sni = SNISelector(on_unknown=self.metrics.unknown_sni.inc)
        self._servers: list[asyncio.base_events.Server] = []
        self._low_level: _BoundedServer | None = None
        self._admin_runner: web.AppRunner | None = None

    # -- state ----------------------------------------------------------------------------

    def set_catalog(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.metrics.domains.set(len(catalog.sites))
        self.metrics.withdrawing.set(sum(s.withdrawing for s in catalog.sites.values()))

    @property
    def ready(self) -> bool:
        return self.required_sources <= self.sources_synced

    # -- requests -------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        kind, response = self._respond(request)
        self.metrics.requests.labels(kind, str(response.status)).inc()
        self.metrics.latency.labels(kind).observe(time.perf_counter() - started)
        return response

    def _respond(self, request: web.BaseRequest) -> tuple[str, web.Response]:
        if request.method not in (hdrs.METH_GET, hdrs.METH_HEAD):
            return "other", _error(405, "method not allowed", close=True, Allow="GET, HEAD")
        if request.content_length or hdrs.TRANSFER_ENCODING in request.headers:
            return "other", _error(400, "a request body is not accepted", close=True)
        host = parse_host_header(request.headers.get(hdrs.HOST))
        if host is None:
            return "other", _error(400, "missing or invalid Host header", close=True)
        kind = "policy" if host.startswith(POLICY_PREFIX) else "autoconfig"
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        if ssl_object is not None and host not in self.sni.index.names_of(ssl_object.context):
            return kind, _error(421, "the certificate of this connection does not name that host")
        document = self.catalog.lookup(host, request.raw_path.partition("?")[0])
        if document is None:
            return kind, _error(404, "not found")
        return kind, web.Response(
            body=document.body,
            headers={**_NO_STORE, hdrs.CONTENT_TYPE: document.content_type},
        )

    # -- admin ----------------------------------------------------------------------------

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ready\n")
        missing = ", ".join(sorted(self.required_sources - self.sources_synced))
        return web.Response(status=503, text=f"waiting for the first sync of: {missing}\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})

    # -- listeners ------------------------------------------------------------------------

    async def start(
        self,
        *,
        https: Sequence[Address] = (),
        http: Sequence[Address] = (),
        admin: Address | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        limits = self.limits
        self._low_level = _BoundedServer(
            self.handle,
            connection_seconds=limits.connection_seconds,
            metrics=self.metrics,
            keepalive_timeout=limits.keepalive_seconds,
            max_line_size=limits.max_line_size,
            max_field_size=limits.max_field_size,
            max_headers=limits.max_headers,
            lingering_time=0,
            access_log=None,
        )
        tls = self.sni.listener_context()
        for host, port in https:
            self._servers.append(
                await loop.create_server(
                    self._low_level,
                    host,
                    port,
                    ssl=tls,
                    ssl_handshake_timeout=limits.handshake_seconds,
                    ssl_shutdown_timeout=limits.handshake_seconds,
                    backlog=limits.backlog,
                    reuse_address=True,
                )
            )
        for host, port in http:
            self._servers.append(
                await loop.create_server(
                    self._low_level, host, port, backlog=limits.backlog, reuse_address=True
                )
            )
        if admin is not None:
            app = web.Application()
            app.router.add_get("/healthz", self._healthz)
            app.router.add_get("/readyz", self._readyz)
            app.router.add_get("/metrics", self._metrics)
            self._admin_runner = web.AppRunner(app, access_log=None)
            await self._admin_runner.setup()
            await web.TCPSite(self._admin_runner, admin[0], admin[1]).start()

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self._low_level is not None:
            await self._low_level.shutdown(2.0)
        for server in self._servers:
            await server.wait_closed()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
