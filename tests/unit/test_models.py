"""The operator's model refuses exactly what the CRD refuses, and names the field."""

from __future__ import annotations

import pytest

from mailward.api.v1alpha1 import MailDomainSpec, parse_duration
from mailward.reconcile import InvalidSpec, parse_spec
from tests.manifests import INVALID_CASES, InvalidCase, minimal_maildomain, valid_maildomain

MODEL_CASES = [c for c in INVALID_CASES if c.tier in ("both", "model")]


def test_valid_example_parses_with_camel_case_fields() -> None:
    spec = parse_spec(valid_maildomain()["spec"])
    assert spec.domain == "example.test"
    assert [mx.host for mx in spec.mx] == ["mx1.example.test", "mx2.example.test"]
    assert spec.mta_sts.max_age == 604800
    assert spec.tls_rpt.rua[0] == "mailto:tlsrpt@example.test"
    assert spec.dns is not None
    assert spec.dns.provider_ref.name == "local-bind"


def test_minimal_spec_gets_the_documented_defaults() -> None:
    spec = parse_spec(minimal_maildomain()["spec"])
    assert spec.mx[0].priority == 10
    assert spec.dane.enabled is True
    assert (spec.mta_sts.mode, spec.mta_sts.max_age) == ("enforce", 604800)
    assert spec.tls_rpt.rua == []
    assert (spec.compliance.profile, spec.compliance.interval) == ("tr-03108", "1h")
    assert spec.dns is None


@pytest.mark.parametrize("case", MODEL_CASES, ids=[c.id for c in MODEL_CASES])
def test_invalid_spec_is_rejected_naming_the_field(case: InvalidCase) -> None:
    with pytest.raises(InvalidSpec) as raised:
        parse_spec(case.manifest()["spec"])
    assert case.field in str(raised.value)


def test_error_message_lists_every_bad_field() -> None:
    spec = valid_maildomain()["spec"]
    spec["mtaSts"]["maxAge"] = -5
    spec["mx"][0]["priority"] = 99999
    with pytest.raises(InvalidSpec) as raised:
        parse_spec(spec)
    message = str(raised.value)
    assert "spec.mtaSts.maxAge" in message
    assert "spec.mx[0].priority" in message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h30m", 5400), ("168h", 604800), ("1500ms", 1.5)],
)
def test_durations_read_like_cel_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1d", "1 h", "h", "-1m", "1.5h"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_model_is_immutable_once_parsed() -> None:
    spec = MailDomainSpec.model_validate(minimal_maildomain()["spec"])
    with pytest.raises(ValueError, match="frozen"):
        spec.domain = "other.test"  # type: ignore[misc]
