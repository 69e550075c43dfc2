"""`mailward check DOMAIN`: the compliance engine as a command-line tool for any domain.

Exit codes: 0 every MUST check passed, 1 a MUST check failed (or could not be evaluated),
2 the check itself could not run (resolver unreachable, unreadable CA file, no such domain).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from mailward.compliance.catalog import DEFAULT_PROFILE, PROFILES
from mailward.settings import check_defaults, system_resolver


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check",
        help="probe a mail domain from outside against BSI TR-03108 (exit 0/1/2)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("domain", help="the mail domain, e.g. example.test")
    check.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE)
    check.add_argument(
        "--resolver",
        default=check_defaults().resolver,
        metavar="ADDR[:PORT]",
        help="a DNSSEC-validating resolver (default $MAILWARD_RESOLVER, else the first "
        "nameserver of /etc/resolv.conf)",
    )
    check.add_argument(
        "--ca-file",
        type=Path,
        default=check_defaults().ca_file,
        help="trust anchors for certificate checks (default $MAILWARD_CA_FILE, else the system)",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("-v", "--verbose", action="store_true", help="show the evidence")
    check.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="also write what the probes saw to FILE (JSON), to be judged again later",
    )
    check.add_argument(
        "--concurrency", type=int, default=8, help="parallel network probes (default 8)"
    )


def run(args: argparse.Namespace) -> int:
    from mailward.compliance import record
    from mailward.compliance.engine import check_domain
    from mailward.compliance.observations import DomainObservations
    from mailward.compliance.report import render_json, render_table

    resolver = args.resolver or system_resolver()
    if not resolver:
        print("mailward check: no resolver given and none in /etc/resolv.conf", file=sys.stderr)
        return 2
    address, port = resolver, 53
    if resolver.count(":") == 1:
        address, _, port_text = resolver.partition(":")
        port = int(port_text)
    cafile = str(args.ca_file) if args.ca_file else None
    if cafile and not os.access(cafile, os.R_OK):
        print(f"mailward check: cannot read --ca-file {cafile}", file=sys.stderr)
        return 2

    def save(obs: DomainObservations) -> None:
        record.save(obs, args.record)

    async def main() -> int:
        limit = asyncio.Semaphore(max(1, args.concurrency))
        report = await check_domain(
            args.domain, resolver=address, port=port, profile=args.profile, cafile=cafile,
            limit=limit, record=save if args.record else None,
        )  # fmt: skip
        if args.json:
            sys.stdout.write(render_json(report))
        else:
            sys.stdout.write(render_table(report, colour=sys.stdout.isatty(), verbose=args.verbose))
        return report.exit_code

    return asyncio.run(main())
