"""What the API server holds of the objects mailward applies, kept by watches; and the applier
that sends an object only when the cluster does not hold it as rendered.

Every object mailward applies carries the label `app.kubernetes.io/managed-by: mailward` and
the annotation `mailward.io/applied-digest` (the digest of the rendered object). One watch per
kind, filtered by that label on the server, keeps a slim record per object: its digest, its
generation and resourceVersion, its owners. The applier compares the rendered object with that
record, not with a memo of its own:

- missing from the record (deleted by someone): applied again;
- another digest (the rendering changed): applied;
- the same digest, but changed since mailward's own apply (someone edited it: its generation
  moved, or, for kinds without one, its resourceVersion): applied again;
- otherwise nothing is sent. An idle operator writes nothing.

When the watch sees an object deleted or edited, `on_drift` names its owners, so that the
owner's pass repairs it at once rather than at the next resync.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mailward.adapters.apply import ServerSideApplier
from mailward.adapters.kube_watch import ObjectStream, list_and_watch
from mailward.owner import Owner

log = logging.getLogger("mailward.observed")

MANAGED_BY = "app.kubernetes.io/managed-by"
DIGEST = "mailward.io/applied-digest"
SELECTOR = f"{MANAGED_BY}=mailward"

Object = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str

    def path(self) -> str:
        base = "api/v1" if self.api_version == "v1" else f"apis/{self.api_version}"
        return f"{base}/{self.plural}"


# What mailward applies (render/): each watched, cluster-wide, by the label above. Not Secrets:
# the operator reads Secrets by name only, never lists them; the one it applies (a fleet's
# accounts) is compared with a read by name instead (`LevelApplier`).
WATCHED = (
    Kind("v1", "ConfigMap", "configmaps"),
    Kind("v1", "Service", "services"),
    Kind("v1", "ServiceAccount", "serviceaccounts"),
    Kind("apps/v1", "Deployment", "deployments"),
    Kind("apps/v1", "StatefulSet", "statefulsets"),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Kind("networking.k8s.io/v1", "Ingress", "ingresses"),
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
)


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class Seen:
    """The slim record of one object, as a watch or mailward's own apply last saw it."""

    digest: str | None
    generation: int
    resource_version: str
    owners: tuple[Owner, ...]

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Seen:
        meta = obj.get("metadata") or {}
        # Owner references name objects of the same namespace.
        namespace = str(meta.get("namespace") or "")
        owners = tuple(
            Owner(namespace, str(o.get("name")), str(o.get("uid")), kind=str(o.get("kind")))
            for o in meta.get("ownerReferences") or []
        )
        return cls(
            digest=(meta.get("annotations") or {}).get(DIGEST),
            generation=int(meta.get("generation") or 0),
            resource_version=str(meta.get("resourceVersion") or ""),
            owners=owners,
        )

    def unchanged_since(self, applied: Seen) -> bool:
        """Nobody changed the object after mailward applied `applied`. A controller's status
        write moves the resourceVersion but not the generation, so kinds that have one are
        compared by it."""
        if applied.generation:
            return self.generation == applied.generation
        return self.resource_version == applied.resource_version


def ref_of(obj: Mapping[str, Any]) -> ObjectRef:
    meta = obj.get("metadata") or {}
    return ObjectRef(str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta["name"]))


def stamped(obj: Mapping[str, Any]) -> tuple[Object, str]:
    """`obj` with the managed-by label and its digest annotation; and the digest."""
    meta = dict(obj.get("metadata") or {})
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:32]
    meta["labels"] = {**(meta.get("labels") or {}), MANAGED_BY: "mailward"}
    meta["annotations"] = {**(meta.get("annotations") or {}), DIGEST: digest}
    return {**obj, "metadata": meta}, digest


DriftHandler = Callable[[ObjectRef, tuple[Owner, ...]], None]


class ObservedObjects:
    def __init__(self, kinds: tuple[Kind, ...] = WATCHED) -> None:
        self._kinds = {k.kind: k for k in kinds}
        self._current: dict[ObjectRef, Seen] = {}
        self._applied: dict[ObjectRef, Seen] = {}
        self._synced: set[str] = set()
        self._on_drift: DriftHandler | None = None

    # -- what the applier asks -----------------------------------------------------------------

    def watches(self, kind: str) -> bool:
        return kind in self._kinds

    def in_sync(self, ref: ObjectRef, digest: str, current: Seen | None = None) -> bool:
        """The cluster holds the object as mailward last applied it, with this digest; for a
        kind without a watch, `current` is what a read by name found."""
        if ref.kind in self._kinds:
            if ref.kind not in self._synced:
                return False
            current = self._current.get(ref)
        applied = self._applied.get(ref)
        if current is None or applied is None or current.digest != digest:
            return False
        return current.unchanged_since(applied)

    def applied(self, ref: ObjectRef, result: Mapping[str, Any]) -> None:
        seen = Seen.of(result)
        self._applied[ref] = seen
        if ref.kind in self._kinds:
            # The watch reports the same a moment later; recorded now, a pass right after this
            # one already finds it in sync.
            self._current[ref] = seen

    def deleted(self, ref: ObjectRef) -> None:
        """mailward itself deleted the object: no drift to repair."""
        self._applied.pop(ref, None)
        self._current.pop(ref, None)

    # -- the watches ---------------------------------------------------------------------------

    def on_drift(self, handler: DriftHandler) -> None:
        self._on_drift = handler

    @property
    def synced(self) -> bool:
        return self._synced == set(self._kinds)

    async def run(self, stream: ObjectStream) -> None:
        """Watch every kind until cancelled."""
        await asyncio.gather(*(self._watch(stream, kind) for kind in self._kinds.values()))

    async def _watch(self, stream: ObjectStream, kind: Kind) -> None:
        def listed(items: list[Object]) -> None:
            for ref in [r for r in self._current if r.kind == kind.kind]:
                del self._current[ref]
            for item in items:
                self._current[ref_of({**item, "kind": kind.kind})] = Seen.of(item)
            self._synced.add(kind.kind)

        def changed(event: str, obj: Object) -> None:
            ref = ref_of({**obj, "kind": kind.kind})
            seen = Seen.of(obj)
            if event == "DELETED":
                self._current.pop(ref, None)
                drifted = ref in self._applied
            else:
                self._current[ref] = seen
                applied = self._applied.get(ref)
                drifted = applied is not None and not seen.unchanged_since(applied)
            if drifted and self._on_drift is not None:
                log.info("%s %s/%s changed by someone else: repairing", *_describe(ref))
                self._on_drift(ref, seen.owners)

        await list_and_watch(
            stream,
            kind.path(),
            {"labelSelector": SELECTOR},
            on_list=listed,
            on_event=changed,
            name=f"watch of {kind.plural}",
        )


def _describe(ref: ObjectRef) -> tuple[str, str, str]:
    return ref.kind, ref.namespace, ref.name


class LevelApplier:
    """Server-side apply of rendered objects, sent only when the cluster does not hold them as
    rendered (see the module doc)."""

    def __init__(self, observed: ObservedObjects, applier: ServerSideApplier | None = None):
        self._observed = observed
        self._applier = applier or ServerSideApplier()

    async def apply(self, obj: dict[str, Any]) -> None:
        manifest, digest = stamped(obj)
        ref = ref_of(manifest)
        current = None
        if not self._observed.watches(ref.kind):
            meta = manifest["metadata"]
            found = await self._applier.get(
                manifest["apiVersion"], ref.kind, meta.get("namespace", ""), ref.name
            )
            current = Seen.of(found) if found is not None else None
        if self._observed.in_sync(ref, digest, current):
            return
        result = await self._applier.apply(manifest)
        self._observed.applied(ref, result)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self._observed.deleted(ObjectRef(kind, namespace, name))
        await self._applier.delete(api_version, kind, namespace, name)
