"""Writes a MailDomain's (or MailServer's) status by server-side apply, one manager per writer.

Two writers share the status: the reconcile handler (every part's condition, `Ready`, the parts'
status fields) and the compliance daemon (`Compliant` and `status.compliance`), which runs on its
own schedule. A merge patch replaces the whole `conditions` list, so whichever wrote second from
a stale read would silently undo the other's condition. `conditions` is a list-map keyed by
`type` in the CRD, so with server-side apply each writer owns exactly the entries it applies, and
the API server merges them: neither can drop the other's.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from kubernetes import client

from mailward.adapters.kube import shared_api_client
from mailward.api.v1alpha1 import API_GROUP, API_VERSION, KIND, PLURAL

RECONCILER = "mailward"
COMPLIANCE = "mailward-compliance"


class StatusWriter(Protocol):
    async def apply_status(
        self, namespace: str, name: str, status: dict[str, Any], *, field_manager: str
    ) -> None:
        """Make `status` what `field_manager` says of the object: fields it applied before and
        leaves out now are removed; other managers' fields stay."""
        ...


class KubeStatusWriter:
    def __init__(
        self, api: client.ApiClient | None = None, *, kind: str = KIND, plural: str = PLURAL
    ) -> None:
        # One client for every call: a new ApiClient per call opens a new connection pool.
        self._api = client.CustomObjectsApi(api or shared_api_client())
        self._kind = kind
        self._plural = plural

    async def apply_status(
        self, namespace: str, name: str, status: dict[str, Any], *, field_manager: str
    ) -> None:
        """`namespace` empty: a cluster-scoped object (ClusterDNSProvider)."""
        metadata = {"name": name, "namespace": namespace} if namespace else {"name": name}
        body = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": self._kind,
            "metadata": metadata,
            "status": status,
        }
        # Each writer is the only one that sets its fields; force settles the fields that a
        # merge patch of an older operator version left without an applier.
        options: dict[str, Any] = {
            "field_manager": field_manager,
            "force": True,
            "_content_type": "application/apply-patch+yaml",
        }
        if namespace:
            await asyncio.to_thread(
                self._api.patch_namespaced_custom_object_status,
                API_GROUP, API_VERSION, namespace, self._plural, name, body, **options,
            )  # fmt: skip
        else:
            await asyncio.to_thread(
                self._api.patch_cluster_custom_object_status,
                API_GROUP, API_VERSION, self._plural, name, body, **options,
            )  # fmt: skip
