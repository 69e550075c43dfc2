"""The `mailward` command: the operator, CRD generation and the local stack."""

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
        "--check", action="store_true", help="exit 1 if the files differ from the models"
    )

    stack = commands.add_parser("stack", help="the local stack for tests and the demo")
    stack.add_argument(
        "action", choices=["up", "down", "status"], help="start, stop or show the stack"
    )
    stack.add_argument(
        "--state-dir", type=Path, default=Path(".local/stack"), help="where the stack lives"
    )
    stack.add_argument(
        "--env-file", type=Path, default=Path(".local/demo.env"), help="written by `up`"
    )

    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args.namespace, args.liveness)
    if args.command == "crds":
        return _crds(args.output, args.check)
    from mailward.localstack.stack import command as stack_command

    return stack_command(args.action, args.state_dir, args.env_file)


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


def _crds(output: Path, check: bool) -> int:
    from mailward.api.crd import stale_crds, write_crds

    if check:
        stale = stale_crds(output)
        for name in stale:
            print(f"{output / name} differs from the models; run `make crds`", file=sys.stderr)
        return 1 if stale else 0
    for path in write_crds(output):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
