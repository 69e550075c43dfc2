"""MTA-STS policy text and id, against a golden file."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mailward.reconcile import parse_spec
from mailward.render.mta_sts import policy_for, policy_id, render_policy, sts_txt_record
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
