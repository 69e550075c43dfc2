"""Real-shaped TLSRPT reports for the tests and the benchmark, built from the files in
tests/data/tlsrpt/: the RFC 8460 Appendix B example, and the shapes Google, Microsoft and a
smaller provider send (Google: no mx-host, sts; Microsoft: tlsa policy strings and
failure-reason-code; the smaller one: no-policy-found, no contact-info, numbers as strings, dates
without an offset, an upper-case domain with a trailing dot, an unknown extension member).

The corpus is deterministic; `expected_counts` computes what the collector must report from the
documents themselves, independently of the collector's code.
"""

from __future__ import annotations

import copy
import gzip
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from mailward.tlsrpt.model import RESULT_TYPES

DATA = Path(__file__).parent / "data" / "tlsrpt"
SHAPES = ("rfc8460", "google", "microsoft", "small-provider")
_FILES = {
    "rfc8460": "rfc8460-appendix-b.json",
    "google": "google-shape.json",
    "microsoft": "microsoft-shape.json",
    "small-provider": "no-policy-found-shape.json",
}
SUBMITTERS = {
    "rfc8460": ("company-x.example", "sts-reporting@company-x.example"),
    "google": ("google.com", "noreply-smtp-tls-reporting@google.com"),
    "microsoft": ("microsoft.com", "tlsrpt-noreply@microsoft.com"),
    "small-provider": ("mail.example", "tlsrpt@mail.example"),
}


def template(shape: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DATA / _FILES[shape]).read_text())
    return document


@dataclass
class Sample:
    document: dict[str, Any]
    shape: str
    gzipped: bool
    transport: str  # "smtp" or "https"

    @property
    def report_id(self) -> str:
        return str(self.document["report-id"])

    def payload(self) -> bytes:
        raw = json.dumps(self.document).encode()
        return gzip.compress(raw, mtime=0) if self.gzipped else raw


def make_report(
    shape: str,
    *,
    domain: str,
    index: int,
    end: datetime,
    policy_type: str,
    successful: int,
    failures: list[tuple[str, int]],
) -> dict[str, Any]:
    document = template(shape)
    start = end - timedelta(days=1) + timedelta(seconds=1)
    fmt = "%Y-%m-%dT%H:%M:%S" if shape == "small-provider" else "%Y-%m-%dT%H:%M:%SZ"
    document["date-range"] = {
        "start-datetime": start.strftime(fmt),
        "end-datetime": end.strftime(fmt),
    }
    document["report-id"] = f"{document['report-id']}-{index:05d}"
    result = document["policies"][0]
    policy = result["policy"]
    policy["policy-domain"] = f"{domain.upper()}." if shape == "small-provider" else domain
    policy["policy-type"] = policy_type
    if policy_type == "sts":
        policy["policy-string"] = [
            "version: STSv1",
            "mode: enforce",
            f"mx: mx1.{domain}",
            "max_age: 604800",
        ]
    elif policy_type == "tlsa":
        policy["policy-string"] = [
            "3 1 1 8D02536C887482BC34FF54E41D2BA659BF85B341A0A20AFADB5813DCFBCF286D"
        ]
    else:
        policy.pop("policy-string", None)
    if "mx-host" in policy:
        policy["mx-host"] = [f"mx1.{domain}"]
    failed = sum(count for _, count in failures)
    as_text = shape == "small-provider"
    result["summary"] = {
        "total-successful-session-count": str(successful) if as_text else successful,
        "total-failure-session-count": str(failed) if as_text else failed,
    }
    pattern = (template(shape)["policies"][0].get("failure-details") or [{}])[0]
    details = []
    for number, (result_type, count) in enumerate(failures):
        detail = copy.deepcopy(pattern)
        detail.update(
            {
                "result-type": result_type,
                "sending-mta-ip": f"192.0.2.{(index + number) % 250 + 1}",
                "receiving-mx-hostname": f"mx1.{domain}",
                "failed-session-count": count,
            }
        )
        details.append(detail)
    if details:
        result["failure-details"] = details
    else:
        result.pop("failure-details", None)
    return document


def corpus(domain: str, count: int = 36, *, now: datetime | None = None) -> list[Sample]:
    """`count` reports for `domain`: every result type, all policy types, gzip and plain, mail
    and HTTPS, four sender shapes; every fifth report ended three days ago (7-day window only)."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    samples = []
    for index in range(count):
        shape = SHAPES[index % len(SHAPES)]
        policy_type = ("sts", "tlsa", "no-policy-found")[index % 3]
        failures: list[tuple[str, int]] = []
        if policy_type != "no-policy-found":
            first = RESULT_TYPES[index % len(RESULT_TYPES)]
            failures.append((first, index % 7 + 1))
            if index % 4 == 0:
                failures.append((RESULT_TYPES[(index + 5) % len(RESULT_TYPES)], 2))
        age = timedelta(days=3) if index % 5 == 4 else timedelta(hours=1, minutes=index)
        samples.append(
            Sample(
                make_report(
                    shape,
                    domain=domain,
                    index=index,
                    end=now - age,
                    policy_type=policy_type,
                    successful=100 + 13 * index,
                    failures=failures,
                ),
                shape,
                gzipped=index % 2 == 0,
                transport="https" if index % 3 == 2 else "smtp",
            )
        )
    return samples


def expected_counts(samples: list[Sample], domain: str, now: datetime) -> dict[str, Any]:
    """The numbers the collector must show, from the documents (not the collector's code)."""
    day_ago = now - timedelta(days=1)
    totals: dict[str, Counter[str]] = {"24h": Counter(), "7d": Counter()}
    per_type: dict[tuple[str, str], Counter[str]] = {}
    failures: Counter[str] = Counter()
    organisations: set[str] = set()
    for sample in samples:
        end = datetime.fromisoformat(sample.document["date-range"]["end-datetime"].rstrip("Z"))
        end = end.replace(tzinfo=UTC)
        windows = ["7d", "24h"] if end > day_ago else ["7d"]
        organisations.add(sample.document["organization-name"])
        for result in sample.document["policies"]:
            if result["policy"]["policy-domain"].lower().rstrip(".") != domain:
                continue
            ok = int(result["summary"]["total-successful-session-count"])
            bad = int(result["summary"]["total-failure-session-count"])
            for window in windows:
                for key in (
                    totals[window],
                    per_type.setdefault((result["policy"]["policy-type"], window), Counter()),
                ):
                    key["successful"] += ok
                    key["failed"] += bad
            for detail in result.get("failure-details", []):
                failures[detail["result-type"]] += int(detail["failed-session-count"])
    return {
        "totals": totals,
        "per_type": per_type,
        "failures": failures,
        "organisations": organisations,
    }


def report_mail(sample: Sample, *, domain: str, mailbox: str) -> bytes:
    """The message a sender of this shape mails: RFC 8460 §5.3 multipart/report."""
    submitter, sender = SUBMITTERS[sample.shape]
    document = sample.document
    begin = int(
        datetime.fromisoformat(document["date-range"]["start-datetime"].rstrip("Z"))
        .replace(tzinfo=UTC)
        .timestamp()
    )
    end = int(
        datetime.fromisoformat(document["date-range"]["end-datetime"].rstrip("Z"))
        .replace(tzinfo=UTC)
        .timestamp()
    )
    message = MIMEMultipart("report")
    message.set_param("report-type", "tlsrpt")
    message["From"] = sender
    message["To"] = mailbox
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=submitter)
    message["Subject"] = (
        f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{sample.report_id}>"
    )
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = submitter
    message.attach(MIMEText(f"This is an aggregate TLS report from {submitter}.\n"))
    suffix = ".json.gz" if sample.gzipped else ".json"
    subtype = "tlsrpt+gzip" if sample.gzipped else "tlsrpt+json"
    part = MIMEApplication(sample.payload(), _subtype=subtype)
    part.add_header(
        "Content-Disposition",
        "attachment",
        filename=f"{submitter}!{domain}!{begin}!{end}!{sample.report_id[-5:]}{suffix}",
    )
    message.attach(part)
    return message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
