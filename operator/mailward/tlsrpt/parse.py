"""Bytes from the internet → a Report, or a rejection a person can read.

Every limit is checked before the work it protects: the compressed size before inflating, the
inflated size while inflating (a gzip bomb stops at the limit, it is never inflated whole), the
nesting depth and element count on the raw text before `json.loads` builds any object (a deeply
nested document would otherwise exhaust the recursion limit or memory first).
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass

from pydantic import ValidationError

from mailward.tlsrpt.model import Report

GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Limits:
    # One day of reports from one large sender for one domain stays far below these.
    compressed_bytes: int = 4 * 1024 * 1024
    inflated_bytes: int = 16 * 1024 * 1024
    json_depth: int = 16
    json_elements: int = 200_000


class ReportRejected(ValueError):
    """The input is not an acceptable report; `str()` says why, for a person."""

    def __init__(self, reason: str, *, code: str = "invalid") -> None:
        super().__init__(reason)
        # A short machine word for metrics: too-large, bomb, not-json, too-deep, invalid, ...
        self.code = code


def inflate(data: bytes, limit: int) -> bytes:
    """The gunzipped `data`, refused as soon as the output would pass `limit` bytes."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = bytearray()
    chunk = data
    try:
        while chunk:
            # Ask for at most one byte more than the limit: that byte proves the excess.
            out += inflater.decompress(chunk, limit + 1 - len(out))
            if len(out) > limit:
                raise ReportRejected(
                    f"the gzip data inflates to more than {limit} bytes; refused without "
                    "inflating the rest",
                    code="bomb",
                )
            chunk = inflater.unconsumed_tail
            if inflater.eof:
                break
        if not inflater.eof:
            raise ReportRejected("the gzip data is truncated", code="bad-gzip")
    except zlib.error as error:
        raise ReportRejected(f"the gzip data is corrupt: {error}", code="bad-gzip") from None
    return bytes(out)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_STRUCTURE = re.compile(rb"[\[\]{},]")


def check_structure(text: bytes, limits: Limits) -> None:
    """Refuse documents nested deeper or with more elements than `limits`, without parsing."""
    skeleton = _STRING.sub(b'""', text)
    depth = 0
    elements = 0
    for match in _STRUCTURE.finditer(skeleton):
        char = match.group()
        if char in (b"[", b"{"):
            depth += 1
            elements += 1
            if depth > limits.json_depth:
                raise ReportRejected(
                    f"the JSON is nested deeper than {limits.json_depth} levels "
                    "(an RFC 8460 report needs 4)",
                    code="too-deep",
                )
        elif char == b",":
            elements += 1
        else:
            depth -= 1
        if elements > limits.json_elements:
            raise ReportRejected(
                f"the JSON has more than {limits.json_elements} elements", code="too-many"
            )


def parse_report(data: bytes, *, gzipped: bool | None = None, limits: Limits = Limits()) -> Report:
    """Parse a report sent as `application/tlsrpt+json` or `+gzip`.

    `gzipped=None` decides by the gzip magic number: some senders label a gzip body as JSON.
    """
    if len(data) > limits.compressed_bytes:
        raise ReportRejected(
            f"the report is {len(data)} bytes; the limit is {limits.compressed_bytes}",
            code="too-large",
        )
    if gzipped is None:
        gzipped = data.startswith(GZIP_MAGIC)
    if gzipped:
        if not data.startswith(GZIP_MAGIC):
            raise ReportRejected("declared as gzip, but it is not gzip data", code="bad-gzip")
        data = inflate(data, limits.inflated_bytes)
    elif len(data) > limits.inflated_bytes:
        raise ReportRejected(
            f"the report is {len(data)} bytes; the limit is {limits.inflated_bytes}",
            code="too-large",
        )
    check_structure(data, limits)
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise ReportRejected(f"the report is not UTF-8: {error}", code="not-json") from None
    except json.JSONDecodeError as error:
        raise ReportRejected(f"the report is not valid JSON: {error}", code="not-json") from None
    except RecursionError:
        raise ReportRejected("the JSON is nested too deeply", code="too-deep") from None
    if not isinstance(document, dict):
        raise ReportRejected(
            f"the report must be a JSON object, not {type(document).__name__}", code="invalid"
        )
    try:
        return Report.model_validate(document)
    except ValidationError as error:
        raise ReportRejected(describe(error), code="invalid") from None


def describe(error: ValidationError) -> str:
    """`policies[0].summary.total-failure-session-count: Input should be ...; ...`"""
    problems = []
    for item in error.errors(include_url=False)[:5]:
        path = ""
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{path or 'report'}: {message}")
    more = error.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")
