"""The demo's sample TLS report: mailed to the collector pod as a sending MTA would.

python -m mailward_localstack.demo_reports feed --address 127.77.0.26 --domain example.test
"""

from __future__ import annotations

import argparse
import gzip
import json
import smtplib
import ssl
import sys
import time
from datetime import UTC, datetime, timedelta
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

from mailward.tlsrpt.rua import MAILBOX_LOCAL_PART
from mailward_localstack._process import StackError, wait_until


def sample_report(domain: str, now: datetime | None = None) -> dict[str, Any]:
    """A report in the shape Google sends, with DANE and MTA-STS failures to look at."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    end = now - timedelta(hours=1)
    start = end - timedelta(days=1) + timedelta(seconds=1)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return {
        "organization-name": "Demo Sender Inc.",
        "date-range": {
            "start-datetime": start.strftime(stamp),
            "end-datetime": end.strftime(stamp),
        },
        "contact-info": "smtp-tls-reporting@sender.example",
        "report-id": f"{start.strftime(stamp)}_{domain}_demo",
        "policies": [
            {
                "policy": {
                    "policy-type": "tlsa",
                    "policy-domain": domain,
                    "policy-string": ["3 1 1 0000"],
                    "mx-host": [f"mx1.{domain}"],
                },
                "summary": {
                    "total-successful-session-count": 970,
                    "total-failure-session-count": 30,
                },
                "failure-details": [
                    {
                        "result-type": "tlsa-invalid",
                        "sending-mta-ip": "192.0.2.10",
                        "receiving-mx-hostname": f"mx1.{domain}",
                        "failed-session-count": 30,
                    },
                ],
            },
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-domain": domain,
                    "policy-string": [
                        "version: STSv1",
                        "mode: enforce",
                        f"mx: mx1.{domain}",
                        "max_age: 604800",
                    ],
                },
                "summary": {
                    "total-successful-session-count": 1200,
                    "total-failure-session-count": 0,
                },
            },
        ],
    }


def feed_sample_report(smtp: tuple[str, int], domain: str, mailbox: str) -> str:
    """Mail one report as a sending MTA would (opportunistic STARTTLS); the server's answer."""
    report = sample_report(domain)
    message = MIMEMultipart("report")
    message.set_param("report-type", "tlsrpt")
    message["From"] = "noreply-smtp-tls-reporting@sender.example"
    message["To"] = mailbox
    message["Subject"] = f"Report Domain: {domain} Submitter: sender.example"
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = "sender.example"
    message.attach(MIMEText("This is an aggregate TLS report from sender.example.\n"))
    part = MIMEApplication(gzip.compress(json.dumps(report).encode()), _subtype="tlsrpt+gzip")
    part.add_header(
        "Content-Disposition",
        "attachment",
        filename=f"sender.example!{domain}!{int(time.time()) - 86400}!"
        f"{int(time.time())}!demo.json.gz",
    )
    message.attach(part)
    # Like a sending MTA to a rua host: encrypt, but do not insist on a verified certificate.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(*smtp, timeout=30) as session:
        session.starttls(context=context)
        # SMTP lines end in CRLF (RFC 5321 §2.3.8); smtplib converts only str messages.
        data = message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        refused = session.sendmail("noreply@sender.example", [mailbox], data)
        if refused:
            raise StackError(f"the collector refused the sample report: {refused}")
        code, text = session.noop()
    return f"{code} {text.decode(errors='replace')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailward_localstack.demo_reports")
    parser.add_argument("action", choices=["feed"])
    parser.add_argument("--address", required=True, help="the collector's SMTP address")
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--domain", default="example.test")
    args = parser.parse_args(argv)
    mailbox = f"{MAILBOX_LOCAL_PART}@tlsrpt.{args.domain}"
    answers: list[str] = []

    def delivered() -> bool:
        answers.append(feed_sample_report((args.address, args.port), args.domain, mailbox))
        return True

    try:
        # The collector pod may still be starting when the demo gets here.
        wait_until(delivered, timeout=60, what=f"the collector at {args.address}:{args.port}")
    except StackError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"mailed a sample report for {args.domain} to {mailbox}: {answers[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
