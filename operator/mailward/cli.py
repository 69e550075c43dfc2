"""The `mailward` command: the operator, its servers, CRD generation and `check`."""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

# How long a replica's peer record counts after its last renewal (kopf renews it 5-10 s before
# it runs out). After a crash without cleanup (SIGKILL, a lost node) the standby takes over when
# the record runs out: kopf's default of 60 s is a minute without reconciling; 20 s costs one
# PATCH of the peering object per replica every 10-15 s, and a replica whose renewals are
# delayed longer than this (API server overloaded, node clocks apart) is taken for dead.
PEERING_LIFETIME = 20
# kopf.dev/v1: ClusterKopfPeering when watching the whole cluster, else a KopfPeering in each
# watched namespace (kopf does not create them; the chart installs the CRDs).
PEERING_GROUP, PEERING_VERSION = "kopf.dev", "v1"


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
    mode = run.add_mutually_exclusive_group()
    mode.add_argument(
        "--standalone",
        action="store_true",
        help="run without peering: the only replica (the default without --peering; dev, tests)",
    )
    mode.add_argument(
        "--peering",
        metavar="NAME",
        help="active/standby with the replicas in the (Cluster)KopfPeering NAME (kopf.dev/v1)",
    )
    run.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority, highest runs (default: the older process wins, see docs/ha.md)",
    )
    run.add_argument(
        "--peering-lifetime",
        type=int,
        default=PEERING_LIFETIME,
        metavar="SECONDS",
        help=f"a replica that stopped renewing its peer record is dead after this "
        f"(default {PEERING_LIFETIME}; kopf's own is 60)",
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
        return _run(
            args.namespace,
            args.liveness,
            peering=None if args.standalone else args.peering,
            priority=args.priority,
            lifetime=args.peering_lifetime,
        )
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


def _run(
    namespaces: list[str],
    liveness: str | None,
    *,
    peering: str | None = None,
    priority: int | None = None,
    lifetime: int = PEERING_LIFETIME,
) -> int:
    import kopf

    import mailward.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=False)
    settings = kopf.OperatorSettings()
    if peering is None:
        kopf.run(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
            settings=settings,
        )
        return 0
    # Active/standby: the replica with the highest priority runs, the others pause (their
    # watches, handlers, timers and daemons stop). Equal priorities pause every replica, so each
    # process takes one of its own (peering_priority). Its identity is POD_ID (the pod's name,
    # from the downward API), so a container that kubelet restarts replaces its own record.
    from mailward import peering as peering_state
    from mailward.settings import pod_id

    settings.peering.lifetime = lifetime
    settings.peering.stealth = True  # no log line per keep-alive
    ensure_peering_object(peering, namespaces)
    # Who this process is in the peering, for the work kopf does not pause (peering.py).
    me = peering_state.Peering(
        name=peering,
        namespaces=tuple(namespaces),
        identity=pod_id() or f"{socket.gethostname()}/{os.getpid()}",
        priority=peering_priority() if priority is None else priority,
        lifetime=lifetime,
    )
    peering_state.CURRENT = me
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=liveness,
        settings=settings,
        peering_name=peering,
        priority=me.priority,
        identity=cast(Any, me.identity),  # kopf's Identity, a NewType of str it does not export
    )
    return 0


def peering_priority(now: float | None = None, salt: int | None = None) -> int:
    """A priority no other replica has, higher for the process that started earlier.

    The replica that is already running keeps running when another one starts (a rollout or a
    restarted container does not take the work away from a warm replica: one handover per
    stopped active replica, not one per started one). The low 16 bits are random: two
    replicas started in the same millisecond still differ (equal priorities pause every
    replica, kopf's rule). Below 2**58: the API server keeps integers as int64.
    """
    started_ms = int((time.time() if now is None else now) * 1000)
    jitter = random.getrandbits(16) if salt is None else salt & 0xFFFF
    return ((1 << 42) - started_ms) << 16 | jitter


def ensure_peering_object(name: str, namespaces: list[str], timeout: float = 60) -> None:
    """Create the peering object(s) unless they exist.

    kopf pauses a peered operator until its peering object exists, and a Helm chart cannot
    create an object of a CRD it installs in the same release (helm maps every kind before it
    applies anything), so the operator creates its own. Retries while the CRD is not served
    yet (first install); gives up quietly after `timeout`: kopf then waits, paused.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from mailward.adapters.kube import load_client_config

    load_client_config()
    api = client.CustomObjectsApi()
    kind = "KopfPeering" if namespaces else "ClusterKopfPeering"
    body = {
        "apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}",
        "kind": kind,
        "metadata": {"name": name},
    }
    deadline = time.monotonic() + timeout
    targets: list[str | None] = list(namespaces) or [None]
    for namespace in targets:
        while True:
            try:
                if namespace is None:
                    api.create_cluster_custom_object(
                        PEERING_GROUP, PEERING_VERSION, "clusterkopfpeerings", body
                    )
                else:
                    api.create_namespaced_custom_object(
                        PEERING_GROUP, PEERING_VERSION, namespace, "kopfpeerings", body
                    )
                break
            except ApiException as error:
                if error.status == 409:  # it exists
                    break
                if error.status != 404 or time.monotonic() > deadline:
                    where = f" in {namespace}" if namespace else ""
                    print(
                        f"mailward: cannot create {kind} {name}{where} ({error.status} "
                        f"{error.reason}); waiting paused until it exists",
                        file=sys.stderr,
                    )
                    break
                time.sleep(1)  # the CRD is not served yet


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
