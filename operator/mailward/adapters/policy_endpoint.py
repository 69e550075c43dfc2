"""I/O of the mtasts part: fetching what the policy endpoint serves (its objects are applied
through adapters/apply.py).

The fetch is what a sending MTA does (RFC 8461 §3.3), aimed at the endpoint's Service (or, in
the demo and the tests, the local process) rather than at the public name: TLS with SNI
`mta-sts.<domain>`, the certificate verified for that name, Host `mta-sts.<domain>`, redirects
not followed. The operator thereby knows the exact bytes served before the DNS part may
announce their id.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

POLICY_PATH = "/.well-known/mta-sts.txt"
# RFC 8461 §3.3 suggests at most 64 KiB and one minute; the operator waits less than a sender.
MAX_POLICY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Fetched:
    """One fetch: an HTTP status and body, or the reason no answer came."""

    status: int | None
    body: bytes = b""
    error: str | None = None


class PolicyFetcher(Protocol):
    async def fetch(self, domain: str) -> Fetched: ...


class EndpointFetcher:
    """GET the policy from `base_url` (`https://host:port` or `http://host:port`)."""

    def __init__(self, base_url: str, ca_file: str | None = None, timeout: float = 5.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"{base_url!r}: expected https://HOST[:PORT] or http://HOST[:PORT]")
        self._base = f"{parts.scheme}://{parts.netloc}"
        self._tls = parts.scheme == "https"
        self._context = ssl.create_default_context(cafile=ca_file) if self._tls else None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def fetch(self, domain: str) -> Fetched:
        host = f"mta-sts.{domain}"
        extra: dict[str, Any] = {}
        if self._tls:
            extra = {"ssl": self._context, "server_hostname": host}
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.get(
                    self._base + POLICY_PATH,
                    headers={"Host": host},
                    allow_redirects=False,
                    **extra,
                ) as response,
            ):
                body = await response.content.read(MAX_POLICY_BYTES + 1)
                return Fetched(response.status, body)
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as error:
            return Fetched(None, error=f"{type(error).__name__}: {error}"[:300])
