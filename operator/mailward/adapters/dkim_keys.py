"""The Secret holding a MailDomain's managed DKIM keys and their rotation record.

One Secret per MailDomain (`<name>-dkim`, render/dkim.py), owned by it: one item per selector
in DNS (`<selector>.key`, the private key as dkimpy-milter reads it) and the rotation's record
(the selectors, their phases and since when) in the annotation `mailward.io/dkim-rotation`, so
that every step is one write guarded by the resourceVersion read, and a restarted operator
resumes where the rotation was. The MTA's pods mount only the Active keys' items.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client
from pydantic import TypeAdapter, ValidationError

from mailward.adapters.serving_secret import read_secret, write_secret
from mailward.dkim.machine import ManagedKey
from mailward.render.dkim import key_file

ROTATION_ANNOTATION = "mailward.io/dkim-rotation"
LABELS = {"app.kubernetes.io/managed-by": "mailward", "app.kubernetes.io/component": "dkim"}
_KEYS = TypeAdapter(tuple[ManagedKey, ...])


@dataclass(frozen=True)
class DKIMKeyState:
    found: bool = False
    resource_version: str | None = None
    keys: tuple[ManagedKey, ...] = ()
    # selector → private key (as dkimpy-milter reads it).
    private: dict[str, str] = field(default_factory=dict)
    # A record that could not be read (edited by hand): reported, and started afresh.
    damaged: str | None = None


class DKIMKeyStore(Protocol):
    async def read(self, namespace: str, name: str) -> DKIMKeyState: ...

    async def write(
        self, namespace: str, name: str, owner: dict[str, object], state: DKIMKeyState
    ) -> str: ...


def state_from_secret(secret: Any) -> DKIMKeyState:
    data: dict[str, str] = secret.data or {}
    raw = (secret.metadata.annotations or {}).get(ROTATION_ANNOTATION, "[]")
    try:
        keys = _KEYS.validate_json(raw)
        damaged = None
    except ValidationError as error:
        keys, damaged = (), f"annotation {ROTATION_ANNOTATION} unreadable: {error.error_count()}"
    private = {
        k.selector: base64.b64decode(data[key_file(k.selector)]).decode()
        for k in keys
        if data.get(key_file(k.selector))
    }
    return DKIMKeyState(True, secret.metadata.resource_version, keys, private, damaged)


def secret_body(
    namespace: str, name: str, owner: dict[str, object], state: DKIMKeyState
) -> dict[str, Any]:
    data = {
        key_file(selector): base64.b64encode(pem.encode()).decode()
        for selector, pem in sorted(state.private.items())
    }
    record = json.dumps(
        [k.model_dump(mode="json", by_alias=True) for k in state.keys], separators=(",", ":")
    )
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": dict(LABELS),
        "annotations": {ROTATION_ANNOTATION: record},
        "ownerReferences": [owner],
    }
    if state.resource_version:
        metadata["resourceVersion"] = state.resource_version
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "data": data,
    }


class KubeDKIMKeyStore:
    def __init__(self, api: client.CoreV1Api | None = None) -> None:
        self._api = api or client.CoreV1Api()

    async def read(self, namespace: str, name: str) -> DKIMKeyState:
        return await asyncio.to_thread(self._read, namespace, name)

    async def write(
        self, namespace: str, name: str, owner: dict[str, object], state: DKIMKeyState
    ) -> str:
        return await asyncio.to_thread(self._write, namespace, name, owner, state)

    def _read(self, namespace: str, name: str) -> DKIMKeyState:
        secret = read_secret(self._api, namespace, name)
        return DKIMKeyState() if secret is None else state_from_secret(secret)

    def _write(
        self, namespace: str, name: str, owner: dict[str, object], state: DKIMKeyState
    ) -> str:
        body = secret_body(namespace, name, owner, state)
        return write_secret(self._api, body, replace=state.found)
