"""kopf's diff base in memory: a change of spec, labels or annotations is a change; a status
write, kopf's own annotations or a new resourceVersion is not; a forgotten object is new."""

from __future__ import annotations

import copy
from typing import Any, cast

import kopf

from mailward.diffbase import InMemoryDiffBase


def _body(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "apiVersion": "mailward.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {
            "name": "example",
            "namespace": "mail",
            "uid": "uid-1",
            "resourceVersion": "1",
            "generation": 1,
            "labels": {"team": "mail"},
        },
        "spec": {"domain": "example.test", "mx": [{"host": "mx.example.test"}]},
    }
    merged = copy.deepcopy(raw)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = merged
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return merged


def _kopf_body(raw: dict[str, Any]) -> kopf.Body:
    return kopf.Body(cast(kopf.RawBody, raw))


def _essence(storage: InMemoryDiffBase, raw: dict[str, Any]) -> kopf.BodyEssence:
    return storage.build(body=_kopf_body(raw))


def test_an_object_never_stored_has_no_base() -> None:
    storage = InMemoryDiffBase()
    assert storage.fetch(body=_kopf_body(_body())) is None


def test_what_was_stored_is_what_is_fetched_and_nothing_is_patched() -> None:
    storage = InMemoryDiffBase()
    body = _kopf_body(_body())
    patch = kopf.Patch()
    essence = storage.build(body=body)
    storage.store(body=body, patch=patch, essence=essence)
    assert storage.fetch(body=body) == essence
    assert not patch
    assert len(storage) == 1


def test_status_and_system_fields_do_not_change_the_essence() -> None:
    storage = InMemoryDiffBase()
    base = _essence(storage, _body())
    assert _essence(storage, _body(status={"observedGeneration": 1})) == base
    assert _essence(storage, _body(metadata__resourceVersion="2")) == base


def test_spec_labels_and_annotations_change_the_essence() -> None:
    storage = InMemoryDiffBase()
    base = _essence(storage, _body())
    changed = [
        _body(spec={"domain": "example.test", "mx": [{"host": "mx2.example.test"}]}),
        _body(metadata__labels={"team": "other"}),
        _body(metadata__annotations={"note": "x"}),
    ]
    essences = [_essence(storage, raw) for raw in changed]
    assert all(e != base for e in essences)
    assert len({str(e) for e in essences}) == len(essences)


def test_a_forgotten_object_is_new_again() -> None:
    storage = InMemoryDiffBase()
    body = _kopf_body(_body())
    storage.store(body=body, patch=kopf.Patch(), essence=storage.build(body=body))
    storage.forget(body)
    assert storage.fetch(body=body) is None
    assert len(storage) == 0
