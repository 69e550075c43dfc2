"""Find the DNS provider a MailDomain names, with its TSIG secret, through the Kubernetes API.

The secret is read at every pass (not cached), so a fixed Secret is used at the next retry
without a restart; it goes into the provider object only and is never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any, Protocol, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from mailward.adapters.dns_externaldns import ExternalDNSProvider
from mailward.adapters.dns_provider import DNSProvider, ProviderError
from mailward.adapters.dns_rfc2136 import RFC2136Config, RFC2136Provider
from mailward.api.dnsprovider import (
    CLUSTER_DNS_PROVIDER_PLURAL,
    DNS_PROVIDER_PLURAL,
    ClusterDNSProviderSpec,
    DNSProviderSpec,
)
from mailward.api.v1alpha1 import API_GROUP, API_VERSION, ProviderReference


class ProviderNotFound(ProviderError):
    """The provider object, its Secret or the key in it does not exist, or it is invalid."""


class ProviderResolver(Protocol):
    async def resolve(self, ref: ProviderReference, namespace: str) -> DNSProvider: ...


class KubeProviderResolver:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        self._api = api

    async def resolve(self, ref: ProviderReference, namespace: str) -> DNSProvider:
        return await asyncio.to_thread(self._resolve, ref, namespace)

    def _resolve(self, ref: ProviderReference, namespace: str) -> DNSProvider:
        custom = client.CustomObjectsApi(self._api)
        where = (
            f"{ref.kind} {ref.name!r}"
            if ref.kind == "ClusterDNSProvider"
            else f"{ref.kind} {namespace}/{ref.name}"
        )
        try:
            if ref.kind == "ClusterDNSProvider":
                raw: object = custom.get_cluster_custom_object(
                    API_GROUP, API_VERSION, CLUSTER_DNS_PROVIDER_PLURAL, ref.name
                )
            else:
                raw = custom.get_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, DNS_PROVIDER_PLURAL, ref.name
                )
        except ApiException as error:
            if error.status == 404:
                raise ProviderNotFound(f"{where} (spec.dns.providerRef) does not exist") from None
            raise
        body = cast(dict[str, Any], raw)
        try:
            if ref.kind == "ClusterDNSProvider":
                spec: DNSProviderSpec | ClusterDNSProviderSpec = (
                    ClusterDNSProviderSpec.model_validate(body.get("spec") or {})
                )
            else:
                spec = DNSProviderSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            raise ProviderNotFound(f"{where} is invalid: {error.errors()[0]['msg']}") from None
        description = f"{ref.kind}/{ref.name}"
        if spec.external_dns is not None:
            return ExternalDNSProvider(self._api, description)
        rfc = spec.rfc2136
        assert rfc is not None
        secret_namespace = getattr(rfc.tsig_secret_ref, "namespace", namespace)
        secret_ref = rfc.tsig_secret_ref
        source = f"Secret {secret_namespace}/{secret_ref.name} key {secret_ref.key!r}"
        try:
            secret = client.CoreV1Api(self._api).read_namespaced_secret(
                secret_ref.name, secret_namespace
            )
        except ApiException as error:
            if error.status == 404:
                raise ProviderNotFound(
                    f"{source} (TSIG secret of {where}) does not exist"
                ) from None
            raise
        encoded = (secret.data or {}).get(secret_ref.key)
        if not encoded:
            raise ProviderNotFound(f"{source} (TSIG secret of {where}) has no such key")
        try:
            tsig_secret = base64.b64decode(encoded).decode("ascii").strip()
        except (binascii.Error, UnicodeDecodeError):
            raise ProviderNotFound(f"{source} does not hold a base64 TSIG secret") from None
        config = RFC2136Config(
            host=rfc.nameserver.host,
            port=rfc.nameserver.port,
            key_name=rfc.tsig_key_name,
            algorithm=rfc.tsig_algorithm,
            secret=tsig_secret,
            secret_source=source,
        )
        return RFC2136Provider(config, description)
