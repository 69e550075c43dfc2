"""List-then-watch of Kubernetes objects with asyncio (aiohttp), for the policy endpoint.

The official client's watch blocks a thread per stream and cannot be cancelled; the endpoint
needs two streams (MailDomains, TLS Secrets) that stop with the event loop. Credentials come from
the official client's configuration loading (in-cluster service account or kubeconfig), so
both programs accept the same environments. Only reads happen here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

import aiohttp
from kubernetes import client

from mailward.adapters.kube import load_client_config

log = logging.getLogger(__name__)

Object = dict[str, Any]
WATCH_SECONDS = 240
# A watch line carries one object; a TLS Secret with a long chain is tens of kilobytes.
MAX_LINE = 4 * 1024 * 1024


class ObjectStream(Protocol):
    """Lists and watches one collection."""

    async def list(self, path: str, params: Mapping[str, str]) -> Object: ...

    def watch(self, path: str, params: Mapping[str, str]) -> AsyncIterator[Object]: ...


class KubeHTTP:
    """A minimal async reader of the Kubernetes API."""

    def __init__(self, configuration: client.Configuration) -> None:
        self._cfg = configuration
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._session = aiohttp.ClientSession(
            base_url=configuration.host.rstrip("/") + "/",
            connector=aiohttp.TCPConnector(ssl=context),
            read_bufsize=MAX_LINE,
        )

    @classmethod
    def from_environment(cls) -> KubeHTTP:
        load_client_config()
        return cls(client.Configuration.get_default_copy())

    def _headers(self) -> dict[str, str]:
        # In a pod the service-account token is rotated on disk; the client's hook re-reads it.
        hook = getattr(self._cfg, "refresh_api_key_hook", None)
        if hook is not None:
            hook(self._cfg)
        # In a pod the token is stored as `BearerToken`, from some kubeconfigs as
        # `authorization`: the generated client looks under both, so do we.
        token = self._cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
        return {"Authorization": token} if token else {}

    async def list(self, path: str, params: Mapping[str, str]) -> Object:
        async with self._session.get(
            path.lstrip("/"),
            params=dict(params),
            headers=self._headers(),
            timeout=aiohttp.ClientTimeout(total=60),
        ) as response:
            response.raise_for_status()
            body: Object = await response.json()
            return body

    async def watch(self, path: str, params: Mapping[str, str]) -> AsyncIterator[Object]:
        query = {**params, "watch": "1", "allowWatchBookmarks": "true"}
        query.setdefault("timeoutSeconds", str(WATCH_SECONDS))
        async with self._session.get(
            path.lstrip("/"),
            params=query,
            headers=self._headers(),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=WATCH_SECONDS + 30),
        ) as response:
            response.raise_for_status()
            while line := await response.content.readline():
                if line.strip():
                    yield json.loads(line)

    async def close(self) -> None:
        await self._session.close()


class Reflector:
    """Keeps a local copy of one collection and reports every change of it.

    The copy is handed over whole (`on_change(objects)`), not as events: the consumers recompute
    what they serve from the complete set, which cannot drift from the API server.
    """

    def __init__(
        self,
        stream: ObjectStream,
        path: str,
        on_change: Callable[[list[Object]], None],
        *,
        name: str,
        params: Mapping[str, str] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._stream = stream
        self._path = path
        self._params = dict(params or {})
        self._on_change = on_change
        self._on_error = on_error
        self.name = name
        self.objects: dict[str, Object] = {}
        self.synced = asyncio.Event()

    async def run(self) -> None:
        await list_and_watch(
            self._stream,
            self._path,
            self._params,
            on_list=self._listed,
            on_event=self._changed,
            name=self.name,
            on_error=self._on_error,
        )

    def _listed(self, items: list[Object]) -> None:
        self.objects = {_key(item): item for item in items}
        self._on_change(list(self.objects.values()))
        self.synced.set()

    def _changed(self, kind: str, obj: Object) -> None:
        if kind == "DELETED":
            self.objects.pop(_key(obj), None)
        else:
            self.objects[_key(obj)] = obj
        self._on_change(list(self.objects.values()))


async def list_and_watch(
    stream: ObjectStream,
    path: str,
    params: Mapping[str, str],
    *,
    on_list: Callable[[list[Object]], None],
    on_event: Callable[[str, Object], None],
    name: str,
    on_error: Callable[[], None] | None = None,
) -> None:
    """List `path`, hand the items to `on_list`, then every ADDED, MODIFIED and DELETED event
    to `on_event`; on any failure (network, 410 Gone, a watch ERROR) list again, with backoff.
    Runs until cancelled."""
    backoff = 0.5
    while True:
        try:
            listing = await stream.list(path, params)
            on_list(list(listing.get("items") or []))
            backoff = 0.5
            version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
            while True:
                async for event in stream.watch(path, {**params, "resourceVersion": version}):
                    kind, obj = str(event.get("type")), event.get("object") or {}
                    if kind == "ERROR":
                        raise RuntimeError(f"watch error: {obj.get('message') or obj}")
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if kind != "BOOKMARK":
                        on_event(kind, obj)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # reconnect whatever broke: network, 410 Gone, JSON
            log.warning("%s: %s; relisting in %.1fs", name, error, backoff)
            if on_error is not None:
                on_error()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


def _key(obj: Object) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
