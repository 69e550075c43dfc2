"""A report out of a mail message (RFC 8460 §5.3), and the DKIM verdict on the message.

RFC 8460 wants `multipart/report; report-type="tlsrpt"` with one `application/tlsrpt+gzip` or
`application/tlsrpt+json` part, the `TLS-Report-Domain` and `TLS-Report-Submitter` headers, and
a file name `sender!policy-domain!begin!end[!id].json[.gz]`. Real senders deviate in small ways
(a `multipart/mixed` wrapper, `application/gzip` with the RFC file name, a missing header); those
are accepted and recorded as notes. A message with no report part at all is refused.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message

import dkim  # type: ignore[import-untyped]

from mailward.tlsrpt.model import Report
from mailward.tlsrpt.parse import Limits, ReportRejected, parse_report

REPORT_TYPES = {"application/tlsrpt+gzip": True, "application/tlsrpt+json": False}
# Generic types some senders use; accepted only when the file name is the RFC's.
GENERIC_TYPES = {
    "application/gzip",
    "application/x-gzip",
    "application/json",
    "application/octet-stream",
}
FILE_NAME = re.compile(
    r"^(?P<sender>[^!]+)!(?P<domain>[^!]+)!(?P<begin>\d+)!(?P<end>\d+)(?:!(?P<id>[^!]+))?"
    r"\.json(?P<gz>\.gz)?$"
)
MAX_PARTS = 32


@dataclass
class MailReport:
    report: Report
    gzipped: bool
    report_domain: str
    submitter: str
    file_name: str
    notes: list[str] = field(default_factory=list)


def extract(message_bytes: bytes, limits: Limits | None = None) -> MailReport:
    limits = limits or Limits()
    message = email.message_from_bytes(message_bytes, policy=email.policy.compat32)
    notes: list[str] = []
    outer = message.get_content_type()
    if outer == "multipart/report":
        report_type = str(message.get_param("report-type") or "").strip('"').lower()
        if report_type != "tlsrpt":
            notes.append(f"report-type is {report_type!r}, not 'tlsrpt'")
    elif outer.startswith("multipart/"):
        notes.append(f"sent as {outer}, not multipart/report")
    part, gzipped, file_name = _report_part(message, notes)
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload:
        raise ReportRejected("the report part is empty", code="no-report")
    report = parse_report(payload, gzipped=gzipped, limits=limits)

    domain = str(message.get("TLS-Report-Domain") or "").strip().rstrip(".").lower()
    if not domain:
        notes.append("TLS-Report-Domain header missing")
        domain = report.policies[0].policy.policy_domain
    elif domain not in report.policy_domains():
        notes.append(f"TLS-Report-Domain {domain!r} names no policy in the report")
    submitter = str(message.get("TLS-Report-Submitter") or "").strip().lower()
    if not submitter:
        notes.append("TLS-Report-Submitter header missing")
        sender = email.utils.parseaddr(str(message.get("From") or ""))[1]
        submitter = sender.rpartition("@")[2].lower() or report.organization_name.lower()
    match = FILE_NAME.match(file_name)
    if not match:
        notes.append(f"file name {file_name!r} is not in the RFC 8460 form")
    elif match.group("domain").lower() not in report.policy_domains():
        notes.append(f"file name names {match.group('domain')!r}, not a policy domain")
    return MailReport(report, gzipped, domain, submitter, file_name, notes)


def _report_part(message: Message, notes: list[str]) -> tuple[Message, bool, str]:
    parts = list(message.walk())
    if len(parts) > MAX_PARTS:
        raise ReportRejected(f"the message has more than {MAX_PARTS} MIME parts", code="mime")
    seen: list[str] = []
    for part in parts:
        content_type = part.get_content_type()
        file_name = part.get_filename() or part.get_param("name") or ""
        file_name = str(file_name)
        if content_type in REPORT_TYPES:
            return part, REPORT_TYPES[content_type], file_name
        if not part.is_multipart():
            seen.append(content_type)
        if content_type in GENERIC_TYPES and (match := FILE_NAME.match(file_name)):
            notes.append(f"report part typed {content_type}, recognised by its file name")
            return part, bool(match.group("gz")), file_name
    kinds = ", ".join(sorted(set(seen))) or "none"
    raise ReportRejected(
        "no application/tlsrpt+gzip or application/tlsrpt+json part "
        f"(content types found: {kinds})",
        code="wrong-type",
    )


DNSFunc = Callable[..., bytes | None]


def dkim_verdict(message_bytes: bytes, dnsfunc: DNSFunc | None = None) -> tuple[str, str]:
    """(`pass` | `fail` | `none` | `temperror`, signing domain). Recorded, never required:
    RFC 8460 §5.3 lets the receiver decide, and a sender without DKIM still reports failures."""
    head = message_bytes.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    if b"dkim-signature:" not in head.lower():
        return "none", ""
    match = re.search(rb"(?i)dkim-signature:.*?\bd=([^;\s]+)", head, re.DOTALL)
    signer = match.group(1).decode("ascii", "replace").lower() if match else ""
    try:
        kwargs = {"dnsfunc": dnsfunc} if dnsfunc else {}
        # tlsrpt=True: RFC 8460 §3 keys carry `s=tlsrpt`, valid only for TLS reports.
        ok = dkim.verify(message_bytes, tlsrpt=True, **kwargs)
    except dkim.DKIMException:
        return "temperror", signer
    except Exception:  # dkimpy raises assorted errors on hostile headers
        return "fail", signer
    return ("pass" if ok else "fail"), signer


def resolver_dnsfunc(nameserver: str, timeout: float = 3.0) -> DNSFunc:
    """dkimpy's TXT lookup through one resolver (the cluster's, or the demo's Unbound)."""
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [nameserver]
    resolver.lifetime = timeout

    def lookup(name: bytes | str, timeout: float = timeout) -> bytes | None:
        qname = name.decode("ascii") if isinstance(name, bytes) else name
        try:
            # TCP: an unconnected UDP socket would be bound to the wildcard address meanwhile.
            answer = resolver.resolve(qname, "TXT", tcp=True)
        except Exception:
            return None
        for record in answer:
            return b"".join(record.strings)
        return None

    return lookup
