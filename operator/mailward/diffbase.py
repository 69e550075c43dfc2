"""What kopf compares an object with to tell a change from a repeat, kept in memory.

kopf's default keeps the last handled spec, labels and annotations in an annotation on every
object: one more PATCH per object after its first pass, and again after each change. mailward
never reads kopf's diffs: a pass renders the whole desired state from the body. So the base
lives in this process, as a digest per object. After a restart every object is new to the
process and gets a pass, which is the level-based behaviour the handlers want anyway.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, cast

import kopf


class InMemoryDiffBase(kopf.DiffBaseStorage):
    def __init__(self) -> None:
        super().__init__()
        self._digests: dict[str, str] = {}

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        essence = super().build(body=body, extra_fields=extra_fields)
        text = json.dumps(essence, sort_keys=True, separators=(",", ":"), default=str)
        return _essence(hashlib.sha256(text.encode()).hexdigest())

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        digest = self._digests.get(_uid(body))
        return None if digest is None else _essence(digest)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._digests[_uid(body)] = str(cast(dict[str, Any], essence)["digest"])

    def forget(self, body: kopf.Body) -> None:
        """The object is gone: nothing to compare it with any more."""
        self._digests.pop(_uid(body), None)

    def __len__(self) -> int:
        return len(self._digests)


def _uid(body: kopf.Body) -> str:
    return str(body.metadata.uid)


def _essence(digest: str) -> kopf.BodyEssence:
    return cast(kopf.BodyEssence, {"digest": digest})
