"""The collector's objects and configuration, against a golden file, and the default rua."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from mailward.reconcile import parse_spec
from mailward.render.tlsrpt_objects import CONFIG_KEY, CollectorSettings, render_collector
from mailward.tlsrpt.config import CollectorConfig
from mailward.tlsrpt.rua import effective_rua
from tests.manifests import minimal_maildomain, valid_maildomain

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SETTINGS = CollectorSettings(namespace="mailward-system", image="ghcr.io/mailward/mailward:0.1.0")


def _specs():  # type: ignore[no-untyped-def]
    return [parse_spec(valid_maildomain()["spec"]), parse_spec(minimal_maildomain()["spec"])]


def test_objects_match_the_golden_file() -> None:
    text = yaml.safe_dump_all(render_collector(_specs(), SETTINGS), sort_keys=False)
    golden = GOLDEN / "tlsrpt-collector.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_the_rendered_configuration_is_what_the_collector_reads() -> None:
    configmap, statefulset, service = render_collector(_specs(), SETTINGS)
    config = CollectorConfig.model_validate_json(configmap["data"][CONFIG_KEY])
    assert config.domains == ["example.test", "minimal.test"]
    # example.test names its own mailbox; minimal.test gets the collector's by default.
    assert config.mailbox_domains == ["example.test", "tlsrpt.minimal.test"]
    assert len(config.certificates) == 2
    mounted = {
        m["mountPath"]
        for m in statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    for certificate in config.certificates:
        assert str(Path(certificate.cert_file).parent) in mounted
    assert {p["port"] for p in service["spec"]["ports"]} == {25, 443, 9108}
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == [
        "ReadWriteOnce"
    ]
    json.dumps(statefulset)  # plain data, ready for the API server


def test_a_changed_configuration_rolls_the_pod() -> None:
    one = render_collector(_specs(), SETTINGS)[1]
    two = render_collector(_specs()[:1], SETTINGS)[1]
    key = "mailward.io/config-hash"
    assert (
        one["spec"]["template"]["metadata"]["annotations"][key]
        != two["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_rua_defaults_to_the_collector_mailbox() -> None:
    minimal = parse_spec(minimal_maildomain()["spec"])
    assert effective_rua(minimal) == ["mailto:tlsrpt@tlsrpt.minimal.test"]
    example = parse_spec(valid_maildomain()["spec"])
    assert effective_rua(example) == list(example.tls_rpt.rua)
