"""The committed CRDs are what the models generate, and every node is bounded and described."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailward.api.crd import maildomain_crd, render_crds, stale_crds

REPO = Path(__file__).resolve().parents[2]


def test_committed_crds_match_the_models() -> None:
    assert stale_crds(REPO / "crds") == [], "crds/ drifted from the models: run `make crds`"


def test_rendered_text_round_trips_to_the_same_object() -> None:
    text = render_crds()["mailward.io_maildomains.yaml"]
    assert yaml.safe_load(text) == maildomain_crd()


def _nodes(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if "items" in node:
        yield from _nodes(node["items"], f"{path}[]")


def _schema() -> dict[str, Any]:
    version = maildomain_crd()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _spec_and_status_nodes() -> list[tuple[str, dict[str, Any]]]:
    schema = _schema()
    return [
        *_nodes(schema["properties"]["spec"], "spec"),
        *_nodes(schema["properties"]["status"], "status"),
    ]


@pytest.mark.parametrize(("path", "node"), _spec_and_status_nodes())
def test_every_node_is_structural_bounded_and_described(path: str, node: dict[str, Any]) -> None:
    assert "type" in node, f"{path} has no type"
    assert not {"$ref", "anyOf", "allOf", "additionalProperties", "title"} & node.keys(), path
    if not path.endswith("[]"):
        assert node.get("description"), f"{path} has no description"
    if node["type"] == "string":
        assert "maxLength" in node or "enum" in node or node.get("format") == "date-time", path
    if node["type"] == "array":
        assert "maxItems" in node, f"{path} is an unbounded list"


def test_printer_columns_follow_cert_manager() -> None:
    columns = maildomain_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    names = [c["name"] for c in columns if not c.get("priority")]
    assert names == ["Domain", "Ready", "Compliant", "MTA-STS", "Cert-Expires", "DANE", "Age"]
    server, reports, detail = [c for c in columns if c.get("priority") == 1]
    assert server["jsonPath"] == ".spec.mailServerRef.name"
    assert reports["jsonPath"] == '.status.conditions[?(@.type=="TLSReportsHealthy")].status'
    assert detail["jsonPath"] == '.status.conditions[?(@.type=="Ready")].message'


def test_cel_rules_are_attached_where_they_apply() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    assert spec["domain"]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
    assert spec["mx"]["x-kubernetes-list-type"] == "map"
    assert spec["mx"]["x-kubernetes-list-map-keys"] == ["host"]
    interval = spec["compliance"]["properties"]["interval"]
    assert "duration(self)" in interval["x-kubernetes-validations"][0]["rule"]


def test_host_network_is_explained_and_needs_an_mx_address() -> None:
    spec = _schema()["properties"]["spec"]
    host_network = spec["properties"]["mta"]["properties"]["hostNetwork"]
    assert host_network["type"] == "boolean"
    assert host_network["default"] is False
    assert "spec.mx[].addresses" in host_network["description"]
    (rule,) = [r for r in spec["x-kubernetes-validations"] if "hostNetwork" in r["rule"]]
    assert rule["fieldPath"] == ".mta.hostNetwork"
    assert "spec.mta.hostNetwork" in rule["message"]
    assert "m.addresses.size() > 0" in rule["rule"]
