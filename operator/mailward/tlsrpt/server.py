"""The collector process: SMTP and HTTPS intake, the internal API, metrics, retention.

Everything runs on one asyncio loop; parsing and the database commit run in worker threads so
that one large report does not stall the other connections. An input is acknowledged (SMTP 250,
HTTP 201/200) only after the database committed it, so a crash never loses an acknowledged
report. A refused input is answered with the reason and, when it got as far as its content,
parked in the database with that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mailward.settings import collector_database_url
from mailward.tlsrpt.attribution import ServedNames, attribute, report_domain_of_host
from mailward.tlsrpt.certificates import ServedCertificates
from mailward.tlsrpt.config import CollectorConfig, Listen
from mailward.tlsrpt.evaluate import summary_for
from mailward.tlsrpt.mail import dkim_verdict, extract, resolver_dnsfunc
from mailward.tlsrpt.model import Report
from mailward.tlsrpt.parse import ReportRejected, parse_report
from mailward.tlsrpt.store import Envelope as StoredEnvelope
from mailward.tlsrpt.store import Store, open_store

log = logging.getLogger("mailward.tlsrpt")

HTTPS_TYPES = {"application/tlsrpt+json": False, "application/tlsrpt+gzip": True}
RATE_TABLE_SIZE = 65536


@dataclass(frozen=True)
class Outcome:
    status: str  # "stored", "duplicate", "rejected"
    detail: str
    code: str = ""


class RateLimiter:
    """A token bucket per sending address; the table is bounded (oldest addresses dropped)."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, stamp = self._buckets.pop(address, (self._burst, now))
        tokens = min(self._burst, tokens + (now - stamp) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[address] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > RATE_TABLE_SIZE:
            self._buckets.popitem(last=False)
        return allowed


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions = Counter(
            "mailward_tlsrpt_sessions",
            "TLS sessions reported, by policy domain, policy type and outcome (summary counts).",
            ["domain", "policy_type", "outcome"],
            registry=self.registry,
        )
        self.failures = Counter(
            "mailward_tlsrpt_failed_sessions",
            "Failed TLS sessions reported in failure-details, by RFC 8460 result type.",
            ["domain", "policy_type", "result_type"],
            registry=self.registry,
        )
        self.reports = Counter(
            "mailward_tlsrpt_reports",
            "Reports received, by transport and outcome (stored, duplicate, rejected).",
            ["transport", "outcome"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "mailward_tlsrpt_rejections",
            "Inputs refused, by transport and reason code.",
            ["transport", "code"],
            registry=self.registry,
        )
        self.parked = Gauge(
            "mailward_tlsrpt_parked_reports",
            "Inputs parked with a reason.",
            registry=self.registry,
        )

    def count_report(self, report: Report, managed: set[str], stored_as: Sequence[str]) -> None:
        for result, domain in zip(report.policies, stored_as, strict=True):
            if domain not in managed:
                continue
            policy_type = result.policy.policy_type
            summary = result.summary
            self.sessions.labels(domain, policy_type, "successful").inc(
                summary.total_successful_session_count
            )
            self.sessions.labels(domain, policy_type, "failed").inc(
                summary.total_failure_session_count
            )
            for detail in result.failure_details:
                self.failures.labels(domain, policy_type, detail.result_type).inc(
                    detail.failed_session_count
                )


class Collector:
    def __init__(self, config: CollectorConfig, store: Store | None = None) -> None:
        self.config = config
        self.store: Store = store or open_store(config.database)
        self.metrics = Metrics()
        self.managed = {d.lower() for d in config.domains}
        self.served = ServedNames.of(config.domains, config.mx_hosts)
        self.mailbox_domains = {d.lower() for d in config.mailbox_domains}
        self.limits = config.limits.parse_limits()
        self.rates = RateLimiter(config.limits.reports_per_minute, config.limits.burst)
        self._dnsfunc = resolver_dnsfunc(config.dkim_resolver) if config.dkim_resolver else None
        self._servers: list[Any] = []
        self._runners: list[web.AppRunner] = []
        self.metrics.parked.set(self.store.count("parked"))
        self.certificates = ServedCertificates(config.certificates) if config.certificates else None

    # -- the intake pipeline shared by SMTP and HTTPS ------------------------------------------

    def _attribute(self, report: Report, report_domain: str | None) -> list[str]:
        """Per policy, the name its rows are stored under (tlsrpt/attribution.py); refused when
        no policy is about a domain this collector serves or an MX host of one."""
        attributions = [
            attribute(r.policy.policy_domain, r.policy.policy_type, report_domain, self.served)
            for r in report.policies
        ]
        if not any(a.accepted for a in attributions):
            domains = report.policy_domains()
            raise ReportRejected(
                f"policy domain {', '.join(domains)} is not managed by this collector (nor an "
                "MX host of a managed domain)",
                code="unmanaged",
            )
        return [
            a.stored_as or r.policy.policy_domain
            for a, r in zip(attributions, report.policies, strict=True)
        ]

    def _ingest_mail(self, message: bytes, peer: str) -> Outcome:
        try:
            mail = extract(message, self.limits)
            stored_as = self._attribute(mail.report, mail.report_domain)
        except ReportRejected as error:
            return self._reject("smtp", peer, error, message)
        dkim, signer = dkim_verdict(message, self._dnsfunc)
        notes = tuple(mail.notes)
        if mail.report_domain in stored_as:
            # A DANE report names the MX host, not the TLS-Report-Domain: that is no anomaly.
            notes = tuple(n for n in notes if repr(mail.report_domain) not in n)
        envelope = StoredEnvelope(
            "smtp", peer, mail.submitter, mail.report_domain, dkim, signer, notes
        )
        return self._store(mail.report, envelope, stored_as)

    def _ingest_https(self, body: bytes, gzipped: bool, peer: str, host: str = "") -> Outcome:
        # An upload names no domain; the `tlsrpt.<domain>` host it was sent to does.
        report_domain = report_domain_of_host(host, self.served) if host else None
        try:
            report = parse_report(body, gzipped=gzipped, limits=self.limits)
            stored_as = self._attribute(report, report_domain)
        except ReportRejected as error:
            return self._reject("https", peer, error, body)
        # No submitter header over HTTPS; the organisation names the submitter (RFC 8460 §4.4
        # makes report-id unique per reporting organisation).
        submitter = report.organization_name.strip().lower()
        domain = report_domain or stored_as[0]
        return self._store(report, StoredEnvelope("https", peer, submitter, domain), stored_as)

    def _store(self, report: Report, envelope: StoredEnvelope, stored_as: list[str]) -> Outcome:
        if not self.store.add_report(report, envelope, stored_as=stored_as):
            self.metrics.reports.labels(envelope.transport, "duplicate").inc()
            return Outcome("duplicate", f"report {report.report_id!r} is stored already")
        self.metrics.reports.labels(envelope.transport, "stored").inc()
        self.metrics.count_report(report, self.managed, stored_as)
        return Outcome("stored", f"report {report.report_id!r} stored")

    def _reject(self, transport: str, peer: str, error: ReportRejected, data: bytes) -> Outcome:
        self.store.park(
            transport=transport, peer=peer, code=error.code, reason=str(error), data=data
        )
        self.metrics.parked.inc()
        return self.refuse(transport, error.code, str(error))

    def refuse(self, transport: str, code: str, reason: str) -> Outcome:
        self.metrics.reports.labels(transport, "rejected").inc()
        self.metrics.rejections.labels(transport, code).inc()
        log.info("refused a %s input: %s", transport, reason)
        return Outcome("rejected", reason, code)

    async def ingest_mail(self, message: bytes, peer: str) -> Outcome:
        return await asyncio.to_thread(self._ingest_mail, message, peer)

    async def ingest_https(self, body: bytes, gzipped: bool, peer: str, host: str = "") -> Outcome:
        return await asyncio.to_thread(self._ingest_https, body, gzipped, peer, host)

    # -- servers --------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        tls = self.certificates.context if self.certificates else None
        handler = SMTPHandler(self)
        limits = self.config.limits

        def smtp_factory() -> SMTP:
            return BoundedSMTP(
                handler,
                data_guard=limits.message_bytes + DATA_SLACK,
                hostname=self.config.hostname,
                data_size_limit=limits.message_bytes,
                tls_context=tls,
                require_starttls=False,  # RFC 8460 §5.3: reports come even when TLS fails
                decode_data=False,
                timeout=120,
                ident="mailward TLSRPT collector",
            )

        smtp = self.config.smtp
        self._servers.append(
            await loop.create_server(smtp_factory, smtp.addresses(), smtp.port, reuse_address=True)
        )
        await self._start_web(intake_app(self), self.config.https, tls)
        await self._start_web(api_app(self), self.config.api, None)
        log.info(
            "collecting TLS reports: SMTP %s:%s, HTTPS %s:%s, API %s:%s",
            ",".join(smtp.addresses()),
            smtp.port,
            ",".join(self.config.https.addresses()),
            self.config.https.port,
            ",".join(self.config.api.addresses()),
            self.config.api.port,
        )

    async def _start_web(
        self, app: web.Application, listen: Listen, tls: ssl.SSLContext | None
    ) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for host in listen.addresses():
            await web.TCPSite(runner, host, listen.port, ssl_context=tls).start()
        self._runners.append(runner)

    async def expire_forever(self) -> None:
        while True:
            cutoff = time.time() - self.config.retention_days * 86400
            removed = await asyncio.to_thread(self.store.expire, cutoff)
            if removed:
                log.info("retention: removed %d reports and parked inputs", removed)
            await asyncio.sleep(3600)

    async def reload_certificates_forever(self) -> None:
        while self.certificates is not None:
            await asyncio.sleep(self.config.certificate_reload_seconds)
            await asyncio.to_thread(self.certificates.reload)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for runner in self._runners:
            await runner.cleanup()
        self.store.close()


DATA_END = b"\r\n.\r\n"
# How far past the message limit the body is still handed to aiosmtpd (which then answers 552).
DATA_SLACK = 1024 * 1024


class BoundedSMTP(SMTP):
    """aiosmtpd's SMTP with the message body bounded in memory, whatever its line structure.

    aiosmtpd discards a too-large body line by line, but keeps the fragments of one line without
    CRLF until the line ends: a 50 MB body with no line break would be held whole. Past the
    limit (plus some slack) the bytes are dropped here, before aiosmtpd's stream buffer, while
    looking for the end of DATA; then aiosmtpd gets the terminator and answers as usual.
    """

    def __init__(self, *args: Any, data_guard: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._data_guard = data_guard
        self._in_data = False
        self._discarding = False
        self._data_seen = 0
        self._tail = b""

    async def smtp_DATA(self, arg: str) -> None:
        self._in_data, self._discarding, self._data_seen, self._tail = True, False, 0, b""
        try:
            await super().smtp_DATA(arg)
        finally:
            self._in_data = self._discarding = False

    def data_received(self, data: bytes) -> None:
        if not self._in_data:
            super().data_received(data)
            return
        if not self._discarding:
            self._data_seen += len(data)
            if self._data_seen <= self._data_guard:
                super().data_received(data)
                return
            self._discarding = True
        window = self._tail + data
        end = window.find(DATA_END)
        if end < 0:
            self._tail = window[-(len(DATA_END) - 1) :]
            return
        self._in_data = self._discarding = False
        super().data_received(DATA_END + window[end + len(DATA_END) :])


class SMTPHandler:
    """aiosmtpd hooks: refuse early (unknown mailbox, flood), acknowledge only what is stored."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        peer = _peer(session)
        if not self.collector.rates.allow(peer):
            self.collector.refuse("smtp", "rate-limited", f"too many reports from {peer}")
            return f"450 4.7.1 Too many reports from {peer}; try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        domain = parseaddr(address)[1].rpartition("@")[2].lower().rstrip(".")
        if domain not in self.collector.mailbox_domains:
            self.collector.refuse("smtp", "unknown-mailbox", f"no report mailbox at {domain}")
            return f"550 5.1.1 <{address}>: no TLS report mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        data = content if isinstance(content, bytes) else content.encode()
        outcome = await self.collector.ingest_mail(data, _peer(session))
        if outcome.status == "rejected":
            # Permanent: the same message would be refused again. Kept aside with the reason.
            return f"550 5.6.0 Report refused: {_one_line(outcome.detail)}"
        return f"250 2.0.0 {_one_line(outcome.detail)}"


def _peer(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def _one_line(text: str, limit: int = 400) -> str:
    return " ".join(text.split())[:limit]


def intake_app(collector: Collector) -> web.Application:
    limits = collector.config.limits

    async def receive(request: web.Request) -> web.Response:
        peer = request.remote or "unknown"
        if not collector.rates.allow(peer):
            collector.refuse("https", "rate-limited", f"too many reports from {peer}")
            return web.Response(
                status=429, text=f"too many reports from {peer}\n", headers={"Retry-After": "60"}
            )
        content_type = request.content_type.lower()
        if content_type not in HTTPS_TYPES:
            outcome = collector.refuse(
                "https",
                "wrong-type",
                f"Content-Type {content_type!r}: use application/tlsrpt+json or "
                "application/tlsrpt+gzip (RFC 8460 §5.4)",
            )
            return web.Response(status=415, text=outcome.detail + "\n")
        body = bytearray()
        # Read in chunks and stop at the limit: a 50 MB body is never held whole.
        async for chunk in request.content.iter_chunked(65536):
            body += chunk
            if len(body) > limits.compressed_bytes:
                outcome = collector.refuse(
                    "https",
                    "too-large",
                    f"the report is larger than {limits.compressed_bytes} bytes",
                )
                return web.Response(
                    status=413, text=outcome.detail + "\n", headers={"Connection": "close"}
                )
        outcome = await collector.ingest_https(
            bytes(body), HTTPS_TYPES[content_type], peer, request.host
        )
        if outcome.status == "rejected":
            return web.Response(status=400, text=outcome.detail + "\n")
        return web.Response(
            status=201 if outcome.status == "stored" else 200, text=outcome.detail + "\n"
        )

    app = web.Application(client_max_size=limits.compressed_bytes)
    app.router.add_post("/", receive)
    app.router.add_post("/{path:.*}", receive)
    return app


def api_app(collector: Collector) -> web.Application:
    """The collector's internal API (cluster-internal port): evaluations, parked inputs, metrics."""

    async def summary(request: web.Request) -> web.Response:
        domain = request.match_info["domain"].lower()
        if domain not in collector.managed:
            return web.json_response({"error": f"{domain} is not managed here"}, status=404)
        result = await asyncio.to_thread(summary_for, collector.store, domain, int(time.time()))
        return web.json_response(result.model_dump(mode="json", by_alias=True))

    async def parked(request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(collector.store.parked, 100))

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(collector.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/api/v1/domains/{domain}/summary", summary)
    app.router.add_get("/api/v1/parked", parked)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(config: CollectorConfig) -> None:
    collector = Collector(config)
    await collector.start()
    background = [
        asyncio.create_task(collector.expire_forever()),
        asyncio.create_task(collector.reload_certificates_forever()),
    ]
    # As PID 1 of its container the process would ignore SIGTERM and wait for the kill at the
    # end of the grace period; stopping at once closes the store cleanly.
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await collector.stop()


def run(config_path: Path) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = CollectorConfig.load(config_path)
    # A PostgreSQL URL holds a password: it comes from a Secret through the environment.
    database = collector_database_url()
    if database:
        config = config.model_copy(update={"database": database})
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return 0
