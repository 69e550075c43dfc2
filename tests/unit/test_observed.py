"""The level-based applier (adapters/observed.py): an object is sent only when the cluster, as
its watch shows it, does not hold it as rendered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from mailward.adapters.observed import (
    DIGEST,
    MANAGED_BY,
    Kind,
    LevelApplier,
    ObjectRef,
    ObservedObjects,
    stamped,
)
from mailward.owner import Owner

CONFIGMAP = Kind("v1", "ConfigMap", "configmaps")
STATEFULSET = Kind("apps/v1", "StatefulSet", "statefulsets")


class FakeServer:
    """The API server's side: what it holds, what was applied, and a watch fed by hand."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.applies = 0
        self.version = 0
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {
            "configmaps": asyncio.Queue(),
            "statefulsets": asyncio.Queue(),
        }

    def event(self, type: str, obj: dict[str, Any]) -> None:
        plural = {"ConfigMap": "configmaps", "StatefulSet": "statefulsets"}[obj["kind"]]
        self.queues[plural].put_nowait({"type": type, "object": obj})

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.applies += 1
        return self.store(manifest, generation_bump=True)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.held.pop((kind, namespace, name), None)

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        return self.held.get((kind, namespace, name))

    def store(self, manifest: dict[str, Any], *, generation_bump: bool) -> dict[str, Any]:
        self.version += 1
        meta = manifest["metadata"]
        key = (manifest["kind"], meta.get("namespace", ""), meta["name"])
        old = self.held.get(key, {}).get("metadata", {})
        generation = int(old.get("generation", 0)) + (1 if generation_bump else 0)
        if manifest["kind"] in ("ConfigMap", "Secret"):
            generation = 0  # kinds without a spec have none
        obj = {**manifest, "metadata": {**meta, "resourceVersion": str(self.version)}}
        if generation:
            obj["metadata"]["generation"] = generation
        self.held[key] = obj
        return obj

    # ObjectStream
    async def list(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        plural = path.rsplit("/", 1)[-1]
        kind = {"configmaps": "ConfigMap", "statefulsets": "StatefulSet"}[plural]
        items = [o for (k, _, _), o in self.held.items() if k == kind]
        return {"items": items, "metadata": {"resourceVersion": str(self.version)}}

    async def watch(self, path: str, params: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        queue = self.queues[path.rsplit("/", 1)[-1]]
        while True:
            yield await queue.get()


def manifest(kind: str = "ConfigMap", data: str = "a") -> dict[str, Any]:
    api = "v1" if kind == "ConfigMap" else "apps/v1"
    owner = {"kind": "MailDomain", "name": "example", "uid": "uid-1"}
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": "example-mta", "namespace": "ns", "ownerReferences": [owner]},
        "data" if kind == "ConfigMap" else "spec": {"x": data},
    }


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_stamping_labels_and_digests_the_rendered_object() -> None:
    one, digest = stamped(manifest())
    assert one["metadata"]["labels"][MANAGED_BY] == "mailward"
    assert one["metadata"]["annotations"][DIGEST] == digest
    assert stamped(manifest(data="b"))[1] != digest
    assert stamped(manifest())[1] == digest


def test_sent_once_then_only_after_a_change_a_deletion_or_an_edit() -> None:
    async def scenario() -> None:
        server = FakeServer()
        observed = ObservedObjects((CONFIGMAP, STATEFULSET))
        drifted: list[tuple[ObjectRef, tuple[Owner, ...]]] = []
        observed.on_drift(lambda ref, owners: drifted.append((ref, owners)))
        watches = asyncio.create_task(observed.run(server))
        await _settle()
        assert observed.synced
        applier = LevelApplier(observed, server)  # type: ignore[arg-type]

        for kind in ("ConfigMap", "StatefulSet"):
            await applier.apply(manifest(kind))
            await applier.apply(manifest(kind))
        assert server.applies == 2  # idle: nothing sent the second time

        await applier.apply(manifest("ConfigMap", data="b"))  # the rendering changed
        assert server.applies == 3

        # Someone edits the StatefulSet by hand: its generation moves.
        held = server.held[("StatefulSet", "ns", "example-mta")]
        edited = server.store({**held, "spec": {"x": "hand"}}, generation_bump=True)
        server.event("MODIFIED", edited)
        await _settle()
        assert [(r.kind, o[0].name) for r, o in drifted] == [("StatefulSet", "example")]
        await applier.apply(manifest("StatefulSet"))
        assert server.applies == 4

        # Its controller writes status: the resourceVersion moves, the generation does not.
        held = server.held[("StatefulSet", "ns", "example-mta")]
        server.event("MODIFIED", server.store(held, generation_bump=False))
        await _settle()
        await applier.apply(manifest("StatefulSet"))
        assert server.applies == 4
        assert len(drifted) == 1

        # Someone deletes the ConfigMap.
        gone = server.held.pop(("ConfigMap", "ns", "example-mta"))
        server.event("DELETED", gone)
        await _settle()
        assert len(drifted) == 2
        await applier.apply(manifest("ConfigMap", data="b"))
        assert server.applies == 5

        watches.cancel()
        await asyncio.gather(watches, return_exceptions=True)

    asyncio.run(scenario())


def test_before_the_watch_has_listed_everything_is_sent() -> None:
    async def scenario() -> None:
        server = FakeServer()
        applier = LevelApplier(ObservedObjects((CONFIGMAP,)), server)  # type: ignore[arg-type]
        await applier.apply(manifest())
        await applier.apply(manifest())
        assert server.applies == 2

    asyncio.run(scenario())


def test_a_kind_without_a_watch_is_compared_with_a_read_by_name() -> None:
    """Secrets are read by name only, never listed or watched (the chart's RBAC)."""

    async def scenario() -> None:
        server = FakeServer()
        applier = LevelApplier(ObservedObjects((CONFIGMAP,)), server)  # type: ignore[arg-type]
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "fleet-accounts", "namespace": "ns"},
            "data": {"alice": "x"},
        }
        await applier.apply(secret)
        await applier.apply(secret)
        assert server.applies == 1
        held = server.held[("Secret", "ns", "fleet-accounts")]
        server.store({**held, "data": {"alice": "hand"}}, generation_bump=False)  # an edit
        await applier.apply(secret)
        assert server.applies == 2
        del server.held[("Secret", "ns", "fleet-accounts")]  # a deletion
        await applier.apply(secret)
        assert server.applies == 3

    asyncio.run(scenario())
