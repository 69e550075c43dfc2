"""`python -m mailward_localstack up|down|status`: the local cluster of `make demo`.

Run from the repository root (`make demo`, `make down`, `make status` do). Not part of the
product: the operator image does not contain this package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mailward_localstack.stack import command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailward_localstack")
    parser.add_argument(
        "action",
        choices=["up", "down", "status"],
        help="start the local cluster with mailward installed, stop it, or show it",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=Path(".local/stack"), help="where the stack lives"
    )
    parser.add_argument(
        "--env-file", type=Path, default=Path(".local/demo.env"), help="written by `up`"
    )
    args = parser.parse_args(argv)
    return command(args.action, args.state_dir, args.env_file)


if __name__ == "__main__":
    sys.exit(main())
