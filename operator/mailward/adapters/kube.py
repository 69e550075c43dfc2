"""Reads from the Kubernetes API that the handlers need beyond the watched object itself."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, Protocol, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mailward.reconcile import TLSSecretObservation


def api_message(error: ApiException) -> str:
    """What the API server said, for a condition or a log line (its Status message)."""
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)[:1000]
    except ValueError:
        return str(error.reason)


class SecretObserver(Protocol):
    async def observe_tls_secret(self, namespace: str, name: str) -> TLSSecretObservation: ...


def load_client_config(connections: int | None = None) -> None:
    """In-cluster credentials when running in a pod, the kubeconfig otherwise.

    With `connections`, every API object built without a client of its own shares one
    ApiClient that keeps up to that many connections open. The client's default pool holds
    CPUs x 5 and each `ApiClient()` has its own: with more threads calling at once than that,
    urllib3 opened and discarded a TLS connection per request (bench-scale, 1,000 domains:
    TLS handshakes were a tenth of the operator's busy time, in the API server as well).
    """
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    if connections is not None:
        shared = client.Configuration.get_default_copy()
        shared.connection_pool_maxsize = connections
        client.ApiClient.set_default(client.ApiClient(shared))  # type: ignore[no-untyped-call]


def shared_api_client() -> client.ApiClient:
    """The ApiClient set up by load_client_config (or a new one before it)."""
    return client.ApiClient.get_default()  # type: ignore[no-untyped-call, no-any-return]


class KubeSecretObserver:
    """Looks Secrets up with the official client; metadata and key names only, never values."""

    def __init__(self, api: client.CoreV1Api | None = None) -> None:
        self._api = api or client.CoreV1Api()

    async def observe_tls_secret(self, namespace: str, name: str) -> TLSSecretObservation:
        return await asyncio.to_thread(self._observe, namespace, name)

    def _observe(self, namespace: str, name: str) -> TLSSecretObservation:
        try:
            secret = self._api.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return TLSSecretObservation(name=name, found=False)
            raise
        keys = frozenset(k for k, v in (secret.data or {}).items() if v)
        chain = base64.b64decode((secret.data or {}).get("tls.crt") or "")
        return TLSSecretObservation(
            name=name, found=True, type=secret.type, keys=keys, certificate_pem=chain
        )


class KubeCustomObjects:
    """Reads one custom object of mailward's API group as the API server holds it now."""

    def __init__(self, api: client.ApiClient | None = None) -> None:
        self._api = client.CustomObjectsApi(api or shared_api_client())

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None once it is gone; `namespace` empty for a cluster-scoped one."""
        from mailward.api.v1alpha1 import API_GROUP, API_VERSION

        def read() -> dict[str, Any] | None:
            try:
                if namespace:
                    found = self._api.get_namespaced_custom_object(
                        API_GROUP, API_VERSION, namespace, plural, name
                    )
                else:
                    found = self._api.get_cluster_custom_object(
                        API_GROUP, API_VERSION, plural, name
                    )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            return cast(dict[str, Any], found)

        return await asyncio.to_thread(read)
