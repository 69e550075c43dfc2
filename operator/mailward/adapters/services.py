"""The external address a Service of type LoadBalancer was given, as its controller reports it.

Read by name when a MailDomain is reconciled (the same moments the collector is applied), not
watched: an address that is still pending is asked for again after a short delay.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mailward.adapters.kube import shared_api_client


@dataclass(frozen=True)
class LoadBalancerIngress:
    """`status.loadBalancer.ingress`: addresses and host names, empty while pending."""

    ips: tuple[str, ...] = ()
    hostnames: tuple[str, ...] = ()


class ServiceIngressReader(Protocol):
    async def load_balancer(self, namespace: str, name: str) -> LoadBalancerIngress | None:
        """The Service's load-balancer ingress; None when the Service does not exist."""
        ...


class KubeServiceIngressReader:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        # One client for every call: a new ApiClient per call opens a new connection pool.
        self._api = client.CoreV1Api(api or shared_api_client())

    async def load_balancer(self, namespace: str, name: str) -> LoadBalancerIngress | None:
        def read() -> LoadBalancerIngress | None:
            core = self._api
            try:
                service = core.read_namespaced_service(name, namespace)
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            balancer = service.status and service.status.load_balancer
            entries = (balancer and balancer.ingress) or []
            return LoadBalancerIngress(
                ips=tuple(e.ip for e in entries if e.ip),
                hostnames=tuple(e.hostname for e in entries if e.hostname),
            )

        return await asyncio.to_thread(read)
