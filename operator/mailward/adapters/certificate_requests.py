"""cert-manager `CertificateRequest`s: a CSR from a key mailward holds, signed by an issuer.

mailward does not use cert-manager's `Certificate`: that generates its own key when it reissues
(rotationPolicy Always, the default since v1.18) and serves it at once, with no way to publish the
next key's TLSA record first. A CertificateRequest carries a CSR made from mailward's own key
(current or next), and mailward decides when to renew. Default installations approve requests
for cert-manager's own issuers; with approver-policy, a policy must allow mailward's requests.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mailward.api.certificates import IssuerReference

GROUP, VERSION, PLURAL = "cert-manager.io", "v1", "certificaterequests"
USAGES = ("digital signature", "key encipherment", "server auth")

RequestState = Literal["Pending", "Issued", "Denied", "Failed", "Missing"]


@dataclass(frozen=True)
class RequestOutcome:
    state: RequestState
    chain_pem: bytes = b""
    ca_pem: bytes = b""
    message: str = ""


class CertificateRequests(Protocol):
    async def create(
        self,
        namespace: str,
        name: str,
        owner: dict[str, object],
        csr_pem: bytes,
        issuer: IssuerReference,
        duration: str,
    ) -> None: ...

    async def outcome(self, namespace: str, name: str) -> RequestOutcome: ...

    async def delete(self, namespace: str, name: str) -> None: ...


def request_body(
    namespace: str,
    name: str,
    owner: dict[str, object],
    csr_pem: bytes,
    issuer: IssuerReference,
    duration: str,
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CertificateRequest",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "mailward"},
            "ownerReferences": [owner],
        },
        "spec": {
            "request": base64.b64encode(csr_pem).decode(),
            "issuerRef": {"name": issuer.name, "kind": issuer.kind, "group": issuer.group},
            "duration": duration,
            "usages": list(USAGES),
        },
    }


def _condition(conditions: Sequence[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def outcome_of(body: dict[str, Any]) -> RequestOutcome:
    """What a CertificateRequest's status says (cert-manager's conditions)."""
    status = body.get("status") or {}
    conditions: list[dict[str, Any]] = status.get("conditions") or []
    denied = _condition(conditions, "Denied")
    if denied and denied.get("status") == "True":
        return RequestOutcome("Denied", message=str(denied.get("message") or denied.get("reason")))
    ready = _condition(conditions, "Ready")
    invalid = _condition(conditions, "InvalidRequest")
    if invalid and invalid.get("status") == "True":
        return RequestOutcome("Failed", message=str(invalid.get("message") or "invalid request"))
    if ready and ready.get("status") == "True" and status.get("certificate"):
        return RequestOutcome(
            "Issued",
            base64.b64decode(status["certificate"]),
            base64.b64decode(status.get("ca") or ""),
        )
    if ready and ready.get("reason") == "Failed":
        return RequestOutcome("Failed", message=str(ready.get("message") or "failed"))
    approved = _condition(conditions, "Approved")
    waiting = "waiting for approval" if not approved else "approved, waiting for the issuer"
    detail = ready.get("message") if ready else None
    return RequestOutcome("Pending", message=str(detail or waiting))


class KubeCertificateRequests:
    def __init__(self, api: client.CustomObjectsApi | None = None) -> None:
        self._api: Any = api or client.CustomObjectsApi()

    async def create(
        self,
        namespace: str,
        name: str,
        owner: dict[str, object],
        csr_pem: bytes,
        issuer: IssuerReference,
        duration: str,
    ) -> None:
        body = request_body(namespace, name, owner, csr_pem, issuer, duration)
        try:
            await asyncio.to_thread(
                self._api.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, body
            )
        except ApiException as error:
            if error.status != 409:  # already asked: its outcome is read next
                raise

    async def outcome(self, namespace: str, name: str) -> RequestOutcome:
        try:
            body = await asyncio.to_thread(
                self._api.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return RequestOutcome("Missing")
            raise
        return outcome_of(body)

    async def delete(self, namespace: str, name: str) -> None:
        try:
            await asyncio.to_thread(
                self._api.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as error:
            if error.status != 404:
                raise
