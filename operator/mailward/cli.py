"""The `mailward` command: the operator, its servers, CRD generation and `check`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailward", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator against the current kubeconfig")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch only this namespace"
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (default)"
    )
    run.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )

    crds = commands.add_parser("crds", help="generate the CRDs from the models")
    crds.add_argument("--output", type=Path, default=Path("crds"), help="directory (crds/)")
    crds.add_argument(
        "--chart",
        action="store_true",
        help="--output is the chart: its CRD templates and values.schema.json",
    )
    crds.add_argument(
        "--check", action="store_true", help="exit 1 if the files differ from the models"
    )

    policies = commands.add_parser(
        "serve-policies", help="serve MTA-STS policies and autoconfig for every MailDomain"
    )
    policies.add_argument(
        "--https", action="append", default=[], metavar="HOST:PORT", help="TLS listener (SNI)"
    )
    policies.add_argument(
        "--http", action="append", default=[], metavar="HOST:PORT", help="plain listener"
    )
    policies.add_argument("--admin", metavar="HOST:PORT", help="/healthz, /readyz, /metrics")
    policies.add_argument("--tls-namespace", help="where the TLS Secrets are (own namespace)")
    policies.add_argument("--tls-selector", help="label selector for the TLS Secrets")

    collect = commands.add_parser(
        "collect-reports", help="run the TLSRPT collector (SMTP + HTTPS intake, RFC 8460)"
    )
    collect.add_argument("--config", type=Path, required=True, help="the collector's JSON config")
    reports = commands.add_parser("reports", help="summary of a domain's TLS reports")
    reports.add_argument("domain", help="the mail domain, e.g. example.test")
    reports.add_argument("--collector", help="collector API URL (default http://127.0.0.1:9108)")
    reports.add_argument(
        "--database", help="read the database instead: sqlite:///PATH or postgresql://..."
    )
    reports.add_argument("--json", action="store_true", help="print JSON instead of a table")

    from mailward.compliance.cli import add_parser as add_check_parser

    add_check_parser(commands)

    args = parser.parse_args(argv)
    if args.command == "check":
        from mailward.compliance.cli import run as run_check

        return run_check(args)
    if args.command == "run":
        return _run(args.namespace, args.liveness)
    if args.command == "crds":
        return _crds(args.output, args.check, chart=args.chart)
    if args.command == "serve-policies":
        return _serve_policies(args)
    if args.command in ("collect-reports", "reports"):
        from mailward.tlsrpt import cli as tlsrpt_cli

        if args.command == "collect-reports":
            return tlsrpt_cli.collect_reports(args.config)
        return tlsrpt_cli.reports(args.domain, args.collector, args.database, args.json)
    parser.error(f"unknown command {args.command!r}")
    return 2


def _run(namespaces: list[str], liveness: str | None) -> int:
    import kopf

    import mailward.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=False)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
    )
    return 0


def _serve_policies(args: argparse.Namespace) -> int:
    from mailward.endpoint.main import EndpointConfig, own_namespace, parse_address, run

    config = EndpointConfig(
        https=tuple(parse_address(a) for a in args.https),
        http=tuple(parse_address(a) for a in args.http),
        admin=parse_address(args.admin) if args.admin else None,
        tls_namespace=args.tls_namespace or own_namespace(),
        tls_selector=args.tls_selector,
    )
    return run(config)


def _crds(output: Path, check: bool, *, chart: bool) -> int:
    from mailward.api.crd import stale_crds, write_crds

    if check:
        stale = stale_crds(output, chart=chart)
        for name in stale:
            print(f"{output / name} differs from the models; run `make crds`", file=sys.stderr)
        return 1 if stale else 0
    for path in write_crds(output, chart=chart):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
