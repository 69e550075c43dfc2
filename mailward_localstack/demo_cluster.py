"""`python -m mailward_localstack.demo_cluster wait-pods --kubeconfig K`: for scripts/demo.sh,
until every pod of the cluster is Running and Ready, or a timeout says which are not."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mailward_localstack._process import StackError
from mailward_localstack.stack import wait_for_pods


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailward_localstack.demo_cluster")
    parser.add_argument("action", choices=["wait-pods"])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args(argv)
    try:
        wait_for_pods(args.kubeconfig, args.timeout)
    except StackError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
