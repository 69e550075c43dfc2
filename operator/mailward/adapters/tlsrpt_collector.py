"""The operator's view of the TLSRPT collector: its evaluation of one domain, over its HTTP API.

The operator asks the collector instead of reading the database itself: the default SQLite file
lives on the collector's ReadWriteOnce volume, which no other pod can mount, and the API keeps
the operator free of database credentials and of the schema (one owner of the data).
"""

from __future__ import annotations

from typing import Protocol

import aiohttp

from mailward.tlsrpt.evaluate import DomainSummary


class CollectorUnavailable(RuntimeError):
    """The collector could not be asked (down, unreachable, or an error answer)."""


class ReportSummarySource(Protocol):
    async def summary(self, namespace: str, domain: str) -> DomainSummary | None:
        """The domain's evaluation by the collector of its namespace; None when that collector
        does not collect for the domain."""
        ...


class CollectorAPI:
    """`base_url` may name the namespace as `{namespace}`: each namespace has its collector
    (e.g. `http://mailward-tlsrpt-api.{namespace}.svc:9108`)."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._base.format(namespace="probe")  # a malformed template fails at start, not later

    async def summary(self, namespace: str, domain: str) -> DomainSummary | None:
        base = self._base.format(namespace=namespace)
        url = f"{base}/api/v1/domains/{domain}/summary"
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.get(url) as response,
            ):
                if response.status == 404:
                    return None
                if response.status != 200:
                    text = (await response.text())[:200]
                    raise CollectorUnavailable(f"{url} answered {response.status}: {text}")
                return DomainSummary.model_validate(await response.json())
        except (aiohttp.ClientError, TimeoutError) as error:
            raise CollectorUnavailable(f"{url}: {error or type(error).__name__}") from None
