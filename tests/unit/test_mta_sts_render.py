"""MTA-STS policy text and id, against a golden file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mailward.api.v1alpha1 import mx_pattern_matches
from mailward.reconcile import InvalidSpec, parse_spec
from mailward.render.mta_sts import (
    policy_for,
    policy_id,
    render_policy,
    sts_txt_record,
    withdrawal_policy,
)
from tests.manifests import valid_maildomain

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def test_policy_matches_the_golden_file() -> None:
    policy = policy_for(parse_spec(valid_maildomain()["spec"]))
    golden = GOLDEN / "mta-sts.example.test.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_bytes(policy.encode("ascii"))
    assert policy.encode("ascii") == golden.read_bytes()


def test_policy_uses_crlf_and_ascii() -> None:
    policy = render_policy("enforce", ["mx.bücher.test"], 86400)
    assert policy == (
        "version: STSv1\r\nmode: enforce\r\nmx: mx.xn--bcher-kva.test\r\nmax_age: 86400\r\n"
    )
    assert "\n" not in policy.replace("\r\n", "")


def test_mode_none_has_no_mx_requirement() -> None:
    assert render_policy("none", [], 0) == "version: STSv1\r\nmode: none\r\nmax_age: 0\r\n"


def test_id_is_rfc_shaped_and_changes_exactly_with_the_policy() -> None:
    one = render_policy("enforce", ["mx1.example.test"], 604800)
    same = render_policy("enforce", ["mx1.example.test"], 604800)
    other = render_policy("testing", ["mx1.example.test"], 604800)
    assert re.fullmatch(r"[A-Za-z0-9]{1,32}", policy_id(one))
    assert policy_id(one) == policy_id(same)
    assert policy_id(one) != policy_id(other)
    assert sts_txt_record(one) == f"v=STSv1; id={policy_id(one)}"


def test_mx_patterns_replace_the_host_list() -> None:
    body = valid_maildomain()["spec"]
    body["mtaSts"]["mxPatterns"] = ["*.example.test"]
    policy = policy_for(parse_spec(body))
    assert "mx: *.example.test\r\n" in policy
    assert "mx1.example.test" not in policy


def test_mx_patterns_must_cover_every_mx_host() -> None:
    body = valid_maildomain()["spec"]
    body["mtaSts"]["mxPatterns"] = ["mx1.example.test"]
    with pytest.raises(InvalidSpec, match=r"spec\.mx\[1\]\.host"):
        parse_spec(body)


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("*.example.test", "mx1.example.test", True),
        ("*.example.test", "example.test", False),
        ("*.example.test", "a.mx1.example.test", False),
        ("mx1.example.test", "mx1.example.test", True),
        ("mx1.example.test", "mx2.example.test", False),
    ],
)
def test_mx_pattern_matching_follows_rfc_8461(pattern: str, host: str, matches: bool) -> None:
    assert mx_pattern_matches(pattern, host) is matches


def test_withdrawal_is_mode_none_with_a_short_max_age() -> None:
    spec = parse_spec(valid_maildomain()["spec"])
    withdrawal = withdrawal_policy(spec)
    assert withdrawal.startswith("version: STSv1\r\nmode: none\r\n")
    assert withdrawal.endswith("max_age: 86400\r\n")
    assert policy_id(withdrawal) != policy_id(policy_for(spec))
