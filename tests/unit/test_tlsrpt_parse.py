"""The report parser: real shapes accepted, every result type, RFC-strict refusals with readable
reasons, and the limits enforced before the work they protect."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest

from mailward.tlsrpt.model import RESULT_TYPES
from mailward.tlsrpt.parse import Limits, ReportRejected, inflate, parse_report
from tests.tlsrpt_samples import DATA, SHAPES, template


def test_the_rfc_example_parses_and_keeps_unknown_members() -> None:
    report = parse_report((DATA / "rfc8460-appendix-b.json").read_bytes())
    assert report.organization_name == "Company-X"
    details = report.policies[0].failure_details
    assert [d.result_type for d in details] == [
        "certificate-expired",
        "starttls-not-supported",
        "validation-failure",
    ]
    # Appendix B says failure-error-code where §4.4 says failure-reason-code: kept, not lost.
    assert details[2].model_extra == {"failure-error-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_published_shape_parses_plain_and_gzip(shape: str) -> None:
    raw = json.dumps(template(shape)).encode()
    assert parse_report(raw) == parse_report(gzip.compress(raw))


def test_lenient_where_real_reporters_deviate() -> None:
    report = parse_report(json.dumps(template("small-provider")).encode())
    policy = report.policies[0]
    assert policy.policy.policy_domain == "company-y.example"  # case and trailing dot
    assert policy.summary.total_successful_session_count == 17  # "17" as a string
    assert report.contact_info == ""  # missing contact-info
    assert report.date_range.start_datetime.tzinfo is not None  # no offset means UTC
    assert report.model_extra == {"x-provider-extension": {"shard": 7}}


@pytest.mark.parametrize("result_type", RESULT_TYPES)
def test_every_result_type(result_type: str) -> None:
    document = template("rfc8460")
    document["policies"][0]["failure-details"] = [
        {"result-type": result_type, "failed-session-count": 3}
    ]
    report = parse_report(json.dumps(document).encode())
    assert report.policies[0].failure_details[0].result_type == result_type


def _mutated(change: Any) -> bytes:
    document = template("rfc8460")
    change(document)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.pop("report-id"), "report-id: Field required"),
        (lambda d: d.pop("organization-name"), "organization-name: Field required"),
        (lambda d: d.update(policies=[]), "policies: List should have at least 1 item"),
        (
            lambda d: d["policies"][0]["policy"].update({"policy-type": "dane"}),
            "policies[0].policy.policy-type: Input should be 'tlsa', 'sts' or 'no-policy-found'",
        ),
        (
            lambda d: d["policies"][0]["summary"].update({"total-failure-session-count": -3}),
            "policies[0].summary.total-failure-session-count: Input should be greater than",
        ),
        (lambda d: d["policies"][0].pop("summary"), "policies[0].summary: Field required"),
        (
            lambda d: d["date-range"].update({"end-datetime": "2016-03-31T00:00:00Z"}),
            "end-datetime lies before start-datetime",
        ),
        (
            lambda d: d["policies"][0]["failure-details"][0].update({"result-type": "Bad Type!"}),
            "failure-details[0].result-type",
        ),
        (
            lambda d: d["policies"][0]["summary"].update({"total-successful-session-count": True}),
            "not true/false",
        ),
    ],
)
def test_strict_where_the_rfc_is_strict(change: Any, reason: str) -> None:
    with pytest.raises(ReportRejected) as refused:
        parse_report(_mutated(change))
    assert reason in str(refused.value)


def test_not_json_not_utf8_not_an_object() -> None:
    with pytest.raises(ReportRejected, match="not valid JSON"):
        parse_report(b'{"organization-name": ')
    with pytest.raises(ReportRejected, match="not UTF-8"):
        parse_report(b'{"a": "\xff"}')
    with pytest.raises(ReportRejected, match="must be a JSON object, not list"):
        parse_report(b"[1, 2]")


def test_a_gzip_bomb_stops_at_the_limit() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(compressor.compress(b"\0" * (1 << 20)) for _ in range(64)) + compressor.flush()
    with pytest.raises(ReportRejected, match="inflates to more than 1048576 bytes") as refused:
        inflate(bomb, 1 << 20)
    assert refused.value.code == "bomb"


def test_gzip_errors_are_named() -> None:
    with pytest.raises(ReportRejected, match="declared as gzip"):
        parse_report(b"{}", gzipped=True)
    with pytest.raises(ReportRejected, match="truncated"):
        parse_report(gzip.compress(b'{"a": 1}')[:-12])


def test_depth_and_element_limits_are_checked_before_parsing() -> None:
    with pytest.raises(ReportRejected, match="nested deeper than 16 levels"):
        parse_report(b"[" * 1_000_000 + b"]" * 1_000_000)
    # Brackets inside strings are text, not structure.
    document = template("rfc8460")
    document["contact-info"] = "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
    assert parse_report(json.dumps(document).encode()).contact_info.startswith("[[[")
    with pytest.raises(ReportRejected, match="more than 100 elements"):
        parse_report(b"[" + b"1," * 200 + b"1]", limits=Limits(json_elements=100))


def test_size_limits() -> None:
    with pytest.raises(ReportRejected, match="the limit is 1024") as refused:
        parse_report(b" " * 2000, limits=Limits(compressed_bytes=1024))
    assert refused.value.code == "too-large"
