"""The demo's compliance check: the operator probes `example.test` from outside, and a new user
runs `mailward check` on it.

`operator_environment()` is what the demo's operator process needs in its environment (the
validating resolver and the CA that the demo's certificates chain to). `show()` waits for the
operator's first verdict on the MailDomain, prints the `Compliant` column and runs
`mailward check` as a user would: the verdict is as complete as the parts that have landed, and
what is not there yet shows up as `fail`/`error`, not as a pass.

    python -m mailward_localstack.demo_compliance show --kubeconfig K --domain example.test \
        --resolver 127.77.0.54 --ca-file .local/stack/ca/ca.pem
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from mailward_localstack.controlplane import kubectl


def operator_environment(
    resolver: str, ca_file: Path, metrics_address: str | None = None
) -> dict[str, str]:
    env = {
        "MAILWARD_COMPLIANCE_RESOLVER": resolver,
        "MAILWARD_COMPLIANCE_CA_FILE": str(ca_file),
    }
    if metrics_address:
        env["MAILWARD_METRICS_ADDRESS"] = metrics_address
    return env


def show(
    kubeconfig: Path,
    namespace: str,
    name: str,
    domain: str,
    resolver: str,
    ca_file: Path,
    timeout: float = 180,
) -> int:
    deadline = time.monotonic() + timeout
    compliance = None
    while time.monotonic() < deadline:
        body = json.loads(
            kubectl(kubeconfig, "get", "maildomain", name, "-n", namespace, "-o", "json")
        )
        compliance = body.get("status", {}).get("compliance")
        if compliance:
            break
        time.sleep(2)
    if compliance is None:
        print(f"no compliance verdict on {namespace}/{name} after {timeout:.0f}s", file=sys.stderr)
    else:
        print(f"$ kubectl get maildomain {name} -o wide")
        print(kubectl(kubeconfig, "get", "maildomain", name, "-n", namespace, "-o", "wide"))
    command = [
        sys.executable, "-m", "mailward", "check", domain,
        "--resolver", resolver, "--ca-file", str(ca_file),
    ]  # fmt: skip
    print(f"$ mailward check {domain} --resolver {resolver} --ca-file {ca_file}")
    result = subprocess.run(command, check=False, timeout=600)
    print(f"(exit code {result.returncode}: 0 compliant, 1 a MUST check failed, 2 could not run)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailward_localstack.demo_compliance")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("show", help="the operator's verdict, then `mailward check`")
    s.add_argument("--kubeconfig", type=Path, required=True)
    s.add_argument("--namespace", default="default")
    s.add_argument("--name", default="example")
    s.add_argument("--domain", default="example.test")
    s.add_argument("--resolver", default="127.77.0.54")
    s.add_argument("--ca-file", type=Path, default=Path(".local/stack/ca/ca.pem"))
    s.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args(argv)
    return show(
        args.kubeconfig, args.namespace, args.name, args.domain, args.resolver, args.ca_file,
        args.timeout,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
