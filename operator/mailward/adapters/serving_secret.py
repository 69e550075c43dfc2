"""The Secret a MailDomain's certificate is served from, with the rollover's keys and record.

One Secret per MailDomain (render/certificates.py names it), owned by it: `tls.crt`/`tls.key`
are what the MTA pods mount (only those two items), `next.*` and `previous.*` the keys on either
side of a switch, and the annotation `mailward.io/rollover` the rollover's record. Keeping all of
it in one object makes every step one atomic write, guarded by the resourceVersion read, and
lets a restarted operator (or the other replica) resume where the rollover was.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from mailward.reconcile import TLSSecretObservation
from mailward.rollover.keys import key_digest, key_from_pem
from mailward.rollover.machine import RolloverRecord

RECORD_ANNOTATION = "mailward.io/rollover"
# The CertificateRequest being waited for, and for which key: `<name> <spki-sha256>`.
REQUEST_ANNOTATION = "mailward.io/certificate-request"
LABELS = {"app.kubernetes.io/managed-by": "mailward", "app.kubernetes.io/component": "tls"}
ROLES = ("next", "previous")


class SecretChanged(Exception):
    """Someone else wrote the Secret since it was read: read again and decide again."""


def read_secret(api: client.CoreV1Api, namespace: str, name: str) -> Any:
    """The Secret as the API server holds it now (its resourceVersion guards the next write);
    None when there is none."""
    try:
        return api.read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def write_secret(api: client.CoreV1Api, body: dict[str, Any], *, replace: bool) -> str:
    """Creates the Secret, or replaces the one that was read (`body` carries its
    resourceVersion); SecretChanged when someone wrote it meanwhile. Its new resourceVersion."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    untyped: Any = api  # the client's stubs want V1Secret; a dict is what it sends
    try:
        if replace:
            written = untyped.replace_namespaced_secret(name, namespace, body)
        else:
            written = untyped.create_namespaced_secret(namespace, body)
    except ApiException as error:
        if error.status == 409:
            raise SecretChanged(f"Secret {namespace}/{name} changed meanwhile") from None
        raise
    return str(written.metadata.resource_version)


@dataclass(frozen=True)
class KeyMaterial:
    key_pem: bytes
    # The certificate chain for this key (leaf first); empty while none was issued.
    chain_pem: bytes = b""

    @property
    def spki_sha256(self) -> str:
        """The key's DANE digest (what its `3 1 1` record holds)."""
        return key_digest(key_from_pem(self.key_pem))


@dataclass(frozen=True)
class ServingState:
    found: bool = False
    resource_version: str | None = None
    record: RolloverRecord = field(default_factory=RolloverRecord)
    served: KeyMaterial | None = None
    next: KeyMaterial | None = None
    previous: KeyMaterial | None = None
    # A record that could not be read (edited by hand): reported, and started afresh.
    damaged: str | None = None
    # The CertificateRequest waited for (issuer source): its name and the key it is for.
    pending_request: tuple[str, str] | None = None


class ServingSecrets(Protocol):
    async def read(self, namespace: str, name: str) -> ServingState: ...

    async def read_user_secret(self, namespace: str, name: str) -> UserSecret: ...

    async def write(
        self, namespace: str, name: str, owner: dict[str, object] | None, state: ServingState
    ) -> str: ...

    async def delete(self, namespace: str, name: str) -> None: ...


def _decode(data: dict[str, str], key: str) -> bytes:
    return base64.b64decode(data.get(key) or "")


def _material(data: dict[str, str], key_item: str, crt_item: str) -> KeyMaterial | None:
    key = _decode(data, key_item)
    return KeyMaterial(key, _decode(data, crt_item)) if key else None


def state_from_secret(secret: Any) -> ServingState:
    data: dict[str, str] = secret.data or {}
    raw = (secret.metadata.annotations or {}).get(RECORD_ANNOTATION)
    record, damaged = RolloverRecord(), None
    if raw:
        try:
            record = RolloverRecord.model_validate_json(raw)
        except ValidationError as error:
            damaged = f"annotation {RECORD_ANNOTATION} unreadable: {error.error_count()} errors"
    pending = (secret.metadata.annotations or {}).get(REQUEST_ANNOTATION, "").split()
    return ServingState(
        found=True,
        resource_version=secret.metadata.resource_version,
        record=record,
        served=_material(data, "tls.key", "tls.crt"),
        next=_material(data, "next.key", "next.crt"),
        previous=_material(data, "previous.key", "previous.crt"),
        damaged=damaged,
        pending_request=(pending[0], pending[1]) if len(pending) == 2 else None,
    )


def secret_body(
    namespace: str, name: str, owner: dict[str, object] | None, state: ServingState
) -> dict[str, Any]:
    # A `kubernetes.io/tls` Secret must have both items, empty until the first certificate.
    data: dict[str, str] = {"tls.key": "", "tls.crt": ""}
    for prefix, material in (("tls", state.served), *((r, getattr(state, r)) for r in ROLES)):
        if material is None:
            continue
        data[f"{prefix}.key"] = base64.b64encode(material.key_pem).decode()
        data[f"{prefix}.crt"] = base64.b64encode(material.chain_pem).decode()
    annotations = {
        RECORD_ANNOTATION: state.record.model_dump_json(by_alias=True, exclude_none=True)
    }
    if state.pending_request is not None:
        annotations[REQUEST_ANNOTATION] = " ".join(state.pending_request)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": dict(LABELS),
        "annotations": annotations,
    }
    if owner is not None:  # none across namespaces: the owner's release deletes the Secret
        metadata["ownerReferences"] = [owner]
    if state.resource_version:
        metadata["resourceVersion"] = state.resource_version
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": metadata,
        "data": data,
    }


class KubeServingSecrets:
    def __init__(self, api: client.CoreV1Api | None = None) -> None:
        self._api = api or client.CoreV1Api()

    async def read(self, namespace: str, name: str) -> ServingState:
        return await asyncio.to_thread(self._read, namespace, name)

    async def write(
        self, namespace: str, name: str, owner: dict[str, object] | None, state: ServingState
    ) -> str:
        return await asyncio.to_thread(self._write, namespace, name, owner, state)

    async def delete(self, namespace: str, name: str) -> None:
        """Deletes the Secret if mailward wrote it (a person's Secret of that name stays)."""
        await asyncio.to_thread(self._delete, namespace, name)

    def _delete(self, namespace: str, name: str) -> None:
        try:
            secret = self._api.read_namespaced_secret(name, namespace)
            labels = (secret.metadata.labels if secret.metadata else None) or {}
            if labels.get("app.kubernetes.io/managed-by") != LABELS["app.kubernetes.io/managed-by"]:
                return
            self._api.delete_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise

    async def read_user_secret(self, namespace: str, name: str) -> UserSecret:
        return await asyncio.to_thread(self._read_user_secret, namespace, name)

    def _read_user_secret(self, namespace: str, name: str) -> UserSecret:
        try:
            secret = self._api.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return UserSecret(TLSSecretObservation(name=name, found=False))
            raise
        return user_secret_from(name, secret)

    def _read(self, namespace: str, name: str) -> ServingState:
        secret = read_secret(self._api, namespace, name)
        return ServingState() if secret is None else state_from_secret(secret)

    def _write(
        self, namespace: str, name: str, owner: dict[str, object] | None, state: ServingState
    ) -> str:
        body = secret_body(namespace, name, owner, state)
        return write_secret(self._api, body, replace=state.found)


@dataclass(frozen=True)
class UserSecret:
    """The Secret named in `spec.tls.secretName`: what it is, and its pair if it has one."""

    observation: TLSSecretObservation
    pair: KeyMaterial | None = None


def user_secret_from(name: str, secret: Any) -> UserSecret:
    data: dict[str, str] = secret.data or {}
    keys = frozenset(k for k, v in data.items() if v)
    chain = _decode(data, "tls.crt")
    observation = TLSSecretObservation(
        name=name, found=True, type=secret.type, keys=keys, certificate_pem=chain
    )
    pair = _material(data, "tls.key", "tls.crt")
    return UserSecret(observation, pair)
